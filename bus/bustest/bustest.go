// Package bustest starts real in-process brokers for tests and routes logs
// to the test's log, so that only failing tests show them.
package bustest

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"baton/bus"
)

// Buffer is a bytes.Buffer that one writer (a process's output) and
// concurrent readers may share.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Logger returns a debug-level logger that writes to t.Log.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(writer{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type writer struct{ t testing.TB }

func (w writer) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// StartServer starts an embedded server on 127.0.0.1 with a random port (or
// addr, when given) and shuts it down when the test ends.
func StartServer(t testing.TB, addr ...string) *bus.Server {
	t.Helper()
	cfg := bus.DefaultServerConfig()
	cfg.Addr = "127.0.0.1:0"
	if len(addr) > 0 {
		cfg.Addr = addr[0]
	}
	cfg.Logger = Logger(t).With("component", "nats-server")
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
