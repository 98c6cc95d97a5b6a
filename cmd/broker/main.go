// Command broker runs baton's message broker: an embedded NATS server and
// the election service that picks the master among the nodes.
package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kong"

	"baton/broker"
	"baton/cmd/internal/cli"
)

// CLI is the broker's command line.
type CLI struct {
	cli.VersionFlag
	cli.Logging
	Addr             string        `arg:"" optional:"" default:"${addr}" env:"BATON_ADDR" help:"Address (host:port) NATS clients connect to. The default is the stock nats CLI's, so it needs no flags."`
	DataDir          string        `default:"${data_dir}" env:"BATON_DATA_DIR" help:"Directory where the broker keeps the election epoch, so that it never goes backwards across restarts."`
	HeartbeatTimeout time.Duration `default:"${heartbeat_timeout}" env:"BATON_HEARTBEAT_TIMEOUT" help:"Silence after which a node is declared dead (and its connections cut). A started broker also waits this long to hear from every node before it elects."`
	HTTP             string        `name:"http" env:"BATON_HTTP" placeholder:"ADDR" help:"Serve monitoring over HTTP on ADDR (host:port): the NATS endpoints /varz, /connz, /subsz, /healthz and baton's /status (members, ranks, master, epoch as JSON). Off by default."`
}

// closeTimeout bounds the broker's shutdown.
const closeTimeout = 10 * time.Second

// Run starts the broker and blocks until SIGINT or SIGTERM.
func (c *CLI) Run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := c.Logger(os.Stderr)
	cfg := broker.DefaultConfig()
	cfg.Server.Addr, cfg.DataDir, cfg.HTTP = c.Addr, c.DataDir, c.HTTP
	cfg.Election.HeartbeatTimeout = c.HeartbeatTimeout
	cfg.TuneMemory, cfg.Logger = true, logger
	b, err := broker.New(cfg)
	if err != nil {
		return err
	}
	err = b.Start(ctx)
	if err == nil {
		<-ctx.Done()
		logger.Info("broker stopping")
	}
	closeCtx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	return errors.Join(err, b.Close(closeCtx))
}

func main() {
	var c CLI
	d := broker.DefaultConfig()
	ctx := kong.Parse(&c, append(cli.Options("broker",
		"Run baton's broker: an embedded NATS server plus the election service that elects the master among the nodes."),
		kong.Vars{
			"addr":              d.Server.Addr,
			"data_dir":          d.DataDir,
			"heartbeat_timeout": d.Election.HeartbeatTimeout.String(),
		})...)
	ctx.FatalIfErrorf(ctx.Run())
}
