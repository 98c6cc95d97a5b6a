package election_test

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"baton/bus/bustest"
	"baton/election"
	"baton/messages"
)

// request sends m on subject from nc and decodes the reply into reply.
func request(t testing.TB, nc *nats.Conn, subject string, m, reply proto.Message) {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := nc.Request(subject, b, 2*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", subject, err)
	}
	if err := proto.Unmarshal(resp.Data, reply); err != nil {
		t.Fatalf("%s reply: %v", subject, err)
	}
}

func register(name, instance string, clientID uint64) *messages.Register {
	return &messages.Register{
		Name: name, InstanceId: instance, ClientId: clientID, Priority: 1, StartedAt: timestamppb.Now(),
		SessionKey: strings.Repeat("k", 32), Protocol: messages.Protocol,
	}
}

// A node of a protocol the broker does not speak is refused, with both
// builds named: an old one (which would run a command sent with files
// without them) and a newer one.
func TestService_ProtocolRefused(t *testing.T) {
	srv := startServer(t)
	startService(t, srv, t.TempDir(), func(c *election.ServiceConfig) { c.Version = "v2.0.0" })
	nc := bustest.Connect(t, srv.Addr())
	for _, tc := range []struct {
		protocol uint32
		want     string
	}{
		{0, `node "old" is version v1.0.0 (protocol 1); this broker is version v2.0.0 (protocols 2 to 2): upgrade the node`},
		{messages.Protocol + 1, `node "old" is version v1.0.0 (protocol 3); this broker is version v2.0.0 (protocols 2 to 2): upgrade the broker`},
	} {
		r := register("old", "i-old", 0)
		r.Version, r.Protocol = "v1.0.0", tc.protocol
		var reply messages.RegisterReply
		request(t, nc, messages.SubjectRegister, r, &reply)
		if reply.Error != tc.want || reply.Retry {
			t.Errorf("protocol %d: refused with %q (retry %v), want %q", tc.protocol, reply.Error, reply.Retry, tc.want)
		}
	}
	r := register("current", "i-new", 0)
	r.Version = "v1.9.0"
	var reply messages.RegisterReply
	if request(t, nc, messages.SubjectRegister, r, &reply); reply.Error != "" {
		t.Errorf("a node of another build and the same protocol: refused with %q", reply.Error)
	}
}

// A registration naming someone else's client id (the election service's
// own connection, or a node's) binds the member to the sender's
// connection: when the forger goes silent, the heartbeat sweep cuts the
// forger off, nobody else, and the broker keeps serving.
func TestAttack_ForgedClientIDCutsOnlyTheForger(t *testing.T) {
	srv := startServer(t)
	startService(t, srv, t.TempDir())
	victim := mustMember(t, srv, "victim", 1)
	waitMaster(t, victim, "victim")
	victimID, err := victim.nc.GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	forger := bustest.Connect(t, srv.Addr())
	closed := make(chan struct{})
	forger.SetClosedHandler(func(*nats.Conn) { close(closed) })
	forger.SetReconnectHandler(func(*nats.Conn) {})
	for _, cid := range []uint64{1, 2, 3, 4, 5, 6, victimID} {
		var r messages.RegisterReply
		request(t, forger, messages.SubjectRegister, register("forged", "i", cid), &r)
		if r.Error != "" {
			t.Fatalf("registration claiming client %d: %s", cid, r.Error)
		}
	}
	// The forger never beats: after the heartbeat timeout it is cut off.
	disconnected := make(chan struct{}, 1)
	forger.SetDisconnectErrHandler(func(*nats.Conn, error) { disconnected <- struct{}{} })
	select {
	case <-disconnected:
	case <-time.After(5 * time.Second):
		t.Fatal("the silent forger kept its connection")
	}
	time.Sleep(2 * testTimeout)
	if victim.nc.IsClosed() || !victim.nc.IsConnected() {
		t.Error("the victim's connection was cut")
	}
	a, err := election.Get(context.Background(), bustest.Connect(t, srv.Addr()))
	if err != nil || a.Master != "victim" || a.MemberCount != 1 {
		t.Errorf("after the forger's eviction: %v %v, want victim the one member and master", a, err)
	}
}

// Nobody but a member's own connection can deregister it or take its name,
// even knowing its instance id (announcements carry it).
func TestAttack_MemberBoundToItsConnection(t *testing.T) {
	srv := startServer(t)
	startService(t, srv, t.TempDir())
	alpha := mustMember(t, srv, "alpha", 100)
	before := waitMaster(t, alpha, "alpha")
	impostor := bustest.Connect(t, srv.Addr())

	var after messages.Announcement
	request(t, impostor, messages.SubjectDeregister, &messages.Deregister{Name: "alpha", InstanceId: alpha.InstanceID(), Reason: "forged"}, &after)
	if after.Master != "alpha" {
		t.Errorf("after a forged deregistration: master %q, want alpha", after.Master)
	}
	var r messages.RegisterReply
	request(t, impostor, messages.SubjectRegister, register("alpha", alpha.InstanceID(), 0), &r)
	if !strings.Contains(r.Error, "another open connection") {
		t.Errorf("re-registration of alpha from another connection: %q, want it refused", r.Error)
	}
	var ack messages.HeartbeatAck
	request(t, impostor, messages.SubjectHeartbeat, &messages.Heartbeat{Name: "alpha", InstanceId: alpha.InstanceID(), Seq: 1}, &ack)
	if !ack.Reregister {
		t.Error("a heartbeat for alpha from another connection was accepted")
	}
	request(t, impostor, messages.SubjectHeartbeat, &messages.Heartbeat{Name: "alpha", InstanceId: alpha.InstanceID(), Seq: 2,
		Serving: true, SessionKey: strings.Repeat("x", 32)}, &ack)
	if !ack.Reregister {
		t.Error("a serving report for alpha with a wrong session key was accepted")
	}
	time.Sleep(3 * testTimeout)
	if a := alpha.Current(); a.Master != "alpha" || a.Epoch != before.Epoch {
		t.Errorf("alpha sees master %q at epoch %d, want alpha still at %d", a.Master, a.Epoch, before.Epoch)
	}
}

// An announcement the broker did not make, with the largest epoch and no
// master, stands members down only until their next acknowledged beat: then
// they take the broker's word again.
func TestAttack_ForgedAnnouncementDoesNotWedge(t *testing.T) {
	srv := startServer(t)
	startService(t, srv, t.TempDir())
	alpha := mustMember(t, srv, "alpha", 100)
	before := waitMaster(t, alpha, "alpha")
	forger := bustest.Connect(t, srv.Addr())
	b, _ := proto.Marshal(&messages.Announcement{Epoch: math.MaxUint64, Event: "forged"})
	if err := forger.Publish(messages.SubjectMaster, b); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { return alpha.Current().Epoch == math.MaxUint64 })
	a := waitMaster(t, alpha, "alpha")
	if a.Epoch != before.Epoch {
		t.Errorf("after the forgery alpha is master at epoch %d, want the broker's %d", a.Epoch, before.Epoch)
	}
}
