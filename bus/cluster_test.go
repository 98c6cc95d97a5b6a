package bus_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"baton/auth"
	"baton/bus"
	"baton/bus/bustest"
	"baton/internal/testlog"
)

// Three servers with a shared secret and mutual TLS form one cluster:
// a message crosses it, and a KV bucket replicated on all three takes a
// compare-and-set through any of them and refuses a stale one.
func TestCluster_Routes(t *testing.T) {
	dir := t.TempDir()
	certs, _, err := auth.EnsureCertificates(dir, []string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	servers := bustest.StartCluster(t, 3, func(_ int, c *bus.ServerConfig) {
		c.Cluster.Secret, c.Cluster.CA = "shared-secret", certs.CA
		c.TLSCert, c.TLSKey = certs.Cert, certs.Key
	})
	for _, s := range servers {
		if err := s.EnableJetStream(); err != nil {
			t.Fatal(err)
		}
	}
	bustest.WaitRouted(t, servers)

	pub, ch := across(t, servers[2], servers[0])
	eventually(t, 5*time.Second, "a message across the cluster", func() bool {
		_ = pub.Publish("across", []byte("hi"))
		m, err := ch.NextMsg(100 * time.Millisecond)
		return err == nil && string(m.Data) == "hi"
	})

	js, err := jetstream.New(pub)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var kv jetstream.KeyValue
	// The cluster elects its JetStream meta leader first: seconds.
	eventually(t, 20*time.Second, "an R3 bucket", func() bool {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		kv, err = js.CreateKeyValue(actx, jetstream.KeyValueConfig{Bucket: "T", Replicas: 3, Storage: jetstream.FileStorage})
		if err != nil {
			t.Log(err)
		}
		return err == nil
	})
	rev, err := kv.Create(ctx, "k", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Update(ctx, "k", []byte("2"), rev); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Update(ctx, "k", []byte("3"), rev); err == nil {
		t.Fatal("an update on a stale revision was taken")
	}
	info, err := js.Stream(ctx, "KV_T")
	if err != nil {
		t.Fatal(err)
	}
	if c := info.CachedInfo().Cluster; c == nil || len(c.Replicas) != 2 {
		t.Fatalf("bucket's cluster: %+v, want a leader and 2 replicas", c)
	}
}

// A server whose secret differs is refused by the cluster's routes, and
// says so in baton's words.
func TestCluster_WrongSecret(t *testing.T) {
	logs := &testlog.Buffer{}
	servers := bustest.StartCluster(t, 2, func(i int, c *bus.ServerConfig) {
		c.Cluster.Secret = []string{"ours", "theirs"}[i]
		c.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(logs, testlogWriter{t}), nil))
	})
	eventually(t, 10*time.Second, "the refusal logged", func() bool {
		return strings.Contains(logs.String(), bus.RouteRefusedMsg+": its credentials differ")
	})
	pub, ch := across(t, servers[1], servers[0])
	for range 10 {
		_ = pub.Publish("across", []byte("hi"))
		if m, err := ch.NextMsg(100 * time.Millisecond); err == nil {
			t.Fatalf("a message crossed to a broker of other credentials: %q", m.Data)
		}
	}
}

// across is a connection to from and a subscription through to on
// subject "across", both closed when the test ends.
func across(t *testing.T, from, to *bus.Server) (*nats.Conn, *nats.Subscription) {
	t.Helper()
	sub, err := to.ServiceConn("sub")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Close)
	ch, err := sub.SubscribeSync("across")
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}
	pub, err := from.ServiceConn("pub")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	return pub, ch
}

// testlogWriter writes to the test's log.
type testlogWriter struct{ t *testing.T }

func (w testlogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A service on one broker learns which broker a requester is on, and
// closes its connection there.
func TestCluster_SenderAndKick(t *testing.T) {
	servers := bustest.StartCluster(t, 2, func(_ int, c *bus.ServerConfig) { c.Services = []string{"svc"} })
	bustest.WaitRouted(t, servers)
	svc, err := servers[0].ServiceConn("svc")
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	senders := make(chan bus.Sender, 1)
	if _, err := svc.Subscribe("svc", func(m *nats.Msg) {
		if s, ok := bus.SenderOf(m); ok {
			senders <- s
		}
		_ = m.Respond(nil)
	}); err != nil {
		t.Fatal(err)
	}
	_ = svc.Flush()
	closed := make(chan struct{}, 1)
	nc := connect(t, servers[1].Addr(), nats.DisconnectErrHandler(func(*nats.Conn, error) {
		select {
		case closed <- struct{}{}:
		default:
		}
	}))
	var sender bus.Sender
	eventually(t, 5*time.Second, "the service answers across the cluster", func() bool {
		if _, err := nc.Request("svc", nil, 200*time.Millisecond); err != nil {
			return false
		}
		sender = <-senders
		return true
	})
	cid, _ := nc.GetClientID()
	if sender.Server != "b2" || sender.ClientID != cid {
		t.Fatalf("sender %+v, want client %d on b2", sender, cid)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := servers[0].KickOn(ctx, sender.Server, sender.ClientID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the connection on b2 still up after b1 kicked it")
	}
	if err := servers[0].KickOn(ctx, "b9", 1); err == nil {
		t.Fatal("kicked on a broker that does not exist")
	}
}
