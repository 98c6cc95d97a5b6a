package bus_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"baton/bus"
	"baton/bus/bustest"
	"baton/internal/testlog"
)

func connect(t testing.TB, addr string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := bus.Connect(context.Background(), bustest.ConnConfig(t, addr), opts...)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func TestServer_Start(t *testing.T) {
	s := bustest.StartServer(t)
	nc := connect(t, s.Addr())
	if got, want := nc.MaxPayload(), int64(bus.DefaultServerConfig().MaxPayload); got != want {
		t.Errorf("max payload %d, want %d", got, want)
	}
	sub, err := nc.SubscribeSync("x")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("x", []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.NextMsg(2 * time.Second); err != nil || string(m.Data) != "hi" {
		t.Fatalf("got %v %v, want message hi", m, err)
	}
}

func TestServer_StartAddressInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cfg := bus.DefaultServerConfig()
	cfg.Addr = l.Addr().String()
	cfg.Logger = testlog.Logger(t)
	s, err := bus.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), cfg.Addr) {
		t.Fatalf("got %v, want an address-in-use error naming %s", err, cfg.Addr)
	}
}

func TestNewServer_InvalidAddr(t *testing.T) {
	for _, addr := range []string{"", "localhost", "127.0.0.1:http", "127.0.0.1:70000"} {
		cfg := bus.DefaultServerConfig()
		cfg.Addr = addr
		if _, err := bus.NewServer(cfg); !errors.Is(err, bus.ErrInvalidServerConfig) {
			t.Errorf("address %q: got %v, want ErrInvalidServerConfig", addr, err)
		}
	}
}

func TestConnect_Unreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := bustest.ConnConfig(t, addr)
	cfg.ConnectTimeout = 300 * time.Millisecond
	_, err = bus.Connect(context.Background(), cfg)
	if !errors.Is(err, bus.ErrUnreachable) || !strings.Contains(err.Error(), addr) {
		t.Fatalf("got %v, want ErrUnreachable naming %s", err, addr)
	}
}

func TestConnect_ReconnectsAfterBrokerRestart(t *testing.T) {
	s := bustest.StartServer(t)
	addr := s.Addr()
	reconnected := make(chan struct{}, 1)
	nc := connect(t, addr, nats.ReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} }))
	sub, err := nc.SubscribeSync("x")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	s2 := bustest.StartServer(t, func(c *bus.ServerConfig) { c.Addr = addr })
	select {
	case <-reconnected:
	case <-time.After(5 * time.Second):
		t.Fatal("client did not reconnect to the restarted broker")
	}
	// The handler may run before the server has the re-sent subscription;
	// a round trip on the same connection orders them.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	pub := connect(t, s2.Addr())
	if err := pub.Publish("x", []byte("again")); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.NextMsg(2 * time.Second); err != nil || string(m.Data) != "again" {
		t.Fatalf("got %v %v, want the subscription restored", m, err)
	}
}

func TestServer_DisconnectEventsAndKick(t *testing.T) {
	s := bustest.StartServer(t)
	sys, err := s.SystemConn("events")
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	events, err := sys.SubscribeSync(bus.DisconnectEvents)
	if err != nil {
		t.Fatal(err)
	}
	if err := sys.Flush(); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	nc := connect(t, s.Addr(), nats.NoReconnect(), nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	cid, err := nc.GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	s.Kick(cid)
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("kicked client still connected")
	}
	m, err := events.NextMsg(2 * time.Second)
	if err != nil {
		t.Fatalf("no disconnect event: %v", err)
	}
	var ev server.DisconnectEventMsg
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Client.ID != cid {
		t.Errorf("event for client %d, want %d", ev.Client.ID, cid)
	}
	s.Kick(cid) // already gone: no effect, no panic
}

func TestReconnectDelay(t *testing.T) {
	for attempt := 1; attempt <= 10; attempt++ {
		base := min((50*time.Millisecond)<<(attempt-1), 500*time.Millisecond)
		if d := bus.ReconnectDelay(attempt); d < base || d > base*6/5 {
			t.Errorf("attempt %d: delay %v, want from %v to %v", attempt, d, base, base*6/5)
		}
	}
}

func TestConnect_InvalidConfig(t *testing.T) {
	cases := map[string]func(*bus.ConnConfig){
		"no address":      func(c *bus.ConnConfig) { c.Addrs = nil },
		"blank address":   func(c *bus.ConnConfig) { c.Addrs = []string{" "} },
		"zero timeout":    func(c *bus.ConnConfig) { c.ConnectTimeout = 0 },
		"zero ping":       func(c *bus.ConnConfig) { c.PingInterval = 0 },
		"zero reconn buf": func(c *bus.ConnConfig) { c.ReconnectBufSize = 0 },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := bus.DefaultConnConfig()
			mutate(&cfg)
			if _, err := bus.Connect(context.Background(), cfg); !errors.Is(err, bus.ErrInvalidConnConfig) {
				t.Fatalf("got %v, want ErrInvalidConnConfig", err)
			}
		})
	}
}

// A connection without Reconnect stays closed when its broker goes away.
func TestConnect_NoReconnect(t *testing.T) {
	s := bustest.StartServer(t)
	cfg := bustest.ConnConfig(t, s.Addr())
	cfg.Reconnect = false
	closed := make(chan struct{})
	nc, err := bus.Connect(context.Background(), cfg, nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("connection still open after its broker stopped, want it closed")
	}
}

// Close is safe on a server that never started.
func TestServer_CloseWithoutStart(t *testing.T) {
	s, err := bus.NewServer(bus.DefaultServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range 2 {
		if err := s.Close(ctx); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
}
