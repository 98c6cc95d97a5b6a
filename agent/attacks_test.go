package agent_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"baton/agent"
	"baton/bus/bustest"
	"baton/messages"
)

// masterInstance is the instance id of the master n sees.
func masterInstance(t testing.TB, n *agent.Node) string {
	t.Helper()
	a := n.Master()
	for _, m := range a.Members {
		if m.Name == a.Master {
			return m.InstanceId
		}
	}
	t.Fatalf("no master in %v", a)
	return ""
}

func rawExec(t testing.TB, nc *nats.Conn, req *messages.ExecRequest) *messages.ExecResult {
	t.Helper()
	b, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := nc.Request(messages.SubjectExec, b, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var res messages.ExecResult
	if err := proto.Unmarshal(msg.Data, &res); err != nil {
		t.Fatal(err)
	}
	return &res
}

// Knowing a request's id is not enough to read its result or to have it
// answered from the record: only its requester's claim is.
func TestAttack_ResultsOnlyToTheirRequester(t *testing.T) {
	m, nc := servingMaster(t)
	// Where every requester's inboxes can be read (a shared credential, or
	// none), the output still travels boxed.
	spy, err := nc.SubscribeSync("_INBOX.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	res, err := m.Submit(context.Background(), "echo secret")
	if err != nil || res.Stdout != "secret\n" {
		t.Fatalf("got %v %v", res, err)
	}
	seen := 0
	// Heartbeat acks land there too: read for a bounded while.
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
		msg, err := spy.NextMsg(100 * time.Millisecond)
		if err != nil {
			continue
		}
		seen++
		if strings.Contains(string(msg.Data), "secret") {
			t.Errorf("an eavesdropper on %s read the output: %q", msg.Subject, msg.Data)
		}
	}
	if seen == 0 {
		t.Error("the eavesdropper saw no reply at all: the test proves nothing")
	}
	if len(res.Id) < 26 {
		t.Errorf("request id %q, want at least 128 random bits", res.Id)
	}
	for _, claim := range []string{"", "guess"} {
		b, _ := proto.Marshal(&messages.ExecStatusQuery{Id: res.Id, Claim: claim})
		msg, err := nc.Request(messages.ExecStatusSubject(masterInstance(t, m)), b, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var st messages.ExecStatus
		if err := proto.Unmarshal(msg.Data, &st); err != nil {
			t.Fatal(err)
		}
		if st.Known || st.Result != nil {
			t.Errorf("status of another's request with claim %q: %v, want nothing", claim, &st)
		}
	}
	for _, hash := range []string{"", strings.Repeat("0", 64)} {
		again := rawExec(t, nc, &messages.ExecRequest{Id: res.Id, Cmd: "echo ran again", ClaimHash: hash})
		if again.ErrorKind != messages.ErrorKind_ERROR_KIND_REJECTED || again.Stdout != "" || !strings.Contains(again.Error, "used before") {
			t.Errorf("request reusing another's id (claim hash %q): %v, want it rejected unrun", hash, again)
		}
	}
}

// A flood of requests asking to wait for a slot as long as they like is
// answered busy at once beyond the master's queue: memory stays bounded.
func TestAttack_QueueFloodIsBounded(t *testing.T) {
	b := startCluster(t)
	m := startNode(t, b, "m", 1, func(c *agent.Config) { c.MaxParallel = 1 })
	waitMaster(t, m, "m")
	if _, err := m.Submit(context.Background(), "true"); err != nil {
		t.Fatal(err)
	}
	busy := make(chan struct{})
	go func() {
		defer close(busy)
		_, _ = m.Submit(context.Background(), "sleep 2")
	}()
	time.Sleep(300 * time.Millisecond) // the slot is taken
	nc := bustest.Connect(t, b.Addr())
	const flood = 40
	var wg sync.WaitGroup
	results := make([]*messages.ExecResult, flood)
	start := time.Now()
	for i := range flood {
		wg.Go(func() {
			results[i] = rawExec(t, nc, &messages.ExecRequest{Cmd: "true", QueueTimeoutMs: 600_000})
		})
	}
	wg.Wait()
	took := time.Since(start)
	refused := 0
	for _, r := range results {
		if r.ErrorKind == messages.ErrorKind_ERROR_KIND_BUSY {
			refused++
		}
	}
	// 16 may wait for the one slot; the rest are refused at once, and the
	// waiting ones wait at most one exec timeout (5 s), never 10 minutes.
	if refused < flood-16 {
		t.Errorf("%d of %d flooding requests refused busy, want at least %d", refused, flood, flood-16)
	}
	if took > 15*time.Second {
		t.Errorf("the flood was answered after %v, want within about one exec timeout", took)
	}
	<-busy
}

// An impostor that takes a copy of every request (a plain subscription,
// possible where the broker requires no credentials) answers first, naming
// the real master and epoch: the requester ignores it and reports what the
// master ran.
func TestAttack_ImpostorResultsIgnored(t *testing.T) {
	m, nc := servingMaster(t)
	a := m.Master()
	answered := make(chan struct{}, 16)
	sub, err := nc.Subscribe(messages.SubjectExec, func(msg *nats.Msg) {
		b, _ := proto.Marshal(&messages.ExecResult{Stdout: "fake\n", Master: a.Master, Epoch: a.Epoch, Mac: make([]byte, 32)})
		_ = msg.Respond(b)
		answered <- struct{}{}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	res, err := m.Submit(context.Background(), "sleep 0.2; echo real")
	if err != nil || res.Stdout != "real\n" {
		t.Fatalf("got %v %v, want the real result", res, err)
	}
	select {
	case <-answered:
	default:
		t.Fatal("the impostor never answered: the test proves nothing")
	}
}

// A request cannot make the master publish where its sender does not read,
// nor on a subject long enough to cost the master its connection.
func TestAttack_AnswerSubjects(t *testing.T) {
	m, nc := servingMaster(t)
	long := nc.NewInbox() + "." + strings.Repeat("a", 5000)
	for _, tc := range []struct {
		name string
		req  *messages.ExecRequest
	}{
		{"overlong output subject", &messages.ExecRequest{Cmd: "echo x", OutputSubject: long}},
		{"overlong ack subject", &messages.ExecRequest{Cmd: "sleep 0.1", AckSubject: long}},
		{"another inbox", &messages.ExecRequest{Cmd: "echo x", OutputSubject: "_INBOX_admin.victim.o.1"}},
		{"baton's own subject", &messages.ExecRequest{Cmd: "echo x", AckSubject: messages.SubjectHeartbeat}},
		{"a wildcard", &messages.ExecRequest{Cmd: "echo x", OutputSubject: nc.NewInbox() + ".>"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := rawExec(t, nc, tc.req)
			if res.ErrorKind != messages.ErrorKind_ERROR_KIND_REJECTED || !strings.Contains(res.Error, "ack and output subjects must be in the reply subject's inbox") {
				t.Errorf("got %v, want rejected", res)
			}
		})
	}
	// A reply subject too long to publish to is dropped; the master is
	// unharmed.
	b, err := proto.Marshal(&messages.ExecRequest{Cmd: "echo x"})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishRequest(messages.SubjectExec, long, b); err != nil {
		t.Fatal(err)
	}
	if res, err := m.Submit(context.Background(), "echo still here"); err != nil || res.Stdout != "still here\n" || res.Master != "m" {
		t.Errorf("after the attempts: %v %v, want the master serving", res, err)
	}
	select {
	case <-m.Lost():
		t.Errorf("the master lost its connection: %v", m.LostErr())
	default:
	}
}
