package console

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"baton/election"
	"baton/messages"
)

// WatchEvent is one line of `node watch --json`.
type WatchEvent struct {
	Time time.Time `json:"time"`
	// Event is join, master, left or lost.
	Event    string `json:"event"`
	Node     string `json:"node,omitempty"`
	Priority *int32 `json:"priority,omitempty"`
	Master   string `json:"master,omitempty"`
	Epoch    uint64 `json:"epoch,omitempty"`
	// Cause says why a node was lost (connection closed, heartbeat
	// timeout), or what moved the master.
	Cause string `json:"cause,omitempty"`
}

func (e WatchEvent) String() string {
	at := e.Time.Format(time.RFC3339Nano)
	switch e.Event {
	case "join":
		return fmt.Sprintf("%s join    %s priority=%d", at, e.Node, *e.Priority)
	case "master":
		master := e.Master
		if master == "" {
			master = "(none)"
		}
		return fmt.Sprintf("%s master  %s epoch=%d (%s)", at, master, e.Epoch, e.Cause)
	case "left":
		return fmt.Sprintf("%s left    %s", at, e.Node)
	}
	return fmt.Sprintf("%s lost    %s (%s)", at, e.Node, e.Cause)
}

// Watch prints the cluster's events as they happen, one line each (JSON
// when asJSON): nodes joining, leaving and lost with their cause, and
// every change of master with its epoch. It blocks until ctx ends.
func Watch(ctx context.Context, nc *nats.Conn, w io.Writer, asJSON bool) error {
	events := make(chan WatchEvent, 64)
	emit := func(e WatchEvent) {
		select {
		case events <- e:
		case <-ctx.Done():
		}
	}
	var lastAt time.Time
	var lastEpoch uint64
	// Joins are told by the member lists (registrations themselves are the
	// broker's alone to read): a name not in the previous list joined. The
	// first list is the broker's answer to master.get once subscribed.
	var mu sync.Mutex
	var members map[string]bool
	names := func(a *messages.Announcement) map[string]bool {
		m := make(map[string]bool, len(a.Members))
		for _, mb := range a.Members {
			m[mb.Name] = true
		}
		return m
	}
	handlers := map[string]nats.MsgHandler{
		messages.SubjectMaster: func(m *nats.Msg) {
			var a messages.Announcement
			// Repeats of an announcement carry its time: skip them.
			if proto.Unmarshal(m.Data, &a) != nil || !a.At.AsTime().After(lastAt) {
				return
			}
			lastAt = a.At.AsTime()
			mu.Lock()
			for _, mb := range a.Members {
				if members != nil && !members[mb.Name] {
					emit(WatchEvent{Time: lastAt, Event: "join", Node: mb.Name, Priority: &mb.Priority})
				}
			}
			members = names(&a)
			mu.Unlock()
			for _, d := range a.Departed {
				e := WatchEvent{Time: lastAt, Event: "lost", Node: d.Name, Cause: d.Cause.Text()}
				if d.Cause == messages.Cause_CAUSE_LEFT {
					e.Event, e.Cause = "left", ""
				}
				emit(e)
			}
			if a.Epoch != lastEpoch {
				lastEpoch = a.Epoch
				emit(WatchEvent{Time: lastAt, Event: "master", Master: a.Master, Epoch: a.Epoch, Cause: a.Event})
			}
		},
	}
	for subj, h := range handlers {
		sub, err := nc.Subscribe(subj, h)
		if err != nil {
			return fmt.Errorf("watch: subscribe %s: %w", subj, err)
		}
		defer sub.Unsubscribe()
	}
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	getCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	first, err := election.Get(getCtx, nc)
	cancel()
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	mu.Lock()
	if members == nil {
		members = names(first)
	}
	mu.Unlock()
	enc := json.NewEncoder(w)
	for {
		select {
		case <-ctx.Done():
			return nil
		case e := <-events:
			var err error
			if asJSON {
				err = enc.Encode(e)
			} else {
				_, err = fmt.Fprintln(w, e)
			}
			if err != nil {
				return fmt.Errorf("watch: %w", err)
			}
		}
	}
}
