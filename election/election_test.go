package election_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"baton/bus"
	"baton/bus/bustest"
	"baton/election"
	"baton/internal/testlog"
	"baton/messages"
)

const testTimeout = 400 * time.Millisecond

// startServer starts a NATS server that routes the election's subjects to
// its service account, as the broker's does.
func startServer(t testing.TB) *bus.Server {
	t.Helper()
	return bustest.StartServer(t, func(c *bus.ServerConfig) {
		c.Services, c.Streams = election.ServiceSubjects(), election.StreamSubjects()
	})
}

func startService(t testing.TB, srv *bus.Server, dir string, mutate ...func(*election.ServiceConfig)) *election.Service {
	t.Helper()
	cfg := election.DefaultServiceConfig()
	cfg.HeartbeatTimeout = testTimeout
	cfg.Logger = testlog.Logger(t).With("component", "election")
	for _, m := range mutate {
		m(&cfg)
	}
	store, err := election.OpenFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	s, err := election.NewService(srv, store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

type testMember struct {
	*election.Member
	nc *nats.Conn
}

func newMember(t testing.TB, srv *bus.Server, name string, priority int32) (*testMember, error) {
	t.Helper()
	nc := bustest.Connect(t, srv.Addr())
	cfg := election.DefaultMemberConfig(name)
	cfg.Priority = priority
	cfg.HeartbeatInterval = testTimeout / 4
	cfg.Logger = testlog.Logger(t).With("component", "member", "node", name)
	m, err := election.NewMember(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	if err := m.Start(context.Background()); err != nil {
		return nil, err
	}
	nc.SetReconnectHandler(func(*nats.Conn) { m.Reconnected() })
	return &testMember{m, nc}, nil
}

func mustMember(t testing.TB, srv *bus.Server, name string, priority int32) *testMember {
	t.Helper()
	m, err := newMember(t, srv, name, priority)
	if err != nil {
		t.Fatalf("member %s: %v", name, err)
	}
	return m
}

// waitMaster waits until m has seen an announcement naming master, and
// returns it.
func waitMaster(t testing.TB, m *testMember, master string) *messages.Announcement {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for a := range m.View().Observe(ctx) {
		if a.Master == master {
			return a
		}
	}
	t.Fatalf("master %q never announced; last seen %v", master, m.Current())
	return nil
}

func TestService_ElectsHighestPriority(t *testing.T) {
	srv := startServer(t)
	startService(t, srv, t.TempDir())
	low := mustMember(t, srv, "low", 10)
	high := mustMember(t, srv, "high", 100)
	a := waitMaster(t, low, "high")
	waitMaster(t, high, "high")
	if len(a.Members) != 2 || a.Members[0].Name != "high" || a.Members[1].Name != "low" || a.MemberCount != 2 {
		t.Errorf("members %v, want high then low", a.Members)
	}
}

func TestService_Failover(t *testing.T) {
	cases := []struct {
		name      string
		lose      func(*testMember)
		wantEvent string
	}{
		{"leave", func(m *testMember) {
			if _, err := m.Leave(context.Background(), "test"); err != nil {
				t.Fatal(err)
			}
		}, "alpha left"},
		{"connection closed", func(m *testMember) { m.nc.Close() }, "alpha lost: connection closed"},
		// Beats stop but the connection stays up, as with a hung process.
		{"heartbeat timeout", func(m *testMember) { _ = m.Close(context.Background()) }, "alpha lost: heartbeat timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t)
			startService(t, srv, t.TempDir())
			alpha := mustMember(t, srv, "alpha", 100)
			beta := mustMember(t, srv, "beta", 50)
			before := waitMaster(t, beta, "alpha")
			tc.lose(alpha)
			after := waitMaster(t, beta, "beta")
			if after.Epoch != before.Epoch+1 {
				t.Errorf("epoch %d after %d, want one step", after.Epoch, before.Epoch)
			}
			if after.Event != tc.wantEvent {
				t.Errorf("event %q, want %q", after.Event, tc.wantEvent)
			}
		})
	}
}

func TestService_HeartbeatTimeoutCutsConnection(t *testing.T) {
	srv := startServer(t)
	startService(t, srv, t.TempDir())
	alpha := mustMember(t, srv, "alpha", 100)
	beta := mustMember(t, srv, "beta", 50)
	waitMaster(t, beta, "alpha")
	disconnected := make(chan struct{}, 1)
	alpha.nc.SetDisconnectErrHandler(func(*nats.Conn, error) { disconnected <- struct{}{} })
	_ = alpha.Close(context.Background())
	select {
	case <-disconnected:
	case <-time.After(5 * time.Second):
		t.Fatal("a member declared dead kept its connection")
	}
}

func TestService_Preemption(t *testing.T) {
	srv := startServer(t)
	startService(t, srv, t.TempDir())
	low := mustMember(t, srv, "low", 10)
	before := waitMaster(t, low, "low")
	mustMember(t, srv, "high", 100)
	after := waitMaster(t, low, "high")
	if after.Epoch != before.Epoch+1 || after.Event != "high joined" {
		t.Errorf("epoch %d event %q, want %d and %q", after.Epoch, after.Event, before.Epoch+1, "high joined")
	}
}

func TestService_DuplicateNameRefused(t *testing.T) {
	srv := startServer(t)
	startService(t, srv, t.TempDir())
	mustMember(t, srv, "alpha", 1)
	_, err := newMember(t, srv, "alpha", 2)
	if !errors.Is(err, election.ErrRefused) || !strings.Contains(err.Error(), `"alpha"`) {
		t.Fatalf("got %v, want a refusal naming alpha", err)
	}
}

func TestService_EpochSurvivesRestart(t *testing.T) {
	srv := startServer(t)
	dir := t.TempDir()
	svc := startService(t, srv, dir)
	alpha := mustMember(t, srv, "alpha", 1)
	before := waitMaster(t, alpha, "alpha")
	if err := svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The restarted service does not know alpha: alpha's next beat is told
	// to register again, and alpha is master again at a later epoch.
	startService(t, srv, dir)
	deadline := time.Now().Add(5 * time.Second)
	for {
		a := waitMaster(t, alpha, "alpha")
		if a.Epoch > before.Epoch {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("epoch %d after restart, want above %d", a.Epoch, before.Epoch)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestService_AnnouncesToLateSubscriber(t *testing.T) {
	srv := startServer(t)
	startService(t, srv, t.TempDir())
	alpha := mustMember(t, srv, "alpha", 1)
	waitMaster(t, alpha, "alpha")
	nc, err := srv.Conn("late")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync(messages.SubjectMaster)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := sub.NextMsg(3 * time.Second)
	if err != nil {
		t.Fatalf("no re-published announcement: %v", err)
	}
	var a messages.Announcement
	if err := proto.Unmarshal(msg.Data, &a); err != nil || a.Master != "alpha" {
		t.Fatalf("got %v %v, want master alpha", &a, err)
	}
	resp, err := nc.Request(messages.SubjectMasterGet, nil, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(resp.Data, &a); err != nil || a.Master != "alpha" {
		t.Fatalf("master.get: got %v %v, want master alpha", &a, err)
	}
}

func TestService_BadRegistration(t *testing.T) {
	srv := startServer(t)
	startService(t, srv, t.TempDir())
	nc, err := srv.Conn("bad")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	cases := map[string][]byte{
		"not protobuf": []byte("\xff\xff\xff"),
		"empty":        nil,
		"space in name": func() []byte {
			b, _ := proto.Marshal(&messages.Register{Name: "a b", InstanceId: "i", ClientId: 1})
			return b
		}(),
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			resp, err := nc.Request(messages.SubjectRegister, body, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			var r messages.RegisterReply
			if err := proto.Unmarshal(resp.Data, &r); err != nil || r.Error == "" {
				t.Fatalf("got %v %v, want an error reply", &r, err)
			}
		})
	}
}

// A member that is not master beats without asking for acks most of the
// time; those beats must reach the broker, or it would be evicted.
func TestService_NonMasterStaysAlive(t *testing.T) {
	srv := startServer(t)
	startService(t, srv, t.TempDir())
	master := mustMember(t, srv, "master", 100)
	mustMember(t, srv, "follower", 1)
	before := waitMaster(t, master, "master")
	time.Sleep(10 * testTimeout)
	after := master.Current()
	if after.Epoch != before.Epoch || after.MemberCount != 2 || len(after.Departed) > 0 {
		t.Errorf("after 10 heartbeat timeouts: epoch %d, %d members, departed %v; want epoch %d, 2 members, none departed",
			after.Epoch, after.MemberCount, after.Departed, before.Epoch)
	}
}

func TestService_BadHeartbeat(t *testing.T) {
	srv := startServer(t)
	startService(t, srv, t.TempDir())
	nc, err := srv.Conn("bad")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	unknown, _ := proto.Marshal(&messages.Heartbeat{Name: "ghost", InstanceId: "i", Seq: 7})
	cases := []struct {
		name string
		body []byte
		want func(*messages.HeartbeatAck) bool
	}{
		{"malformed", []byte("\xff\xff"), func(a *messages.HeartbeatAck) bool { return a.Error != "" }},
		{"unknown node", unknown, func(a *messages.HeartbeatAck) bool { return a.Reregister && a.Seq == 7 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := nc.Request(messages.SubjectHeartbeat, tc.body, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			var ack messages.HeartbeatAck
			if err := proto.Unmarshal(resp.Data, &ack); err != nil || !tc.want(&ack) {
				t.Errorf("got %v %v", &ack, err)
			}
		})
	}
}

// The events hook hears joins, refusals, changes of master, leaves and
// losses, in order and never two at once.
func TestService_Events(t *testing.T) {
	srv := startServer(t)
	var (
		mu      sync.Mutex
		events  []election.Event
		running atomic.Int32
		overlap atomic.Bool
	)
	startService(t, srv, t.TempDir(), func(c *election.ServiceConfig) {
		c.Events = func(e election.Event) {
			if running.Add(1) > 1 {
				overlap.Store(true)
			}
			defer running.Add(-1)
			mu.Lock()
			events = append(events, e)
			mu.Unlock()
		}
	})
	alpha := mustMember(t, srv, "alpha", 100)
	beta := mustMember(t, srv, "beta", 50)
	waitMaster(t, beta, "alpha")
	if _, err := newMember(t, srv, "alpha", 1); err == nil {
		t.Fatal("duplicate name admitted")
	}
	alpha.nc.Close()
	waitMaster(t, beta, "beta")
	if _, err := beta.Leave(context.Background(), "test"); err != nil {
		t.Fatal(err)
	}
	waitMaster(t, beta, "")

	want := []string{
		"master changed ", // broker started
		// Both join within the start-up wait, before the first election.
		"joined alpha", "joined beta", "master changed alpha", "refused alpha",
		"lost alpha CAUSE_CONNECTION_CLOSED", "master changed beta", "left beta", "master changed ",
	}
	var got []string
	eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		got = got[:0]
		for _, e := range events {
			line := fmt.Sprintf("%s %s", e.Kind, e.Node)
			switch e.Kind {
			case election.EventMasterChanged:
				line = fmt.Sprintf("%s %s", e.Kind, e.Master)
			case election.EventLost:
				line += " " + e.Cause.String()
			}
			got = append(got, line)
		}
		return len(got) >= len(want)
	})
	if strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Errorf("events:\n got  %q\n want %q", got, want)
	}
	if overlap.Load() {
		t.Error("the events hook ran twice at once")
	}
}

// A Close whose context has already expired still releases the data
// directory and the connections, in the background; a second Close waits
// for that.
func TestService_CloseAfterExpiredContext(t *testing.T) {
	srv := startServer(t)
	dir := t.TempDir()
	svc := startService(t, srv, dir)
	mustMember(t, srv, "alpha", 1)
	expired, cancel := context.WithCancel(context.Background())
	cancel()
	_ = svc.Close(expired)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := svc.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	store, err := election.OpenFileStore(dir)
	if err != nil {
		t.Fatalf("data directory still held after Close: %v", err)
	}
	store.Close()
}

// Close is safe without Start and after a failed Start, and releases the
// store either way.
func TestService_CloseWithoutStart(t *testing.T) {
	srv := startServer(t)
	for name, start := range map[string]bool{"never started": false, "failed start": true} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			store, err := election.OpenFileStore(dir)
			if err != nil {
				t.Fatal(err)
			}
			svc, err := election.NewService(srv, store, election.DefaultServiceConfig())
			if err != nil {
				t.Fatal(err)
			}
			if start {
				// A corrupt epoch makes Start fail.
				if err := os.WriteFile(filepath.Join(dir, "epoch"), []byte("x"), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := svc.Start(context.Background()); err == nil {
					t.Fatal("Start with a corrupt epoch: got nil error")
				}
			}
			for range 2 {
				if err := svc.Close(context.Background()); err != nil {
					t.Fatalf("Close: %v", err)
				}
			}
			if store, err := election.OpenFileStore(dir); err != nil {
				t.Errorf("data directory still held: %v", err)
			} else {
				store.Close()
			}
		})
	}
}

// Close is safe after a failed Start, and twice.
func TestMember_CloseAfterFailedStart(t *testing.T) {
	srv := startServer(t) // no election service: nobody answers
	cfg := election.DefaultMemberConfig("lonely")
	cfg.JoinTimeout = 200 * time.Millisecond
	cfg.Logger = testlog.Logger(t)
	m, err := election.NewMember(bustest.Connect(t, srv.Addr()), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err == nil {
		t.Fatal("Start without a broker's election service: got nil error")
	}
	for range 2 {
		if err := m.Close(context.Background()); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
}

// gatedStore is a FileStore whose Save waits while the gate is closed.
type gatedStore struct {
	*election.FileStore
	mu   sync.Mutex
	gate chan struct{}
}

func (s *gatedStore) Save(ctx context.Context, epoch uint64) error {
	s.mu.Lock()
	gate := s.gate
	s.mu.Unlock()
	if gate != nil {
		<-gate
	}
	return s.FileStore.Save(ctx, epoch)
}

// While an epoch is being saved (a slow disk), heartbeats are still
// answered and master.get still reports what was last announced: the
// lock they need is never held across the save.
func TestService_SlowSaveBlocksNoHeartbeat(t *testing.T) {
	srv := startServer(t)
	fs, err := election.OpenFileStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	store := &gatedStore{FileStore: fs}
	cfg := election.DefaultServiceConfig()
	cfg.HeartbeatTimeout = testTimeout
	cfg.Logger = testlog.Logger(t)
	svc, err := election.NewService(srv, store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	low := mustMember(t, srv, "low", 1)
	before := waitMaster(t, low, "low")

	gate := make(chan struct{})
	store.mu.Lock()
	store.gate = gate
	store.mu.Unlock()
	joined := make(chan error, 1)
	go func() { _, err := newMember(t, srv, "high", 100); joined <- err }() // a new master: its epoch is saved

	nc := bustest.Connect(t, srv.Addr())
	beat, _ := proto.Marshal(&messages.Heartbeat{Name: "ghost", InstanceId: "i", Seq: 1})
	time.Sleep(100 * time.Millisecond) // the save has begun
	if _, err := nc.Request(messages.SubjectHeartbeat, beat, time.Second); err != nil {
		t.Errorf("heartbeat during a slow save: %v, want an ack", err)
	}
	resp, err := nc.Request(messages.SubjectMasterGet, nil, time.Second)
	var a messages.Announcement
	if err == nil {
		err = proto.Unmarshal(resp.Data, &a)
	}
	if err != nil || a.Master != "low" || a.Epoch != before.Epoch {
		t.Errorf("master.get during a slow save: %v %v, want master low at epoch %d (the new epoch is not durable yet)", &a, err, before.Epoch)
	}
	close(gate)
	if err := <-joined; err != nil {
		t.Fatal(err)
	}
	waitMaster(t, low, "high")
}

// With a slow save, a node that becomes master and is lost before the save
// ends is still reported in order: joined, master, lost, next master.
func TestService_EventsInOrderWithSlowSave(t *testing.T) {
	srv := startServer(t)
	fs, err := election.OpenFileStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	store := &gatedStore{FileStore: fs}
	var mu sync.Mutex
	var got []string
	cfg := election.DefaultServiceConfig()
	cfg.HeartbeatTimeout = testTimeout
	cfg.Logger = testlog.Logger(t)
	cfg.Events = func(e election.Event) {
		mu.Lock()
		defer mu.Unlock()
		if e.Kind == election.EventMasterChanged {
			got = append(got, "master "+e.Master)
		} else {
			got = append(got, e.Kind.String()+" "+e.Node)
		}
	}
	svc, err := election.NewService(srv, store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	low := mustMember(t, srv, "low", 1)
	waitMaster(t, low, "low")

	gate := make(chan struct{})
	store.mu.Lock()
	store.gate = gate
	store.mu.Unlock()
	nc := bustest.Connect(t, srv.Addr())
	mcfg := election.DefaultMemberConfig("high")
	mcfg.Priority, mcfg.Logger = 100, testlog.Logger(t)
	high, err := election.NewMember(nc, mcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = high.Close(context.Background()) })
	startCtx, cancelStart := context.WithCancel(context.Background())
	started := make(chan struct{})
	go func() {
		defer close(started)
		_ = high.Start(startCtx) // fails: its connection is closed below
	}()
	defer func() {
		cancelStart()
		<-started
	}()
	time.Sleep(200 * time.Millisecond) // high registered; its epoch is being saved
	nc.Close()                         // and high is lost meanwhile
	time.Sleep(200 * time.Millisecond)
	close(gate)
	waitMaster(t, low, "low")

	want := []string{"joined high", "master high", "lost high", "master low"}
	eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= 3+len(want) // started, joined low, master low first
	})
	mu.Lock()
	defer mu.Unlock()
	if tail := strings.Join(got[3:], "; "); tail != strings.Join(want, "; ") {
		t.Errorf("events after low became master: %q, want %q", got[3:], want)
	}
}
