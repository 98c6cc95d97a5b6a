package broker

import (
	"context"
	"time"

	"baton/election"
)

// historyWait bounds how long the broker waits for the history to mark
// jobs lost.
const historyWait = 5 * time.Second

// historyEvent tells the history that a lost member took its running jobs
// with it, as did one that left and closed its connection before it
// reported them.
func (b *Broker) historyEvent(e election.Event) {
	why := e.Cause.Text()
	switch {
	case b.history == nil:
		return
	case e.Kind == election.EventGone:
		why = "its connection closed after it left, before it reported how the command ended"
	case e.Kind != election.EventLost:
		return
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
