package executor

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"baton/internal/procs"
)

// helperEnv makes the test binary a process that runs one command with a
// reaper and then waits to be killed.
const helperEnv = "BATON_EXECUTOR_TEST_HELPER"

func TestMain(m *testing.M) {
	ReaperMain()
	if os.Getenv(helperEnv) == "1" {
		cfg := DefaultConfig()
		cfg.Reaper = true
		e, err := New(cfg)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		// Prints the command's pid, then sleeps until killed.
		e.Run(context.Background(), Command{Line: "echo $$; exec sleep 60", Timeout: time.Minute, Output: func(_ Stream, p []byte) {
			os.Stdout.Write(p)
		}})
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// A process killed with SIGKILL takes the commands it started with it.
func TestReaperKillsCommandsOfAKilledProcess(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	helper := exec.Command(self)
	helper.Env = append(os.Environ(), helperEnv+"=1")
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := out.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	if err != nil {
		t.Fatalf("helper printed %q", buf[:n])
	}
	if !procs.Running(pid) {
		t.Fatal("the command is not running")
	}
	_ = helper.Process.Signal(syscall.SIGKILL)
	_ = helper.Wait()
	waitGone(t, pid)
}

// An executor with a reaper runs commands as any other, and its Close ends
// the reaper.
func TestReaperCloses(t *testing.T) {
	e := newTestExecutor(t, func(c *Config) { c.Reaper = true })
	if r := e.Run(context.Background(), Command{Line: "echo hi"}); string(r.Stdout) != "hi\n" {
		t.Fatalf("got %q", r.Stdout)
	}
	done := make(chan error)
	go func() { done <- e.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the reaper")
	}
}
