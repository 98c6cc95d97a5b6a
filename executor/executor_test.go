package executor

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"baton/internal/procs"
	"baton/internal/testlog"
)

func newTestExecutor(t testing.TB, mutate func(*Config)) *Executor {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Logger = testlog.Logger(t)
	if mutate != nil {
		mutate(&cfg)
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// pids parses whitespace-separated pids that a command printed.
func pids(t testing.TB, out []byte) []int {
	t.Helper()
	var ps []int
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("command printed %q, want pids", out)
		}
		ps = append(ps, pid)
	}
	return ps
}

func waitGone(t testing.TB, pid int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for procs.Running(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still alive, want it killed", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestExecutor_Run(t *testing.T) {
	cases := []struct {
		name                string
		line                string
		wantCode            int
		wantStdout, wantErr string
		wantKind            ErrorKind
	}{
		{name: "true", line: "true", wantCode: 0},
		{name: "exit status", line: "exit 3", wantCode: 3},
		{name: "separate streams", line: "echo out; echo err >&2", wantStdout: "out\n", wantErr: "err\n"},
		{name: "pipeline", line: "printf 'a\\nb\\n' | wc -l | tr -d ' '", wantStdout: "2\n"},
		{name: "shell killed by signal", line: "kill -9 $$", wantCode: 128 + 9},
		{name: "command not found", line: "no-such-command-baton", wantCode: 127},
	}
	e := newTestExecutor(t, nil)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.Run(context.Background(), Command{Line: tc.line})
			if r.Kind != tc.wantKind || r.Err != nil {
				t.Fatalf("kind %v (%v), want %v", r.Kind, r.Err, tc.wantKind)
			}
			if r.ExitCode != tc.wantCode {
				t.Errorf("exit code %d, want %d", r.ExitCode, tc.wantCode)
			}
			if string(r.Stdout) != tc.wantStdout {
				t.Errorf("stdout %q, want %q", r.Stdout, tc.wantStdout)
			}
			if tc.wantErr != "" && string(r.Stderr) != tc.wantErr {
				t.Errorf("stderr %q, want %q", r.Stderr, tc.wantErr)
			}
		})
	}
}

func TestExecutor_RunDirAndEnv(t *testing.T) {
	dir := t.TempDir()
	e := newTestExecutor(t, func(c *Config) {
		c.Dir = dir
		c.Env = []string{"BATON_TEST_VAR=hello"}
	})
	r := e.Run(context.Background(), Command{Line: `pwd; echo "$BATON_TEST_VAR"`})
	if want := dir + "\nhello\n"; string(r.Stdout) != want {
		t.Fatalf("stdout %q, want %q", r.Stdout, want)
	}
}

func TestExecutor_RunTimeout(t *testing.T) {
	cases := []struct{ name, line string }{
		{"sleep", "sleep 10"},
		{"read from stdin", "read x"},
		{"background and foreground", "sleep 30 & echo $!; sleep 30"},
		{"grandchild holds the pipe", "sh -c 'sleep 30; :' & echo $!; wait"},
	}
	e := newTestExecutor(t, func(c *Config) { c.Timeout = 300 * time.Millisecond })
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.Run(context.Background(), Command{Line: tc.line})
			if r.Kind != TimedOut || r.ExitCode != -1 {
				t.Fatalf("kind %v, exit code %d, want timed out, -1", r.Kind, r.ExitCode)
			}
			if r.Err == nil || !strings.Contains(r.Err.Error(), "timed out") {
				t.Errorf("error %v, want it to say timed out", r.Err)
			}
			for _, pid := range pids(t, r.Stdout) {
				waitGone(t, pid)
			}
		})
	}
}

// A process that leaves the group keeps running by design, but its open
// pipe must not hold the result past WaitDelay.
func TestExecutor_RunEscapeeHoldingPipe(t *testing.T) {
	e := newTestExecutor(t, func(c *Config) {
		c.Timeout = 300 * time.Millisecond
		c.WaitDelay = 100 * time.Millisecond
	})
	start := time.Now()
	r := e.Run(context.Background(), Command{Line: "setsid sh -c 'echo $$; sleep 30' & sleep 30"})
	elapsed := time.Since(start)
	if r.Kind != TimedOut {
		t.Fatalf("kind %v, want timed out", r.Kind)
	}
	// Sequential bound: the timeout plus WaitDelay, with generous slack for
	// a loaded machine, yet far below the escapee's 30 s.
	if elapsed > 5*time.Second {
		t.Errorf("result after %v, want it soon after the 300ms timeout", elapsed)
	}
	for _, pid := range pids(t, r.Stdout) {
		if err := syscallKill(pid); err != nil {
			t.Logf("kill escapee %d: %v", pid, err)
		}
	}
}

func TestExecutor_RunKillsLeftoversOnExit(t *testing.T) {
	e := newTestExecutor(t, nil)
	r := e.Run(context.Background(), Command{Line: "sleep 30 >/dev/null 2>&1 & echo $!"})
	if r.Kind != Completed || r.ExitCode != 0 {
		t.Fatalf("kind %v exit %d, want completed 0", r.Kind, r.ExitCode)
	}
	for _, pid := range pids(t, r.Stdout) {
		waitGone(t, pid)
	}
}

func TestExecutor_RunOutputCap(t *testing.T) {
	const limit = 1000
	e := newTestExecutor(t, func(c *Config) { c.MaxOutput = limit })
	// 5 MB on stdout and 3000 bytes on stderr.
	r := e.Run(context.Background(), Command{Line: "head -c 5000000 /dev/zero; head -c 3000 /dev/zero >&2; echo done >&2"})
	if r.Kind != Completed || r.ExitCode != 0 {
		t.Fatalf("kind %v exit %d, want completed 0 (err %v)", r.Kind, r.ExitCode, r.Err)
	}
	if len(r.Stdout) != limit || r.StdoutDropped != 5000000-limit {
		t.Errorf("stdout kept %d dropped %d, want %d and %d", len(r.Stdout), r.StdoutDropped, limit, 5000000-limit)
	}
	if len(r.Stderr) != limit || r.StderrDropped != 3005-limit {
		t.Errorf("stderr kept %d dropped %d, want %d and %d", len(r.Stderr), r.StderrDropped, limit, 3005-limit)
	}
}

func TestExecutor_RunParallel(t *testing.T) {
	e := newTestExecutor(t, nil)
	const n = 12
	start := time.Now()
	var wg sync.WaitGroup
	results := make([]Result, n)
	for i := range n {
		wg.Go(func() { results[i] = e.Run(context.Background(), Command{Line: "sleep 1"}) })
	}
	wg.Wait()
	elapsed := time.Since(start)
	for i, r := range results {
		if r.Kind != Completed || r.ExitCode != 0 {
			t.Errorf("command %d: kind %v exit %d, want completed 0", i, r.Kind, r.ExitCode)
		}
	}
	// Run one after another they would take 12 s.
	if elapsed > 6*time.Second {
		t.Errorf("%d parallel `sleep 1` took %v, want them to overlap", n, elapsed)
	}
}

func TestExecutor_RunBusy(t *testing.T) {
	e := newTestExecutor(t, func(c *Config) { c.MaxParallel = 1 })
	marker := filepath.Join(t.TempDir(), "started")
	done := make(chan Result)
	go func() {
		done <- e.Run(context.Background(), Command{Line: "touch " + marker + "; sleep 1"})
	}()
	// The only slot is taken once the command has created its marker.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(marker); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first command never started")
		}
	}
	r := e.Run(context.Background(), Command{Line: "true", StartBy: time.Now().Add(100 * time.Millisecond)})
	if r.Kind != Busy || r.ExitCode != -1 || !strings.Contains(r.Err.Error(), "busy") {
		t.Errorf("kind %v exit %d err %v, want busy, -1", r.Kind, r.ExitCode, r.Err)
	}
	// A request that may wait long enough gets the slot once it frees.
	r = e.Run(context.Background(), Command{Line: "true", StartBy: time.Now().Add(10 * time.Second)})
	if r.Kind != Completed {
		t.Errorf("kind %v (%v), want completed after waiting for the slot", r.Kind, r.Err)
	}
	<-done
}

func TestExecutor_RunCanceled(t *testing.T) {
	e := newTestExecutor(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	r := e.Run(ctx, Command{Line: "sleep 30 & echo $!; wait"})
	if r.Kind != Canceled || r.ExitCode != -1 {
		t.Fatalf("kind %v exit %d, want canceled, -1", r.Kind, r.ExitCode)
	}
	for _, pid := range pids(t, r.Stdout) {
		waitGone(t, pid)
	}
}

func TestExecutor_RunStartFailed(t *testing.T) {
	e := newTestExecutor(t, func(c *Config) { c.Shell = "/nonexistent/sh" })
	r := e.Run(context.Background(), Command{Line: "true"})
	if r.Kind != StartFailed || r.ExitCode != -1 || r.Err == nil {
		t.Fatalf("kind %v exit %d err %v, want start failed, -1, an error", r.Kind, r.ExitCode, r.Err)
	}
}

func TestNew_InvalidConfig(t *testing.T) {
	cases := map[string]func(*Config){
		"no shell":        func(c *Config) { c.Shell = "" },
		"zero timeout":    func(c *Config) { c.Timeout = 0 },
		"zero output":     func(c *Config) { c.MaxOutput = 0 },
		"zero parallel":   func(c *Config) { c.MaxParallel = 0 },
		"zero wait delay": func(c *Config) { c.WaitDelay = 0 },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := DefaultConfig()
			mutate(&cfg)
			if _, err := New(cfg); err == nil {
				t.Fatal("got nil error, want invalid config")
			}
		})
	}
}

// Beyond MaxWaiting, a command is busy at once instead of waiting.
func TestExecutor_RunMaxWaiting(t *testing.T) {
	e := newTestExecutor(t, func(c *Config) { c.MaxParallel, c.MaxWaiting = 1, 1 })
	marker := filepath.Join(t.TempDir(), "started")
	var wg sync.WaitGroup
	wg.Go(func() { e.Run(context.Background(), Command{Line: "touch " + marker + "; sleep 1"}) })
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(marker); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first command never started")
		}
	}
	waiter := make(chan Result)
	go func() {
		waiter <- e.Run(context.Background(), Command{Line: "true", StartBy: time.Now().Add(10 * time.Second)})
	}()
	for e.waiting.Load() != 1 {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	r := e.Run(context.Background(), Command{Line: "true", StartBy: time.Now().Add(10 * time.Second)})
	if r.Kind != Busy || !strings.Contains(r.Err.Error(), "wait already") {
		t.Errorf("third command: kind %v err %v, want busy at once", r.Kind, r.Err)
	}
	if waited := time.Since(start); waited > 500*time.Millisecond {
		t.Errorf("third command answered after %v, want at once", waited)
	}
	if r := <-waiter; r.Kind != Completed {
		t.Errorf("the waiting command: kind %v (%v), want it run once the slot freed", r.Kind, r.Err)
	}
	wg.Wait()
}

// A command given input reads it to its end; one given none blocks on a
// read until its timeout, as the shell's own `read` would on a silent
// terminal.
func TestStdin(t *testing.T) {
	e := newTestExecutor(t, func(c *Config) { c.Timeout = 300 * time.Millisecond })
	r := e.Run(context.Background(), Command{Line: "wc -c; cat", Stdin: strings.NewReader("")})
	if r.Kind != Completed || strings.TrimSpace(string(r.Stdout)) != "0" {
		t.Errorf("empty input: %v %q, want end of input at once", r.Kind, r.Stdout)
	}
	r = e.Run(context.Background(), Command{Line: "tr a-z A-Z", Stdin: strings.NewReader("hello\n")})
	if r.Kind != Completed || string(r.Stdout) != "HELLO\n" {
		t.Errorf("input hello: %v %q", r.Kind, r.Stdout)
	}
	r = e.Run(context.Background(), Command{Line: "read x"})
	if r.Kind != TimedOut {
		t.Errorf("no input: %v, want a read that blocks until the timeout", r.Kind)
	}
}

// Output is handed over as it is written, in order, and only up to the
// cap.
func TestLiveOutput(t *testing.T) {
	e := newTestExecutor(t, func(c *Config) { c.MaxOutput = 10 })
	var mu sync.Mutex
	got := map[Stream][]byte{}
	var firstAt time.Time
	start := time.Now()
	r := e.Run(context.Background(), Command{
		Line: "echo one; sleep 0.5; echo two; echo 0123456789abcdef >&2",
		Output: func(s Stream, p []byte) {
			mu.Lock()
			defer mu.Unlock()
			if firstAt.IsZero() {
				firstAt = time.Now()
			}
			got[s] = append(got[s], p...)
		},
	})
	mu.Lock()
	defer mu.Unlock()
	if d := firstAt.Sub(start); d > 400*time.Millisecond {
		t.Errorf("first output handed over after %v, want before the command's sleep ends", d)
	}
	if string(got[Stdout]) != "one\ntwo\n" || string(got[Stderr]) != "0123456789" {
		t.Errorf("live output %q %q, want the capped streams", got[Stdout], got[Stderr])
	}
	if string(r.Stdout) != string(got[Stdout]) || string(r.Stderr) != string(got[Stderr]) || r.StderrDropped != 7 {
		t.Errorf("result %q %q (%d dropped) differs from the live output", r.Stdout, r.Stderr, r.StderrDropped)
	}
}

// A memory limit makes an allocation past it fail, and the result says
// so; a command within it runs as before.
func TestExecutor_MemoryLimit(t *testing.T) {
	e := newTestExecutor(t, func(c *Config) { c.MemoryLimit, c.Timeout = 100<<20, 10*time.Second })
	r := e.Run(context.Background(), Command{Line: "echo within; echo $0"})
	if r.Kind != Completed || r.ExitCode != 0 || string(r.Stdout) != "within\n/bin/sh\n" || r.OutOfMemory {
		t.Errorf("a small command: %+v, stdout %q, stderr %q", r, r.Stdout, r.Stderr)
	}
	// tail keeps what it must print: 500 MiB asked for under 100 MiB.
	r = e.Run(context.Background(), Command{Line: "head -c 600000000 /dev/zero | tail -c 500000000 > /dev/null"})
	if r.ExitCode == 0 || !r.OutOfMemory {
		t.Errorf("500 MiB under a 100 MiB limit: exit %d, out of memory %v, stderr %q", r.ExitCode, r.OutOfMemory, r.Stderr)
	}
	for line, want := range map[string]bool{
		// Said on stdout (2>&1), after more than the output cap.
		"head -c 2000000 /dev/zero | tr '\\0' x; echo; echo 'memory allocation of 4096 bytes failed'; exit 134": true,
		// Other failures that mention allocating.
		"echo 'failed to allocate port 8080' >&2; exit 1": false,
		"echo 'cannot allocate a pty' >&2; exit 1":        false,
	} {
		r := e.Run(context.Background(), Command{Line: line})
		if r.OutOfMemory != want {
			t.Errorf("%s: out of memory %v, want %v", line, r.OutOfMemory, want)
		}
	}
	if _, err := New(Config{Shell: "/bin/sh", Timeout: time.Second, MaxOutput: 1, MaxParallel: 1, WaitDelay: time.Second, MemoryLimit: 1 << 20}); err == nil {
		t.Error("a 1 MiB limit, in which no shell starts, was taken")
	}
}

// Raising max parallel lets a waiting command start at once; lowering it
// ends nothing running and holds the next command until enough end.
func TestExecutor_SetMaxParallel(t *testing.T) {
	e := newTestExecutor(t, func(c *Config) { c.MaxParallel = 1 })
	started := make(chan time.Time, 3)
	run := func(line string) chan Result {
		done := make(chan Result, 1)
		go func() {
			done <- e.Run(context.Background(), Command{Line: line, Output: func(Stream, []byte) { started <- time.Now() }})
		}()
		return done
	}
	first := run("echo go; sleep 1")
	<-started
	t0 := time.Now()
	second := run("echo go; sleep 1")
	for _, w := e.Running(); w != 1; _, w = e.Running() {
		time.Sleep(time.Millisecond)
	}
	if err := e.SetMaxParallel(2); err != nil {
		t.Fatal(err)
	}
	if at := <-started; at.Sub(t0) > 500*time.Millisecond {
		t.Errorf("the second command started %v after the limit rose, want at once", at.Sub(t0))
	}
	if err := e.SetMaxParallel(1); err != nil {
		t.Fatal(err)
	}
	if running, _ := e.Running(); running != 2 || e.MaxParallel() != 1 {
		t.Fatalf("after lowering to 1: %d running, max %d; want both still running, max 1", running, e.MaxParallel())
	}
	third := run("echo go")
	select {
	case <-started:
		t.Fatal("a third command started while 2 ran under a limit of 1")
	case <-time.After(200 * time.Millisecond):
	}
	r1, r2 := <-first, <-second
	if r1.ExitCode != 0 || r2.ExitCode != 0 {
		t.Fatalf("running commands ended by the change: %+v %+v", r1, r2)
	}
	select {
	case at := <-started:
		t.Logf("third started %v after the second began", at.Sub(t0))
	case <-time.After(5 * time.Second):
		t.Fatal("third never started")
	}
	if r := <-third; r.ExitCode != 0 {
		t.Fatalf("third: %+v", r)
	}
	if err := e.SetMaxParallel(0); err == nil {
		t.Fatal("max parallel 0 taken")
	}
}
