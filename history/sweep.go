package history

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"baton/messages"
)

// sweep enforces the limits every SweepInterval until ctx ends.
func (s *Store) sweep(ctx context.Context) {
	// A small random stagger, so that brokers started together do not
	// sweep in step.
	t := time.NewTimer(time.Duration(rand.Int64N(int64(s.cfg.SweepInterval))))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.trim(ctx, time.Now())
		t.Reset(s.cfg.SweepInterval)
	}
}

// maxSweep bounds the records one sweep removes: about 50 ms of deletes.
const maxSweep = 1000

// trim removes the finished jobs older than MaxAge, then the oldest
// finished jobs until the rest fit MaxBytes. Running jobs stay.
func (s *Store) trim(ctx context.Context, now time.Time) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	cutoff := now.Add(-s.cfg.MaxAge)
	var victims []*entry
	s.mu.Lock()
	over := s.idx.bytes - s.cfg.MaxBytes
	for _, e := range s.idx.order {
		if !e.sum.Finished() {
			continue
		}
		if e.stored.Before(cutoff) || over > 0 {
			victims = append(victims, e)
			over -= e.size
		}
	}
	s.mu.Unlock()
	if len(victims) == 0 {
		return
	}
	// A sweep holds writes back while it deletes: a mass expiry (limits
	// lowered, a broker back after long) goes over several sweeps.
	victims = victims[:min(len(victims), maxSweep)]
	gone := make(map[string]bool, len(victims))
	var freed int64
	for _, e := range victims {
		err := s.stream.DeleteMsg(ctx, e.seq)
		if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			s.cfg.Logger.Warn("expired job not removed", keyJob, e.sum.ID, keyErr, err)
			continue
		}
		gone[e.sum.ID] = true
		freed += e.size
	}
	s.mu.Lock()
	s.idx.remove(gone)
	s.mu.Unlock()
	s.cfg.Logger.Debug("expired jobs removed", keyJobs, len(gone), keyBytes, freed, "stream", messages.JobStream)
}
