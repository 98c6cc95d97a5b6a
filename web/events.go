package web

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"baton/election"
	"baton/messages"
)

// The event stream (/api/events) is server-sent events:
//
//	status   the cluster's status (election.Status), after every change
//	         and every StatusInterval; the periodic ones carry no id
//	cluster  one line of the timeline (TimelineEntry)
//	job      a job's new state (messages.JobSummary)
//	reset    what the client missed is no longer kept: load afresh
//
// Every event but the periodic status has an id, RUN-SEQ: RUN changes at
// each broker start, SEQ counts up. A client that reconnects with
// Last-Event-ID (browsers send it themselves), or opens the stream with
// ?after=ID (the ID the page was rendered at), gets every event since,
// or a reset when they are no longer kept.

// TimelineEntry is one change in the cluster, as the Cluster page lists
// it.
type TimelineEntry struct {
	At time.Time `json:"at"`
	// Kind is joined, rejoined, left, lost, master or refused.
	Kind     string `json:"kind"`
	Node     string `json:"node,omitempty"`
	Priority int32  `json:"priority,omitempty"`
	Master   string `json:"master,omitempty"`
	Epoch    uint64 `json:"epoch,omitempty"`
	// Cause says why a node was lost, Reason why the master moved or a
	// registration was refused.
	Cause  string `json:"cause,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Text is the entry as one line.
	Text string `json:"text"`
}

// timelineOf is e as the timeline shows it; false for what it leaves out
// (a node that left closing its connection).
func timelineOf(e election.Event) (TimelineEntry, bool) {
	t := TimelineEntry{At: e.At.UTC(), Node: e.Node}
	switch e.Kind {
	case election.EventJoined:
		t.Kind, t.Priority = "joined", e.Priority
		t.Text = fmt.Sprintf("%s joined (priority %d)", e.Node, e.Priority)
		if e.Rejoined {
			t.Kind = "rejoined"
			t.Text = fmt.Sprintf("%s registered again (priority %d)", e.Node, e.Priority)
		}
	case election.EventLeft:
		t.Kind, t.Text = "left", e.Node+" left"
	case election.EventLost:
		t.Kind, t.Cause = "lost", e.Cause.Text()
		t.Text = fmt.Sprintf("%s lost: %s", e.Node, t.Cause)
	case election.EventMasterChanged:
		t.Kind, t.Master, t.Epoch, t.Reason = "master", e.Master, e.Epoch, e.Reason
		t.Text = fmt.Sprintf("epoch %d: master %s (%s)", e.Epoch, e.Master, e.Reason)
		if e.Master == "" {
			t.Text = fmt.Sprintf("epoch %d: no master (%s)", e.Epoch, e.Reason)
		}
	case election.EventRefused:
		t.Kind, t.Reason = "refused", e.Reason
		name := e.Node
		if name == "" {
			name = "an unreadable registration"
		}
		t.Text = fmt.Sprintf("%s refused: %s", name, e.Reason)
	default:
		return t, false
	}
	return t, true
}

// frame is one event, encoded once for every stream; a cluster event's
// frame keeps its entry too, for the Cluster page's timeline.
type frame struct {
	seq   uint64
	data  []byte
	entry *TimelineEntry
}

// ring keeps the newest frames of one kind, at most max; dropped is the
// seq of the newest frame it let go.
type ring struct {
	frames  []frame
	max     int
	dropped uint64
}

func (r *ring) add(f frame) {
	r.frames = append(r.frames, f)
	if len(r.frames) > 2*r.max {
		// Amortised: the slice is cut by half its length at a time.
		cut := len(r.frames) - r.max
		r.dropped = r.frames[cut-1].seq
		r.frames = append(r.frames[:0:0], r.frames[cut:]...)
	}
}

// since is the frames after seq (the ring's own: not to be changed);
// false when some after seq were dropped.
func (r *ring) since(seq uint64) ([]frame, bool) {
	if seq < r.dropped {
		return nil, false
	}
	i, _ := slices.BinarySearchFunc(r.frames, seq+1, func(f frame, seq uint64) int { return cmp.Compare(f.seq, seq) })
	return r.frames[i:len(r.frames):len(r.frames)], true
}

// hub fans the events out to every open stream. Publishing never blocks:
// each stream catches up from the rings at its own pace.
type hub struct {
	run string // this broker start's id

	mu      sync.Mutex
	seq     uint64
	cluster ring // the timeline's entries and the statuses after them
	jobs    ring
	// tick is the latest periodic status frame, tickGen its count, and
	// tickSeq the newest event when it was read: it is newer than the
	// events up to tickSeq, older than those after.
	tick    []byte
	tickGen uint64
	tickSeq uint64
	// wake is closed, and replaced, at every publication.
	wake    chan struct{}
	streams int
}

func newHub(clusterEvents, jobEvents int) *hub {
	return &hub{
		run:     strings.ToLower(rand.Text()[:8]),
		cluster: ring{max: clusterEvents},
		jobs:    ring{max: jobEvents},
		wake:    make(chan struct{}),
	}
}

// cursor is the id of the newest event: a page rendered now asks for
// what comes after it.
func (h *hub) cursor() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.idOf(h.seq)
}

func (h *hub) idOf(seq uint64) string { return h.run + "-" + strconv.FormatUint(seq, 10) }

// parseCursor reads an event id of this run; false for another run's (or
// garbage).
func (h *hub) parseCursor(id string) (uint64, bool) {
	run, seq, ok := strings.Cut(id, "-")
	if !ok || run != h.run {
		return 0, false
	}
	n, err := strconv.ParseUint(seq, 10, 64)
	return n, err == nil
}

// payload is an event's data line, "data: JSON\n\n", encoded before the
// hub is locked.
func payload(v any) []byte {
	var b bytes.Buffer
	b.WriteString("data: ")
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // plain values: it cannot fail; it ends the line
	b.WriteByte('\n')
	return b.Bytes()
}

// frameData is an event as the stream carries it, its id and name before
// its payload; id 0 carries none.
func (h *hub) frameData(seq uint64, event string, data []byte) []byte {
	head := "event: " + event + "\n"
	if seq != 0 {
		head = "id: " + h.idOf(seq) + "\n" + head
	}
	return append([]byte(head), data...)
}

// publishCluster adds a timeline entry and the status after it.
func (h *hub) publishCluster(t TimelineEntry, st election.Status) {
	entry, status := payload(t), payload(st)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	h.cluster.add(frame{h.seq, h.frameData(h.seq, "cluster", entry), &t})
	h.seq++
	h.cluster.add(frame{h.seq, h.frameData(h.seq, "status", status), nil})
	h.wakeLocked()
}

// publishJob adds a job's new state.
func (h *hub) publishJob(sum *messages.JobSummary) {
	data := payload(sum)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	h.jobs.add(frame{h.seq, h.frameData(h.seq, "job", data), nil})
	h.wakeLocked()
}

// reset is a reset event at seq, saying why.
func (h *hub) reset(seq uint64, why string) []byte {
	return h.frameData(seq, "reset", payload(map[string]string{"reason": why}))
}

// publishTick replaces the periodic status.
func (h *hub) publishTick(st election.Status) {
	data := h.frameData(0, "status", payload(st))
	h.mu.Lock()
	defer h.mu.Unlock()
	h.tick, h.tickSeq = data, h.seq
	h.tickGen++
	h.wakeLocked()
}

// tickGeneration is the periodic status's count, for a stream that
// starts.
func (h *hub) tickGeneration() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.tickGen
}

func (h *hub) wakeLocked() {
	close(h.wake)
	h.wake = make(chan struct{})
}

// recent is the timeline's newest n entries still kept, newest first,
// and the cursor of the newest event then.
func (h *hub) recent(n int) ([]TimelineEntry, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []TimelineEntry
	for i := len(h.cluster.frames) - 1; i >= 0 && len(out) < n; i-- {
		if e := h.cluster.frames[i].entry; e != nil {
			out = append(out, *e)
		}
	}
	return out, h.idOf(h.seq)
}

// listening reports whether any stream is open.
func (h *hub) listening() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.streams > 0
}

// admit counts a new stream in, false when max are open.
func (h *hub) admit(max int) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.streams >= max {
		return false
	}
	h.streams++
	return true
}

func (h *hub) leave() {
	h.mu.Lock()
	h.streams--
	h.mu.Unlock()
}

// catchUp is what a stream at seq (having seen tick tickGen) has to send:
// the frames since, in order (or a reset, when some were dropped), the
// periodic status if it is new and not older than what the stream has
// (to go after the frames up to tickSeq), and the channel that closes at
// the next publication.
type catchUp struct {
	frames  []frame
	reset   []byte
	tick    []byte
	tickSeq uint64
	seq     uint64
	tickGen uint64
	wake    <-chan struct{}
}

func (h *hub) since(seq, tickGen uint64, jobs bool) catchUp {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := catchUp{seq: h.seq, tickGen: h.tickGen, wake: h.wake}
	cluster, complete := h.cluster.since(seq)
	var jobFrames []frame
	if jobs && complete {
		jobFrames, complete = h.jobs.since(seq)
	}
	if complete {
		// Two rings: merged into the order they were published in.
		c.frames = merge(cluster, jobFrames)
	} else {
		c.reset = h.reset(h.seq, "events missed are no longer kept")
	}
	if tickGen != h.tickGen && h.tickSeq >= seq {
		c.tick, c.tickSeq = h.tick, h.tickSeq
	}
	return c
}

// merge is two runs of frames, each in order, as one in order.
func merge(a, b []frame) []frame {
	if len(b) == 0 {
		return a
	}
	out := make([]frame, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if a[0].seq < b[0].seq {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	return append(append(out, a...), b...)
}

// ticks publishes the status every StatusInterval while a stream is open,
// until ctx ends.
func (s *Server) ticks(ctx context.Context) {
	t := time.NewTicker(s.cfg.StatusInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if s.hub.listening() {
				s.hub.publishTick(s.cluster.Status())
			}
		}
	}
}

// Stream pacing: a stream writes at most once per streamPace (what came
// meanwhile goes in one write), says something at least every
// streamKeepAlive (so that proxies keep it open and a dead peer is
// noticed), and drops a peer that takes streamWriteTimeout over a write.
const (
	streamPace         = 100 * time.Millisecond
	streamKeepAlive    = 20 * time.Second
	streamWriteTimeout = 10 * time.Second
	// streamRetry is how soon a browser reconnects a dropped stream.
	streamRetry = time.Second
)

// handleEvents is GET /api/events[?after=ID][&jobs=0].
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	jobs := r.URL.Query().Get("jobs") != "0"
	last := r.Header.Get("Last-Event-ID")
	if last == "" {
		last = r.URL.Query().Get("after")
	}
	seq, known := s.hub.parseCursor(last)
	if !s.hub.admit(s.cfg.MaxStreams) {
		apiError(w, http.StatusServiceUnavailable, fmt.Sprintf("%d event streams are open, the most this broker serves; close a dashboard tab", s.cfg.MaxStreams))
		return
	}
	defer s.hub.leave()
	// What goes first, once the headers are out.
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "retry: %d\n\n", streamRetry.Milliseconds())
	if !known {
		// A stream without a past starts now; one with another broker
		// start's id (or garbage) has nothing to resume, and is told.
		seq, _ = s.hub.parseCursor(s.hub.cursor())
		if last != "" {
			buf.Write(s.hub.reset(seq, "the broker restarted"))
		}
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	keepAlive := time.NewTicker(streamKeepAlive)
	defer keepAlive.Stop()
	// A new stream has its page's status: the last periodic one may be
	// older (see since).
	tickGen := s.hub.tickGeneration()
	write := func(data []byte) error {
		if len(data) == 0 {
			return nil
		}
		_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
		_, err := w.Write(data)
		return err
	}
	ctx := r.Context()
	for {
		c := s.hub.since(seq, tickGen, jobs)
		seq, tickGen = c.seq, c.tickGen
		// Straight from the shared frames to the connection (its writer
		// buffers): a stream far behind copies nothing of its own.
		wrote := buf.Len() > 0 || c.reset != nil || len(c.frames) > 0 || c.tick != nil
		err := write(buf.Bytes())
		buf.Reset()
		if err == nil {
			err = write(c.reset)
		}
		tick := c.tick
		for _, f := range c.frames {
			if err == nil && tick != nil && f.seq > c.tickSeq {
				err, tick = write(tick), nil
			}
			if err != nil {
				break
			}
			err = write(f.data)
		}
		if err == nil && tick != nil {
			err = write(tick)
		}
		if err == nil && wrote {
			err = rc.Flush()
		}
		if err != nil {
			return
		}
		if wrote {
			keepAlive.Reset(streamKeepAlive)
			// Let what comes next gather.
			select {
			case <-ctx.Done():
				return
			case <-time.After(streamPace):
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		case <-keepAlive.C:
			buf.WriteString(": keep-alive\n\n")
		}
	}
}
