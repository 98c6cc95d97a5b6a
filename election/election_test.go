package election_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"baton/bus"
	"baton/bus/bustest"
	"baton/election"
	"baton/messages"
)

const testTimeout = 400 * time.Millisecond

func startService(t testing.TB, srv *bus.Server, dir string) *election.Service {
	t.Helper()
	cfg := election.DefaultServiceConfig()
	cfg.DataDir = dir
	cfg.HeartbeatTimeout = testTimeout
	cfg.Logger = bustest.Logger(t).With("component", "election")
	s, err := election.NewService(srv, cfg)
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
	nc, err := bus.Connect(context.Background(), srv.Addr(), name, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	cfg := election.DefaultMemberConfig(name)
	cfg.Priority = priority
	cfg.HeartbeatInterval = testTimeout / 4
	cfg.Logger = bustest.Logger(t).With("component", "member", "node", name)
	m, err := election.NewMember(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		return nil, err
	}
	nc.SetReconnectHandler(func(*nats.Conn) { m.Reconnected() })
	t.Cleanup(m.Close)
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
	deadline := time.After(5 * time.Second)
	for {
		if a := m.Current(); a != nil && a.Master == master {
			return a
		}
		select {
		case <-m.Changes():
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatalf("master %q never announced; last seen %v", master, m.Current())
		}
	}
}

func TestService_ElectsHighestPriority(t *testing.T) {
	srv := bustest.StartServer(t)
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
		{"heartbeat timeout", func(m *testMember) { m.Close() }, "alpha lost: heartbeat timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := bustest.StartServer(t)
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
	srv := bustest.StartServer(t)
	startService(t, srv, t.TempDir())
	alpha := mustMember(t, srv, "alpha", 100)
	beta := mustMember(t, srv, "beta", 50)
	waitMaster(t, beta, "alpha")
	disconnected := make(chan struct{}, 1)
	alpha.nc.SetDisconnectErrHandler(func(*nats.Conn, error) { disconnected <- struct{}{} })
	alpha.Close()
	select {
	case <-disconnected:
	case <-time.After(5 * time.Second):
		t.Fatal("a member declared dead kept its connection")
	}
}

func TestService_Preemption(t *testing.T) {
	srv := bustest.StartServer(t)
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
	srv := bustest.StartServer(t)
	startService(t, srv, t.TempDir())
	mustMember(t, srv, "alpha", 1)
	_, err := newMember(t, srv, "alpha", 2)
	if !errors.Is(err, election.ErrRefused) || !strings.Contains(err.Error(), `"alpha"`) {
		t.Fatalf("got %v, want a refusal naming alpha", err)
	}
}

func TestService_EpochSurvivesRestart(t *testing.T) {
	srv := bustest.StartServer(t)
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
	srv := bustest.StartServer(t)
	startService(t, srv, t.TempDir())
	alpha := mustMember(t, srv, "alpha", 1)
	waitMaster(t, alpha, "alpha")
	nc, err := srv.Conn("late")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync(bus.SubjectMaster)
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
	resp, err := nc.Request(bus.SubjectMasterGet, nil, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(resp.Data, &a); err != nil || a.Master != "alpha" {
		t.Fatalf("master.get: got %v %v, want master alpha", &a, err)
	}
}

func TestService_BadRegistration(t *testing.T) {
	srv := bustest.StartServer(t)
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
			resp, err := nc.Request(bus.SubjectRegister, body, time.Second)
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
	srv := bustest.StartServer(t)
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
	srv := bustest.StartServer(t)
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
			resp, err := nc.Request(bus.SubjectHeartbeat, tc.body, time.Second)
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
