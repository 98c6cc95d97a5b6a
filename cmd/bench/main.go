// Command bench measures baton against the local fork/exec floor and runs
// the member simulator the tests use.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/alecthomas/kong"

	"baton/bench"
	"baton/bus"
	"baton/cmd/internal/cli"
)

// CLI is bench's command line.
type CLI struct {
	cli.VersionFlag
	cli.Logging
	Run     RunCmd     `cmd:"" default:"withargs" help:"Measure round trips, throughput, failovers, scale and idle memory on real broker and node processes (loopback only), print a table and write the figures as JSON (the default)."`
	Members MembersCmd `cmd:"" help:"Simulate members: register COUNT members, each on its own connection, and keep them beating until SIGINT or SIGTERM."`
}

// RunCmd is `bench` / `bench run`.
type RunCmd struct {
	Quick bool     `env:"BATON_BENCH_QUICK" help:"A run of under a minute with fewer samples, trials and cluster sizes (for CI): figures printed, not judged."`
	JSON  string   `name:"json" default:"bench.json" env:"BATON_BENCH_JSON" help:"File to write the figures to, as JSON."`
	Bins  string   `env:"BATON_BENCH_BINS" placeholder:"DIR" help:"Directory holding the broker and node binaries (default: build them into a temporary directory)."`
	Parts []string `placeholder:"PART" help:"Measure only these parts (comma-separated): round trip, security, history, history queries, throughput, live output and cancel, failover, scale, idle, dashboards, files, membership. Targets of parts not measured are reported missed."`
}

// Run builds the binaries if needed, measures, and reports.
func (r *RunCmd) Run(l *cli.Logging) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := l.Logger(os.Stderr)
	dir, err := os.MkdirTemp("", "baton-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bins := r.Bins
	if bins == "" {
		bins = filepath.Join(dir, "bin")
		logger.Info("building broker and node", keyDir, bins)
		build := exec.CommandContext(ctx, "go", "build", "-o", bins+"/", "baton/cmd/broker", "baton/cmd/node")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("build broker and node (run bench from the repository, or give --bins): %w", err)
		}
	}
	report, err := bench.Run(ctx, bench.Config{
		Bins:   bench.Binaries{Broker: filepath.Join(bins, "broker"), Node: filepath.Join(bins, "node")},
		Dir:    dir,
		Quick:  r.Quick,
		Parts:  r.Parts,
		Logger: logger,
	})
	if err != nil {
		return err
	}
	report.WriteTable(os.Stdout)
	b, err := json.MarshalIndent(report, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(r.JSON, append(b, '\n'), 0o644)
}

// MembersCmd is `bench members`.
type MembersCmd struct {
	BrokerAddr string `default:"${broker_addr}" env:"BATON_BROKER_ADDR" help:"Broker address (host:port)."`
	Count      int    `default:"1000" help:"Members to simulate."`
	Prefix     string `default:"sim" help:"Member names are PREFIX-0 … PREFIX-(COUNT-1); priorities 0 … COUNT-1."`
}

// Run starts the members, prints "ready COUNT" once all are registered, and
// blocks until a signal.
func (m *MembersCmd) Run(l *cli.Logging) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := l.Logger(os.Stderr)
	conn := bus.DefaultConnConfig()
	conn.Addrs, conn.ConnectTimeout, conn.Logger = []string{m.BrokerAddr}, 10*time.Second, logger
	ms, err := bench.StartMembers(ctx, conn, m.Prefix, m.Count, logger)
	if err != nil {
		return err
	}
	defer ms.Close()
	fmt.Printf("ready %d\n", m.Count)
	<-ctx.Done()
	return nil
}

// Log keys.
const keyDir = "dir"

func main() {
	var c CLI
	ctx := kong.Parse(&c, append(cli.Options("bench",
		"Measure baton: round trips against the local fork/exec floor, failover times, and scale."),
		kong.Vars{"broker_addr": bus.DefaultConnConfig().Where()})...)
	ctx.FatalIfErrorf(ctx.Run(&c.Logging))
}
