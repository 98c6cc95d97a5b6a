package broker

import (
	"context"
	"time"

	"baton/election"
)

// historyWait bounds how long the broker waits for the history to mark
// jobs lost.
const historyWait = 5 * time.Second

// historyEvent queues for the history a lost member, which took its
// running jobs with it, or one that left and closed its connection before
// it reported them. It does not wait for the store: the election's event
// hook, which the dashboard shares, must not.
func (b *Broker) historyEvent(e election.Event) {
	switch {
	case b.history == nil:
		return
	case e.Kind != election.EventLost && e.Kind != election.EventGone:
		return
	}
	select {
	case b.lost <- e:
	default:
		b.cfg.Logger.Warn("history: too many lost masters queued; marking their jobs before the next event")
		b.markLost(e)
	}
}

// maxLostQueued bounds the departures waiting for the history: more than
// a cluster's worth, in one event each.
const maxLostQueued = 4096

// markLostLoop marks the jobs of the departures queued, until ctx ends
// (what is queued then is marked by the next start's reconciliation).
func (b *Broker) markLostLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-b.lost:
			b.markLost(e)
		}
	}
}

// markLost marks the running jobs of e's node lost.
func (b *Broker) markLost(e election.Event) {
	why := e.Cause.Text()
	if e.Kind == election.EventGone {
		why = "its connection closed after it left, before it reported how the command ended"
	}
	// A store that fails now (its index still loading, a wedged write)
	// is asked again: jobs must not stay running for good.
	for attempt := 1; attempt <= historyAttempts; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), historyWait)
		err := b.history.MasterLost(ctx, e.Node, why, e.At)
		cancel()
		if err == nil {
			return
		}
		b.cfg.Logger.Warn("history: lost jobs not marked", keyErr, err, "attempt", attempt)
	}
}

// historyAttempts bounds the tries to mark a lost master's jobs.
const historyAttempts = 3

// reconcileHistory waits until the history is loaded and the nodes that
// are alive have registered again after this start (twice the heartbeat
// timeout, the election's own start-up wait doubled), then marks lost the running jobs of masters that
// did not come back.
func (b *Broker) reconcileHistory(ctx context.Context) {
	select {
	case <-ctx.Done():
		return
	case <-b.history.Loaded():
	}
	t := time.NewTimer(2 * b.cfg.Election.HeartbeatTimeout)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return
	case <-t.C:
	}
	live := make(map[string]bool)
	for _, m := range b.election.Members() {
		live[m] = true
	}
	ctx, cancel := context.WithTimeout(ctx, historyWait)
	defer cancel()
	if err := b.history.Reconcile(ctx, func(name string) bool { return live[name] }, time.Now()); err != nil && ctx.Err() == nil {
		b.cfg.Logger.Warn("history: jobs of masters gone not marked", keyErr, err)
	}
}
