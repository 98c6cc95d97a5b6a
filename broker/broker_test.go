package broker_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"baton/broker"
	"baton/broker/brokertest"
	"baton/bus/bustest"
	"baton/election"
	"baton/internal/testlog"
	"baton/messages"
)

// A started broker takes NATS clients with the payload limit the largest
// result needs, elects a master, serves /status, and closes (twice) in
// order.
func TestBroker_StartStatusClose(t *testing.T) {
	b := brokertest.Start(t, brokertest.Config(t))
	nc := bustest.Connect(t, b.Addr())
	if got := nc.MaxPayload(); got != messages.MaxPayload {
		t.Errorf("max payload %d, want %d", got, messages.MaxPayload)
	}
	cfg := election.DefaultMemberConfig("alpha")
	cfg.Logger = testlog.Logger(t)
	m, err := election.NewMember(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	var st election.Status
	for deadline := time.Now().Add(5 * time.Second); st.Master != "alpha"; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("/status %+v, want master alpha", st)
		}
		resp, err := http.Get("http://" + b.HTTPAddr() + "/status")
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(st.Members) != 1 || !st.Members[0].Master || st.Epoch == 0 {
		t.Errorf("/status %+v, want alpha the one member and master at a positive epoch", st)
	}
	if got := b.Status(); got.Master != "alpha" || got.Epoch != st.Epoch {
		t.Errorf("Status() %+v, want what /status said: %+v", got, st)
	}

	addr, httpAddr := b.Addr(), b.HTTPAddr()
	for range 2 {
		if err := b.Close(context.Background()); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	for _, a := range []string{addr, httpAddr} {
		if c, err := net.Dial("tcp", a); err == nil {
			c.Close()
			t.Errorf("%s still listening after Close", a)
		}
	}
}

// A broker whose data directory is taken fails before it listens, says
// why, and Close is safe after the failed Start; the directory's holder is
// unaffected.
func TestBroker_DataDirInUse(t *testing.T) {
	held := brokertest.Config(t)
	first := brokertest.Start(t, held)
	cfg := brokertest.Config(t)
	cfg.DataDir = held.DataDir
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Server.Addr = l.Addr().String()
	l.Close()
	b, err := broker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); !errors.Is(err, election.ErrDataDirInUse) {
		t.Fatalf("got %v, want ErrDataDirInUse", err)
	}
	if c, err := net.Dial("tcp", cfg.Server.Addr); err == nil {
		c.Close()
		t.Errorf("a broker that could not take its data directory listens on %s", cfg.Server.Addr)
	}
	for range 2 {
		if err := b.Close(context.Background()); err != nil {
			t.Fatalf("Close after a failed Start: %v", err)
		}
	}
	if first.Status().Epoch == 0 {
		t.Error("the first broker lost its state")
	}
}

func TestBroker_CloseWithoutStart(t *testing.T) {
	b, err := broker.New(brokertest.Config(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestNew_InvalidConfig(t *testing.T) {
	cases := map[string]func(*broker.Config){
		"no data dir":       func(c *broker.Config) { c.DataDir = "" },
		"small max payload": func(c *broker.Config) { c.Server.MaxPayload = 1 << 20 },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := brokertest.Config(t)
			mutate(&cfg)
			if _, err := broker.New(cfg); !errors.Is(err, broker.ErrInvalidConfig) {
				t.Fatalf("got %v, want ErrInvalidConfig", err)
			}
		})
	}
}

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o600) }
