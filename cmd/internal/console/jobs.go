package console

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"baton/bundle"
	"baton/messages"
)

// WriteJobs prints jobs, newest first: a table whose command column is cut
// so that a row fits width columns (0: no limit), or with asJSON one object
// per line.
func WriteJobs(w io.Writer, jobs []messages.JobSummary, asJSON bool, width int, now time.Time) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		for _, j := range jobs {
			if err := enc.Encode(j); err != nil {
				return err
			}
		}
		return nil
	}
	if len(jobs) == 0 {
		_, err := fmt.Fprintln(w, "no jobs")
		return err
	}
	rows := make([][]string, 0, len(jobs)+1)
	rows = append(rows, []string{"ID", "STATE", "EXIT", "WHEN", "TOOK", "MASTER", "SUBMITTER", "COMMAND"})
	for _, j := range jobs {
		exit := "-"
		if j.Finished() && j.State != messages.StateRejected && j.State != messages.StateLost && j.ExitCode >= 0 {
			exit = fmt.Sprint(j.ExitCode)
		}
		took := "-"
		if j.Finished() && j.State != messages.StateRejected {
			took = (time.Duration(j.DurationMs) * time.Millisecond).String()
		}
		rows = append(rows, []string{j.ID, j.State, exit, ago(j.SubmittedAt, now), took, dash(j.Master), dash(j.Submitter), oneLine(j.Cmd)})
	}
	// The command takes what the other columns leave.
	used := 0
	for col := range len(rows[0]) - 1 {
		widest := 0
		for _, r := range rows {
			widest = max(widest, len([]rune(r[col])))
		}
		used += widest + 2
	}
	room := max(width-used, 20)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, r := range rows {
		if width > 0 {
			r[len(r)-1] = cut(r[len(r)-1], room)
		}
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// fileList says what files are: "3 files, 1.2 KiB: main.py, input.csv,
// out/a.txt" with at most a few names; directories are not counted.
func fileList(list []messages.FileJSON) string {
	var size uint64
	n := 0
	names := make([]string, 0, 4)
	for _, f := range list {
		if strings.HasPrefix(f.Mode, "d") {
			continue
		}
		size += f.Size
		if n++; n <= 4 {
			names = append(names, f.Name)
		}
	}
	if n > len(names) {
		names = append(names, "…")
	}
	return fmt.Sprintf("%d %s, %s: %s", n, plural(n, "file", "files"), bundle.Size(int64(size)), strings.Join(names, ", "))
}

// WriteJob prints job: with asJSON the whole record as one object on out;
// otherwise a header on errOut, then its stdout on out and its stderr on
// errOut.
func WriteJob(out, errOut io.Writer, job *messages.Job, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetEscapeHTML(false)
		return enc.Encode(job)
	}
	var h strings.Builder
	fmt.Fprintf(&h, "job %s: %s", job.ID, job.State)
	switch {
	case job.State == messages.StateRunning || job.State == messages.StateRejected || job.State == messages.StateLost:
	case job.ExitCode >= 0:
		fmt.Fprintf(&h, " (exit %d in %dms)", job.ExitCode, job.DurationMs)
	default: // killed: no exit status of its own
		fmt.Fprintf(&h, " (after %dms)", job.DurationMs)
	}
	fmt.Fprintf(&h, "\n  cmd:       %s\n", dash(oneLine(job.Cmd)))
	if job.Error != "" {
		fmt.Fprintf(&h, "  error:     %s\n", job.Error)
	}
	if job.Master != "" {
		fmt.Fprintf(&h, "  master:    %s (epoch %d)\n", job.Master, job.Epoch)
	}
	by := job.Submitter
	if by == "" {
		by = "an unnamed client"
	}
	if job.Role != "" {
		by += " (" + job.Role + ")"
	}
	fmt.Fprintf(&h, "  submitted: %s by %s via %s\n", stamp(job.SubmittedAt), by, job.Via)
	if job.StartedAt != nil {
		fmt.Fprintf(&h, "  started:   %s\n", stamp(job.StartedAt))
	}
	if job.FinishedAt != nil {
		label := "finished:"
		if job.State == messages.StateLost {
			label = "lost:    " // when the loss was declared
		}
		fmt.Fprintf(&h, "  %s  %s\n", label, stamp(job.FinishedAt))
	}
	if job.Note != "" {
		fmt.Fprintf(&h, "  note:      %s\n", job.Note)
	}
	if len(job.Inputs) > 0 {
		fmt.Fprintf(&h, "  inputs:    %s\n", fileList(job.Inputs))
	}
	if len(job.Collect) > 0 {
		fmt.Fprintf(&h, "  collect:   %s\n", strings.Join(job.Collect, " "))
	}
	if len(job.Outputs) > 0 {
		fmt.Fprintf(&h, "  outputs:   %s (node job %s --download PATH)\n", fileList(job.Outputs), job.ID)
	}
	// The job's own stderr follows on the same stream: a blank line
	// ends the header.
	h.WriteString("\n")
	if _, err := io.WriteString(errOut, h.String()); err != nil {
		return err
	}
	if _, err := io.WriteString(out, job.Stdout); err != nil {
		return err
	}
	_, err := io.WriteString(errOut, job.Stderr+truncationNotes("", &messages.ExecResult{
		StdoutDropped: job.StdoutDropped, StderrDropped: job.StderrDropped}))
	return err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func stamp(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05.000 MST")
}

// ago is how long before now t was, coarsely: 42s, 5m, 3h, 2d.
func ago(t *time.Time, now time.Time) string {
	if t == nil {
		return "-"
	}
	d := max(now.Sub(*t), 0)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

// oneLine shows a multi-line command on one line.
func oneLine(s string) string {
	return strings.NewReplacer("\r\n", " ⏎ ", "\n", " ⏎ ", "\t", " ").Replace(s)
}

// cut shortens s to n runes, marking the cut.
func cut(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
