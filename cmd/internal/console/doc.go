// Package console is how the node binary presents baton to a person or a
// script: the prompt session, exec's output and exit statuses, the status
// table, the watch lines, and decoded message bodies.
package console
