package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"baton/internal/procs"
)

// node exec asks for its own timeout (flag or BATON_TIMEOUT), up to the
// master's cap; without one, the master's default applies.
func TestExecTimeout(t *testing.T) {
	t.Parallel() // mostly waiting; no tight timing
	c := newCluster(t)
	c.node("master", 1, procOpts{}, "--serve", "--exec-timeout=1s", "--max-exec-timeout=3s")
	c.watch().waitMaster("master", time.Time{}, 10*time.Second)
	cases := []struct {
		name     string
		env      []string
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{"master's default", nil, []string{"sleep 1.5; echo done"}, 124, "", "timed out after 1s"},
		{"asked for", nil, []string{"--timeout=2s", "--", "sleep 1.5; echo done"}, 0, "done\n", ""},
		{"from the environment", []string{"BATON_TIMEOUT=2s"}, []string{"sleep 1.5; echo done"}, 0, "done\n", ""},
		{"over the cap", nil, []string{"--timeout=10s", "--", "echo never"}, 125, "", "timeout 10s is longer than this master's --max-exec-timeout of 3s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := start(t, "exec", bins.node, procOpts{env: tc.env}, append([]string{"exec", "--broker-addr=" + c.addr}, tc.args...)...)
			code := p.wait(30 * time.Second)
			if code != tc.wantCode || p.stdout.String() != tc.wantOut || !strings.Contains(p.stderr.String(), tc.wantErr) {
				t.Errorf("exit %d stdout %q stderr %q, want %d %q and %q", code, p.stdout.String(), p.stderr.String(), tc.wantCode, tc.wantOut, tc.wantErr)
			}
		})
	}
}

// node exec --stdin gives the command its input, then end of input; more
// than 1 MiB is refused before anything is sent; without --stdin a read
// waits for the timeout.
func TestExecStdin(t *testing.T) {
	t.Parallel() // mostly waiting; no tight timing
	c := newCluster(t)
	c.node("master", 1, procOpts{}, "--serve", "--exec-timeout=1s")
	c.watch().waitMaster("master", time.Time{}, 10*time.Second)
	run := func(input string, args ...string) (string, string, int) {
		p := start(t, "exec", bins.node, procOpts{input: input}, append([]string{"exec", "--broker-addr=" + c.addr}, args...)...)
		code := p.wait(30 * time.Second)
		return p.stdout.String(), p.stderr.String(), code
	}
	if out, errOut, code := run("a\nb\nc\n", "--stdin", "--", "wc -l | tr -d ' '; cat"); code != 0 || out != "3\n" {
		t.Errorf("with --stdin: exit %d %q %q, want 3 lines read to their end", code, out, errOut)
	}
	marker := filepath.Join(t.TempDir(), "ran")
	big := strings.Repeat("x", 1<<20+1)
	if _, errOut, code := run(big, "--stdin", "--", "touch "+marker); code != 125 || !strings.Contains(errOut, "longer than the 1048576 bytes --stdin allows; nothing was sent") {
		t.Errorf("over 1 MiB: exit %d %q, want 125 and nothing sent", code, errOut)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the command ran although its input was refused")
	}
	if _, errOut, code := run("typed\n", "read x; echo got $x"); code != 124 {
		t.Errorf("without --stdin: exit %d %q, want the read to wait until the timeout (124)", code, errOut)
	}
}

// node exec shows output as the command writes it, and says what the
// output cap dropped.
func TestExecLiveOutputAndTruncation(t *testing.T) {
	t.Parallel() // mostly waiting; no tight timing
	c := newCluster(t)
	c.node("master", 1, procOpts{}, "--serve")
	c.watch().waitMaster("master", time.Time{}, 10*time.Second)
	// Each line carries the time it was written; the test notes when it
	// arrives. The command sleeps between lines, so a line that arrives
	// before the next is written came live.
	live := start(t, "exec", bins.node, procOpts{}, "exec", "--broker-addr="+c.addr, "--",
		"for i in 1 2 3; do date +%s.%N; sleep 1; done")
	type line struct {
		written, arrived time.Time
	}
	var mu sync.Mutex
	var lines []line
	stop := make(chan struct{})
	go func() {
		seen := 0
		for {
			out := live.stdout.String()
			now := time.Now()
			if n := strings.Count(out, "\n"); n > seen {
				for _, l := range strings.Split(out, "\n")[seen:n] {
					f, err := strconv.ParseFloat(l, 64)
					if err != nil {
						continue
					}
					mu.Lock()
					lines = append(lines, line{time.Unix(0, int64(f*1e9)), now})
					mu.Unlock()
				}
				seen = n
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	if code := live.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit %d: %s", code, live.stderr.String())
	}
	time.Sleep(10 * time.Millisecond)
	close(stop)
	mu.Lock()
	defer mu.Unlock()
	if len(lines) != 3 {
		t.Fatalf("saw %d lines: %q", len(lines), live.stdout.String())
	}
	for i, l := range lines {
		t.Logf("line %d arrived %v after it was written", i+1, l.arrived.Sub(l.written).Round(time.Millisecond))
		if i < 2 && !l.arrived.Before(lines[i+1].written) {
			t.Errorf("line %d arrived only after the next was written: not live", i+1)
		}
	}

	out, errOut, code := c.exec("yes | head -c 5000000")
	if code != 0 || len(out) != 1<<20 {
		t.Errorf("exit %d, %d bytes of output, want 0 and the 1 MiB cap", code, len(out))
	}
	if want := fmt.Sprintf("baton: stdout truncated: %d bytes dropped\n", 5000000-(1<<20)); errOut != want {
		t.Errorf("stderr %q, want %q", errOut, want)
	}
	p := start(t, "exec", bins.node, procOpts{}, "exec", "--json", "--broker-addr="+c.addr, "--", "yes | head -c 5000000")
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exec --json: exit %d", code)
	}
	var r map[string]any
	if err := json.Unmarshal([]byte(p.stdout.String()), &r); err != nil {
		t.Fatal(err)
	}
	if r["stdout_dropped"] != float64(5000000-(1<<20)) || r["stderr_dropped"] != float64(0) || len(r) != 13 {
		t.Errorf("exec --json printed %d keys, dropped %v/%v", len(r), r["stdout_dropped"], r["stderr_dropped"])
	}
}

// SIGINT or SIGTERM to node exec cancels the command on the master: its
// process is gone at once, and node exec exits 130 with one line.
func TestExecCancel(t *testing.T) {
	t.Parallel() // mostly waiting; no tight timing
	c := newCluster(t)
	c.node("master", 1, procOpts{}, "--serve", "--exec-timeout=30s")
	c.watch().waitMaster("master", time.Time{}, 10*time.Second)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "pid")
			p := start(t, "exec", bins.node, procOpts{}, "exec", "--broker-addr="+c.addr, "--",
				"sh -c 'echo $$ > "+pidFile+"; exec sleep 20'")
			var pid int
			eventually(t, 10*time.Second, "the command started", func() bool {
				b, err := os.ReadFile(pidFile)
				if err != nil {
					return false
				}
				pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
				return err == nil
			})
			p.signal(sig)
			sent := time.Now()
			eventually(t, 5*time.Second, "the remote process gone", func() bool { return !procs.Running(pid) })
			t.Logf("remote process gone %v after %s", time.Since(sent).Round(time.Millisecond), sig)
			if code := p.wait(10 * time.Second); code != 130 {
				t.Errorf("exit %d, want 130", code)
			}
			errOut := strings.TrimSpace(p.stderr.String())
			if !strings.Contains(errOut, "cancelled by its requester") || strings.Contains(errOut, "\n") {
				t.Errorf("stderr %q, want one line saying it was cancelled", errOut)
			}
		})
	}
}

// The README's quickstart, run as written on one host: three processes,
// no --name; the priority-10 node's ls runs on the priority-100 node.
func TestQuickstart(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(readme), "## Quickstart without containers")
	_, block, _ := strings.Cut(section, "```sh\n")
	block, _, _ = strings.Cut(block, "```")
	var cmds [][]string
	for _, l := range strings.Split(block, "\n") {
		l, _, _ = strings.Cut(l, "#")
		if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], "bin/") {
			cmds = append(cmds, f)
		}
	}
	if len(cmds) != 3 || cmds[0][0] != "bin/broker" || cmds[1][0] != "bin/node" || cmds[2][0] != "bin/node" {
		t.Fatalf("the quickstart's commands are %q, want bin/broker then two bin/node", cmds)
	}
	bin := map[string]string{"bin/broker": bins.broker, "bin/node": bins.node}
	dir := t.TempDir()
	broker := start(t, "broker", bin[cmds[0][0]], procOpts{dir: dir}, cmds[0][1:]...)
	eventually(t, 10*time.Second, "the broker listening", func() bool { return strings.Contains(broker.stderr.String(), "broker ready") })
	master := start(t, "node 2", bin[cmds[1][0]], procOpts{dir: dir, stdin: true}, cmds[1][1:]...)
	eventually(t, 10*time.Second, "terminal 2 joined", func() bool { return strings.Contains(master.stderr.String(), "serving as master") })
	os.WriteFile(filepath.Join(dir, "listed-here"), nil, 0o644)
	typist := start(t, "node 3", bin[cmds[2][0]], procOpts{dir: dir, input: "ls\n"}, cmds[2][1:]...)
	if code := typist.wait(20 * time.Second); code != 0 {
		t.Fatalf("terminal 3 exited %d", code)
	}
	host, _ := os.Hostname()
	want := fmt.Sprintf("[1] ls on %s-%d (epoch ", host, master.cmd.Process.Pid)
	out := typist.stdout.String()
	if !strings.Contains(out, want) || !strings.Contains(out, "listed-here\n") {
		t.Errorf("terminal 3 printed:\n%s\nwant %q and the listing", out, want)
	}
	for _, p := range []*proc{master, broker} {
		p.signal(syscall.SIGTERM)
		p.wait(10 * time.Second)
	}
}
