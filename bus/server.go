package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
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
	// Services are the subjects on which the internal account (see
	// ServiceConn) answers clients. A client's message on one of them
	// arrives there carrying the sender's identity, set by the server
	// (see SenderOf).
	Services []string
	// Streams are the subjects on which the internal account publishes to
	// clients.
	Streams []string
	// Users are the clients' credentials, in the clients' account.
	Users []User
	// JetStreamDir, when set, turns JetStream on in the internal account
	// alone (clients reach it only through the subjects of Services),
	// storing under JetStreamDir/jetstream.
	JetStreamDir string
	// NoAuth lets clients without credentials in, to the clients' account,
	// unrestricted.
	NoAuth bool
	// TLSCert and TLSKey, when set, are the PEM files of the server's
	// certificate and key: then every client connects over TLS (in-process
	// connections excepted).
	TLSCert, TLSKey string
	// Cluster, when its Addr is set, makes the server one of a cluster of
	// brokers.
	Cluster ClusterConfig
	Logger  *slog.Logger
}

// ClusterConfig joins a server to a cluster of brokers: NATS routes
// between them, and JetStream replicated over them.
type ClusterConfig struct {
	// Name is the server's name, unique in the cluster.
	Name string
	// Addr is where the server listens for the other brokers' routes,
	// host:port.
	Addr string
	// Peers are the route addresses of the other brokers (host:port); one
	// that answers is enough to join, and the cluster tells of the rest.
	Peers []string
	// Secret, when set, is what every route must present, and presents:
	// the brokers of a cluster share it.
	Secret string
	// CA, with the server's TLSCert and TLSKey, makes routes mutual TLS:
	// each broker proves itself with its certificate, signed by CA.
	CA string
}

// ClusterName is the name of every cluster of brokers.
const ClusterName = "baton"

// routeUser is the user name routes present with the cluster's secret.
const routeUser = "baton-route"

// User is a client credential: an nkey, and what it may do.
type User struct {
	// Nkey is the key's public half.
	Nkey        string
	Permissions *server.Permissions
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
		// Plumbing's default; the broker decides (its --auth).
		NoAuth: true,
		Logger: slog.Default().With(keyComponent, "nats-server"),
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
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return fmt.Errorf("%w: TLS needs both a certificate and its key", ErrInvalidServerConfig)
	case c.StartTimeout <= 0:
		return fmt.Errorf("%w: start timeout %v must be positive", ErrInvalidServerConfig, c.StartTimeout)
	}
	if cl := c.Cluster; cl.Addr != "" {
		if _, _, err := splitAddr(cl.Addr); err != nil {
			return fmt.Errorf("%w: cluster: %w", ErrInvalidServerConfig, err)
		}
		for _, p := range cl.Peers {
			if _, port, err := splitAddr(p); err != nil || port == 0 {
				return fmt.Errorf("%w: peer %q: want host:port", ErrInvalidServerConfig, p)
			}
		}
		switch {
		case cl.Name == "":
			return fmt.Errorf("%w: a broker of a cluster needs a name", ErrInvalidServerConfig)
		case cl.CA != "" && c.TLSCert == "":
			return fmt.Errorf("%w: TLS between brokers needs the broker's certificate", ErrInvalidServerConfig)
		}
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

// The server's accounts. Clients (baton nodes, requesters, the nats CLI)
// share ClientsAccount. The broker's own services live in InternalAccount,
// which clients reach only through the subjects ServerConfig names; the
// system account carries client connect and disconnect events. Both are
// reachable only in-process, with keys that never leave it.
const (
	ClientsAccount  = "CLIENTS"
	InternalAccount = "BROKER"
	systemAccount   = "SYS"
)

// Server is the broker's embedded NATS server.
type Server struct {
	cfg         ServerConfig
	ns          *server.Server
	sysKey      nkeys.KeyPair
	sysPub      string
	internalKey nkeys.KeyPair
	internalPub string
	stopOnce    sync.Once
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
	// The system and internal users are nkeys generated per start, whose
	// keys never leave this process; with NoAuth, clients without
	// credentials are mapped to a third, in the clients' account, without
	// a signature check.
	keys := make([]nkeys.KeyPair, 3)
	pubs := make([]string, 3)
	for i := range keys {
		k, err := nkeys.CreateUser()
		if err != nil {
			return nil, fmt.Errorf("generate user key: %w", err)
		}
		keys[i] = k
		pubs[i], _ = k.PublicKey()
	}
	sysPub, internalPub, noAuthPub := pubs[0], pubs[1], pubs[2]
	s := &Server{cfg: cfg, sysKey: keys[0], sysPub: sysPub, internalKey: keys[1], internalPub: internalPub}
	sysAcc := server.NewAccount(systemAccount)
	internalAcc := server.NewAccount(InternalAccount)
	clientsAcc := server.NewAccount(ClientsAccount)
	opts := &server.Options{
		ServerName:    "baton-broker",
		Host:          host,
		Port:          port,
		PingInterval:  cfg.PingInterval,
		MaxPingsOut:   cfg.MaxPingsOut,
		MaxPayload:    cfg.MaxPayload,
		MaxPending:    4 * int64(cfg.MaxPayload),
		NoSigs:        true,
		Accounts:      []*server.Account{sysAcc, internalAcc, clientsAcc},
		SystemAccount: sysAcc.Name,
		Nkeys: []*server.NkeyUser{
			{Nkey: sysPub, Account: sysAcc},
			{Nkey: internalPub, Account: internalAcc},
		},
	}
	if cfg.JetStreamDir != "" {
		opts.JetStream, opts.StoreDir = true, cfg.JetStreamDir
	}
	if cfg.NoAuth {
		opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: noAuthPub, Account: clientsAcc})
		opts.NoAuthUser = noAuthPub
	}
	for _, u := range cfg.Users {
		opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: u.Nkey, Account: clientsAcc, Permissions: u.Permissions})
	}
	if cfg.TLSCert != "" {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: cfg.TLSCert, KeyFile: cfg.TLSKey})
		if err != nil {
			return nil, fmt.Errorf("TLS certificate %s and key %s: %w", cfg.TLSCert, cfg.TLSKey, err)
		}
		opts.TLS, opts.TLSConfig, opts.TLSTimeout = true, tc, 2
	}
	if err := clusterOptions(opts, cfg); err != nil {
		return nil, err
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("configure nats server: %w", err)
	}
	if err := link(ns, cfg.Services, cfg.Streams); err != nil {
		return nil, fmt.Errorf("configure nats server: %w", err)
	}
	l := natsLogger{cfg.Logger}
	ns.SetLoggerV2(l, l.debugEnabled(), false, false)
	s.ns = ns
	return s, nil
}

// clusterOptions sets opts for cfg.Cluster, if any.
func clusterOptions(opts *server.Options, cfg ServerConfig) error {
	cl := cfg.Cluster
	if cl.Addr == "" {
		return nil
	}
	host, port, _ := splitAddr(cl.Addr)
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts.ServerName = cl.Name
	opts.Cluster = server.ClusterOpts{Name: ClusterName, Host: host, Port: port}
	if cl.Secret != "" {
		opts.Cluster.Username, opts.Cluster.Password = routeUser, cl.Secret
	}
	if cl.CA != "" {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: cfg.TLSCert, KeyFile: cfg.TLSKey, CaFile: cl.CA, Verify: true})
		if err != nil {
			return fmt.Errorf("TLS between brokers (certificate %s, authority %s): %w", cfg.TLSCert, cl.CA, err)
		}
		// The authority verifies both ends: the brokers this one accepts,
		// and those it connects to.
		tc.RootCAs = tc.ClientCAs
		opts.Cluster.TLSConfig, opts.Cluster.TLSTimeout = tc, 2
	}
	scheme := "nats-route://"
	if cl.Secret != "" {
		scheme += url.UserPassword(routeUser, cl.Secret).String() + "@"
	}
	// Its own address too, as NATS clusters are configured: the server
	// skips it, and JetStream counts the cluster's size from the routes
	// when it first forms.
	peers := cl.Peers
	if port != server.RANDOM_PORT && !slices.Contains(peers, cl.Addr) {
		peers = append(slices.Clone(peers), cl.Addr)
	}
	for _, p := range peers {
		u, err := url.Parse(scheme + p)
		if err != nil {
			return fmt.Errorf("%w: peer %q: %w", ErrInvalidServerConfig, p, err)
		}
		opts.Routes = append(opts.Routes, u)
	}
	return nil
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

// EnableJetStream turns JetStream on in the internal account (see
// ServerConfig.JetStreamDir), recovering what it stored: after a crash
// that can take seconds, so callers need not hold the server's start for
// it. It needs a started server.
func (s *Server) EnableJetStream() error {
	if s.cfg.JetStreamDir == "" {
		return fmt.Errorf("%w: no JetStream directory", ErrInvalidServerConfig)
	}
	internal, err := s.ns.LookupAccount(InternalAccount)
	if err == nil {
		// No limits of its own: the server's (75 % of the disk) apply.
		err = internal.EnableJetStream(nil, nil)
	}
	if err != nil {
		return fmt.Errorf("enable JetStream in %s: %w", s.cfg.JetStreamDir, err)
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

// link exports the internal account's services (sharing who sent each
// request) and streams to the clients' account.
func link(ns *server.Server, services, streams []string) error {
	internal, err := ns.LookupAccount(InternalAccount)
	if err != nil {
		return err
	}
	clients, err := ns.LookupAccount(ClientsAccount)
	if err != nil {
		return err
	}
	for _, subj := range services {
		if err := internal.AddServiceExport(subj, []*server.Account{clients}); err != nil {
			return fmt.Errorf("export service %s: %w", subj, err)
		}
		if err := clients.AddServiceImport(internal, subj, subj); err != nil {
			return fmt.Errorf("import service %s: %w", subj, err)
		}
		if err := clients.SetServiceImportSharing(internal, subj, true); err != nil {
			return fmt.Errorf("share requester of %s: %w", subj, err)
		}
	}
	for _, subj := range streams {
		if err := internal.AddStreamExport(subj, []*server.Account{clients}); err != nil {
			return fmt.Errorf("export stream %s: %w", subj, err)
		}
		if err := clients.AddStreamImport(internal, subj, ""); err != nil {
			return fmt.Errorf("import stream %s: %w", subj, err)
		}
	}
	return nil
}

// Conn opens an in-process client connection in the clients' account.
func (s *Server) Conn(name string, opts ...nats.Option) (*nats.Conn, error) {
	return s.inProcess(name, opts...)
}

// ServiceConn opens an in-process connection to the internal account, where
// the services and streams of ServerConfig are answered and published.
func (s *Server) ServiceConn(name string, opts ...nats.Option) (*nats.Conn, error) {
	return s.inProcess(name, append(opts, nats.Nkey(s.internalPub, s.internalKey.Sign))...)
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

// Name is the server's name: its broker's name in a cluster.
func (s *Server) Name() string { return s.ns.Name() }

// KickOn closes the client connection clientID on the server named
// broker: this one, or another broker of its cluster, asked through the
// system account. A server this one has no route to is an error.
func (s *Server) KickOn(ctx context.Context, broker string, clientID uint64) error {
	if broker == s.Name() {
		s.Kick(clientID)
		return nil
	}
	rz, err := s.ns.Routez(nil)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(rz.Routes, func(r *server.RouteInfo) bool { return r.RemoteName == broker })
	if i < 0 {
		return fmt.Errorf("kick connection %d on %s: no route to that broker", clientID, broker)
	}
	nc, err := s.SystemConn("kick")
	if err != nil {
		return err
	}
	defer nc.Close()
	req, _ := json.Marshal(server.KickClientReq{CID: clientID})
	_, err = nc.RequestWithContext(ctx, fmt.Sprintf("$SYS.REQ.SERVER.%s.KICK", rz.Routes[i].RemoteID), req)
	if err != nil {
		return fmt.Errorf("kick connection %d on %s: %w", clientID, broker, err)
	}
	return nil
}

// Peers are the names of the brokers this one has routes to, sorted.
func (s *Server) Peers() []string {
	rz, err := s.ns.Routez(nil)
	if err != nil {
		return nil
	}
	var names []string
	for _, r := range rz.Routes {
		if !slices.Contains(names, r.RemoteName) {
			names = append(names, r.RemoteName)
		}
	}
	slices.Sort(names)
	return names
}

// DisconnectEvents is the subject of disconnect events of the clients'
// account; the body is a server.DisconnectEventMsg.
const DisconnectEvents = "$SYS.ACCOUNT." + ClientsAccount + ".DISCONNECT"

// Connected reports whether the client connection with the given server
// client id is open.
func (s *Server) Connected(clientID uint64) bool { return s.ns.GetClient(clientID) != nil }

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

// MonitorHandlers are the NATS monitoring endpoints of this server, by
// path: /varz, /connz, /subsz, /routez, /healthz, /accountz, /jsz.
func (s *Server) MonitorHandlers() map[string]http.HandlerFunc {
	return map[string]http.HandlerFunc{
		"/varz":     s.ns.HandleVarz,
		"/connz":    s.ns.HandleConnz,
		"/subsz":    s.ns.HandleSubsz,
		"/routez":   s.ns.HandleRoutez,
		"/healthz":  s.ns.HandleHealthz,
		"/accountz": s.ns.HandleAccountz,
		"/jsz":      s.ns.HandleJsz,
	}
}
