package executor

import (
	"bytes"
	"time"
)

// ErrorKind says why a command did not run to completion.
type ErrorKind int

const (
	// Completed: the command ran to completion, whatever its exit status.
	Completed ErrorKind = iota
	// TimedOut: the command outlived its timeout and its group was killed.
	TimedOut
	// StartFailed: the shell could not be started.
	StartFailed
	// Busy: no execution slot freed up before the command's StartBy.
	Busy
	// Canceled: the caller's context ended first.
	Canceled
)

func (k ErrorKind) String() string {
	switch k {
	case Completed:
		return "completed"
	case TimedOut:
		return "timed out"
	case StartFailed:
		return "start failed"
	case Busy:
		return "busy"
	case Canceled:
		return "canceled"
	}
	return "unknown"
}

// Result is the outcome of one command.
type Result struct {
	// ExitCode is the shell's exit status (128+N when the shell itself was
	// killed by signal N), or -1 when the command did not run to completion.
	ExitCode int
	Stdout   []byte
	Stderr   []byte
	// StdoutDropped and StderrDropped count bytes dropped by the output cap.
	StdoutDropped int64
	StderrDropped int64
	// Kind is Completed unless the command did not run to completion, and
	// Err then explains why.
	Kind ErrorKind
	Err  error
	// Duration is the time from start to the shell's exit (zero if the
	// command never started).
	Duration time.Duration
	// OutOfMemory is set when the command failed (a non-zero exit) under
	// Config.MemoryLimit and its stderr says an allocation failed: as far
	// as can be told, the limit is what ended it.
	OutOfMemory bool
}

// outOfMemory are what programs say when an allocation or a reservation
// of address space fails (Python, C's strerror, glibc's loader, C++,
// Rust, Go, Node, Java, shells' xmalloc).
var outOfMemory = []string{"memoryerror", "cannot allocate memory", "out of memory", "memory exhausted", "bad_alloc",
	"memory allocation of", "allocation failed", "could not reserve", "failed to reserve", "failed to map segment",
	"process oom", "outofmemoryerror", "xmalloc: cannot allocate"}

// saysOutOfMemory reports whether the end of an output says an
// allocation failed.
func saysOutOfMemory(tails ...[]byte) bool {
	for _, tail := range tails {
		lower := bytes.ToLower(tail)
		for _, s := range outOfMemory {
			if bytes.Contains(lower, []byte(s)) {
				return true
			}
		}
	}
	return false
}
