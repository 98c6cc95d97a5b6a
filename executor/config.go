package executor

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// ErrInvalidConfig is wrapped by every error Config validation returns.
var ErrInvalidConfig = errors.New("executor: invalid config")

// WaitingPerSlot is how many commands may wait per execution slot when
// Config.MaxWaiting is zero: a burst far beyond what a cluster's
// submitters send at once, yet a bound on what a flood holds.
const WaitingPerSlot = 16

// Config tunes an Executor. Start from DefaultConfig.
type Config struct {
	// Shell runs each command line as `Shell -c LINE`.
	Shell string
	// Timeout bounds a command's run time, counted from the moment it
	// starts; a command still running then is killed with its whole process
	// group.
	Timeout time.Duration
	// MaxOutput caps the bytes kept of stdout and of stderr, each. The pipe
	// keeps being drained past the cap; the excess is counted as dropped.
	MaxOutput int
	// MaxParallel bounds how many commands run at once; further commands
	// wait for a slot.
	MaxParallel int
	// MaxWaiting bounds how many commands wait for a slot; further ones
	// are Busy at once, so that a flood of requests holds bounded memory.
	// Zero means WaitingPerSlot per slot of MaxParallel.
	MaxWaiting int
	// WaitDelay bounds how long, once the shell has exited and its group
	// has been killed, the result waits for output pipes held open by a
	// process that escaped the group (setsid). Past it the pipes are closed.
	WaitDelay time.Duration
	// MemoryLimit, when positive, bounds each command's address space in
	// bytes (RLIMIT_AS, set by the shell's ulimit -v before it runs the
	// command): an allocation past it fails. Portable where cgroups are
	// not, and per process: a command's children get the same bound each.
	MemoryLimit int64
	// Dir is the working directory of commands; empty means the process's.
	Dir string
	// Env is the environment of commands; nil means the process's.
	Env []string
	// Reaper starts a reaper process that kills the commands still running
	// when this process dies, however it dies (see ReaperMain, which the
	// program must call first thing in main).
	Reaper bool
	// Logger receives debug logs of command starts and ends.
	Logger *slog.Logger
}

// DefaultConfig returns the settings baton nodes run with.
func DefaultConfig() Config {
	return Config{
		// A POSIX shell is the one interpreter every host has.
		Shell: "/bin/sh",
		// The product promise: a command running longer than 5 s is killed.
		Timeout: 5 * time.Second,
		// 1 MiB per stream is more than a terminal user reads, and keeps the
		// largest result (two streams, JSON-escaped up to 6x) under the
		// broker's payload limit; see messages.MaxOutputCap.
		MaxOutput: 1 << 20,
		// 64 concurrent shells are far beyond what 2 cores keep busy, yet
		// bound the fork storm a flood of requests can cause.
		MaxParallel: 64,
		// Long enough for the kernel to deliver EOF after the group is
		// killed, short enough that a pipe-holding escapee adds little to
		// the 5 s promise.
		WaitDelay: 250 * time.Millisecond,
		Logger:    slog.Default().With(keyComponent, "executor"),
	}
}

func (c Config) validate() error {
	switch {
	case c.Shell == "":
		return fmt.Errorf("%w: empty shell", ErrInvalidConfig)
	case c.Timeout <= 0:
		return fmt.Errorf("%w: timeout %v must be positive", ErrInvalidConfig, c.Timeout)
	case c.MaxOutput <= 0:
		return fmt.Errorf("%w: max output %d must be positive", ErrInvalidConfig, c.MaxOutput)
	case c.MaxParallel <= 0:
		return fmt.Errorf("%w: max parallel %d must be positive", ErrInvalidConfig, c.MaxParallel)
	case c.MaxWaiting < 0:
		return fmt.Errorf("%w: max waiting %d must not be negative", ErrInvalidConfig, c.MaxWaiting)
	case c.WaitDelay <= 0:
		return fmt.Errorf("%w: wait delay %v must be positive", ErrInvalidConfig, c.WaitDelay)
	}
	return nil
}
