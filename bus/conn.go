package bus

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// ErrUnreachable is wrapped by Connect when the first connection fails.
var ErrUnreachable = errors.New("broker unreachable")

// ErrNotAuthorized is wrapped by Connect when the broker refuses the
// connection's credentials, or its lack of them.
var ErrNotAuthorized = errors.New("refused by the broker")

// refusal says why the broker refused cfg's connection, and what to do.
func refusal(cfg ConnConfig) string {
	if cfg.Credentials == "" {
		return "it requires credentials and none were given; give one of the files it made under <data-dir>/credentials (node --credentials FILE)"
	}
	return fmt.Sprintf("credential %s is not one of the broker's; give one of the files it made under <data-dir>/credentials", cfg.Credentials)
}

// untrusted says why a TLS handshake failed and what to do, or "" when err
// is no TLS failure.
func untrusted(err error, cfg ConnConfig) string {
	var unknown x509.UnknownAuthorityError
	var hostname x509.HostnameError
	switch {
	case errors.As(err, &unknown) && cfg.TLSCA == "":
		return "its TLS certificate is signed by an authority this client does not trust; give the authority's certificate (node --tls-ca FILE, the broker's <data-dir>/tls/ca.pem)"
	case errors.As(err, &unknown):
		return fmt.Sprintf("its TLS certificate is not signed by the authority in %s; give the broker's own (<data-dir>/tls/ca.pem)", cfg.TLSCA)
	case errors.As(err, &hostname):
		return fmt.Sprintf("its TLS certificate is not for this address (%v); connect by a name it holds", hostname.Error())
	case errors.Is(err, nats.ErrSecureConnWanted):
		return "this client wants TLS and the broker does not offer it; drop --tls-ca, or start the broker with --tls-cert and --tls-key"
	}
	return ""
}

// ErrInvalidConnConfig is wrapped by ConnConfig validation errors.
var ErrInvalidConnConfig = errors.New("bus: invalid connection config")

// ConnConfig says how a client reaches the broker. Every baton connection
// is made from one, so what a connection needs to be let in (credentials,
// TLS) is set in one place.
type ConnConfig struct {
	// Addrs are the broker's addresses (host:port, or nats:// URLs); the
	// client tries them in turn, from a random one unless InOrder.
	Addrs   []string
	InOrder bool
	// Name identifies the connection in the server's monitoring.
	Name string
	// Credentials, when set, is the nkey seed file the client proves its
	// identity with (see package auth).
	Credentials string
	// InboxPrefix, when set, is where the client receives replies: the
	// one its credential may subscribe to.
	InboxPrefix string
	// TLSCA, when set, is the PEM file of the certificate authority the
	// client trusts the broker's certificate by (see auth.Certificates).
	TLSCA string
	// ConnectTimeout bounds how long Connect keeps trying the first time.
	ConnectTimeout time.Duration
	// Reconnect makes a connection that was up reconnect forever, with
	// backoff; without it a lost connection stays closed.
	Reconnect bool
	// PingInterval and MaxPingsOut decide how soon the client notices a
	// broker host that died without closing the socket.
	PingInterval time.Duration
	MaxPingsOut  int
	// ReconnectBufSize is how many bytes of publications wait while the
	// connection is reconnecting.
	ReconnectBufSize int
	// Logger receives asynchronous connection errors.
	Logger *slog.Logger
	// OnError, when set, hears each asynchronous error (a permission
	// violation, a slow consumer); they are then logged at debug level
	// only, since the caller reports them.
	OnError func(error)
}

// DefaultConnConfig returns the connection every baton client starts from.
func DefaultConnConfig() ConnConfig {
	return ConnConfig{
		Addrs: []string{DefaultAddr},
		// A node started together with its broker (docker compose) gets
		// this long for the broker to come up; an unreachable one fails
		// after it.
		ConnectTimeout: 5 * time.Second,
		Reconnect:      true,
		// Notice a dead broker host within ~15 s instead of nats.go's
		// minutes (a dead broker process is noticed at once: its host
		// closes the socket). A client pings whether or not it is busy, so
		// this is a cost per interval that the broker pays for every member.
		PingInterval: 5 * time.Second,
		MaxPingsOut:  2,
		// nats.go's own default; a node raises it to hold a few of the
		// largest results it replies with while reconnecting.
		ReconnectBufSize: nats.DefaultReconnectBufSize,
		Logger:           slog.Default().With(keyComponent, "nats-client"),
	}
}

func (c ConnConfig) validate() error {
	switch {
	case len(c.Addrs) == 0:
		return fmt.Errorf("%w: no broker address", ErrInvalidConnConfig)
	case c.ConnectTimeout <= 0:
		return fmt.Errorf("%w: connect timeout %v must be positive", ErrInvalidConnConfig, c.ConnectTimeout)
	case c.PingInterval <= 0 || c.MaxPingsOut <= 0:
		return fmt.Errorf("%w: ping interval %v and max pings out %d must be positive", ErrInvalidConnConfig, c.PingInterval, c.MaxPingsOut)
	case c.ReconnectBufSize <= 0:
		return fmt.Errorf("%w: reconnect buffer %d must be positive", ErrInvalidConnConfig, c.ReconnectBufSize)
	}
	for _, a := range c.Addrs {
		if strings.TrimSpace(a) == "" {
			return fmt.Errorf("%w: empty broker address in %q", ErrInvalidConnConfig, c.Addrs)
		}
	}
	return nil
}

// Where names the broker addresses for messages: "127.0.0.1:4222".
func (c ConnConfig) Where() string { return strings.Join(c.Addrs, ",") }

// CheckAddr reports whether addr is a broker address: host:port with a
// port from 1 to 65535, or a nats:// or tls:// URL with one.
func CheckAddr(addr string) error {
	hostPort := addr
	if scheme, rest, ok := strings.Cut(addr, "://"); ok {
		if scheme != "nats" && scheme != "tls" {
			return fmt.Errorf("address %q: scheme %q, want nats:// or tls://", addr, scheme)
		}
		hostPort = rest
	}
	_, port, err := net.SplitHostPort(hostPort)
	if err != nil {
		return fmt.Errorf("address %q: want host:port, such as 127.0.0.1:4222", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("address %q: port %q is not a number from 1 to 65535", addr, port)
	}
	return nil
}

// URL turns a broker address (host:port, or a nats:// URL) into a URL.
func URL(addr string) string {
	if strings.Contains(addr, "://") {
		return addr
	}
	return "nats://" + addr
}

// ReconnectDelay is the wait before reconnect attempt n (1-based): doubling
// from 50 ms to at most 500 ms, with up to 20 % jitter so that a cluster
// does not reconnect in lockstep after a broker restart.
func ReconnectDelay(attempt int) time.Duration {
	d := 500 * time.Millisecond
	if attempt < 5 {
		d = min(d, (50*time.Millisecond)<<max(attempt-1, 0))
	}
	return d + rand.N(d/5+1)
}

// Backoff waits ReconnectDelay(attempt), or less if ctx ends first; it
// reports whether the wait passed, so that the caller may try again.
func Backoff(ctx context.Context, attempt int) bool {
	t := time.NewTimer(ReconnectDelay(attempt))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Connect dials the broker as cfg says. The first connect is retried until
// cfg.ConnectTimeout (or ctx) expires, then fails with an error wrapping
// ErrUnreachable that names the address. It blocks until then. opts are
// applied last and may override any setting (handlers, mostly).
func Connect(ctx context.Context, cfg ConnConfig, opts ...nats.Option) (*nats.Conn, error) {
	if cfg.Logger == nil {
		cfg.Logger = DefaultConnConfig().Logger
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	urls := make([]string, len(cfg.Addrs))
	for i, a := range cfg.Addrs {
		urls[i] = URL(a)
	}
	logger := cfg.Logger
	base := []nats.Option{
		nats.Name(cfg.Name),
		nats.PingInterval(cfg.PingInterval),
		nats.MaxPingsOutstanding(cfg.MaxPingsOut),
		nats.Timeout(time.Second),
		// Async errors (a slow consumer, a write that failed before a
		// reconnect) go to the log, not straight to stderr.
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			attrs := []any{keyConn, nc.Opts.Name, keyErr, err}
			if sub != nil {
				attrs = append(attrs, keySubject, sub.Subject)
			}
			if cfg.OnError != nil {
				logger.Debug("nats connection error", attrs...)
				cfg.OnError(err)
				return
			}
			logger.Warn("nats connection error", attrs...)
		}),
		nats.ReconnectBufSize(cfg.ReconnectBufSize),
	}
	if cfg.InOrder {
		base = append(base, nats.DontRandomize())
	}
	if cfg.Reconnect {
		base = append(base, nats.MaxReconnects(-1), nats.CustomReconnectDelay(ReconnectDelay))
	} else {
		base = append(base, nats.NoReconnect())
	}
	if cfg.Credentials != "" {
		opt, err := nats.NkeyOptionFromSeed(cfg.Credentials)
		if err != nil {
			return nil, fmt.Errorf("credentials %s: %w", cfg.Credentials, err)
		}
		base = append(base, opt)
	}
	if cfg.InboxPrefix != "" {
		base = append(base, nats.CustomInboxPrefix(cfg.InboxPrefix))
	}
	if cfg.TLSCA != "" {
		// A file that cannot be read is no broker's fault: say so at once.
		pem, err := os.ReadFile(cfg.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in it (give the broker's <data-dir>/tls/ca.pem)", cfg.TLSCA)
		}
		base = append(base, nats.RootCAs(cfg.TLSCA))
	}
	where := cfg.Where()
	deadline := time.Now().Add(cfg.ConnectTimeout)
	var lastErr error
	for attempt := 1; ; attempt++ {
		nc, err := nats.Connect(strings.Join(urls, ","), append(base, opts...)...)
		if err == nil {
			return nc, nil
		}
		if errors.Is(err, nats.ErrAuthorization) {
			// The broker answered: retrying changes nothing.
			return nil, fmt.Errorf("connect to broker at %s: %w: %s", where, ErrNotAuthorized, refusal(cfg))
		}
		if why := untrusted(err, cfg); why != "" {
			return nil, fmt.Errorf("connect to broker at %s: %s", where, why)
		}
		lastErr = err
		wait := ReconnectDelay(attempt)
		if time.Now().Add(wait).After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w at %s: %w", ErrUnreachable, where, ctx.Err())
		case <-time.After(wait):
		}
	}
	// The client library's own prefix says nothing to a person.
	return nil, fmt.Errorf("%w at %s (%s; gave up after %v): is the broker running there?",
		ErrUnreachable, where, strings.TrimPrefix(lastErr.Error(), "nats: "), cfg.ConnectTimeout)
}
