package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"baton/auth"
	"baton/bus"
	"baton/discovery"
	"baton/election"
	"baton/files"
	"baton/history"
	"baton/messages"
	"baton/web"
)

// ErrInvalidConfig is wrapped by every Config validation error.
var ErrInvalidConfig = errors.New("broker: invalid config")

// The --auth modes.
const (
	// AuthAuto requires credentials unless every listen address is on
	// loopback.
	AuthAuto = "auto"
	// AuthRequired lets in only clients with one of the broker's
	// credentials, each with its role's permissions.
	AuthRequired = "required"
	// AuthNone lets anyone who reaches the port do anything.
	AuthNone = "none"
)

// Config describes a broker. Start from DefaultConfig: it is built from the
// defaults of the parts a broker is made of.
type Config struct {
	// Auth is AuthAuto, AuthRequired or AuthNone; with credentials
	// required, they are made under DataDir on first start (see package
	// auth).
	Auth string
	// Server is the embedded NATS server; Server.Addr is where clients
	// connect.
	Server bus.ServerConfig
	// DataDir holds the broker's durable state (the election epoch, the
	// job history). One broker per directory.
	DataDir string
	// KeepHistory turns the job history on: JetStream in the broker's own
	// account, storing under DataDir.
	KeepHistory bool
	History     history.Config
	// Files keeps the archives sent with commands and brought back, in
	// the same JetStream as the history (so only with KeepHistory); its
	// ticket key is made in the credentials directory (Files.Key is
	// ignored).
	Files files.Config
	// Election tunes the election service; Election.Events, when set, hears
	// what happens to the election.
	Election election.ServiceConfig
	// HTTP, when set, is the host:port of the monitoring endpoints and of
	// the dashboard (Web).
	HTTP string
	Web  web.Config
	// Discovery answers nodes' discovery requests (node --discover) on
	// the client address's UDP port (see package discovery).
	Discovery bool
	// TuneMemory keeps the process's soft memory limit a margin above what
	// it uses (see memory.go). It is process-wide: set it in a broker
	// process, not in a test that embeds a broker.
	TuneMemory bool
	Logger     *slog.Logger
}

// DefaultConfig returns the broker's defaults.
func DefaultConfig() Config {
	srv := bus.DefaultServerConfig()
	// Every result must fit one message.
	srv.MaxPayload = messages.MaxPayload
	el := election.DefaultServiceConfig()
	hist := history.DefaultConfig()
	dash := web.DefaultConfig()
	fcfg := files.DefaultConfig()
	// The parts log through Logger, each under its component's name.
	srv.Logger, el.Logger, hist.Logger, dash.Logger, fcfg.Logger = nil, nil, nil, nil, nil
	return Config{
		// Safe wherever the broker is reachable from another host, and no
		// flags for a try on one machine.
		Auth:   AuthAuto,
		Server: srv,
		// Like etcd's default.etcd: next to where the broker runs.
		DataDir:  "baton-broker.data",
		Election: el,
		// Operators ask first who ran what, where and when.
		KeepHistory: true,
		History:     hist,
		Files:       fcfg,
		Web:         dash,
		// The LAN finds its broker; it learns only an address.
		Discovery: true,
		Logger:    slog.Default(),
	}
}

func (c Config) validate() error {
	switch {
	case c.DataDir == "":
		return fmt.Errorf("%w: empty data directory", ErrInvalidConfig)
	case c.Auth != AuthAuto && c.Auth != AuthRequired && c.Auth != AuthNone:
		return fmt.Errorf("%w: auth %q is none of auto, required, none", ErrInvalidConfig, c.Auth)
	case c.Server.MaxPayload < messages.MaxPayload:
		return fmt.Errorf("%w: max payload %d is below the %d bytes the largest result needs", ErrInvalidConfig, c.Server.MaxPayload, messages.MaxPayload)
	}
	return nil
}

// Broker is the embedded NATS server, the election service on it, and the
// monitoring HTTP server.
type Broker struct {
	cfg      Config
	server   *bus.Server
	election *election.Service
	history  *history.Store // nil without KeepHistory
	files    *files.Store   // likewise
	// lost queues the departures whose jobs the history marks lost.
	lost     chan election.Event
	http     *http.Server
	httpAddr string
	// discovery answers nodes looking for the broker; nil when off.
	discovery *discovery.Responder
	// The dashboard, with HTTP: its sign-in tokens (with credentials
	// required), the users it submits as, and their clients.
	web        *web.Server
	tokens     auth.Tokens
	webUsers   []webUser
	webClients webClients
	// stopWeb ends the requests in flight (event streams) before the HTTP
	// server shuts down.
	stopWeb context.CancelFunc

	cancel    context.CancelFunc // ends the broker's own goroutines
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// New prepares a broker for cfg. It starts nothing.
func New(cfg Config) (*Broker, error) {
	if cfg.Logger == nil {
		cfg.Logger = DefaultConfig().Logger
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Server.Logger == nil {
		cfg.Server.Logger = cfg.Logger.With(keyComponent, "nats-server")
	}
	if cfg.Election.Logger == nil {
		cfg.Election.Logger = cfg.Logger.With(keyComponent, "election")
	}
	if cfg.History.Logger == nil {
		cfg.History.Logger = cfg.Logger.With(keyComponent, "history")
	}
	if cfg.Files.Logger == nil {
		cfg.Files.Logger = cfg.Logger.With(keyComponent, "files")
	}
	if cfg.Web.Logger == nil {
		cfg.Web.Logger = cfg.Logger.With(keyComponent, "web")
	}
	// The election service and the history answer in the broker's own
	// account; the server routes their subjects there, telling them who
	// sent each message.
	cfg.Server.Services, cfg.Server.Streams = election.ServiceSubjects(), election.StreamSubjects()
	b := &Broker{cfg: cfg, lost: make(chan election.Event, maxLostQueued)}
	if cfg.KeepHistory {
		b.cfg.Server.JetStreamDir = cfg.DataDir
		b.cfg.Server.Services = slices.Concat(b.cfg.Server.Services, history.ServiceSubjects(), messages.JobReadSubjects(), files.ServiceSubjects())
		b.cfg.Election.History = true
		b.cfg.Election.MaxBundleBytes, b.cfg.Election.MaxBundleFiles = cfg.Files.MaxBytes, cfg.Files.MaxFiles
	}
	if cfg.KeepHistory || cfg.HTTP != "" {
		user := cfg.Election.Events
		// The dashboard first: the history's marking of lost jobs may
		// take a while.
		b.cfg.Election.Events = func(e election.Event) {
			if b.web != nil {
				b.web.ClusterEvent(e)
			}
			b.historyEvent(e)
			if user != nil {
				user(e)
			}
		}
	}
	return b, nil
}

// Start takes the data directory, makes the credentials if they are
// required and missing, starts the NATS server, the election service and
// the HTTP server, in that order, and returns once all answer. The data
// directory comes first so that a broker that cannot have it fails before
// it listens. After a failed Start, Close releases what it took.
func (b *Broker) Start(ctx context.Context) error {
	store, err := election.OpenFileStore(b.cfg.DataDir)
	if err != nil {
		return err
	}
	srvCfg := b.cfg.Server
	if err := b.authorize(&srvCfg); err != nil {
		store.Close()
		return err
	}
	if b.server, err = bus.NewServer(srvCfg); err != nil {
		store.Close()
		return err
	}
	if b.election, err = election.NewService(b.server, store, b.cfg.Election); err != nil {
		store.Close()
		return err
	}
	if b.cfg.KeepHistory {
		if err := b.newHistory(); err != nil {
			store.Close()
			return err
		}
	}
	if b.cfg.HTTP != "" {
		// Before the election starts, so that its timeline misses nothing.
		wcfg := b.cfg.Web
		wcfg.Tokens = b.tokens
		var hist web.History
		var fs web.Files
		if b.history != nil {
			hist, fs = b.history, b.files
			wcfg.MaxUpload, wcfg.MaxUploadFiles = b.cfg.Files.MaxBytes, b.cfg.Files.MaxFiles
		}
		if b.web, err = web.New(wcfg, b, hist, fs, b.webClients.submitter); err != nil {
			store.Close()
			return err
		}
	}
	if err := b.server.Start(ctx); err != nil {
		return err
	}
	// Before the first announcement, which tells masters to send records.
	if b.history != nil {
		if err := b.history.Start(ctx); err != nil {
			return err
		}
		if err := b.files.Start(ctx); err != nil {
			return err
		}
	}
	if err := b.election.Start(ctx); err != nil {
		return err
	}
	var bctx context.Context
	bctx, b.cancel = context.WithCancel(context.WithoutCancel(ctx))
	if b.cfg.HTTP != "" {
		if err := b.startWebClients(ctx); err != nil {
			return err
		}
		b.web.Start()
		if err := b.serveHTTP(ctx); err != nil {
			return err
		}
	}
	if b.history != nil {
		b.wg.Go(func() { b.reconcileHistory(bctx) })
		b.wg.Go(func() { b.markLostLoop(bctx) })
	}
	if b.cfg.TuneMemory {
		b.wg.Go(func() { tuneMemory(bctx) })
	}
	if b.cfg.Discovery {
		if err := b.answerDiscovery(srvCfg); err != nil {
			return err
		}
	}
	b.cfg.Logger.Info("broker ready", keyAddr, b.Addr(), keyDataDir, b.cfg.DataDir, keyHTTP, b.HTTPAddr(), keyDiscovery, b.DiscoveryAddr())
	return nil
}

// answerDiscovery answers nodes looking for the broker on the UDP port of
// its client address, with where they reach it and what it requires.
func (b *Broker) answerDiscovery(srv bus.ServerConfig) error {
	addrs, err := discovery.Advertised(b.Addr())
	if err != nil {
		return err
	}
	answer := &messages.DiscoverReply{Addrs: addrs, CredentialsRequired: !srv.NoAuth, TlsRequired: srv.TLSCert != "",
		Version: b.cfg.Election.Version, Protocol: messages.Protocol}
	cfg := discovery.DefaultResponderConfig(b.Addr(), answer)
	cfg.Logger = b.cfg.Logger.With(keyComponent, "discovery")
	b.discovery, err = discovery.Listen(cfg)
	return err
}

// DiscoveryAddr is the UDP address where the broker answers discovery
// requests, empty when off or before Start.
func (b *Broker) DiscoveryAddr() string {
	if b.discovery == nil {
		return ""
	}
	return b.discovery.Addr()
}

// newHistory prepares the job history and the file store, which keeps
// what the history's records name.
func (b *Broker) newHistory() error {
	key, err := auth.EnsureFileKey(auth.Dir(b.cfg.DataDir))
	if err != nil {
		return err
	}
	hcfg, fcfg := b.cfg.History, b.cfg.Files
	fcfg.Key = key
	hcfg.Sender = b.election.ConnectionOf
	hcfg.Ticket = func(sha string) string { return b.files.Ticket(sha) }
	hcfg.Changed = func(sum *messages.JobSummary) {
		// The tickets granted until the record no longer keep its
		// archives: the record does.
		at := time.Now()
		if sum.FinishedAt != nil {
			at = *sum.FinishedAt
		}
		b.files.Used(sum.Bundles(), at)
		if b.web != nil {
			b.web.JobChanged(sum)
		}
	}
	if b.history, err = history.New(b.server, hcfg); err != nil {
		return err
	}
	fcfg.Referenced, fcfg.Ready = b.history.Referenced, b.history.Loaded()
	b.files, err = files.New(b.server, fcfg)
	return err
}

// serveHTTP listens on cfg.HTTP and serves the monitoring endpoints.
func (b *Broker) serveHTTP(ctx context.Context) error {
	l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", b.cfg.HTTP)
	if err != nil {
		return fmt.Errorf("monitoring: listen on %s: %w", b.cfg.HTTP, err)
	}
	b.httpAddr = l.Addr().String()
	var base context.Context
	base, b.stopWeb = context.WithCancel(context.Background())
	b.http = &http.Server{
		Handler:           b.handler(),
		ReadHeaderTimeout: 5 * time.Second,
		// No write timeout: event streams and commands run long; each
		// write has its own deadline.
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		BaseContext:    func(net.Listener) context.Context { return base },
	}
	b.wg.Go(func() {
		if err := b.http.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			b.cfg.Logger.Error("monitoring server stopped", keyErr, err)
		}
	})
	return nil
}

// Addr is the address NATS clients connect to, host:port (useful when the
// config asked for port 0). It is empty before Start.
func (b *Broker) Addr() string {
	if b.server == nil {
		return ""
	}
	return b.server.Addr()
}

// HTTPAddr is the address of the monitoring endpoints, empty when off or
// before Start.
func (b *Broker) HTTPAddr() string { return b.httpAddr }

// Status is the cluster's state as last announced, with when the broker
// last heard from each member; empty before Start.
func (b *Broker) Status() election.Status {
	if b.election == nil {
		return election.Status{}
	}
	return election.StatusOf(b.election.Current())
}

// Close stops the HTTP server, the election service (which first announces
// that there is no master) and the NATS server, in that order, and waits
// for the broker's goroutines, or until ctx ends: then what is left (the
// election service releasing the data directory) finishes in the
// background, and a later Close waits for it. It is safe to call twice,
// and after a failed Start.
func (b *Broker) Close(ctx context.Context) error {
	b.closeOnce.Do(func() { b.closeErr = b.close(ctx) })
	if b.election != nil {
		if err := b.election.Close(ctx); err != nil {
			return err
		}
	}
	return b.closeErr
}

func (b *Broker) close(ctx context.Context) error {
	var errs []error
	if b.discovery != nil {
		errs = append(errs, b.discovery.Close())
	}
	if b.web != nil {
		// Commands run from the dashboard run on, unwaited for (the
		// history records them): a planned restart fails none.
		b.web.Close()
	}
	if b.http != nil {
		// Event streams never go idle: they end first.
		b.stopWeb()
		errs = append(errs, b.http.Shutdown(ctx))
	}
	if b.web != nil {
		errs = append(errs, b.closeWebClients(ctx))
	}
	if b.election != nil {
		errs = append(errs, b.election.Close(ctx))
	}
	if b.files != nil {
		b.files.Close()
	}
	if b.history != nil {
		b.history.Close()
	}
	if b.server != nil {
		errs = append(errs, b.server.Close(ctx))
	}
	if b.cancel != nil {
		b.cancel()
	}
	b.wg.Wait()
	return errors.Join(errs...)
}
