package console

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"baton/election"
	"baton/messages"
)

// WriteStatus prints a as a table, or as one JSON object.
func WriteStatus(w io.Writer, a *messages.Announcement, asJSON bool) error {
	st := election.StatusOf(a)
	if asJSON {
		return json.NewEncoder(w).Encode(st)
	}
	// The age is the broker's, read and change both on its clock.
	change := fmt.Sprintf("last change %s ago: %s", a.At.AsTime().Sub(a.ChangedAt.AsTime()).Round(time.Second), a.Event)
	switch {
	case a.Master == "" && a.MemberCount == 0:
		fmt.Fprintf(w, "epoch %d, no master: no node is a member (%s)\n", a.Epoch, change)
	case a.Master == "":
		fmt.Fprintf(w, "epoch %d, no master elected yet (%s)\n", a.Epoch, change)
	default:
		fmt.Fprintf(w, "epoch %d, master %s (%s)\n", a.Epoch, a.Master, change)
	}
	if a.MaxMembers > 0 {
		fmt.Fprintf(w, "members %d/%d, %d %s refused since the broker started\n", a.MemberCount, a.MaxMembers, a.Refused,
			plural(int(a.Refused), "registration", "registrations"))
	}
	if len(st.Members) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPRIORITY\tRANK\tMASTER\tVERSION\tLAST HEARD")
	for _, m := range st.Members {
		mark := ""
		if m.Master {
			mark = "*"
		}
		heard := "-"
		if m.HeartbeatAgeMs >= 0 {
			heard = (time.Duration(m.HeartbeatAgeMs) * time.Millisecond).String() + " ago"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\n", m.Name, m.Priority, m.Rank, mark, dash(m.Version), heard)
	}
	return tw.Flush()
}
