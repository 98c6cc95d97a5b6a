package agent

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"baton/bus"
	"baton/messages"
)

// servingConn is the connection a master takes exec requests on. Each term
// opens its own and never reconnects it, so a subscription can only exist
// on the broker while this node holds the role (see follow).
type servingConn struct {
	nc     *nats.Conn
	svc    *execService // the exec endpoint, visible to `nats micro`
	closed chan struct{}
	// live is set once the connection serves; only then does its closing
	// call for a new one (a failed start must not retry in a hot loop).
	live atomic.Bool
}

// serve opens a serving connection for the term of epoch and subscribes to
// exec requests on it. It blocks for a few round trips to the broker, or
// until ctx ends.
func (n *Node) serve(ctx context.Context, epoch uint64) (*servingConn, error) {
	sc := &servingConn{closed: make(chan struct{})}
	conn := n.connConfig("/exec")
	conn.Reconnect = false
	// The broker is up (the announcement came through it): one second is
	// plenty, and a longer wait would hold the role loop.
	conn.ConnectTimeout = time.Second
	nc, err := bus.Connect(ctx, conn,
		// Draining needs one round trip to a live broker; a hung one must
		// not hold the role loop for nats.go's default 30 s.
		nats.DrainTimeout(2*time.Second),
		nats.ClosedHandler(func(*nats.Conn) {
			close(sc.closed)
			if sc.live.Load() {
				select {
				case n.connLost <- struct{}{}:
				default:
				}
			}
		}))
	if err != nil {
		return nil, err
	}
	// The broker learns this connection before it subscribes, and its
	// acknowledgement shows the broker still has this node alive (see
	// Member.ReportServing).
	if err := n.member.ReportServing(ctx, nc, epoch); err != nil {
		nc.Close()
		return nil, err
	}
	svc, err := startService(nc, serviceVersion(n.cfg.Version), n.cfg.Name, epoch, n.handleExec)
	if err == nil {
		err = nc.Flush()
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("subscribe %s: %w", messages.SubjectExec, err)
	}
	sc.nc, sc.svc = nc, svc
	sc.live.Store(true)
	return sc, nil
}

// stop drains the endpoint, then the connection, and blocks until the
// handler has taken its last request, so that the node's inflight count
// holds everything this term accepted.
func (sc *servingConn) stop(logger *slog.Logger) {
	sc.svc.stop()
	if err := sc.nc.Drain(); err != nil {
		// Drain refuses only a connection that is already closed or
		// reconnecting; closing it leaves the broker no subscription.
		sc.nc.Close()
	}
	<-sc.closed
}

// semver matches the SemVer 2.0.0 grammar, as the micro service demands.
var semver = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$`)

// serviceVersion turns a build version (a tag such as v1.2.3, or what git
// describe makes of an untagged tree, such as a1b2c3d-dirty) into the
// SemVer the micro service demands: a pre-release of 0.0.0 unless it is
// one already.
func serviceVersion(v string) string {
	if v := strings.TrimPrefix(v, "v"); semver.MatchString(v) {
		return v
	}
	id := strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '-' {
			return r
		}
		return '-'
	}, v)
	if id == "" {
		id = "dev"
	}
	return "0.0.0-" + id
}
