// Command bench measures baton against the local fork/exec floor and runs
// the member simulator the tests use.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/alecthomas/kong"

	"baton/bench"
)

// CLI is bench's command line.
type CLI struct {
	Members MembersCmd `cmd:"" help:"Simulate members: register COUNT members, each on its own connection, and keep them beating until SIGINT or SIGTERM."`
}

// MembersCmd is `bench members`.
type MembersCmd struct {
	BrokerAddr string `default:"127.0.0.1:4222" env:"BATON_BROKER_ADDR" help:"Broker address (host:port)."`
	Count      int    `default:"1000" help:"Members to simulate."`
	Prefix     string `default:"sim" help:"Member names are PREFIX-0 … PREFIX-(COUNT-1); priorities 0 … COUNT-1."`
}

// Run starts the members, prints "ready COUNT" once all are registered, and
// blocks until a signal.
func (m *MembersCmd) Run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ms, err := bench.StartMembers(ctx, m.BrokerAddr, m.Prefix, m.Count, logger)
	if err != nil {
		return err
	}
	defer ms.Close()
	fmt.Printf("ready %d\n", m.Count)
	<-ctx.Done()
	return nil
}

func main() {
	var cli CLI
	ctx := kong.Parse(&cli, kong.Name("bench"),
		kong.Description("Measure baton: round trips against the local fork/exec floor, failover times, and scale."))
	ctx.FatalIfErrorf(ctx.Run())
}
