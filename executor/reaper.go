package executor

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
)

// The reaper outlives its executor's process to kill the commands that
// process started. The executor keeps a pipe to a small process of its
// own (the same program, started again in reaper mode) and tells it each
// process group it starts and ends. When the executor's process dies, even
// by SIGKILL, the kernel closes the pipe: the reaper kills every process
// group still listed and exits. So no command outlives its node.

// reaperEnv marks a process started as a reaper.
const reaperEnv = "BATON_EXECUTOR_REAPER"

// ReaperMain turns this process into a reaper if it was started as one,
// and then exits; otherwise it returns at once. A program whose executors
// use Config.Reaper calls it first thing in main.
func ReaperMain() {
	if os.Getenv(reaperEnv) != "1" {
		return
	}
	// Only the pipe's end stops it: not a Ctrl-C meant for the node.
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU)
	// Counted: a process ID freed by one command may start another's group
	// before the first's end is told.
	live := make(map[int]int)
	lines := bufio.NewScanner(os.Stdin)
	for lines.Scan() {
		line := lines.Text()
		if len(line) < 2 {
			continue
		}
		pgid, err := strconv.Atoi(line[1:])
		if err != nil || pgid <= 1 {
			continue
		}
		switch line[0] {
		case '+':
			live[pgid]++
		case '-':
			if live[pgid]--; live[pgid] <= 0 {
				delete(live, pgid)
			}
		}
	}
	for pgid := range live {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	// At once: nothing is left to flush (os.Exit would let a race-enabled
	// build linger a second).
	syscall.Exit(0)
}

// reaper is the executor's side of the pipe.
type reaper struct {
	mu     sync.Mutex
	w      *os.File
	failed error // the first write error: the reaper is gone
	done   chan struct{}
}

// startReaper starts this program again as a reaper.
func startReaper() (*reaper, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("executor: reaper: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("executor: reaper: %w", err)
	}
	cmd := &exec.Cmd{Path: self, Args: []string{"baton-reaper"}, Env: append(os.Environ(), reaperEnv+"=1"), Stdin: r}
	// A group of its own: a terminal's Ctrl-C does not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	r.Close()
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("executor: reaper: %w", err)
	}
	rp := &reaper{w: w, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(rp.done)
	}()
	return rp, nil
}

// started and ended tell the reaper of a process group.
func (r *reaper) started(pgid int) error { return r.send('+', pgid) }
func (r *reaper) ended(pgid int) error   { return r.send('-', pgid) }

func (r *reaper) send(op byte, pgid int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failed != nil {
		return r.failed
	}
	if _, err := fmt.Fprintf(r.w, "%c%d\n", op, pgid); err != nil {
		r.failed = fmt.Errorf("executor: reaper gone: %w", err)
		return r.failed
	}
	return nil
}

// close ends the reaper, which kills what is still listed (nothing, once
// every command has ended), and waits for it.
func (r *reaper) close() error {
	r.mu.Lock()
	err := r.w.Close()
	r.failed = errors.New("executor: closed")
	r.mu.Unlock()
	<-r.done
	return err
}
