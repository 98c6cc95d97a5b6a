// Package agent is a baton node at work: it keeps the node's membership,
// takes the master role when elected and runs what it is sent, and submits
// commands to whichever node is master (Client).
package agent
