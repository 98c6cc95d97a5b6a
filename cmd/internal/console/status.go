package console

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"baton/election"
	"baton/messages"
)

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
