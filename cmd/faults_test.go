package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"baton/internal/procs"
	"baton/messages"
)

// A requester whose command runs on a master that is then lost gets an
// error within a second of the loss; a resumed master's late result
// carries its old epoch and is reported as such.
func TestLostMasterFailsInFlightCommand(t *testing.T) {
	cases := []struct {
		name   string
		sig    syscall.Signal
		resume bool
	}{
		{"kill -9", syscall.SIGKILL, false},
		{"SIGSTOP then SIGCONT", syscall.SIGSTOP, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			w := c.watch()
			alpha := c.node("alpha", 100, procOpts{}, "--serve")
			w.waitMaster("alpha", time.Time{}, 10*time.Second)
			beta := c.node("beta", 10, procOpts{stdin: true})
			c.waitMembers(2)
			beta.send("sleep 2; echo finished")
			time.Sleep(300 * time.Millisecond) // running on alpha now
			alpha.signal(tc.sig)
			lostAt, epoch := w.waitMaster("beta", time.Time{}, 10*time.Second)
			eventually(t, 5*time.Second, "beta reports the loss", func() bool {
				return strings.Contains(beta.stdout.String(), "master alpha was lost while running the command")
			})
			if d := time.Since(lostAt); d > time.Second {
				t.Errorf("error reported %v after the loss was announced, want within a second", d)
			}
			if tc.resume {
				alpha.signal(syscall.SIGCONT)
				eventually(t, 10*time.Second, "late result reported", func() bool {
					errOut := beta.stderr.String()
					return strings.Contains(errOut, "late result ignored") && strings.Contains(errOut, fmt.Sprintf("epoch=%d", epoch-1))
				})
				if strings.Contains(beta.stdout.String(), "\nfinished\n") {
					t.Errorf("the late result was printed as a result: %q", beta.stdout.String())
				}
			}
		})
	}
}

// A master declared dead while hung is cut off: when it resumes it
// re-registers, and takes no command while another node is master.
func TestResumedMasterTakesNoCommands(t *testing.T) {
	c := newCluster(t)
	w := c.watch()
	alpha := c.masterAndStandby(w)
	alpha.signal(syscall.SIGSTOP)
	stopped := time.Now()
	betaAt, _ := w.waitMaster("beta", stopped, 10*time.Second)
	alpha.signal(syscall.SIGCONT)
	// Back as a member, and (highest priority) master again: a new epoch.
	_, epoch := w.waitMaster("alpha", betaAt, 10*time.Second)
	var wg sync.WaitGroup
	ran := make([]string, 10)
	for i := range ran {
		wg.Go(func() {
			out, _, code := c.exec("echo $BATON_E2E_NODE")
			ran[i] = fmt.Sprintf("%s/%d", strings.TrimSpace(out), code)
		})
	}
	wg.Wait()
	for _, r := range ran {
		if r != "alpha/0" {
			t.Errorf("a command after alpha's return (epoch %d) ran as %q, want alpha/0", epoch, r)
		}
	}
	// It serves under the epoch the broker announced, and said nothing
	// alarming on the way back.
	p := c.node("submitter", 0, procOpts{input: "true\n"}, "--json")
	if code := p.wait(20 * time.Second); code != 0 {
		t.Fatalf("submitter exited %d", code)
	}
	if r := jsonResults(t, p.stdout.String())["true"]; r.Master != "alpha" || r.Epoch != epoch {
		t.Errorf("result from %s at epoch %d, want alpha at %d", r.Master, r.Epoch, epoch)
	}
	if log := alpha.stderr.String(); strings.Contains(log, "level=ERROR") {
		t.Errorf("alpha logged an error on its way back:\n%s", log)
	}
	if last := lastMatch(alpha.stderr.String(), "serving as master"); !strings.Contains(last, fmt.Sprintf("epoch=%d", epoch)) {
		t.Errorf("alpha's last serving line is %q, want epoch=%d", last, epoch)
	}
}

// lastMatch returns the last line of log that contains s.
func lastMatch(log, s string) string {
	last := ""
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, s) {
			last = l
		}
	}
	return last
}

// A master that leaves while it runs a command finishes it without ever
// being elected again, and a request sent during the leave goes to the
// successor as fast as after any planned handover.
func TestLeavingMasterIsNotElectedAgain(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			c := newCluster(t)
			w := c.watch()
			alpha := c.masterAndStandby(w)
			_, epoch := w.waitMaster("alpha", time.Time{}, time.Second)
			s := c.node("submitter", 0, procOpts{stdin: true}, "--json")
			c.waitMembers(3)
			eventually(t, 5*time.Second, "alpha serving", func() bool { return strings.Contains(alpha.stderr.String(), "serving as master") })
			s.send("sleep 2; echo $BATON_E2E_NODE")
			time.Sleep(300 * time.Millisecond) // running on alpha now
			left := time.Now()
			alpha.signal(sig)
			w.waitMaster("beta", left, 5*time.Second)
			s.send("echo $BATON_E2E_NODE during the leave")
			if code := alpha.wait(10 * time.Second); code != 0 {
				t.Errorf("alpha exited %d, want 0", code)
			}
			time.Sleep(500 * time.Millisecond)
			s.stdin.Close()
			if code := s.wait(20 * time.Second); code != 0 {
				t.Fatalf("submitter exited %d", code)
			}
			res := jsonResults(t, s.stdout.String())
			if r := res["sleep 2; echo $BATON_E2E_NODE"]; r.Stdout != "alpha\n" || r.Error != "" {
				t.Errorf("the command alpha ran while leaving: %+v, want its output alpha", r)
			}
			if r := res["echo $BATON_E2E_NODE during the leave"]; r.Stdout != "beta during the leave\n" || r.DurationMs > 1000 {
				t.Errorf("the command sent during the leave: %+v, want it run on beta", r)
			}
			w.mu.Lock()
			defer w.mu.Unlock()
			for _, a := range w.seen {
				if a.at.After(left) && a.a.Master == "alpha" {
					t.Errorf("alpha was named master again after it left: epoch %d (%s)", a.a.Epoch, a.a.Event)
				}
				if a.a.Epoch > epoch+1 {
					t.Errorf("epoch %d announced (%s); only one change of master (to %d) happened", a.a.Epoch, a.a.Event, epoch+1)
					break
				}
			}
		})
	}
}

// Commands stream from two nodes while the master role moves by every
// planned means; not one command may fail, and each runs exactly once.
func TestPlannedHandoversLoseNothing(t *testing.T) {
	c := newCluster(t)
	w := c.watch()
	log := filepath.Join(t.TempDir(), "side-effects")
	servers := map[string]*proc{}
	serve := func(name string, prio int) {
		servers[name] = c.node(name, prio, procOpts{}, "--serve")
	}
	serve("sa", 10)
	serve("sb", 20)
	w.waitMaster("sb", time.Time{}, 10*time.Second)

	type submitter struct {
		p    *proc
		sent int
	}
	subs := []*submitter{{p: c.node("s1", 0, procOpts{stdin: true}, "--json")}, {p: c.node("s2", 0, procOpts{stdin: true}, "--json")}}
	stop := make(chan struct{})
	var streaming sync.WaitGroup
	for i, s := range subs {
		streaming.Go(func() {
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					s.sent++
					s.p.send(fmt.Sprintf("echo %d-%d >> %s", i, s.sent, log))
				}
			}
		})
	}
	step := func(what string, act func(), master string) {
		t.Helper()
		t0 := time.Now()
		act()
		at, epoch := w.waitMaster(master, t0, 15*time.Second)
		t.Logf("%s: %s master at epoch %d after %v", what, master, epoch, at.Sub(t0).Round(time.Millisecond))
		time.Sleep(500 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	step("higher priority joins", func() { serve("sc", 30) }, "sc")
	step("master SIGTERM", func() { servers["sc"].signal(syscall.SIGTERM) }, "sb")
	step("master SIGINT", func() { servers["sb"].signal(syscall.SIGINT) }, "sa")
	step("higher priority joins", func() { serve("sd", 40) }, "sd")
	step("master SIGALRM", func() { servers["sd"].signal(syscall.SIGALRM) }, "sa")
	// A planned broker restart (SIGTERM) first announces no master. A
	// broker crash is not a planned handover: a request inside it when it
	// dies is lost, and reported (see TestChaos).
	step("broker SIGTERM and restart", func() {
		c.broker.signal(syscall.SIGTERM)
		c.broker.wait(10 * time.Second)
		c.startBroker()
	}, "sa")
	close(stop)
	streaming.Wait()

	for _, name := range []string{"sc", "sb", "sd"} {
		if code := servers[name].wait(10 * time.Second); code != 0 {
			t.Errorf("%s exited %d after its signal, want 0", name, code)
		}
	}
	results := make([]map[string]messages.ResultJSON, len(subs))
	for i, s := range subs {
		s.p.stdin.Close()
		if code := s.p.wait(30 * time.Second); code != 0 {
			t.Errorf("%s exited %d, want 0", s.p.name, code)
		}
		results[i] = jsonResults(t, s.p.stdout.String())
	}
	// Every result is in: the side effects are final.
	effects, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, tok := range strings.Fields(string(effects)) {
		count[tok]++
	}
	failed := 0
	for i, s := range subs {
		res := results[i]
		if len(res) != s.sent {
			t.Errorf("%s: %d results for %d commands", s.p.name, len(res), s.sent)
		}
		for n := 1; n <= s.sent; n++ {
			tok := fmt.Sprintf("%d-%d", i, n)
			r, ok := res[fmt.Sprintf("echo %s >> %s", tok, log)]
			switch {
			case !ok:
				t.Errorf("%s: no result for command %s", s.p.name, tok)
			case r.Error != "" || r.ExitCode != 0:
				failed++
				t.Errorf("%s: command %s failed: %+v", s.p.name, tok, r)
			}
			if count[tok] != 1 {
				t.Errorf("command %s ran %d times, want once", tok, count[tok])
			}
		}
	}
	t.Logf("%d and %d commands streamed through 6 handovers; %d failed", subs[0].sent, subs[1].sent, failed)
}

func TestCLIErrors(t *testing.T) {
	c := newCluster(t)
	cases := []struct {
		name     string
		bin      string
		args     []string
		wantCode int
		want     string
	}{
		// Usage errors: exit 2, with a hint.
		{"non-integer priority", bins.node, []string{"--priority=high"}, 2, "--priority"},
		{"negative priority", bins.node, []string{"--broker-addr=" + c.addr, "--priority=-1", "--serve"}, 2, "priority -1 is outside the range 0 to 2147483647"},
		{"bad duration", bins.node, []string{"--exec-timeout=soon"}, 2, "--exec-timeout"},
		{"zero max parallel", bins.node, []string{"--broker-addr=" + c.addr, "--max-parallel=0", "--serve"}, 2, "max parallel 0 must be positive"},
		{"unknown flag", bins.node, []string{"--frobnicate"}, 2, "unknown flag --frobnicate"},
		{"bad broker address", bins.node, []string{"--broker-addr=garbage", "--serve"}, 2, "want host:port"},
		{"exec without command", bins.node, []string{"exec", "--broker-addr=" + c.addr}, 2, "(see '" + bins.node + " exec --help')"},
		{"exec unknown flag", bins.node, []string{"exec", "--broker-addr=" + c.addr, "--bogus", "--", "true"}, 2, "unknown flag --bogus"},
		{"broker bad address", bins.broker, []string{"127.0.0.1:99999", "--data-dir", t.TempDir()}, 2, "port"},
		{"broker zero heartbeat timeout", bins.broker, []string{freeAddr(t), "--data-dir", t.TempDir(), "--heartbeat-timeout=0s"}, 2, "heartbeat timeout 0s must be positive"},
		// Failures: exit 1.
		{"unreachable broker", bins.node, []string{"--broker-addr=" + freeAddr(t), "--serve"}, 1, "broker unreachable"},
		{"broker address in use", bins.broker, []string{c.addr, "--data-dir", t.TempDir()}, 1, "address already in use"},
		{"broker data dir in use", bins.broker, []string{freeAddr(t), "--data-dir", c.dataDir}, 1, "in use by another broker"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := start(t, tc.name, tc.bin, procOpts{}, tc.args...)
			code := p.wait(20 * time.Second)
			errOut := strings.TrimSpace(p.stderr.String())
			if code != tc.wantCode {
				t.Errorf("exit %d, want %d", code, tc.wantCode)
			}
			last := errOut[strings.LastIndexByte(errOut, '\n')+1:]
			if !strings.Contains(last, tc.want) {
				t.Errorf("last stderr line %q, want one naming %q", last, tc.want)
			}
			if tc.name == "broker data dir in use" && strings.Contains(errOut, "Starting nats-server") {
				t.Errorf("the broker started NATS before it found its data directory in use:\n%s", errOut)
			}
		})
	}
}

// A master whose slots keep both cores busy keeps its role: heartbeats do
// not starve.
func TestNoFalseFailoverUnderLoad(t *testing.T) {
	c := newCluster(t)
	w := c.watch()
	c.node("alpha", 100, procOpts{}, "--serve", "--max-parallel=4", "--exec-timeout=15s")
	c.node("beta", 10, procOpts{}, "--serve")
	_, epoch := w.waitMaster("alpha", time.Time{}, 10*time.Second)
	spin := "timeout 10 sh -c 'while :; do :; done'"
	p := c.node("load", 0, procOpts{input: strings.Repeat(spin+"\n", 4)}, "--json", "--timeout=15s")
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, r := range jsonResults(t, p.stdout.String()) {
		if r.Master != "alpha" || r.Epoch != epoch || r.ExitCode != 124 || r.DurationMs < 9900 {
			t.Errorf("got %+v, want 10 s of spinning on alpha at epoch %d (exit 124 from timeout(1))", r, epoch)
		}
	}
	if s := c.status(); s.Master != "alpha" || s.Epoch != epoch {
		t.Errorf("after 10 s of load: master %s at epoch %d, want alpha at %d", s.Master, s.Epoch, epoch)
	}
}

// A master killed with SIGKILL takes its commands with it: its reaper
// kills every process group it started.
func TestKilledMasterLeavesNoCommand(t *testing.T) {
	c := newCluster(t)
	w := c.watch()
	alpha := c.masterAndStandby(w)
	eventually(t, 5*time.Second, "alpha serving", func() bool { return strings.Contains(alpha.stderr.String(), "serving as master") })
	pidFile := filepath.Join(t.TempDir(), "pid")
	exec := start(t, "exec", bins.node, procOpts{}, "exec", "--broker-addr="+c.addr, "--timeout=30s", "--",
		"sh -c 'echo $$ > "+pidFile+"; exec sleep 21'; echo done")
	var pid int
	eventually(t, 10*time.Second, "the command started", func() bool {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	})
	alpha.signal(syscall.SIGKILL)
	killed := time.Now()
	eventually(t, 5*time.Second, "the command gone", func() bool { return !procs.Running(pid) })
	t.Logf("the command was gone %v after its master's SIGKILL", time.Since(killed).Round(time.Millisecond))
	if code := exec.wait(10 * time.Second); code != 125 || !strings.Contains(exec.stderr.String(), "master alpha was lost") {
		t.Errorf("exec exited %d (%s), want 125 and the loss reported", code, exec.stderr.String())
	}
}

// With the broker gone, a command typed at a node is reported as not sent
// because the broker is unreachable, with its address.
func TestBrokerDownIsSaid(t *testing.T) {
	c := newCluster(t)
	w := c.watch()
	c.node("alpha", 100, procOpts{}, "--serve")
	w.waitMaster("alpha", time.Time{}, 10*time.Second)
	s := c.node("submitter", 0, procOpts{stdin: true}, "--json")
	c.waitMembers(2)
	c.broker.signal(syscall.SIGKILL)
	c.broker.wait(5 * time.Second)
	time.Sleep(200 * time.Millisecond) // the nodes see the connection close
	s.send("true")
	s.stdin.Close()
	if code := s.wait(20 * time.Second); code != 0 {
		t.Fatalf("submitter exited %d", code)
	}
	r := jsonResults(t, s.stdout.String())["true"]
	if want := "broker unreachable at " + c.addr; !strings.Contains(r.Error, want) || !strings.Contains(r.Error, "the command did not run") {
		t.Errorf("error %q, want one saying %q and that the command did not run", r.Error, want)
	}
}
