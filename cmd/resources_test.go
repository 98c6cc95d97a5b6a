package e2e

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"baton/bus"
	"baton/election"
	"baton/messages"
)

// clockTicks is Linux's USER_HZ, the unit of CPU times in /proc/PID/stat.
const clockTicks = 100

// cpuTime is the CPU time a process has used so far.
func cpuTime(t testing.TB, pid int) time.Duration {
	t.Helper()
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		t.Fatal(err)
	}
	// utime and stime are fields 14 and 15; count after the command name.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
	utime, _ := strconv.Atoi(f[11])
	stime, _ := strconv.Atoi(f[12])
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// rss is a process's resident set size in bytes.
func rss(t testing.TB, pid int) int {
	t.Helper()
	status, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.Atoi(f[1])
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// A broker keeps 1,000 members (simulated by `bench members`, each with its
// own connection and the real election.Member) heartbeating at the default rate: none is
// evicted and the master never changes. The figures the issue sets targets
// for (broker under 10 % of one core and 100 MB, idle node under 30 MB) are
// printed here and judged by the benchmark (cmd/bench), since CPU shares on
// a shared machine are no pass/fail signal. Built without the race detector.
func TestResources(t *testing.T) {
	if testing.Short() {
		t.Skip("measures for several seconds")
	}
	c := &cluster{t: t, addr: freeAddr(t), dataDir: filepath.Join(t.TempDir(), "broker.data"), brokerBin: bins.plainBroker, nodeBin: bins.plainNode}
	c.startBroker()
	w := c.watch()
	const members = 1000
	// The members run in a process of their own, built without the race
	// detector like the broker, as real nodes would be.
	sim := start(t, "members", bins.plainBench, procOpts{}, "members", "--broker-addr="+c.addr, "--count="+strconv.Itoa(members))
	eventually(t, 60*time.Second, "simulated members registered", func() bool {
		time.Sleep(100 * time.Millisecond)
		return strings.HasPrefix(sim.stdout.String(), "ready")
	})
	// Each status lists every member, so ask rarely, on one connection.
	status, err := bus.Connect(context.Background(), c.conn("resources"))
	if err != nil {
		t.Fatal(err)
	}
	defer status.Close()
	var settled *messages.Announcement
	eventually(t, 30*time.Second, "all members registered and a master elected", func() bool {
		time.Sleep(250 * time.Millisecond)
		a, err := election.Get(ctxTimeout(t, 5*time.Second), status)
		settled = a
		return err == nil && a.MemberCount == members && a.Master == "sim-999"
	})
	time.Sleep(2 * time.Second) // let the join storm's garbage go

	pid := c.broker.cmd.Process.Pid
	const window = 5 * time.Second
	from := time.Now()
	before := cpuTime(t, pid)
	time.Sleep(window)
	share := float64(cpuTime(t, pid)-before) / float64(window)
	brokerRSS := rss(t, pid)

	a, err := election.Get(ctxTimeout(t, 5*time.Second), status)
	if err != nil {
		t.Fatal(err)
	}
	if a.MemberCount != members || a.Epoch != settled.Epoch {
		t.Errorf("after %v: %d members at epoch %d, want all %d still at epoch %d", window, a.MemberCount, a.Epoch, members, settled.Epoch)
	}
	w.mu.Lock()
	for _, s := range w.seen {
		if s.at.After(from) && len(s.a.Departed) > 0 {
			t.Errorf("members departed under steady load: %v", s.a.Departed)
		}
	}
	w.mu.Unlock()

	node := start(t, "idle", bins.plainNode, procOpts{}, "--broker-addr="+c.addr, "--name=idle", "--serve")
	eventually(t, 10*time.Second, "idle node registered", func() bool {
		time.Sleep(250 * time.Millisecond)
		a, err := election.Get(ctxTimeout(t, 5*time.Second), status)
		return err == nil && a.MemberCount == members+1
	})
	time.Sleep(2 * time.Second)
	nodeRSS := rss(t, node.cmd.Process.Pid)

	t.Logf("broker with %d members: %.1f%% of one core (target under 10%%), RSS %.1f MB (target under 100); idle node RSS %.1f MB (target under 30)",
		members, share*100, float64(brokerRSS)/1e6, float64(nodeRSS)/1e6)
}
