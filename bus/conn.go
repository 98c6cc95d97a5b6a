package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// ErrUnreachable is wrapped by Connect when the first connection fails.
var ErrUnreachable = errors.New("bus: broker unreachable")

// DefaultConnectTimeout is how long Connect keeps trying the first time.
// A node started together with its broker (docker compose) gets this long
// for the broker to come up; an unreachable one fails after it.
const DefaultConnectTimeout = 5 * time.Second

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

// Connect dials the broker at addr as the named client. The first connect
// is retried until timeout (or ctx) expires, then fails with an error
// wrapping ErrUnreachable that names the address. After that first success
// the connection reconnects forever with backoff. opts are applied last and
// may override any default.
func Connect(ctx context.Context, addr, name string, timeout time.Duration, opts ...nats.Option) (*nats.Conn, error) {
	base := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(ReconnectDelay),
		// Notice a dead broker host within ~15 s instead of nats.go's minutes
		// (a dead broker process is noticed at once: its host closes the
		// socket). A client pings whether or not it is busy, so this is a
		// cost per interval that the broker pays for every member.
		nats.PingInterval(5 * time.Second),
		nats.MaxPingsOutstanding(2),
		nats.Timeout(time.Second),
		// Async errors (a slow consumer, a write that failed before a
		// reconnect) go to the log, not straight to stderr.
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			attrs := []any{"conn", nc.Opts.Name, "err", err}
			if sub != nil {
				attrs = append(attrs, "subject", sub.Subject)
			}
			slog.Default().Warn("nats connection error", attrs...)
		}),
		// Replies published while reconnecting wait here; room for a few of
		// the largest results.
		nats.ReconnectBufSize(4 * MaxPayload),
	}
	deadline := time.Now().Add(timeout)
	var lastErr error
	for attempt := 1; ; attempt++ {
		nc, err := nats.Connect(URL(addr), append(base, opts...)...)
		if err == nil {
			return nc, nil
		}
		lastErr = err
		wait := ReconnectDelay(attempt)
		if time.Now().Add(wait).After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to broker at %s: %w: %w", addr, ErrUnreachable, ctx.Err())
		case <-time.After(wait):
		}
	}
	return nil, fmt.Errorf("connect to broker at %s: %w: %w (gave up after %v; is the broker running there?)",
		addr, ErrUnreachable, lastErr, timeout)
}
