package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"baton/agent"
	"baton/internal/procs"
)

// Interactive is what a person at `node exec` feels: how soon a line the
// command writes on the master shows at the requester, and how soon a
// cancel kills the command; each next to the same thing done locally.
type Interactive struct {
	Lines           int     `json:"lines"`
	LocalLineP50Ms  float64 `json:"local_line_p50_ms"`
	LineP50Ms       float64 `json:"line_p50_ms"`
	LineMaxMs       float64 `json:"line_max_ms"`
	Cancels         int     `json:"cancels"`
	LocalKillP50Ms  float64 `json:"local_kill_p50_ms"`
	CancelP50Ms     float64 `json:"cancel_p50_ms"`
	CancelMaxMs     float64 `json:"cancel_max_ms"`
	CancelToResult  float64 `json:"cancel_to_result_p50_ms"`
	LinesPerCommand int     `json:"lines_per_command"`
}

// Targets: the promises.
const (
	targetLineMs   = 100
	targetCancelMs = 100
)

// lineScript writes n lines, each the time it was written in unix
// nanoseconds, 20 ms apart.
func lineScript(n int) string {
	return fmt.Sprintf("i=0; while [ $i -lt %d ]; do date +%%s%%N; sleep 0.02; i=$((i+1)); done", n)
}

// lineDelays turns output lines (written times) and their arrival times
// into delays.
func lineDelays(lines []string, arrived []time.Time) []time.Duration {
	var d []time.Duration
	for i, l := range lines {
		ns, err := strconv.ParseInt(strings.TrimSpace(l), 10, 64)
		if err == nil && i < len(arrived) {
			d = append(d, arrived[i].Sub(time.Unix(0, ns)))
		}
	}
	return d
}

func interactive(ctx context.Context, cfg Config, r *Report) error {
	_, _, trials, _ := cfg.sizes()
	perCommand, commands, cancels := 25, trials, 4*trials
	c, err := servingCluster(ctx, cfg, "master")
	if err != nil {
		return err
	}
	defer c.close()
	var local, remote []time.Duration
	for range commands {
		// Locally: the same script, its stdout read through a pipe.
		cmd := exec.Command("/bin/sh", "-c", lineScript(perCommand))
		out, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return err
		}
		var lines []string
		var arrived []time.Time
		s := bufio.NewScanner(out)
		for s.Scan() {
			arrived = append(arrived, time.Now())
			lines = append(lines, s.Text())
		}
		if err := cmd.Wait(); err != nil {
			return err
		}
		local = append(local, lineDelays(lines, arrived)...)

		// Through the cluster: the live output of node exec.
		var mu sync.Mutex
		var partial string
		lines, arrived = nil, nil
		res, err := c.client.SubmitJob(ctx, &agent.Job{Cmd: lineScript(perCommand), Output: func(stream int, data []byte) {
			now := time.Now()
			mu.Lock()
			defer mu.Unlock()
			partial += string(data)
			for {
				l, rest, ok := strings.Cut(partial, "\n")
				if !ok {
					break
				}
				lines, arrived, partial = append(lines, l), append(arrived, now), rest
			}
		}})
		if err != nil || res.ExitCode != 0 {
			return fmt.Errorf("live output: %v %v", res, err)
		}
		mu.Lock()
		remote = append(remote, lineDelays(lines, arrived)...)
		mu.Unlock()
	}

	dir, err := os.MkdirTemp(cfg.Dir, "cancel")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var kills, cancelled, results []time.Duration
	for i := range cancels {
		// Locally: kill a process group and wait for it to be gone.
		cmd := exec.Command("/bin/sh", "-c", "exec sleep 30")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			return err
		}
		t0 := time.Now()
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		kills = append(kills, time.Since(t0))

		// Through the cluster: cancel, and watch the master's process go.
		pidFile := filepath.Join(dir, strconv.Itoa(i))
		cancel := make(chan struct{})
		done := make(chan time.Time, 1)
		go func() {
			_, _ = c.client.SubmitJob(ctx, &agent.Job{Cmd: "sh -c 'echo $$ > " + pidFile + "; exec sleep 30'", Timeout: time.Minute, Cancel: cancel})
			done <- time.Now()
		}()
		pid, err := waitPID(pidFile, 10*time.Second)
		if err != nil {
			return err
		}
		t0 = time.Now()
		close(cancel)
		for procs.Running(pid) {
			if time.Since(t0) > 10*time.Second {
				return fmt.Errorf("cancelled command still running after 10 s")
			}
			time.Sleep(100 * time.Microsecond)
		}
		cancelled = append(cancelled, time.Since(t0))
		results = append(results, (<-done).Sub(t0))
	}
	for _, d := range [][]time.Duration{local, remote, kills, cancelled, results} {
		slices.Sort(d)
	}
	r.Interactive = Interactive{
		Lines: len(remote), LinesPerCommand: perCommand,
		LocalLineP50Ms: percentile(local, 50), LineP50Ms: percentile(remote, 50), LineMaxMs: percentile(remote, 100),
		Cancels: cancels, LocalKillP50Ms: percentile(kills, 50), CancelP50Ms: percentile(cancelled, 50),
		CancelMaxMs: percentile(cancelled, 100), CancelToResult: percentile(results, 50),
	}
	return nil
}

// waitPID reads the pid a command wrote to path.
func waitPID(path string, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				return pid, nil
			}
		}
		time.Sleep(time.Millisecond)
	}
	return 0, fmt.Errorf("no pid in %s after %v", path, timeout)
}
