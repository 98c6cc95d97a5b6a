package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"baton/agent"
	"baton/bundle"
	"baton/files"
	"baton/messages"
)

// Exit statuses of `node exec` for outcomes that are not the remote
// command's own exit status.
const (
	// ExitTimedOut: the command ran past its timeout, as timeout(1) says.
	ExitTimedOut = 124
	// ExitFailed: baton itself failed (broker unreachable, no master,
	// request rejected, master lost).
	ExitFailed = 125
	// ExitCancelled: the command was cancelled (SIGINT or SIGTERM), as a
	// shell reports a command ended by SIGINT.
	ExitCancelled = 130
)

// ExitError carries the exit status a CLI should end with. Err is the
// one-line reason to print; nil when the status speaks for itself (the
// remote command's own non-zero exit).
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}

// ExitCode makes kong exit with Code.
func (e *ExitError) ExitCode() int { return e.Code }

func (e *ExitError) Unwrap() error { return e.Err }

// ExecOptions shape one `node exec`.
type ExecOptions struct {
	// Timeout is the run time to ask for; 0 asks for the master's default.
	Timeout time.Duration
	// Stdin, when not nil, is the command's input.
	Stdin []byte
	// JSON prints the result as one object (messages.ResultJSON) instead
	// of the command's output as it comes.
	JSON bool
	// Cancel, when it closes, cancels the command.
	Cancel <-chan struct{}
	// Files and Bundles are sent with the command (node exec --file,
	// --bundle); Collect names the files to bring back, to Out (a
	// directory, or a .zip), which is ./<job id>/ when empty.
	Files   []string
	Bundles []string
	Collect []string
	Out     string
}

// FileSubmitter also sends files with commands and saves those brought
// back (agent.Client does).
type FileSubmitter interface {
	Submitter
	SendFiles(ctx context.Context, paths []string) (*messages.Bundle, error)
	SendArchive(ctx context.Context, path string) (*messages.Bundle, error)
	BundleLimits() (bundle.Limits, error)
	Save(ctx context.Context, res *messages.ExecResult, out string) (int, error)
}

// sendFiles stores o's files and bundles in the broker's file store, as
// job's inputs, before anything runs.
func sendFiles(ctx context.Context, sub Submitter, job *agent.Job, o ExecOptions) error {
	if len(o.Files) == 0 && len(o.Bundles) == 0 && len(o.Collect) == 0 {
		return nil
	}
	fs, ok := sub.(FileSubmitter)
	if !ok {
		return errors.New("files cannot be sent from here")
	}
	if o.Out != "" {
		if err := files.CheckOut(o.Out); err != nil {
			return fmt.Errorf("--out %w", err)
		}
	}
	if len(o.Collect) > 0 {
		// Nothing can come back from a broker that keeps no files: say so
		// before the command runs.
		if _, err := fs.BundleLimits(); err != nil {
			return fmt.Errorf("--collect: %w", err)
		}
	}
	if len(o.Files) > 0 {
		b, err := fs.SendFiles(ctx, o.Files)
		if err != nil {
			return fmt.Errorf("--file: %w", err)
		}
		job.Inputs = append(job.Inputs, b)
	}
	for _, path := range o.Bundles {
		b, err := fs.SendArchive(ctx, path)
		if err != nil {
			return fmt.Errorf("--bundle %s: %w", path, err)
		}
		job.Inputs = append(job.Inputs, b)
	}
	job.Collect = o.Collect
	return nil
}

// saveFiles puts the files res brought back where o says, and tells
// errOut (unless the result is printed as JSON).
func saveFiles(ctx context.Context, sub Submitter, res *messages.ExecResult, o ExecOptions, errOut io.Writer) error {
	if len(o.Collect) == 0 || res == nil || res.ResultBundle == nil {
		return nil
	}
	if len(res.Outputs) == 0 {
		fmt.Fprintf(errOut, "baton: no file matched --collect %s\n", strings.Join(o.Collect, " "))
		return nil
	}
	out := o.Out
	if out == "" {
		// The master names the job: a name that is no job ID could
		// point anywhere.
		if !messages.ValidJobID(res.Job) {
			return fmt.Errorf("the master named the job %q, which is no job ID; give --out", res.Job)
		}
		out = "./" + res.Job
	}
	n, err := sub.(FileSubmitter).Save(ctx, res, out)
	if err != nil {
		return fmt.Errorf("--out %w; the files stay with job %s (node job %s --download PATH, with admin.creds when credentials are required)", err, res.Job, res.Job)
	}
	WriteSaved(errOut, n, out)
	return nil
}

// WriteSaved tells w that n files brought back are at out.
func WriteSaved(w io.Writer, n int, out string) {
	fmt.Fprintf(w, "baton: %d %s brought back to %s\n", n, plural(n, "file", "files"), out)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// Exec runs cmd on the master. It copies the command's stdout and stderr
// to out and errOut as they are produced (or prints the result as JSON),
// notes on errOut what the output caps dropped, and returns an *ExitError
// unless the command exited 0.
func Exec(ctx context.Context, sub Submitter, cmd string, o ExecOptions, out, errOut io.Writer) error {
	job := &agent.Job{Cmd: cmd, Timeout: o.Timeout, Stdin: o.Stdin, Cancel: o.Cancel, Via: messages.ViaExec}
	if err := sendFiles(ctx, sub, job, o); err != nil {
		return &ExitError{Code: ExitFailed, Err: fmt.Errorf("exec: %w; the command did not run", err)}
	}
	if !o.JSON {
		job.Output = func(stream int, data []byte) {
			w := out
			if stream == 2 {
				w = errOut
			}
			_, _ = w.Write(data)
		}
	}
	res, err := sub.SubmitJob(ctx, job)
	var saveErr error
	if err == nil {
		saveErr = saveFiles(ctx, sub, res, o, errOut)
	}
	if o.JSON {
		r := res
		if r == nil {
			r = &messages.ExecResult{ExitCode: -1}
		}
		j := messages.NewResultJSON(job.ID, cmd, r)
		if err != nil {
			j.Error = err.Error()
		}
		enc := json.NewEncoder(out)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(j)
	}
	switch {
	case errors.Is(err, agent.ErrCancelled):
		return &ExitError{Code: ExitCancelled, Err: fmt.Errorf("exec: %w", err)}
	case err != nil:
		return &ExitError{Code: ExitFailed, Err: fmt.Errorf("exec: %w", err)}
	}
	if !o.JSON {
		_, _ = io.WriteString(errOut, truncationNotes("", res))
	}
	if saveErr != nil {
		saveErr = fmt.Errorf("exec (job %s): %w", res.Job, saveErr)
		if res.ExitCode != 0 || res.ErrorKind != messages.ErrorKind_ERROR_KIND_NONE {
			// The command's own failure says more, and keeps its status.
			fmt.Fprintf(errOut, "baton: %v\n", saveErr)
		} else {
			return &ExitError{Code: ExitFailed, Err: saveErr}
		}
	}
	where := ""
	if res.Master != "" {
		where = " on " + res.Master
	}
	if res.Job != "" {
		where += " (job " + res.Job + ")"
	}
	switch {
	case res.TimedOut:
		return &ExitError{Code: ExitTimedOut, Err: fmt.Errorf("exec%s: %s", where, res.Error)}
	case res.ErrorKind == messages.ErrorKind_ERROR_KIND_MEMORY_LIMIT && res.ExitCode > 0:
		// The command's own status, and why.
		return &ExitError{Code: int(res.ExitCode), Err: fmt.Errorf("exec%s: %s", where, res.Error)}
	case res.ErrorKind == messages.ErrorKind_ERROR_KIND_CANCELED:
		return &ExitError{Code: ExitCancelled, Err: fmt.Errorf("exec%s: %s", where, res.Error)}
	case res.ErrorKind != messages.ErrorKind_ERROR_KIND_NONE:
		return &ExitError{Code: ExitFailed, Err: fmt.Errorf("exec%s: %s", where, res.Error)}
	case res.ExitCode != 0:
		return &ExitError{Code: int(res.ExitCode)}
	}
	return nil
}

// truncationNotes says, a line each after prefix, what the output caps
// dropped of res.
func truncationNotes(prefix string, res *messages.ExecResult) string {
	var b strings.Builder
	for _, d := range []struct {
		stream  string
		dropped uint64
	}{{"stdout", res.StdoutDropped}, {"stderr", res.StderrDropped}} {
		if d.dropped > 0 {
			fmt.Fprintf(&b, "%sbaton: %s truncated: %d bytes dropped\n", prefix, d.stream, d.dropped)
		}
	}
	return b.String()
}

// IsQuietExit reports whether err is a non-zero exit that needs no message.
func IsQuietExit(err error) (int, bool) {
	var ee *ExitError
	if errors.As(err, &ee) && ee.Err == nil {
		return ee.Code, true
	}
	return 0, false
}

// ShellJoin turns arguments into one shell command line: a single argument
// is the command line as typed; several are each quoted, so that the
// remote shell sees exactly those arguments.
func ShellJoin(args []string) string {
	if len(args) == 1 {
		return args[0]
	}
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = shellQuote(a)
	}
	return strings.Join(quoted, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("@%_-+=:,./", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
