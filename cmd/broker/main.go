// Command broker runs baton's message broker: an embedded NATS server and
// the election service that picks the master among the nodes.
package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kong"

	"baton/bus"
	"baton/election"
)

// CLI is the broker's command line.
type CLI struct {
	Addr             string        `arg:"" optional:"" default:"127.0.0.1:4222" help:"Address (host:port) NATS clients connect to. The default is the stock nats CLI's, so it needs no flags."`
	DataDir          string        `default:"baton-broker.data" env:"BATON_DATA_DIR" help:"Directory where the broker keeps the election epoch, so that it never goes backwards across restarts."`
	HeartbeatTimeout time.Duration `default:"1s" env:"BATON_HEARTBEAT_TIMEOUT" help:"Silence after which a node is declared dead (and its connection cut). A restarted broker also waits this long to hear from every node before it elects."`
}

// Run starts the broker and blocks until SIGINT or SIGTERM.
func (c *CLI) Run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))

	scfg := bus.DefaultServerConfig()
	scfg.Addr, scfg.TuneMemory = c.Addr, true
	scfg.Logger = logger.With("component", "nats-server")
	srv, err := bus.NewServer(scfg)
	if err != nil {
		return err
	}
	if err := srv.Start(ctx); err != nil {
		return err
	}
	ecfg := election.DefaultServiceConfig()
	ecfg.DataDir, ecfg.HeartbeatTimeout = c.DataDir, c.HeartbeatTimeout
	ecfg.Logger = logger.With("component", "election")
	svc, err := election.NewService(srv, ecfg)
	if err == nil {
		err = svc.Start(ctx)
	}
	if err != nil {
		_ = srv.Close(context.Background())
		return err
	}
	logger.Info("broker ready", "addr", srv.Addr(), "data_dir", c.DataDir)
	<-ctx.Done()
	logger.Info("broker stopping")
	closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return errors.Join(svc.Close(closeCtx), srv.Close(closeCtx))
}

func main() {
	var cli CLI
	ctx := kong.Parse(&cli,
		kong.Name("broker"),
		kong.Description("Run baton's broker: an embedded NATS server plus the election service that elects the master among the nodes."),
	)
	err := ctx.Run()
	ctx.FatalIfErrorf(err)
}
