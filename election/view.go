package election

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"baton/messages"
)

// View is a process's one view of the master: it follows the broker's
// announcements on master.current and keeps the newest (an older epoch
// never replaces a newer one). Observers get the latest value; followers
// get every accepted announcement in order. It is safe for concurrent use.
type View struct {
	nc     *nats.Conn
	logger *slog.Logger
	sub    *nats.Subscription

	// offerMu serialises Offer, so that followers see announcements in
	// the order they were accepted; a follower's stop and Close take it
	// too, so that no follower runs after they return.
	offerMu sync.Mutex

	mu      sync.Mutex
	current *messages.Announcement
	// observers maps each observer's channel to the function that stops
	// watching its context.
	observers map[chan *messages.Announcement]func() bool
	followers map[int]func(*messages.Announcement)
	nextID    int
	closed    bool
}

// NewView prepares a view on nc. It starts nothing.
func NewView(nc *nats.Conn, logger *slog.Logger) *View {
	if logger == nil {
		logger = slog.Default().With(keyComponent, "view")
	}
	return &View{
		nc: nc, logger: logger,
		observers: make(map[chan *messages.Announcement]func() bool),
		followers: make(map[int]func(*messages.Announcement)),
	}
}

// Start subscribes to master.current. It returns once the subscription is
// in place on the server.
func (v *View) Start(context.Context) error {
	v.mu.Lock()
	closed := v.closed
	v.mu.Unlock()
	if closed {
		return errors.New("election: view closed")
	}
	sub, err := v.nc.Subscribe(messages.SubjectMaster, v.handle)
	if err == nil {
		err = v.nc.Flush()
	}
	if err != nil {
		if sub != nil {
			_ = sub.Unsubscribe()
		}
		return fmt.Errorf("follow %s: %w", messages.SubjectMaster, err)
	}
	v.mu.Lock()
	v.sub = sub
	v.mu.Unlock()
	return nil
}

// Fetch asks the broker for the current state (see Get) and offers it. It
// blocks until the broker answers or ctx ends.
func (v *View) Fetch(ctx context.Context) error {
	a, err := Get(ctx, v.nc)
	if err != nil {
		return err
	}
	v.Offer(a)
	return nil
}

func (v *View) handle(msg *nats.Msg) {
	var a messages.Announcement
	if err := proto.Unmarshal(msg.Data, &a); err != nil {
		v.logger.Warn("malformed announcement", keyErr, err)
		return
	}
	v.Offer(&a)
}

// Offer takes an announcement learnt some other way (a reply of the
// broker's). It reports whether a was accepted: it is, unless its epoch is
// older than the current one's. An equal epoch replaces the current value,
// since it is the fresher copy of that epoch.
func (v *View) Offer(a *messages.Announcement) bool {
	if a == nil {
		return false
	}
	v.offerMu.Lock()
	defer v.offerMu.Unlock()
	return v.offer(a)
}

// offer is Offer for callers that hold v.offerMu.
func (v *View) offer(a *messages.Announcement) bool {
	v.mu.Lock()
	if v.closed || v.current != nil && a.Epoch < v.current.Epoch {
		v.mu.Unlock()
		return false
	}
	v.current = a
	for ch := range v.observers {
		replace(ch, a)
	}
	fs := make([]func(*messages.Announcement), 0, len(v.followers))
	for _, f := range v.followers {
		fs = append(fs, f)
	}
	v.mu.Unlock()
	for _, f := range fs {
		f(a)
	}
	return true
}

// Reset replaces the current announcement with a even if a is older, and
// hands it on as Offer does. It is for a view that was shown an
// announcement the broker did not make (see Member): the broker's own word
// wins.
func (v *View) Reset(a *messages.Announcement) {
	v.offerMu.Lock()
	defer v.offerMu.Unlock()
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		return
	}
	v.current = nil
	v.mu.Unlock()
	v.offer(a)
}

// replace puts a in ch, a 1-buffered channel, dropping any value not yet
// taken. Only the view sends on ch, under its lock, so the send never
// blocks.
func replace(ch chan *messages.Announcement, a *messages.Announcement) {
	select {
	case <-ch:
	default:
	}
	ch <- a
}

// Current returns the newest announcement, nil before the first.
func (v *View) Current() *messages.Announcement {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.current
}

// Observe returns a channel that holds the newest announcement whenever it
// changes, starting with the current one if any. Only the latest value is
// kept: a slow reader skips stale ones. The view closes the channel when
// ctx ends or the view is closed.
func (v *View) Observe(ctx context.Context) <-chan *messages.Announcement {
	ch := make(chan *messages.Announcement, 1)
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		close(ch)
		return ch
	}
	if v.current != nil {
		ch <- v.current
	}
	v.observers[ch] = context.AfterFunc(ctx, func() {
		v.mu.Lock()
		defer v.mu.Unlock()
		if _, ok := v.observers[ch]; ok {
			delete(v.observers, ch)
			close(ch)
		}
	})
	return ch
}

// Follow calls f with every announcement the view accepts from now on, in
// order, until stop is called; once stop returns, f is not called again.
// f runs on the goroutine that offered the announcement: it must be quick
// and must call neither Offer nor stop. Use it where every announcement
// matters (each carries the departures since the previous one); use
// Observe where only the latest does.
func (v *View) Follow(f func(*messages.Announcement)) (stop func()) {
	v.mu.Lock()
	defer v.mu.Unlock()
	id := v.nextID
	v.nextID++
	v.followers[id] = f
	return func() {
		v.offerMu.Lock()
		defer v.offerMu.Unlock()
		v.mu.Lock()
		defer v.mu.Unlock()
		delete(v.followers, id)
	}
}

// Close unsubscribes, closes every observer's channel and drops the
// followers; no follower runs after it returns. It is safe to call twice
// and before Start.
func (v *View) Close(context.Context) error {
	v.offerMu.Lock()
	defer v.offerMu.Unlock()
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return nil
	}
	v.closed = true
	for ch, stop := range v.observers {
		stop()
		delete(v.observers, ch)
		close(ch)
	}
	clear(v.followers)
	if v.sub != nil {
		if err := v.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
			return fmt.Errorf("stop following %s: %w", messages.SubjectMaster, err)
		}
	}
	return nil
}
