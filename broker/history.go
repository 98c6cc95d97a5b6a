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
// with it.
func (b *Broker) historyEvent(e election.Event) {
	if b.history == nil || e.Kind != election.EventLost {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), historyWait)
	defer cancel()
	if err := b.history.MasterLost(ctx, e.Node, e.Cause.Text(), e.At); err != nil {
		b.cfg.Logger.Warn("history: lost jobs not marked", keyErr, err)
	}
}

// reconcileHistory waits until the nodes that are alive have registered
// again after this start (twice the heartbeat timeout, the election's own
// start-up wait doubled), then marks lost the running jobs of masters that
// did not come back.
func (b *Broker) reconcileHistory(ctx context.Context) {
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
