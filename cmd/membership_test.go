package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"baton/bus"
	"baton/election"
	"baton/messages"
)

// firstSeen is the arrival of the first announcement after since that
// holds, or the zero time.
func (w *watcher) firstSeen(since time.Time, holds func(*messages.Announcement) bool) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.seen {
		if s.at.After(since) && holds(s.a) {
			return s.at
		}
	}
	return time.Time{}
}

func hasMember(a *messages.Announcement, name string) bool {
	return slices.ContainsFunc(a.Members, func(m *messages.Member) bool { return m.Name == name })
}

// With --max-members 2 a third node is told the cluster is full, once,
// and joins within a second of a member leaving; status shows the cap
// and the refusal.
func TestMaxMembers(t *testing.T) {
	t.Parallel() // mostly waiting
	c := newCluster(t, "--max-members=2")
	w := c.watch()
	a := c.node("a", 30, procOpts{}, "--serve")
	c.node("b", 20, procOpts{}, "--serve")
	c.waitMembers(2)
	third := c.node("c", 10, procOpts{}, "--serve")
	eventually(t, 10*time.Second, "c told the cluster is full", func() bool {
		return strings.Contains(third.stderr.String(), "cluster full: 2 of 2 members")
	})
	time.Sleep(time.Second) // it asks again meanwhile, several times
	if n := strings.Count(third.stderr.String(), "cluster full"); n != 1 {
		t.Errorf("c printed %q %d times, want once", "cluster full", n)
	}
	p := start(t, "status", bins.node, procOpts{}, "status", "--broker-addr="+c.addr)
	if code := p.wait(15 * time.Second); code != 0 || !strings.Contains(p.stdout.String(), "members 2/2, 1 registration refused since the broker started") {
		t.Errorf("node status: exit %d, %q", code, p.stdout.String())
	}
	var st election.Status
	p = start(t, "status", bins.node, procOpts{}, "status", "--json", "--broker-addr="+c.addr)
	p.wait(15 * time.Second)
	if err := json.Unmarshal([]byte(p.stdout.String()), &st); err != nil || st.MaxMembers != 2 || st.Refused != 1 || len(st.Members) != 2 {
		t.Errorf("node status --json: %+v (%v), want 2 members of at most 2, 1 refused", st, err)
	}

	// A node stopped while it waits leaves as asked, not as a failure.
	fourth := c.node("d", 5, procOpts{}, "--serve")
	eventually(t, 10*time.Second, "d told the cluster is full", func() bool {
		return strings.Contains(fourth.stderr.String(), "cluster full")
	})
	fourth.signal(syscall.SIGTERM)
	if code := fourth.wait(10 * time.Second); code != 0 {
		t.Errorf("d stopped while waiting: exit %d, want 0", code)
	}

	since := time.Now()
	a.signal(syscall.SIGTERM)
	a.wait(10 * time.Second)
	var left, joined time.Time
	eventually(t, 10*time.Second, "c joins", func() bool {
		left = w.firstSeen(since, func(x *messages.Announcement) bool { return !hasMember(x, "a") })
		joined = w.firstSeen(since, func(x *messages.Announcement) bool { return hasMember(x, "c") })
		return !left.IsZero() && !joined.IsZero()
	})
	t.Logf("c joined %v after a's slot freed", joined.Sub(left).Round(time.Millisecond))
	if joined.Sub(left) > time.Second {
		t.Errorf("c joined %v after a left, want within 1s", joined.Sub(left))
	}
}

// Five nodes racing for two slots never make more than two members.
func TestMaxMembersRace(t *testing.T) {
	t.Parallel() // mostly waiting
	c := newCluster(t, "--max-members=2")
	w := c.watch()
	since := time.Now()
	for i := range 5 {
		c.node(fmt.Sprintf("racer%d", i), int(10+i), procOpts{}, "--serve")
	}
	eventually(t, 10*time.Second, "two members", func() bool {
		return !w.firstSeen(since, func(a *messages.Announcement) bool { return a.MemberCount == 2 }).IsZero()
	})
	time.Sleep(2 * time.Second)
	if over := w.firstSeen(since, func(a *messages.Announcement) bool { return a.MemberCount > 2 }); !over.IsZero() {
		t.Errorf("an announcement at %v counted more than 2 members", over)
	}
	if st := c.status(); len(st.Members) != 2 || st.Refused != 3 {
		t.Errorf("status: %d members, %d refused; want 2 and 3", len(st.Members), st.Refused)
	}
}

// A node of an older protocol is refused, both versions named; nodes of
// other builds that speak the same protocol work together.
func TestProtocolHandshake(t *testing.T) {
	t.Parallel() // mostly waiting
	c := newCluster(t)
	c.status() // the election service answers
	nc, err := bus.Connect(ctxTimeout(t, 10*time.Second), c.conn("old-node"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	old, _ := proto.Marshal(&messages.Register{Name: "old", InstanceId: "old-1", Priority: 1, StartedAt: timestamppb.Now(),
		SessionKey: strings.Repeat("k", 32), Version: "v0.9.0"})
	msg, err := nc.Request(messages.SubjectRegister, old, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var reply messages.RegisterReply
	if err := proto.Unmarshal(msg.Data, &reply); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(reply.Error, `node "old" is version v0.9.0 (protocol 1); this broker is version `) ||
		!strings.Contains(reply.Error, "(protocols 2 to 2): upgrade the node") {
		t.Errorf("an old node's registration: %q, want refused with both versions", reply.Error)
	}
	// The plain build and the race build are other builds, one protocol.
	c.node("new", 2, procOpts{}, "--serve")
	c.nodeBin = bins.plainNode
	c.node("plain", 1, procOpts{}, "--serve")
	c.waitMembers(2)
	if out, stderr, code := c.exec("echo mixed"); code != 0 || out != "mixed\n" {
		t.Errorf("exec across builds: exit %d, %q %q", code, out, stderr)
	}
}

// A command that allocates 500 MiB under a 100 MiB limit fails, and its
// result says why; one within it runs as before.
func TestExecMemoryLimit(t *testing.T) {
	t.Parallel() // mostly waiting
	c := newCluster(t)
	c.node("master", 1, procOpts{}, "--serve", "--exec-memory-limit=100MiB")
	c.watch().waitMaster("master", time.Time{}, 10*time.Second)
	if out, stderr, code := c.exec("echo within"); code != 0 || out != "within\n" {
		t.Errorf("a small command: exit %d, %q %q", code, out, stderr)
	}
	_, stderr, code := c.exec("python3", "-c", "b = bytearray(500 * 1024 * 1024)")
	if code != 1 || !strings.Contains(stderr, "MemoryError") ||
		!strings.Contains(stderr, "ran out of memory under master master's --exec-memory-limit of 100 MiB (exit 1)") {
		t.Errorf("500 MiB under 100 MiB: exit %d, stderr %q", code, stderr)
	}
}
