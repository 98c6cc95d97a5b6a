// Package procs reads the state of processes from /proc, for the tests and
// the benchmark that check what a command left behind.
package procs

import (
	"bytes"
	"os"
	"strconv"
)

// Running reports whether pid is a process that has not exited: one that
// exists and is no zombie (a killed process is one until its parent, or
// init, reaps it).
func Running(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] != 'Z'
}
