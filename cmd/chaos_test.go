package e2e

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"baton/messages"
)

var (
	chaosSteps = flag.Int("chaos.steps", 12, "random fault steps TestChaos runs; a soak runs hundreds, e.g. -chaos.steps=300 -timeout=2h")
	chaosSeed  = flag.Uint64("chaos.seed", 0, "seed of TestChaos's random steps; 0 picks one (logged, to replay a failure)")
)

// TestChaos streams commands from two nodes while random faults hit the
// cluster: crashes, hangs and resumes, graceful leaves, joins, broker
// crashes and restarts. Then it checks the invariants: every command got
// exactly one outcome (a result or a clear error), none ran twice, a
// command reported "no master" never ran, epochs only went up, and no
// process was left behind.
func TestChaos(t *testing.T) {
	seed := *chaosSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("seed %d (replay with -chaos.seed=%d), %d steps", seed, seed, *chaosSteps)
	rng := rand.New(rand.NewPCG(seed, seed))
	dir := t.TempDir()
	log := filepath.Join(dir, "side-effects")

	c := newCluster(t)
	w := c.watch()
	prio := map[string]int{"n1": 10, "n2": 20, "n3": 30, "n4": 40}
	names := []string{"n1", "n2", "n3", "n4"}
	servers := map[string]*proc{}
	up := func(name string) { servers[name] = c.node(name, prio[name], procOpts{dir: dir}, "--serve") }
	for _, n := range names {
		up(n)
	}
	w.waitMaster("n4", time.Time{}, 15*time.Second)

	type submitter struct {
		p    *proc
		cmds []string
	}
	subs := []*submitter{
		{p: c.node("s1", 0, procOpts{stdin: true, dir: dir}, "--json")},
		{p: c.node("s2", 0, procOpts{stdin: true, dir: dir}, "--json")},
	}
	stop := make(chan struct{})
	var streaming sync.WaitGroup
	for i, s := range subs {
		streaming.Go(func() {
			tick := time.NewTicker(25 * time.Millisecond)
			defer tick.Stop()
			for n := 1; ; n++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				cmd := fmt.Sprintf("echo %d-%d >> %s", i, n, log)
				if n%5 == 0 {
					// Some commands are in flight for a while when faults hit.
					cmd = "sleep 0.5; " + cmd
				}
				s.cmds = append(s.cmds, cmd)
				s.p.send(cmd)
			}
		})
	}

	live := func() []string {
		var l []string
		for _, n := range names {
			if servers[n] != nil {
				l = append(l, n)
			}
		}
		return l
	}
	pick := func(l []string) string { return l[rng.IntN(len(l))] }
	pause := func(lo, hi time.Duration) { time.Sleep(lo + time.Duration(rng.Int64N(int64(hi-lo)))) }
	steps := map[string]int{}
	for range *chaosSteps {
		l := live()
		var down []string
		for _, n := range names {
			if servers[n] == nil {
				down = append(down, n)
			}
		}
		kind := []string{"kill -9", "hang and resume", "leave", "join", "broker kill -9", "broker restart"}[rng.IntN(6)]
		switch {
		case kind == "join" && len(down) == 0, kind != "join" && !strings.HasPrefix(kind, "broker") && len(l) <= 1:
			kind = "pause"
		}
		steps[kind]++
		switch kind {
		case "kill -9":
			n := pick(l)
			servers[n].signal(syscall.SIGKILL)
			servers[n].wait(10 * time.Second)
			servers[n] = nil
		case "hang and resume":
			n := pick(l)
			servers[n].signal(syscall.SIGSTOP)
			pause(200*time.Millisecond, 2500*time.Millisecond)
			servers[n].signal(syscall.SIGCONT)
		case "leave":
			n := pick(l)
			servers[n].signal([]syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGALRM}[rng.IntN(3)])
			if code := servers[n].wait(20 * time.Second); code != 0 {
				t.Errorf("%s exited %d after leaving, want 0", n, code)
			}
			servers[n] = nil
		case "join":
			up(pick(down))
		case "broker kill -9", "broker restart":
			sig := syscall.SIGKILL
			if kind == "broker restart" {
				sig = syscall.SIGTERM
			}
			c.broker.signal(sig)
			c.broker.wait(10 * time.Second)
			pause(0, 500*time.Millisecond)
			c.startBroker()
		case "pause":
		}
		pause(100*time.Millisecond, 800*time.Millisecond)
	}
	// Settle: every server up again, a master elected, then stop streaming.
	for _, n := range names {
		if servers[n] == nil {
			up(n)
		}
	}
	w.waitMaster("n4", time.Now().Add(-time.Second), 20*time.Second)
	time.Sleep(500 * time.Millisecond)
	close(stop)
	streaming.Wait()

	results := make([]map[string]messages.ResultJSON, len(subs))
	for i, s := range subs {
		s.p.stdin.Close()
		if code := s.p.wait(60 * time.Second); code != 0 {
			t.Errorf("%s exited %d, want 0", s.p.name, code)
		}
		results[i] = jsonResults(t, s.p.stdout.String())
	}
	// Every result is in: the side effects are final.
	outcomes := map[string]int{}
	ran := map[string]int{}
	effects, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range strings.Fields(string(effects)) {
		ran[tok]++
		if ran[tok] > 1 {
			t.Errorf("command %s ran %d times", tok, ran[tok])
		}
	}
	total := 0
	for i, s := range subs {
		res := results[i]
		if len(res) != len(s.cmds) {
			t.Errorf("%s: %d results for %d commands", s.p.name, len(res), len(s.cmds))
		}
		for _, cmd := range s.cmds {
			total++
			r, ok := res[cmd]
			tok := strings.Fields(strings.TrimPrefix(cmd, "sleep 0.5; "))[1]
			switch {
			case !ok:
				t.Errorf("%s: no outcome for %q", s.p.name, cmd)
			case r.Error == "" && r.ExitCode == 0:
				outcomes["ok"]++
				if ran[tok] != 1 {
					t.Errorf("%q reported done but ran %d times", cmd, ran[tok])
				}
			case r.Error == "" || strings.Contains(r.Error, "\n"):
				t.Errorf("%q: unclear outcome %+v", cmd, r)
			default:
				kind := r.Error
				if i := strings.Index(kind, ":"); i > 0 {
					kind = kind[:i]
				}
				outcomes["error: "+kind]++
				if kind == "no master available" && ran[tok] != 0 {
					t.Errorf("%q reported %q but ran", cmd, r.Error)
				}
			}
		}
	}
	var last uint64
	w.mu.Lock()
	for _, s := range w.seen {
		if s.a.Epoch < last {
			t.Errorf("epoch went back from %d to %d", last, s.a.Epoch)
		}
		last = s.a.Epoch
	}
	w.mu.Unlock()
	for _, p := range servers {
		p.signal(syscall.SIGTERM)
		p.wait(20 * time.Second)
	}
	if left := processesWith(t, dir); len(left) > 0 {
		t.Errorf("processes left behind: %v", left)
	}
	var summary []string
	for k, v := range outcomes {
		summary = append(summary, fmt.Sprintf("%s: %d", k, v))
	}
	sort.Strings(summary)
	t.Logf("steps %v; %d commands, epochs up to %d; outcomes: %s", steps, total, last, strings.Join(summary, ", "))
}
