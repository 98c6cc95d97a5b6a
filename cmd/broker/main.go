// Command broker runs baton's message broker: an embedded NATS server and
// the election service that picks the master among the nodes.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kong"

	"baton/bus"
	"baton/cmd/internal/cli"
	"baton/election"
)

// CLI is the broker's command line.
type CLI struct {
	cli.VersionFlag
	cli.Logging
	Addr             string        `arg:"" optional:"" default:"127.0.0.1:4222" env:"BATON_ADDR" help:"Address (host:port) NATS clients connect to. The default is the stock nats CLI's, so it needs no flags."`
	DataDir          string        `default:"baton-broker.data" env:"BATON_DATA_DIR" help:"Directory where the broker keeps the election epoch, so that it never goes backwards across restarts."`
	HeartbeatTimeout time.Duration `default:"1s" env:"BATON_HEARTBEAT_TIMEOUT" help:"Silence after which a node is declared dead (and its connections cut). A started broker also waits this long to hear from every node before it elects."`
	HTTP             string        `name:"http" env:"BATON_HTTP" placeholder:"ADDR" help:"Serve monitoring over HTTP on ADDR (host:port): the NATS endpoints /varz, /connz, /subsz, /healthz and baton's /status (members, ranks, master, epoch as JSON). Off by default."`
}

// Run starts the broker and blocks until SIGINT or SIGTERM.
func (c *CLI) Run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := c.Logger(os.Stderr)

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
	closeCtx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), 10*time.Second)
	}
	svc, err := election.NewService(srv, ecfg)
	if err != nil {
		ctx, cancel := closeCtx()
		defer cancel()
		return errors.Join(err, srv.Close(ctx))
	}
	err = svc.Start(ctx)
	var monitor *http.Server
	if err == nil && c.HTTP != "" {
		monitor, err = serveMonitor(ctx, c.HTTP, srv, svc, logger)
	}
	if err != nil {
		ctx, cancel := closeCtx()
		defer cancel()
		return errors.Join(err, svc.Close(ctx), srv.Close(ctx))
	}
	logger.Info("broker ready", "addr", srv.Addr(), "data_dir", c.DataDir, "http", c.HTTP)
	<-ctx.Done()
	logger.Info("broker stopping")
	stopCtx, cancel := closeCtx()
	defer cancel()
	if monitor != nil {
		err = monitor.Shutdown(stopCtx)
	}
	return errors.Join(err, svc.Close(stopCtx), srv.Close(stopCtx))
}

// serveMonitor listens on addr and serves the monitoring endpoints until
// the returned server is shut down.
func serveMonitor(ctx context.Context, addr string, srv *bus.Server, svc *election.Service, logger *slog.Logger) (*http.Server, error) {
	mux := srv.MonitorMux()
	mux.HandleFunc("/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(election.StatusOf(svc.Current()))
	})
	l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("monitoring: listen on %s: %w", addr, err)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := hs.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("monitoring server stopped", "err", err)
		}
	}()
	return hs, nil
}

func main() {
	var c CLI
	ctx := kong.Parse(&c, cli.Options("broker",
		"Run baton's broker: an embedded NATS server plus the election service that elects the master among the nodes.")...)
	ctx.FatalIfErrorf(ctx.Run())
}
