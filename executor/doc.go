// Package executor runs shell commands in their own process groups, in
// parallel up to a limit, each with a timeout and size-capped output.
package executor
