package console_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"baton/agent"
	"baton/cmd/internal/console"
	"baton/messages"
)

// echoSubmitter answers every command as if the master "m" ran it.
type echoSubmitter struct{}

func (echoSubmitter) SubmitJob(_ context.Context, job *agent.Job) (*messages.ExecResult, error) {
	if job.ID == "" {
		job.ID = "id-" + job.Cmd
	}
	if job.Cmd == "fail" {
		return nil, errors.New("no master available")
	}
	return &messages.ExecResult{Id: job.ID, Stdout: "ran " + job.Cmd + "\n", Master: "m", Epoch: 7, DurationMs: 3, StdoutDropped: 5}, nil
}

func TestSession_Run(t *testing.T) {
	var out, errOut bytes.Buffer
	s := &console.Session{In: strings.NewReader("echo\n\n"), Out: &out, Err: &errOut}
	if err := s.Run(context.Background(), echoSubmitter{}); err != nil {
		t.Fatal(err)
	}
	if want := "[1] echo on m (epoch 7): exit 0 in 3ms\nran echo\n"; out.String() != want {
		t.Errorf("output %q, want %q", out.String(), want)
	}
	if want := "[1] baton: stdout truncated: 5 bytes dropped\n"; errOut.String() != want {
		t.Errorf("stderr %q, want %q", errOut.String(), want)
	}
}

func TestSession_RunJSON(t *testing.T) {
	var out bytes.Buffer
	s := &console.Session{In: strings.NewReader("a\nfail\n"), Out: &out, Err: &bytes.Buffer{}, JSON: true}
	if err := s.Run(context.Background(), echoSubmitter{}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2: %q", len(lines), out.String())
	}
	wantKeys := []string{"id", "cmd", "exit_code", "stdout", "stderr", "stdout_dropped", "stderr_dropped", "error", "timed_out", "master", "epoch", "duration_ms", "job"}
	for _, line := range lines {
		var obj map[string]any
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			t.Fatal(err)
		}
		if len(obj) != len(wantKeys) {
			t.Errorf("keys %v, want exactly %v", obj, wantKeys)
		}
		for _, k := range wantKeys {
			if _, ok := obj[k]; !ok {
				t.Errorf("line %s lacks key %q", line, k)
			}
		}
		if obj["id"] != "id-"+obj["cmd"].(string) {
			t.Errorf("line %s: id is not the request's", line)
		}
		if obj["cmd"] == "fail" && (obj["error"] != "no master available" || obj["exit_code"] != float64(-1)) {
			t.Errorf("failed submission printed %s", line)
		}
	}
}

func TestShellJoin(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"ls | wc -l"}, "ls | wc -l"},
		{[]string{"sh", "-c", "echo a; exit 3"}, "sh -c 'echo a; exit 3'"},
		{[]string{"echo", "it's", ""}, `echo 'it'\''s' ''`},
		{[]string{"printf", "%s\n", "a=b,c"}, "printf '%s\n' a=b,c"},
	}
	for _, tc := range cases {
		if got := console.ShellJoin(tc.args); got != tc.want {
			t.Errorf("ShellJoin(%q) = %q, want %q", tc.args, got, tc.want)
		}
	}
}

func TestExec_ExitStatus(t *testing.T) {
	cases := []struct {
		name string
		res  *messages.ExecResult
		err  error
		want int
	}{
		{"success", &messages.ExecResult{}, nil, 0},
		{"remote status", &messages.ExecResult{ExitCode: 3}, nil, 3},
		{"timeout", &messages.ExecResult{ExitCode: -1, TimedOut: true, ErrorKind: messages.ErrorKind_ERROR_KIND_TIMEOUT}, nil, console.ExitTimedOut},
		{"rejected", &messages.ExecResult{ExitCode: -1, ErrorKind: messages.ErrorKind_ERROR_KIND_REJECTED}, nil, console.ExitFailed},
		{"cancelled", &messages.ExecResult{ExitCode: -1, ErrorKind: messages.ErrorKind_ERROR_KIND_CANCELED}, nil, console.ExitCancelled},
		{"no master", nil, agent.ErrNoMaster, console.ExitFailed},
		{"cancelled before sent", nil, agent.ErrCancelled, console.ExitCancelled},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := console.Exec(context.Background(), fixed{tc.res, tc.err}, "x", console.ExecOptions{}, &bytes.Buffer{}, &bytes.Buffer{})
			got := 0
			var ee *console.ExitError
			if errors.As(err, &ee) {
				got = ee.ExitCode()
			}
			if got != tc.want {
				t.Errorf("exit %d, want %d", got, tc.want)
			}
		})
	}
}

type fixed struct {
	res *messages.ExecResult
	err error
}

func (f fixed) SubmitJob(context.Context, *agent.Job) (*messages.ExecResult, error) {
	return f.res, f.err
}

// A line longer than a command may be is refused without being sent, with
// a result that says so.
func TestSession_LongLineRefused(t *testing.T) {
	var out bytes.Buffer
	long := strings.Repeat("a", console.MaxLineBytes+1)
	s := &console.Session{In: strings.NewReader(long + "\necho ok\n"), Out: &out, Err: &bytes.Buffer{}, JSON: true}
	if err := s.Run(context.Background(), echoSubmitter{}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.Contains(out.String(), `"error":"command of 65537 bytes not sent: the limit is 65536"`) {
		t.Errorf("got %q", out.String())
	}
}
