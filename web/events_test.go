package web

import (
	"strings"
	"testing"
	"time"

	"baton/election"
	"baton/messages"
)

// A stream gets the events after its cursor in the order they were
// published, cluster and job events merged, and a reset once some it
// needs were dropped.
func TestHub_Since(t *testing.T) {
	h := newHub(4, 3)
	start, _ := h.parseCursor(h.cursor())
	h.publishJob(&messages.JobSummary{ID: "a"})
	h.publishCluster(TimelineEntry{Kind: "joined", Text: "alpha joined"}, election.Status{})
	h.publishJob(&messages.JobSummary{ID: "b"})
	c := h.since(start, 0, true)
	var names []string
	for _, f := range c.frames {
		names = append(names, strings.SplitN(strings.SplitN(string(f.data), "event: ", 2)[1], "\n", 2)[0])
	}
	if got := strings.Join(names, ","); got != "job,cluster,status,job" || c.reset != nil {
		t.Errorf("events since the start: %s (reset %q), want job,cluster,status,job", got, c.reset)
	}
	if c := h.since(start, 0, false); len(c.frames) != 2 {
		t.Errorf("events since the start without jobs: %d, want the cluster's 2", len(c.frames))
	}
	for range 10 {
		h.publishJob(&messages.JobSummary{ID: "c"})
	}
	if c := h.since(start, 0, true); c.reset == nil || len(c.frames) != 0 {
		t.Errorf("after the job ring overflowed: %d frames, reset %q; want a reset", len(c.frames), c.reset)
	}
	if c := h.since(start, 0, false); c.reset != nil {
		t.Error("a stream without jobs was reset by the job ring's overflow")
	}
	if _, ok := h.parseCursor("other-1"); ok {
		t.Error("another run's cursor was taken")
	}
	h.publishTick(election.Status{At: time.Now()})
	if c := h.since(c.seq, 0, true); c.tick == nil {
		t.Error("a stream that has not seen the periodic status did not get it")
	}
}
