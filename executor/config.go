package executor

import (
	"errors"
	"fmt"
	"log/slog"
	"syscall"
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
	case c.MemoryLimit < 0 || c.MemoryLimit > 0 && c.MemoryLimit < MinMemoryLimit:
		return fmt.Errorf("%w: a memory limit of %d bytes: at least %d MiB (a shell and its libraries need a few to start), or 0 for none",
			ErrInvalidConfig, c.MemoryLimit, MinMemoryLimit>>20)
	}
	if c.MemoryLimit > 0 {
		// The shell can lower the limit, never raise it past the hard one
		// this process has: it would refuse every command.
		var rl syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_AS, &rl); err == nil && rl.Max != rlimInfinity && uint64(c.MemoryLimit) > rl.Max {
			return fmt.Errorf("%w: a memory limit of %d MiB is above this process's hard address-space limit of %d MiB (ulimit -Hv); lower it, or raise that",
				ErrInvalidConfig, c.MemoryLimit>>20, rl.Max>>20)
		}
	}
	return nil
}

// MinMemoryLimit is the smallest memory limit taken: below a few MiB, sh
// itself cannot start.
const MinMemoryLimit = 16 << 20

// rlimInfinity is RLIM_INFINITY.
const rlimInfinity = ^uint64(0)
