package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"baton/internal/slots"
)

// Command is one command line to run.
type Command struct {
	Line string
	// Timeout overrides Config.Timeout when positive.
	Timeout time.Duration
	// StartBy, when set, is the latest moment the command may start; if no
	// slot is free by then the result is Busy.
	StartBy time.Time
	// Stdin, when set, is the command's standard input, read to its end
	// and then closed. When nil, reads block until the command ends.
	Stdin io.Reader
	// Output, when set, is handed the output the command writes, as it
	// writes it, up to the output cap of each stream: Stdout or Stderr, and
	// bytes valid only during the call. Calls for one stream come in order
	// from one goroutine; the call must not block for long, or the command
	// blocks on its full pipe.
	Output func(stream Stream, p []byte)
	// Dir, when set, is the command's working directory in place of
	// Config.Dir.
	Dir string
}

// Stream names an output stream.
type Stream int

// The output streams.
const (
	Stdout Stream = 1
	Stderr Stream = 2
)

// Executor runs commands. It is safe for concurrent use; its methods may be
// called from any number of goroutines.
type Executor struct {
	cfg   Config
	slots *slots.Slots
	// waiting counts the commands waiting for a slot, bounded by
	// maxWaiting.
	waiting atomic.Int64
	// stdinR is every command's stdin: the read end of a pipe whose write
	// end, stdinW, is held open and never written, so that a command that
	// reads blocks (until its timeout) instead of seeing end of file. One
	// pipe serves all commands: there is never anything in it to share.
	stdinR, stdinW *os.File
	reaper         *reaper // nil unless Config.Reaper
	closeOnce      sync.Once
	closeErr       error
}

// New returns an Executor for cfg. It starts nothing; Close releases the
// stdin pipe it opens.
func New(cfg Config) (*Executor, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = DefaultConfig().Logger
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("executor: stdin pipe: %w", err)
	}
	e := &Executor{cfg: cfg, slots: slots.New(cfg.MaxParallel), stdinR: r, stdinW: w}
	if cfg.Reaper {
		if e.reaper, err = startReaper(); err != nil {
			_ = e.Close()
			return nil, err
		}
	}
	return e, nil
}

// Close releases the stdin pipe and ends the reaper, which kills the
// commands still running. Call it once they are done. It is safe to call
// twice.
func (e *Executor) Close() error {
	e.closeOnce.Do(func() {
		e.closeErr = errors.Join(e.stdinR.Close(), e.stdinW.Close())
		if e.reaper != nil {
			e.closeErr = errors.Join(e.closeErr, e.reaper.close())
		}
	})
	return e.closeErr
}

// Config returns the executor's configuration, as it was made.
func (e *Executor) Config() Config { return e.cfg }

// SetMaxParallel changes how many commands run at once (n > 0). Commands
// running go on; with fewer slots than run, new ones wait until enough
// have ended.
func (e *Executor) SetMaxParallel(n int) error {
	if n <= 0 {
		return fmt.Errorf("%w: max parallel %d must be positive", ErrInvalidConfig, n)
	}
	e.slots.SetLimit(n)
	return nil
}

// MaxParallel is how many commands run at once.
func (e *Executor) MaxParallel() int { return e.slots.Limit() }

// Running counts the commands running and those waiting for a slot.
func (e *Executor) Running() (running, waiting int) { return e.slots.Taken() }

// maxWaiting bounds the commands waiting for a slot.
func (e *Executor) maxWaiting() int {
	if e.cfg.MaxWaiting > 0 {
		return e.cfg.MaxWaiting
	}
	return WaitingPerSlot * e.slots.Limit()
}

// Run runs c and blocks until it has finished, its process group is gone
// and its output is collected. It waits for an execution slot first. If ctx
// ends while the command runs, the command's group is killed and the result
// is Canceled, its error naming the context's cause.
func (e *Executor) Run(ctx context.Context, c Command) Result {
	if r, ok := e.acquire(ctx, c.StartBy); !ok {
		return r
	}
	defer e.slots.Release()
	return e.run(ctx, c)
}

// acquire takes a slot, or returns the Busy or Canceled result explaining
// why it could not.
func (e *Executor) acquire(ctx context.Context, startBy time.Time) (Result, bool) {
	if e.slots.TryAcquire() {
		return Result{}, true
	}
	if maxWaiting := e.maxWaiting(); e.waiting.Add(1) > int64(maxWaiting) {
		e.waiting.Add(-1)
		return Result{ExitCode: -1, Kind: Busy, Err: fmt.Errorf(
			"busy: all %d execution slots are taken and %d commands wait already; retry later or raise --max-parallel",
			e.slots.Limit(), maxWaiting)}, false
	}
	defer e.waiting.Add(-1)
	if e.slots.Acquire(ctx, startBy) {
		return Result{}, true
	}
	if ctx.Err() != nil {
		return Result{ExitCode: -1, Kind: Canceled, Err: fmt.Errorf("cancelled while waiting for a slot: %w", context.Cause(ctx))}, false
	}
	return Result{ExitCode: -1, Kind: Busy, Err: fmt.Errorf(
		"busy: all %d execution slots stayed taken until the request's deadline; retry later or raise --max-parallel",
		e.slots.Limit())}, false
}

func (e *Executor) run(ctx context.Context, c Command) Result {
	timeout := e.cfg.Timeout
	if c.Timeout > 0 {
		timeout = c.Timeout
	}
	p, err := newPipes()
	if err != nil {
		return Result{ExitCode: -1, Kind: StartFailed, Err: fmt.Errorf("start %q: %w", c.Line, err)}
	}
	defer p.closeParent()

	runCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(runCtx, e.cfg.Shell, "-c", c.Line)
	if e.cfg.MemoryLimit > 0 {
		// The limit first, then the command in a shell of its own, as
		// `sh -c LINE` runs it.
		limit := fmt.Sprintf(`ulimit -v %d || exit 125; exec "$0" -c "$1"`, max(e.cfg.MemoryLimit>>10, 1))
		cmd = exec.CommandContext(runCtx, e.cfg.Shell, "-c", limit, e.cfg.Shell, c.Line)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = e.stdinR, p.stdoutW, p.stderrW
	if c.Stdin != nil {
		cmd.Stdin = c.Stdin
	}
	cmd.Dir, cmd.Env = e.cfg.Dir, e.cfg.Env
	if c.Dir != "" {
		cmd.Dir = c.Dir
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var killed atomic.Bool
	cmd.Cancel = func() error {
		killed.Store(true)
		return killGroup(cmd.Process.Pid)
	}
	cmd.WaitDelay = e.cfg.WaitDelay

	start := time.Now()
	err = cmd.Start()
	p.closeChild()
	if err != nil {
		return Result{ExitCode: -1, Kind: StartFailed, Err: fmt.Errorf("start %q: %w", c.Line, err)}
	}
	if e.reaper != nil {
		if err := e.reaper.started(cmd.Process.Pid); err != nil {
			e.cfg.Logger.Warn("a command the reaper does not know of would outlive this process", keyErr, err)
		}
	}
	stdout := &cappedBuffer{limit: e.cfg.MaxOutput}
	stderr := &cappedBuffer{limit: e.cfg.MaxOutput}
	if c.Output != nil {
		stdout.onKept = func(p []byte) { c.Output(Stdout, p) }
		stderr.onKept = func(p []byte) { c.Output(Stderr, p) }
	}
	var readers sync.WaitGroup
	readers.Go(func() { drain(stdout, p.stdoutR) })
	readers.Go(func() { drain(stderr, p.stderrR) })

	waitErr := cmd.Wait()
	duration := time.Since(start)
	// Whatever the command left running in its group dies with it; a
	// process meant to outlive the command must leave the group (setsid).
	_ = killGroup(cmd.Process.Pid)
	if e.reaper != nil {
		_ = e.reaper.ended(cmd.Process.Pid)
	}
	p.awaitReaders(&readers, e.cfg.WaitDelay)

	r := Result{
		Stdout: stdout.buf, Stderr: stderr.buf,
		StdoutDropped: stdout.dropped, StderrDropped: stderr.dropped,
		Duration: duration,
	}
	switch {
	case killed.Load() && ctx.Err() != nil:
		r.ExitCode, r.Kind = -1, Canceled
		r.Err = fmt.Errorf("cancelled after %v: %w", duration.Round(time.Millisecond), context.Cause(ctx))
	case killed.Load():
		r.ExitCode, r.Kind = -1, TimedOut
		r.Err = fmt.Errorf("timed out after %v; killed its process group", timeout)
	default:
		r.ExitCode = exitCode(cmd.ProcessState, waitErr)
		// Either stream: 2>&1 is common.
		r.OutOfMemory = e.cfg.MemoryLimit > 0 && r.ExitCode != 0 && saysOutOfMemory(stderr.tail, stdout.tail)
	}
	e.cfg.Logger.Debug("command done", keyCmd, c.Line, keyExitCode, r.ExitCode, keyKind, r.Kind, keyDuration, duration)
	return r
}

// exitCode is the status a parent shell would report: the exit status, or
// 128+N when the shell was killed by signal N.
func exitCode(ps *os.ProcessState, waitErr error) int {
	if ps == nil {
		return -1
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	if code := ps.ExitCode(); code >= 0 {
		return code
	}
	var exitErr *exec.ExitError
	if errors.As(waitErr, &exitErr) {
		return exitErr.ExitCode()
	}
	return -1
}

func killGroup(pgid int) error {
	err := syscall.Kill(-pgid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

func drain(dst *cappedBuffer, src io.Reader) {
	// Errors end the copy: EOF, or the pipe closed by awaitReaders.
	_, _ = io.Copy(dst, src)
}

// pipes are the command's output: the write ends are handed to the shell,
// the read ends are drained.
type pipes struct {
	stdoutR, stdoutW *os.File
	stderrR, stderrW *os.File
}

func newPipes() (*pipes, error) {
	var p pipes
	var err error
	if p.stdoutR, p.stdoutW, err = os.Pipe(); err != nil {
		return nil, err
	}
	if p.stderrR, p.stderrW, err = os.Pipe(); err != nil {
		p.stdoutR.Close()
		p.stdoutW.Close()
		return nil, err
	}
	return &p, nil
}

// closeChild closes the ends the child inherited; the parent must not hold
// them or it would never see EOF.
func (p *pipes) closeChild() {
	p.stdoutW.Close()
	p.stderrW.Close()
}

func (p *pipes) closeParent() {
	p.stdoutR.Close()
	p.stderrR.Close()
}

// awaitReaders waits for both output readers to reach EOF, at most delay;
// then it closes the read ends, which ends the readers at once.
func (p *pipes) awaitReaders(readers *sync.WaitGroup, delay time.Duration) {
	done := make(chan struct{})
	go func() {
		readers.Wait()
		close(done)
	}()
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		p.stdoutR.Close()
		p.stderrR.Close()
		<-done
	}
}
