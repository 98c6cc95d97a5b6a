package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"baton/bus"
	"baton/election"
	"baton/messages"
)

// Status asks the broker for the cluster's state, every member listed. It
// blocks until the broker answers or ctx ends; a broker still starting its
// election service is asked again.
func Status(ctx context.Context, nc *nats.Conn) (*messages.Announcement, error) {
	var msg *nats.Msg
	var err error
	for attempt := 1; ; attempt++ {
		msg, err = nc.RequestWithContext(ctx, bus.SubjectMasterGet, nil)
		if !errors.Is(err, nats.ErrNoResponders) || !sleep(ctx, bus.ReconnectDelay(attempt)) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("ask the broker for the cluster status: %w", err)
	}
	var a messages.Announcement
	if err := proto.Unmarshal(msg.Data, &a); err != nil {
		return nil, fmt.Errorf("cluster status: malformed reply: %w", err)
	}
	return &a, nil
}

// sleep waits d, or less if ctx ends first; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// WriteStatus prints a as a table, or as one JSON object.
func WriteStatus(w io.Writer, a *messages.Announcement, asJSON bool) error {
	st := election.StatusOf(a)
	if asJSON {
		return json.NewEncoder(w).Encode(st)
	}
	if a.Master == "" {
		fmt.Fprintf(w, "epoch %d, no master elected yet (%s)\n", a.Epoch, a.Event)
	} else {
		fmt.Fprintf(w, "epoch %d, master %s\n", a.Epoch, a.Master)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPRIORITY\tRANK\tMASTER")
	for _, m := range st.Members {
		mark := ""
		if m.Master {
			mark = "*"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", m.Name, m.Priority, m.Rank, mark)
	}
	return tw.Flush()
}
