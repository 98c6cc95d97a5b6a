package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"google.golang.org/protobuf/proto"

	"baton/bus"
	"baton/messages"
)

// Submission failures: the command's outcome is unknown or it never ran.
var (
	// ErrNoMaster: no node took the request during the retry window; the
	// command did not run.
	ErrNoMaster = errors.New("no master available")
	// ErrNoReply: the request reached a master but no result came back in
	// time; the command may or may not have run.
	ErrNoReply = errors.New("no result from the master")
)

// replyGrace is added to a command's queue and run time for the reply to
// travel back; past it the requester gives up.
const replyGrace = 2 * time.Second

// Client submits commands to the master. It does not join the election.
// It is safe for concurrent use.
type Client struct {
	nc  *nats.Conn
	cfg Config
}

// NewClient returns a client on nc, configured by cfg (its Name,
// ExecTimeout, QueueTimeout, SubmitRetry and Logger).
func NewClient(nc *nats.Conn, cfg Config) *Client {
	if cfg.Logger == nil {
		cfg.Logger = DefaultConfig(cfg.Name).Logger
	}
	return &Client{nc: nc, cfg: cfg}
}

// Submit sends cmd to the master and blocks until its result arrives. A
// request that finds no master is retried with short backoff for up to
// SubmitRetry; a request that may have been delivered is never sent again,
// so a command runs at most once. The error wraps ErrNoMaster or ErrNoReply
// when no result came back; a command that ran but failed (timeout,
// rejected, busy) is a result, not an error.
func (c *Client) Submit(ctx context.Context, cmd string) (*messages.ExecResult, error) {
	req := &messages.ExecRequest{
		Id:             nuid.Next(),
		Cmd:            cmd,
		Requester:      c.cfg.Name,
		TimeoutMs:      uint32(c.cfg.ExecTimeout.Milliseconds()),
		QueueTimeoutMs: uint32(c.cfg.QueueTimeout.Milliseconds()),
	}
	data, err := proto.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	wait := c.cfg.ExecTimeout + c.cfg.QueueTimeout + replyGrace
	giveUp := time.Now().Add(c.cfg.SubmitRetry)
	for attempt := 1; ; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, wait)
		msg, err := c.nc.RequestMsgWithContext(rctx, &nats.Msg{Subject: bus.SubjectExec, Data: data})
		cancel()
		switch {
		case err == nil:
			var res messages.ExecResult
			if err := proto.Unmarshal(msg.Data, &res); err != nil {
				return nil, fmt.Errorf("%w: malformed result: %w", ErrNoReply, err)
			}
			return &res, nil
		case errors.Is(err, nats.ErrNoResponders):
			// Nobody subscribed, so nobody received it: safe to send again.
			backoff := min(10*time.Millisecond<<min(attempt-1, 4), 200*time.Millisecond)
			if time.Now().Add(backoff).After(giveUp) {
				return nil, fmt.Errorf("%w: no node took the request for %v; is the broker electing (see `node status`)?", ErrNoMaster, c.cfg.SubmitRetry)
			}
			c.cfg.Logger.Debug("no master yet; retrying", "id", req.Id, "attempt", attempt)
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("%w: %w", ErrNoMaster, ctx.Err())
			case <-time.After(backoff):
			}
		case errors.Is(err, nats.ErrMaxPayload):
			return nil, fmt.Errorf("command of %d bytes is too large: %w", len(cmd), err)
		case ctx.Err() != nil:
			return nil, fmt.Errorf("%w: %w", ErrNoReply, ctx.Err())
		default:
			return nil, fmt.Errorf("%w within %v (%v); the master may have been lost while running the command; it may or may not have run",
				ErrNoReply, wait, err)
		}
	}
}
