package election

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"baton/messages"
)

// EventKind says what happened to the election.
type EventKind int

const (
	// EventJoined: a node registered (Rejoined when it was a member
	// already, after a reconnect).
	EventJoined EventKind = iota + 1
	// EventLeft: a member deregistered.
	EventLeft
	// EventLost: a member was declared dead; Cause says how.
	EventLost
	// EventMasterChanged: a new epoch was announced (and saved, unless the
	// store failed, which is logged); Master is the new master, empty for
	// none.
	EventMasterChanged
	// EventRefused: a registration was refused; Reason says why.
	EventRefused
	// EventGone: a node that left closed its connection (Cause): what it
	// still ran when it left is lost with it.
	EventGone
)

func (k EventKind) String() string {
	switch k {
	case EventJoined:
		return "joined"
	case EventLeft:
		return "left"
	case EventLost:
		return "lost"
	case EventMasterChanged:
		return "master changed"
	case EventRefused:
		return "refused"
	case EventGone:
		return "gone"
	}
	return "unknown"
}

// Event is one thing that happened to the election, as ServiceConfig.Events
// receives it. Only the fields of its kind are set.
type Event struct {
	Kind EventKind
	At   time.Time
	// Node is the member concerned (joined, left, lost, refused; refused
	// may name nothing when the registration was unreadable).
	Node     string
	Priority int32
	Rejoined bool
	Cause    messages.Cause
	// Master and Epoch are the new master and its epoch (master changed).
	Master string
	Epoch  uint64
	// Reason is what moved the master (master changed) or why a
	// registration was refused.
	Reason string
}

// maxQueuedEvents bounds the events waiting for a slow hook: more than a
// join storm of thousands of nodes queues, yet memory stays bounded.
const maxQueuedEvents = 1 << 16

// eventQueue hands events to a hook from one goroutine, in the order they
// were pushed, so that the hook is never called concurrently and never
// slows the service.
type eventQueue struct {
	hook   func(Event)
	logger *slog.Logger

	mu      sync.Mutex
	queue   []Event
	dropped int
	wake    chan struct{}
}

func newEventQueue(hook func(Event), logger *slog.Logger) *eventQueue {
	return &eventQueue{hook: hook, logger: logger, wake: make(chan struct{}, 1)}
}

// push queues events without blocking; with no hook it does nothing.
func (q *eventQueue) push(events ...Event) {
	if q.hook == nil || len(events) == 0 {
		return
	}
	q.mu.Lock()
	room := max(maxQueuedEvents-len(q.queue), 0)
	q.queue = append(q.queue, events[:min(room, len(events))]...)
	q.dropped += len(events) - min(room, len(events))
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// run delivers events until ctx ends, then delivers what is still queued
// and returns.
func (q *eventQueue) run(ctx context.Context) {
	for {
		select {
		case <-q.wake:
			q.deliver()
		case <-ctx.Done():
			q.deliver()
			return
		}
	}
}

func (q *eventQueue) deliver() {
	for {
		q.mu.Lock()
		batch, dropped := q.queue, q.dropped
		q.queue, q.dropped = nil, 0
		q.mu.Unlock()
		if dropped > 0 {
			q.logger.Warn("election events dropped: the events hook is too slow", keyDropped, dropped)
		}
		if len(batch) == 0 {
			return
		}
		for _, e := range batch {
			q.hook(e)
		}
	}
}
