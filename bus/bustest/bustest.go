// Package bustest starts real in-process NATS servers for tests.
package bustest

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"baton/bus"
	"baton/internal/testlog"
)

// Log keys.
const keyComponent = "component"

// StartServer starts an embedded server on 127.0.0.1 with a random port,
// changed as the options say, and shuts it down when the test ends.
func StartServer(t testing.TB, options ...func(*bus.ServerConfig)) *bus.Server {
	t.Helper()
	cfg := bus.DefaultServerConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.Logger = testlog.Logger(t).With(keyComponent, "nats-server")
	for _, o := range options {
		o(&cfg)
	}
	s, err := bus.NewServer(cfg)
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("close server: %v", err)
		}
	})
	return s
}

// ConnConfig is a connection config for the server at addr, named after
// the test, logging to it.
func ConnConfig(t testing.TB, addr string) bus.ConnConfig {
	cfg := bus.DefaultConnConfig()
	cfg.Addrs, cfg.Name = []string{addr}, t.Name()
	cfg.ConnectTimeout = 2 * time.Second
	cfg.Logger = testlog.Logger(t).With(keyComponent, "nats-client")
	return cfg
}

// Connect connects to the server at addr as ConnConfig says and closes the
// connection when the test ends.
func Connect(t testing.TB, addr string) *nats.Conn {
	t.Helper()
	nc, err := bus.Connect(context.Background(), ConnConfig(t, addr))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// StartCluster starts n servers to be routed to one another on loopback,
// named b1 … bn, each with JetStream in its own directory and mutate (when
// not nil) applied to its config (see WaitRouted). They shut down when the
// test ends.
func StartCluster(t testing.TB, n int, mutate func(i int, c *bus.ServerConfig)) []*bus.Server {
	t.Helper()
	routes := make([]string, n)
	for i := range routes {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		routes[i] = l.Addr().String()
		l.Close()
	}
	servers := make([]*bus.Server, n)
	for i := range servers {
		servers[i] = StartServer(t, func(c *bus.ServerConfig) {
			c.JetStreamDir = t.TempDir()
			c.Cluster = bus.ClusterConfig{Name: fmt.Sprintf("b%d", i+1), Addr: routes[i], Peers: routes}
			if mutate != nil {
				mutate(i, c)
			}
		})
	}
	return servers
}

// WaitRouted waits until each server has a route to every other.
func WaitRouted(t testing.TB, servers []*bus.Server) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		routed := true
		for _, s := range servers {
			routed = routed && len(s.Peers()) == len(servers)-1
		}
		if routed {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d servers not all routed to one another within 15s", len(servers))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
