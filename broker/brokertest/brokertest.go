// Package brokertest starts real brokers for tests: in-process, on
// loopback ports the system picks, in the test's temporary directory.
package brokertest

import (
	"context"
	"testing"
	"time"

	"baton/broker"
	"baton/internal/testlog"
)

// Config is a broker's config for a test: NATS and HTTP on loopback ports
// the system picks, its data in a directory of the test's, a heartbeat
// timeout short enough for tests of failures (300 ms), logs to t. It
// answers no discovery: a UDP port of the number the system picked for
// NATS need not be free.
func Config(t testing.TB) broker.Config {
	cfg := broker.DefaultConfig()
	cfg.Server.Addr, cfg.DataDir, cfg.HTTP = "127.0.0.1:0", t.TempDir(), "127.0.0.1:0"
	cfg.Discovery = false
	cfg.Election.HeartbeatTimeout = 300 * time.Millisecond
	cfg.Logger = testlog.Logger(t)
	return cfg
}

// Start starts a broker for cfg, failing the test if it cannot, and
// closes it when the test ends.
func Start(t testing.TB, cfg broker.Config) *broker.Broker {
	t.Helper()
	b, err := broker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return b
}
