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
	if tl, cur := h.recent(10); len(tl) != 1 || tl[0].Text != "alpha joined" || cur != h.cursor() {
		t.Errorf("timeline %+v at %s, want alpha's join at %s", tl, cur, h.cursor())
	}
	for range 10 {
		h.publishJob(&messages.JobSummary{ID: "c"})
		h.publishCluster(TimelineEntry{Kind: "left"}, election.Status{})
	}
	if c := h.since(start, 0, true); c.reset == nil || len(c.frames) != 0 {
		t.Errorf("after the job ring overflowed: %d frames, reset %q; want a reset", len(c.frames), c.reset)
	}
	if c := h.since(start, 0, false); c.reset == nil {
		t.Error("a stream without jobs was not reset when the cluster ring overflowed")
	}
	mid, _ := h.parseCursor(h.cursor())
	h.publishJob(&messages.JobSummary{ID: "d"})
	h.publishCluster(TimelineEntry{Kind: "left"}, election.Status{})
	h.publishJob(&messages.JobSummary{ID: "e"})
	c = h.since(mid, 0, true)
	for i := 1; i < len(c.frames); i++ {
		if c.frames[i-1].seq >= c.frames[i].seq {
			t.Fatalf("frames out of order: %d then %d", c.frames[i-1].seq, c.frames[i].seq)
		}
	}
	if len(c.frames) != 4 {
		t.Errorf("events since mid: %d, want 4", len(c.frames))
	}
	if _, ok := h.parseCursor("other-1"); ok {
		t.Error("another run's cursor was taken")
	}
	h.publishTick(election.Status{At: time.Now()})
	if c := h.since(c.seq, 0, true); c.tick == nil {
		t.Error("a stream that has not seen the periodic status did not get it")
	}
}

// The periodic status goes after the events it is newer than, before
// those it is older than, and never to a stream that has a newer status.
func TestHub_TickOrder(t *testing.T) {
	h := newHub(10, 10)
	h.publishCluster(TimelineEntry{Kind: "joined"}, election.Status{Master: "alpha"})
	at, _ := h.parseCursor(h.cursor())
	h.publishTick(election.Status{Master: "alpha"})
	h.publishCluster(TimelineEntry{Kind: "master"}, election.Status{Master: "beta"})
	c := h.since(at, 0, false)
	if c.tick == nil || c.tickSeq != at || len(c.frames) != 2 || c.frames[0].seq <= c.tickSeq {
		t.Fatalf("tick %v at %d, frames %d after %d: want the tick, then both frames", c.tick != nil, c.tickSeq, len(c.frames), at)
	}
	if c := h.since(c.seq, 0, false); c.tick != nil {
		t.Error("a stream with beta's status was sent the older periodic one (alpha's)")
	}
}
