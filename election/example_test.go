package election_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"baton/bus"
	"baton/election"
)

// A broker-side Service elects among Members; each Member's View reports
// the master.
func Example() {
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)

	scfg := bus.DefaultServerConfig()
	scfg.Addr, scfg.Logger = "127.0.0.1:0", quiet
	// The election answers in its own account; the server routes its
	// subjects there.
	scfg.Services, scfg.Streams = election.ServiceSubjects(), election.StreamSubjects()
	srv, err := bus.NewServer(scfg)
	if err != nil {
		panic(err)
	}
	if err := srv.Start(ctx); err != nil {
		panic(err)
	}
	defer srv.Close(ctx)

	dir, err := os.MkdirTemp("", "election-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	store, err := election.OpenFileStore(dir)
	if err != nil {
		panic(err)
	}
	cfg := election.DefaultServiceConfig()
	cfg.HeartbeatTimeout, cfg.Logger = 200*time.Millisecond, quiet
	cfg.Events = func(e election.Event) {
		if e.Kind == election.EventJoined {
			fmt.Println("joined:", e.Node)
		}
	}
	svc, err := election.NewService(srv, store, cfg)
	if err != nil {
		panic(err)
	}
	if err := svc.Start(ctx); err != nil {
		panic(err)
	}
	defer svc.Close(ctx)

	conn := bus.DefaultConnConfig()
	conn.Addrs, conn.Name, conn.Logger = []string{srv.Addr()}, "alpha", quiet
	nc, err := bus.Connect(ctx, conn)
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	mcfg := election.DefaultMemberConfig("alpha")
	mcfg.Priority, mcfg.Logger = 100, quiet
	m, err := election.NewMember(nc, mcfg)
	if err != nil {
		panic(err)
	}
	if err := m.Start(ctx); err != nil {
		panic(err)
	}
	defer m.Close(ctx)

	wait, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for a := range m.View().Observe(wait) {
		if a.Master != "" {
			fmt.Println("master:", a.Master)
			break
		}
	}
	// Output:
	// joined: alpha
	// master: alpha
}
