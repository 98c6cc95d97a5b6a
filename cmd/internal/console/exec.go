package console

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

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

// Exec runs cmd on the master, copies its stdout and stderr to out and
// errOut, and returns an *ExitError unless the command exited 0.
func Exec(ctx context.Context, sub Submitter, cmd string, out, errOut io.Writer) error {
	res, err := sub.Submit(ctx, cmd)
	if err != nil {
		return &ExitError{Code: ExitFailed, Err: fmt.Errorf("exec: %w", err)}
	}
	_, _ = io.WriteString(out, res.Stdout)
	_, _ = io.WriteString(errOut, res.Stderr)
	switch {
	case res.TimedOut:
		return &ExitError{Code: ExitTimedOut, Err: fmt.Errorf("exec on %s: %s", res.Master, res.Error)}
	case res.ErrorKind != messages.ErrorKind_ERROR_KIND_NONE:
		where := ""
		if res.Master != "" {
			where = " on " + res.Master
		}
		return &ExitError{Code: ExitFailed, Err: fmt.Errorf("exec%s: %s", where, res.Error)}
	case res.ExitCode != 0:
		return &ExitError{Code: int(res.ExitCode)}
	}
	return nil
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
