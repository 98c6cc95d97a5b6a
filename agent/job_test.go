package agent_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"baton/agent"
	"baton/messages"
)

// A request asks for its own run time, up to the master's cap; past the
// cap it is rejected unrun, with the cap named.
func TestJob_Timeout(t *testing.T) {
	b := startCluster(t)
	m := startNode(t, b, "m", 1, func(c *agent.Config) {
		c.ExecTimeout, c.MaxExecTimeout = 200*time.Millisecond, 2*time.Second
	})
	waitMaster(t, m, "m")
	ctx := context.Background()
	res, err := m.SubmitJob(ctx, &agent.Job{Cmd: "sleep 0.5; echo done"})
	if err != nil || !res.TimedOut {
		t.Errorf("default timeout: %v %v, want timed out after the master's 200ms", res, err)
	}
	res, err = m.SubmitJob(ctx, &agent.Job{Cmd: "sleep 0.5; echo done", Timeout: time.Second})
	if err != nil || res.Stdout != "done\n" {
		t.Errorf("asked for 1s: %v %v, want done", res, err)
	}
	res, err = m.SubmitJob(ctx, &agent.Job{Cmd: "echo never", Timeout: 3 * time.Second})
	if err != nil || res.ErrorKind != messages.ErrorKind_ERROR_KIND_REJECTED || !strings.Contains(res.Error, "--max-exec-timeout of 2s") || res.Stdout != "" {
		t.Errorf("asked for 3s: %v %v, want rejected naming the 2s cap", res, err)
	}
}

// A command given input reads it, then sees its end.
func TestJob_Stdin(t *testing.T) {
	m, _ := servingMaster(t)
	res, err := m.SubmitJob(context.Background(), &agent.Job{Cmd: "tr a-z A-Z; echo end", Stdin: []byte("hello\n")})
	if err != nil || res.Stdout != "HELLO\nend\n" {
		t.Errorf("got %v %v, want HELLO then end", res, err)
	}
}

// Output reaches the requester while the command runs, and the live view
// adds up to the record.
func TestJob_LiveOutput(t *testing.T) {
	m, _ := servingMaster(t)
	var mu sync.Mutex
	var got [3]strings.Builder
	var firstAt time.Time
	start := time.Now()
	res, err := m.SubmitJob(context.Background(), &agent.Job{
		Cmd: "echo one; sleep 1; echo two; echo oops >&2",
		Output: func(stream int, data []byte) {
			mu.Lock()
			defer mu.Unlock()
			if firstAt.IsZero() {
				firstAt = time.Now()
			}
			got[stream].Write(data)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if d := firstAt.Sub(start); d > 500*time.Millisecond {
		t.Errorf("first output after %v, want it before the command's sleep ends", d)
	}
	if got[1].String() != "one\ntwo\n" || got[2].String() != "oops\n" || res.Stdout != "one\ntwo\n" {
		t.Errorf("live %q %q, record %q", got[1].String(), got[2].String(), res.Stdout)
	}
}

// A cancelled command is killed on the master and reported as cancelled.
func TestJob_Cancel(t *testing.T) {
	m, _ := servingMaster(t)
	cancel := make(chan struct{})
	time.AfterFunc(300*time.Millisecond, func() { close(cancel) })
	start := time.Now()
	res, err := m.SubmitJob(context.Background(), &agent.Job{Cmd: "sleep 4; echo finished", Cancel: cancel})
	if err != nil || res.ErrorKind != messages.ErrorKind_ERROR_KIND_CANCELED || !strings.Contains(res.Error, "cancelled by its requester") || res.Stdout != "" {
		t.Fatalf("got %v %v, want cancelled by its requester", res, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("result after %v, want soon after the cancel at 300ms", d)
	}
}

// A job cancelled before it is sent is never sent.
func TestJob_CancelledBeforeSent(t *testing.T) {
	m, _ := servingMaster(t)
	marker := filepath.Join(t.TempDir(), "ran")
	cancel := make(chan struct{})
	close(cancel)
	res, err := m.SubmitJob(context.Background(), &agent.Job{Cmd: "touch " + marker, Cancel: cancel})
	if !errors.Is(err, agent.ErrCancelled) || res != nil {
		t.Errorf("got %v %v, want ErrCancelled", res, err)
	}
	time.Sleep(200 * time.Millisecond)
	if _, err := os.Stat(marker); err == nil {
		t.Error("the cancelled command ran")
	}
}
