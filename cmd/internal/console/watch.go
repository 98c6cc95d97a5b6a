package console

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
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
// every change of master with its epoch. Only what happens after it starts
// is printed: the present is the baseline. It blocks until ctx ends.
func Watch(ctx context.Context, nc *nats.Conn, w io.Writer, asJSON bool) error {
	// Announcements queue up until the baseline (the broker's answer to
	// master.get, asked once subscribed) is known; then each is compared
	// with what came before it.
	announcements := make(chan *messages.Announcement, 256)
	sub, err := nc.Subscribe(messages.SubjectMaster, func(m *nats.Msg) {
		var a messages.Announcement
		if proto.Unmarshal(m.Data, &a) != nil || a.Repeat {
			return
		}
		select {
		case announcements <- &a:
		case <-ctx.Done():
		}
	})
	if err != nil {
		return fmt.Errorf("watch: subscribe %s: %w", messages.SubjectMaster, err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	getCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	baseline, err := election.Get(getCtx, nc)
	cancel()
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	// Joins are told by the member lists (registrations themselves are the
	// broker's alone to read): a name not in the previous list joined.
	members, epoch := names(baseline), baseline.Epoch
	enc := json.NewEncoder(w)
	print := func(e WatchEvent) error {
		var err error
		if asJSON {
			err = enc.Encode(e)
		} else {
			_, err = fmt.Fprintln(w, e)
		}
		return err
	}
	for {
		var a *messages.Announcement
		select {
		case <-ctx.Done():
			return nil
		case a = <-announcements:
		}
		at := a.At.AsTime()
		var events []WatchEvent
		for _, mb := range a.Members {
			if !members[mb.Name] {
				events = append(events, WatchEvent{Time: at, Event: "join", Node: mb.Name, Priority: &mb.Priority})
			}
		}
		members = names(a)
		for _, d := range a.Departed {
			e := WatchEvent{Time: at, Event: "lost", Node: d.Name, Cause: d.Cause.Text()}
			if d.Cause == messages.Cause_CAUSE_LEFT {
				e.Event, e.Cause = "left", ""
			}
			events = append(events, e)
		}
		if a.Epoch > epoch {
			epoch = a.Epoch
			events = append(events, WatchEvent{Time: at, Event: "master", Master: a.Master, Epoch: a.Epoch, Cause: a.Event})
		}
		for _, e := range events {
			if err := print(e); err != nil {
				return fmt.Errorf("watch: %w", err)
			}
		}
	}
}

// names are the names of a's members.
func names(a *messages.Announcement) map[string]bool {
	m := make(map[string]bool, len(a.Members))
	for _, mb := range a.Members {
		m[mb.Name] = true
	}
	return m
}
