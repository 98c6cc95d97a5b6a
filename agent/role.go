package agent

import (
	"context"
	"errors"
	"time"

	"baton/election"
	"baton/messages"
)

// roleLoop takes and gives up the master role as announcements say, until
// ctx ends (Close).
func (n *Node) roleLoop(ctx context.Context) {
	defer close(n.loopDone)
	changes := n.member.View().Observe(ctx)
	// Check for silence, and retry a serving connection that failed to
	// open or dropped, once per heartbeat.
	retry := time.NewTicker(n.cfg.HeartbeatInterval)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			n.stepDown()
			return
		case a, ok := <-changes:
			if !ok {
				n.stepDown()
				return
			}
			n.follow(ctx, a)
		case <-n.connLost:
			n.follow(ctx, n.member.Current())
		case <-retry.C:
			n.follow(ctx, n.member.Current())
		}
	}
}

// silent reports whether the broker has not had this node alive for
// longer than its heartbeat timeout: it may have declared the node dead and
// elected another master, so the node must not take new commands.
func (n *Node) silent() bool {
	timeout := n.member.HeartbeatTimeout()
	return timeout > 0 && n.member.SinceHeard() > timeout
}

// follow makes the node serve exactly when a names it master.
func (n *Node) follow(ctx context.Context, a *messages.Announcement) {
	if a != nil && n.followed && a.Master != n.announced && a.Master != n.cfg.Name {
		// What a person at this node's prompt wants to know; the master's
		// own change is told by its serving.
		master := a.Master
		if master == "" {
			master = "none"
		}
		attrs := []any{keyMaster, master, keyEpoch, a.Epoch}
		if a.Event != "" {
			attrs = append(attrs, keyEvent, a.Event)
		}
		n.cfg.Logger.Info("master changed", attrs...)
	}
	if a != nil {
		// The first master is told by whoever started the node (the
		// prompt's banner); only changes are logged.
		n.announced, n.followed = a.Master, true
	}
	if n.serving != nil {
		select {
		case <-n.serving.closed:
			n.cfg.Logger.Warn("serving connection lost")
			n.serving = nil
		default:
		}
	}
	if a == nil || a.Master != n.cfg.Name {
		n.stepDown()
		return
	}
	if n.serving != nil && n.silent() {
		// The broker may have declared this node dead and elected another:
		// take nothing until it has the node alive again (serving again
		// proves that with a round trip first).
		n.cfg.Logger.Warn("no word from the broker for longer than its heartbeat timeout; not taking commands",
			keySinceHeard, n.member.SinceHeard().Round(time.Millisecond))
		n.stepDown()
		return
	}
	if n.serving != nil && n.serving.svc.epoch != a.Epoch {
		// Master again under a newer epoch without a word in between (it
		// was lost meanwhile): a new term, on a new connection.
		n.stepDown()
	}
	if n.serving != nil {
		return
	}
	// Not serving yet: serve proves to the broker, with one acknowledged
	// round trip, that this node is alive and a.Epoch current before it
	// takes anything.
	sc, err := n.serve(ctx, a.Epoch)
	switch {
	case errors.Is(err, election.ErrNotCurrent):
		n.cfg.Logger.Info("not taking exec requests yet: waiting for the broker's word", keyEpoch, a.Epoch, keyErr, err)
		return
	case err != nil:
		if ctx.Err() == nil {
			n.cfg.Logger.Error("cannot take exec requests; will retry", keyEpoch, a.Epoch, keyErr, err)
		}
		return
	}
	n.serving = sc
	n.cfg.Logger.Info("serving as master", keyEpoch, a.Epoch)
}

// stepDown stops taking requests at once. Requests already delivered are
// still handled: draining unsubscribes, lets the handler take what the
// client had buffered, then closes the connection.
func (n *Node) stepDown() {
	if n.serving == nil {
		return
	}
	sc := n.serving
	n.serving = nil
	sc.stop(n.cfg.Logger)
	n.cfg.Logger.Info("stepped down as master")
}
