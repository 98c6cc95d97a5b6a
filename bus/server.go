package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// DefaultAddr is where the broker listens and clients connect by default:
// the stock nats CLI's default, so that it needs no flags.
const DefaultAddr = "127.0.0.1:4222"

// ErrInvalidServerConfig is wrapped by ServerConfig validation errors.
var ErrInvalidServerConfig = errors.New("bus: invalid server config")

// ErrNotStarted is returned by Server methods that need a running server.
var ErrNotStarted = errors.New("bus: server not started")

// ServerConfig tunes the broker's embedded NATS server.
type ServerConfig struct {
	// Addr is the client listen address, host:port; port 0 picks a free one.
	Addr string
	// PingInterval and MaxPingsOut decide how soon the server notices a
	// client whose TCP peer died without closing (a pulled cable, a frozen
	// VM): after about PingInterval*(MaxPingsOut+1).
	PingInterval time.Duration
	MaxPingsOut  int
	// MaxPayload is the largest message the server accepts.
	MaxPayload int32
	// StartTimeout bounds how long Start waits for the server to accept
	// connections.
	StartTimeout time.Duration
	Logger       *slog.Logger
}

// DefaultServerConfig returns the broker's defaults.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{
		Addr: DefaultAddr,
		// The server default (2 min, 2 pings) would keep a dead peer's
		// subscriptions for minutes; 1 s and 2 pings notices it in ~3 s.
		PingInterval: time.Second,
		MaxPingsOut:  2,
		// The server's own default; the broker raises it to hold the
		// largest result.
		MaxPayload:   server.MAX_PAYLOAD_SIZE,
		StartTimeout: 5 * time.Second,
		Logger:       slog.Default().With(keyComponent, "nats-server"),
	}
}

func (c ServerConfig) validate() error {
	if _, _, err := splitAddr(c.Addr); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidServerConfig, err)
	}
	switch {
	case c.PingInterval <= 0:
		return fmt.Errorf("%w: ping interval %v must be positive", ErrInvalidServerConfig, c.PingInterval)
	case c.MaxPingsOut <= 0:
		return fmt.Errorf("%w: max pings out %d must be positive", ErrInvalidServerConfig, c.MaxPingsOut)
	case c.MaxPayload <= 0:
		return fmt.Errorf("%w: max payload %d must be positive", ErrInvalidServerConfig, c.MaxPayload)
	case c.StartTimeout <= 0:
		return fmt.Errorf("%w: start timeout %v must be positive", ErrInvalidServerConfig, c.StartTimeout)
	}
	return nil
}

func splitAddr(addr string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("address %q: %w (want host:port)", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("address %q: port %q is not a number from 0 to 65535", addr, portStr)
	}
	return host, port, nil
}

// Server is the broker's embedded NATS server. Clients that send no
// credentials (baton nodes, the nats CLI) share one account; the server's
// system account, which carries client connect and disconnect events, is
// reachable only in-process through SystemConn.
type Server struct {
	cfg      ServerConfig
	ns       *server.Server
	sysKey   nkeys.KeyPair
	sysPub   string
	stopOnce sync.Once
}

// NewServer prepares a server for cfg. It starts nothing.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = DefaultServerConfig().Logger
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	host, port, _ := splitAddr(cfg.Addr)
	if port == 0 {
		port = server.RANDOM_PORT
	}
	// Both users are nkeys generated per start: the system user's key never
	// leaves this process, and clients without credentials are mapped to the
	// other one without a signature check.
	sysKey, err := nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("generate system user key: %w", err)
	}
	noAuthKey, err := nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("generate client user key: %w", err)
	}
	sysPub, _ := sysKey.PublicKey()
	noAuthPub, _ := noAuthKey.PublicKey()
	s := &Server{cfg: cfg, sysKey: sysKey, sysPub: sysPub}
	sysAcc := server.NewAccount("SYS")
	opts := &server.Options{
		ServerName:    "baton-broker",
		Host:          host,
		Port:          port,
		PingInterval:  cfg.PingInterval,
		MaxPingsOut:   cfg.MaxPingsOut,
		MaxPayload:    cfg.MaxPayload,
		MaxPending:    4 * int64(cfg.MaxPayload),
		NoSigs:        true,
		Accounts:      []*server.Account{sysAcc},
		SystemAccount: sysAcc.Name,
		Nkeys: []*server.NkeyUser{
			{Nkey: sysPub, Account: sysAcc},
			// Clients without credentials land here, in the global account.
			{Nkey: noAuthPub},
		},
		NoAuthUser: noAuthPub,
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("configure nats server: %w", err)
	}
	l := natsLogger{cfg.Logger}
	ns.SetLoggerV2(l, l.debugEnabled(), false, false)
	s.ns = ns
	return s, nil
}

// Start listens and blocks until the server accepts connections. It fails
// with a one-line error when the address is taken or cannot be bound.
func (s *Server) Start(ctx context.Context) error {
	if s.cfg.Addr != "" {
		// nats-server only logs a failed listen; probe first for a clear error.
		if _, port, _ := splitAddr(s.cfg.Addr); port != 0 {
			l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", s.cfg.Addr)
			if err != nil {
				return fmt.Errorf("listen on %s: %w", s.cfg.Addr, err)
			}
			l.Close()
		}
	}
	go s.ns.Start()
	if !s.ns.ReadyForConnections(s.cfg.StartTimeout) {
		s.ns.Shutdown()
		return fmt.Errorf("listen on %s: server not ready after %v", s.cfg.Addr, s.cfg.StartTimeout)
	}
	return nil
}

// Addr is the address the server listens on, host:port (useful when
// ServerConfig.Addr asked for port 0). It is empty before Start.
func (s *Server) Addr() string {
	a := s.ns.Addr()
	if a == nil {
		return ""
	}
	return a.String()
}

// Conn opens an in-process client connection in the clients' account.
func (s *Server) Conn(name string, opts ...nats.Option) (*nats.Conn, error) {
	return s.inProcess(name, opts...)
}

// SystemConn opens an in-process connection to the system account, where
// the server publishes client events such as
// $SYS.ACCOUNT.$G.DISCONNECT.
func (s *Server) SystemConn(name string, opts ...nats.Option) (*nats.Conn, error) {
	return s.inProcess(name, append(opts, nats.Nkey(s.sysPub, s.sysKey.Sign))...)
}

func (s *Server) inProcess(name string, opts ...nats.Option) (*nats.Conn, error) {
	if s.ns.Addr() == nil {
		return nil, ErrNotStarted
	}
	nc, err := nats.Connect("", append([]nats.Option{nats.Name(name), nats.InProcessServer(s.ns), nats.NoReconnect()}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("in-process connection %q: %w", name, err)
	}
	return nc, nil
}

// DisconnectEvents is the subject of disconnect events of the clients'
// account; the body is a server.DisconnectEventMsg.
const DisconnectEvents = "$SYS.ACCOUNT.$G.DISCONNECT"

// Kick closes the client connection with the given server client id, so
// that its subscriptions vanish with it. A client already gone is ignored:
// that is the only way the server's kick fails.
func (s *Server) Kick(clientID uint64) {
	_ = s.ns.DisconnectClientByID(clientID)
}

// Close shuts the server down, closing every client connection, and waits
// until it has stopped or ctx ends. It is safe to call twice.
func (s *Server) Close(ctx context.Context) error {
	s.stopOnce.Do(s.ns.Shutdown)
	done := make(chan struct{})
	go func() {
		s.ns.WaitForShutdown()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("shut down nats server: %w", ctx.Err())
	}
}

// MonitorMux serves the NATS monitoring endpoints (/varz, /connz,
// /subsz, /routez, /healthz, /accountz, /jsz) from this server; callers
// may add their own routes.
func (s *Server) MonitorMux() *http.ServeMux {
	mux := http.NewServeMux()
	for path, h := range map[string]http.HandlerFunc{
		"/varz":     s.ns.HandleVarz,
		"/connz":    s.ns.HandleConnz,
		"/subsz":    s.ns.HandleSubsz,
		"/routez":   s.ns.HandleRoutez,
		"/healthz":  s.ns.HandleHealthz,
		"/accountz": s.ns.HandleAccountz,
		"/jsz":      s.ns.HandleJsz,
	} {
		mux.HandleFunc(path, h)
	}
	return mux
}
