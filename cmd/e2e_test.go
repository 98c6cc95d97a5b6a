package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The three-terminal session, with pipes for terminals: a command
// typed at the low-priority node runs on the master and prints its output.
func TestSession(t *testing.T) {
	t.Parallel() // mostly waiting; no tight timing
	c := newCluster(t)
	w := c.watch()
	masterDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(masterDir, "only-on-the-master"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	alpha := c.node("alpha", 100, procOpts{dir: masterDir, stdin: true})
	w.waitMaster("alpha", time.Time{}, 10*time.Second)
	beta := c.node("beta", 10, procOpts{stdin: true})
	c.waitMembers(2)

	start := time.Now()
	alpha.send("sleep 3")
	beta.send("ls")
	eventually(t, 10*time.Second, "ls result on beta", func() bool {
		return strings.Contains(beta.stdout.String(), "only-on-the-master")
	})
	if out := beta.stdout.String(); !strings.Contains(out, "[1] ls on alpha") {
		t.Errorf("beta printed %q, want a result headed [1] ls on alpha", out)
	}
	eventually(t, 10*time.Second, "sleep 3 result on alpha", func() bool {
		return strings.Contains(alpha.stdout.String(), "[1] sleep 3 on alpha")
	})
	if took := time.Since(start); took < 3*time.Second {
		t.Errorf("sleep 3 reported after %v, want at least 3s", took)
	}
	for _, p := range []*proc{beta, alpha} {
		p.stdin.Close()
		if code := p.wait(15 * time.Second); code != 0 {
			t.Errorf("%s exited %d at end of input, want 0", p.name, code)
		}
	}
}

// At end of input a node waits for every outstanding result, leaves the
// cluster and exits 0.
func TestEndOfInputDeliversAllResults(t *testing.T) {
	t.Parallel() // mostly waiting; no tight timing
	c := newCluster(t)
	c.node("master", 100, procOpts{}, "--serve")
	c.watch().waitMaster("master", time.Time{}, 10*time.Second)
	input := "sleep 1; echo slow\necho fast\n\n   \nexit 7\necho err >&2\n"
	p := c.node("submitter", 1, procOpts{input: input}, "--json")
	if code := p.wait(15 * time.Second); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
	res := jsonResults(t, p.stdout.String())
	want := map[string]struct {
		code           int32
		stdout, stderr string
	}{
		"sleep 1; echo slow": {0, "slow\n", ""},
		"echo fast":          {0, "fast\n", ""},
		"exit 7":             {7, "", ""},
		"echo err >&2":       {0, "", "err\n"},
	}
	if len(res) != len(want) {
		t.Fatalf("got %d results, want %d (blank lines are not commands): %v", len(res), len(want), res)
	}
	ids := map[string]bool{}
	for cmd, w := range want {
		r, ok := res[cmd]
		if !ok {
			t.Errorf("no result for %q", cmd)
			continue
		}
		ids[r.ID] = true
		if r.ExitCode != w.code || r.Stdout != w.stdout || r.Stderr != w.stderr || r.Error != "" || r.TimedOut || r.Master != "master" || r.Epoch == 0 {
			t.Errorf("%q: got %+v, want exit %d stdout %q stderr %q from master", cmd, r, w.code, w.stdout, w.stderr)
		}
	}
	if len(ids) != len(want) || ids[""] {
		t.Errorf("ids %v, want a distinct request id per command", ids)
	}
}

func TestEpochSurvivesBrokerRestart(t *testing.T) {
	c := newCluster(t)
	c.node("alpha", 1, procOpts{}, "--serve")
	w := c.watch()
	_, before := w.waitMaster("alpha", time.Time{}, 10*time.Second)
	c.broker.signal(syscall.SIGKILL)
	c.broker.wait(5 * time.Second)
	restarted := time.Now()
	c.startBroker()
	// The node reconnects and registers again by itself; the epoch goes on.
	var after uint64
	eventually(t, 10*time.Second, "alpha master again after the restart", func() bool {
		s := c.status()
		after = s.Epoch
		return s.Master == "alpha"
	})
	t.Logf("serving again %v after the broker restart", time.Since(restarted).Round(time.Millisecond))
	if after <= before {
		t.Errorf("epoch %d after the restart, want above %d", after, before)
	}
}

func TestTimeouts(t *testing.T) {
	t.Parallel() // mostly waiting; no tight timing
	c := newCluster(t)
	c.node("master", 1, procOpts{}, "--serve")
	c.watch().waitMaster("master", time.Time{}, 10*time.Second)
	start := time.Now()
	p := c.node("submitter", 0, procOpts{input: "sleep 10\nread x\n"}, "--json")
	if code := p.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
	took := time.Since(start)
	for cmd, r := range jsonResults(t, p.stdout.String()) {
		if !r.TimedOut || r.ExitCode != -1 || !strings.Contains(r.Error, "timed out") {
			t.Errorf("%q: got %+v, want a timed-out error with exit code -1", cmd, r)
		}
		if r.DurationMs < 4900 || r.DurationMs > 6000 {
			t.Errorf("%q: ran %dms on the master, want about 5000", cmd, r.DurationMs)
		}
	}
	// Both ran at once: about 5 s, not 10.
	if took > 9*time.Second {
		t.Errorf("both results after %v, want about 5s", took)
	}
}

// 12 simultaneous `sleep 2` from two nodes all finish in about 2 s.
func TestParallel(t *testing.T) {
	c := newCluster(t)
	c.node("master", 100, procOpts{}, "--serve")
	c.watch().waitMaster("master", time.Time{}, 10*time.Second)
	var input strings.Builder
	for i := range 6 {
		fmt.Fprintf(&input, "sleep 2; echo %d\n", i)
	}
	start := time.Now()
	a := c.node("a", 1, procOpts{input: input.String()}, "--json")
	b := c.node("b", 2, procOpts{input: input.String()}, "--json")
	for _, p := range []*proc{a, b} {
		if code := p.wait(30 * time.Second); code != 0 {
			t.Fatalf("%s exited %d", p.name, code)
		}
		res := jsonResults(t, p.stdout.String())
		if len(res) != 6 {
			t.Fatalf("%s: %d results, want 6", p.name, len(res))
		}
		for cmd, r := range res {
			if r.ExitCode != 0 || r.Error != "" {
				t.Errorf("%s %q: %+v", p.name, cmd, r)
			}
		}
	}
	took := time.Since(start)
	t.Logf("12 parallel `sleep 2` from two nodes: %v", took.Round(time.Millisecond))
	// Node start-up is part of the measure; one after another would be 24 s.
	if took > 6*time.Second {
		t.Errorf("took %v, want about 2s", took)
	}
}

func TestPreemption(t *testing.T) {
	c := newCluster(t)
	w := c.watch()
	c.node("low", 10, procOpts{}, "--serve")
	_, before := w.waitMaster("low", time.Time{}, 10*time.Second)
	t0 := time.Now()
	c.node("high", 100, procOpts{}, "--serve")
	at, after := w.waitMaster("high", t0, 10*time.Second)
	t.Logf("preemption: high announced %v after its process started", at.Sub(t0).Round(time.Millisecond))
	if after != before+1 {
		t.Errorf("epoch %d, want %d", after, before+1)
	}
	out, _, code := c.exec("echo $BATON_E2E_NODE")
	if code != 0 || out != "high\n" {
		t.Errorf("ran on %q (exit %d), want high", out, code)
	}
}

func TestFailover(t *testing.T) {
	cases := []struct {
		name string
		sig  syscall.Signal
	}{
		{"kill -9", syscall.SIGKILL},
		{"SIGSTOP (hang)", syscall.SIGSTOP},
		{"SIGTERM (graceful)", syscall.SIGTERM},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			w := c.watch()
			alpha := c.masterAndStandby(w)
			t0 := time.Now()
			alpha.signal(tc.sig)
			at, _ := w.waitMaster("beta", t0, 10*time.Second)
			t.Logf("failover after %s: beta announced %v after the signal", tc.name, at.Sub(t0).Round(time.Millisecond))
			out, errOut, code := c.exec("echo $BATON_E2E_NODE")
			if code != 0 || out != "beta\n" {
				t.Errorf("ran on %q (exit %d, %s), want beta", out, code, errOut)
			}
			if tc.sig == syscall.SIGTERM {
				if code := alpha.wait(10 * time.Second); code != 0 {
					t.Errorf("alpha exited %d after SIGTERM, want 0", code)
				}
			}
		})
	}
}

// processesWith lists live (not zombie) processes whose command line holds
// marker.
func processesWith(t testing.TB, marker string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(cmdline), marker) {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if i := strings.LastIndexByte(string(stat), ')'); err == nil && i+2 < len(stat) && stat[i+2] == 'Z' {
			continue
		}
		found = append(found, e.Name()+": "+strings.ReplaceAll(string(cmdline), "\x00", " "))
	}
	return found
}

func TestTimedOutCommandLeavesNoProcess(t *testing.T) {
	c := newCluster(t)
	c.node("master", 1, procOpts{}, "--serve", "--exec-timeout=1s")
	c.watch().waitMaster("master", time.Time{}, 10*time.Second)
	// A duration no other process uses marks this test's sleeps.
	const marker = "31.4159"
	_, errOut, code := c.exec("sleep " + marker + " & sleep " + marker)
	if code != 124 {
		t.Fatalf("exit %d (%s), want 124", code, errOut)
	}
	eventually(t, 5*time.Second, "no sleep left behind", func() bool {
		return len(processesWith(t, marker)) == 0
	})
}

func TestOutputFloodIsCapped(t *testing.T) {
	c := newCluster(t)
	c.node("master", 1, procOpts{}, "--serve")
	c.watch().waitMaster("master", time.Time{}, 10*time.Second)
	p := c.node("submitter", 0, procOpts{input: "head -c 50000000 /dev/zero | tr '\\0' a\n"})
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	out := p.stdout.String()
	if n := strings.Count(out, "a"); n < 1<<20 || n > 1<<20+100 {
		t.Errorf("printed %d bytes of output, want the 1 MiB cap", n)
	}
	if want := fmt.Sprintf("stdout truncated: %d bytes dropped", 50000000-(1<<20)); !strings.Contains(p.stderr.String(), want) {
		t.Errorf("stderr lacks %q", want)
	}
	// The master keeps serving.
	if out, _, code := c.exec("echo", "still here"); code != 0 || out != "still here\n" {
		t.Errorf("after the flood: %q exit %d", out, code)
	}
}

func TestDuplicateNameRefused(t *testing.T) {
	c := newCluster(t)
	c.node("alpha", 1, procOpts{}, "--serve")
	c.watch().waitMaster("alpha", time.Time{}, 10*time.Second)
	dup := c.node("alpha", 2, procOpts{}, "--serve")
	if code := dup.wait(10 * time.Second); code == 0 {
		t.Fatal("duplicate exited 0, want non-zero")
	}
	if errOut := dup.stderr.String(); !strings.Contains(errOut, `name "alpha" is taken`) {
		t.Errorf("stderr %q, want it to say the name is taken", errOut)
	}
	if s := c.status(); s.Master != "alpha" || len(s.Members) != 1 {
		t.Errorf("status %+v, want the first alpha alone and master", s)
	}
}

func TestExecExitCodes(t *testing.T) {
	t.Parallel() // mostly waiting; no tight timing
	c := newCluster(t)
	c.node("master", 1, procOpts{}, "--serve", "--exec-timeout=1s")
	c.watch().waitMaster("master", time.Time{}, 10*time.Second)
	cases := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{"success", []string{"echo hi"}, 0, "hi\n", ""},
		{"one argument is a command line", []string{"printf 'a\\nb\\n' | wc -l | tr -d ' '"}, 0, "2\n", ""},
		{"several arguments are quoted", []string{"sh", "-c", "echo a; echo \"$0\" >&2; exit 3", "it's"}, 3, "a\n", "it's\n"},
		{"timeout", []string{"sleep 5"}, 124, "", "timed out"},
		{"empty command", []string{" "}, 2, "", "no command given"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := c.exec(tc.args...)
			if code != tc.wantCode || out != tc.wantStdout || !strings.Contains(errOut, tc.wantStderr) {
				t.Errorf("got exit %d stdout %q stderr %q, want %d, %q, stderr with %q", code, out, errOut, tc.wantCode, tc.wantStdout, tc.wantStderr)
			}
		})
	}
	t.Run("broker unreachable", func(t *testing.T) {
		addr := freeAddr(t)
		p := start(t, "exec", bins.node, procOpts{}, "exec", "--broker-addr="+addr, "--", "true")
		if code := p.wait(20 * time.Second); code != 125 {
			t.Errorf("exit %d, want 125", code)
		}
		if errOut := p.stderr.String(); !strings.Contains(errOut, addr) || strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
			t.Errorf("stderr %q, want one line naming %s", errOut, addr)
		}
	})
}

// Nodes started without --name on one host each get a name of their own
// (host name and process ID), so the quickstart's terminals all join.
func TestDefaultNamesDiffer(t *testing.T) {
	t.Parallel() // mostly waiting; no tight timing
	c := newCluster(t)
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	var procs []*proc
	for _, prio := range []string{"--priority=100", "--priority=10"} {
		procs = append(procs, start(t, "node "+prio, bins.node, procOpts{}, "--broker-addr="+c.addr, prio, "--serve"))
	}
	c.waitMembers(2)
	for _, m := range c.status().Members {
		if !strings.HasPrefix(m.Name, host+"-") {
			t.Errorf("member %q, want a name of the host name and a process ID", m.Name)
		}
	}
	for _, p := range procs {
		if want := fmt.Sprintf("%s-%d", host, p.cmd.Process.Pid); !strings.Contains(fmt.Sprint(c.status().Members), want) {
			t.Errorf("no member named %s", want)
		}
	}
}
