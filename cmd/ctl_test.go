package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"baton/auth"
)

// Every node ctl action, checked through its effect on real processes:
// show, each setting (max-parallel 1 makes a second command wait, a
// shorter exec timeout kills a command sooner, memory-limit and max-procs
// show up in show), leave (a new master, and the node exits 0), and the
// errors: an unknown name and a bad value exit 2, a role other than admin
// exits 1, each with one line.
func TestNodeCtl(t *testing.T) {
	t.Parallel() // mostly waiting
	c := newCluster(t, "--auth=required")
	creds := func(r auth.Role) string { return filepath.Join(auth.Dir(c.dataDir), auth.FileName(r)) }
	w := c.watchAs(creds(auth.Watch))
	alpha := c.node("alpha", 100, procOpts{}, "--serve", "--credentials="+creds(auth.Node))
	c.node("beta", 10, procOpts{}, "--serve", "--credentials="+creds(auth.Node))
	w.waitMaster("alpha", time.Time{}, 15*time.Second)
	run := func(cred auth.Role, args ...string) (string, string, int) {
		t.Helper()
		args = append([]string{args[0], "--broker-addr=" + c.addr, "--credentials=" + creds(cred)}, args[1:]...)
		p := start(t, "node "+strings.Join(args, " "), bins.node, procOpts{}, args...)
		code := p.wait(30 * time.Second)
		return p.stdout.String(), p.stderr.String(), code
	}
	type settings struct {
		Master           bool
		MemoryLimit      uint64 `json:"memory_limit"`
		MemoryInUse      uint64 `json:"memory_in_use"`
		MaxProcs         int    `json:"max_procs"`
		MaxParallel      int    `json:"max_parallel"`
		ExecTimeoutMs    int    `json:"exec_timeout_ms"`
		Running, Waiting int
	}
	show := func() settings {
		t.Helper()
		out, errOut, code := run(auth.Admin, "ctl", "alpha", "show", "--json")
		var s settings
		if err := json.Unmarshal([]byte(out), &s); code != 0 || err != nil {
			t.Fatalf("ctl alpha show --json: exit %d, %v, %q %q", code, err, out, errOut)
		}
		return s
	}
	set := func(setting, value, want string) {
		t.Helper()
		if out, errOut, code := run(auth.Admin, "ctl", "alpha", "set", setting, value); code != 0 || out != want+"\n" {
			t.Errorf("ctl alpha set %s %s: exit %d, %q %q; want %q", setting, value, code, out, errOut, want)
		}
	}

	if out, errOut, code := run(auth.Admin, "ctl", "alpha", "show"); code != 0 || !strings.Contains(out, "alpha (master") ||
		!strings.Contains(out, "max-parallel       64") || !strings.Contains(out, "exec-timeout       5s") || !strings.Contains(out, "memory in use") {
		t.Errorf("ctl alpha show: exit %d, %q %q", code, out, errOut)
	}
	if s := show(); !s.Master || s.MemoryLimit != 0 || s.MemoryInUse == 0 || s.MaxParallel != 64 || s.ExecTimeoutMs != 5000 {
		t.Errorf("before any change: %+v", s)
	}

	set("memory-limit", "64MiB", "alpha: memory-limit 64 MiB (was none)")
	set("max-procs", "1", "alpha: max-procs 1 (was 2)")
	if s := show(); s.MemoryLimit != 64<<20 || s.MaxProcs != 1 {
		t.Errorf("after memory-limit 64MiB and max-procs 1: %+v", s)
	}

	// max-parallel 1: of two commands, the second waits for the first.
	set("max-parallel", "1", "alpha: max-parallel 1 (was 64)")
	first := start(t, "first", bins.node, procOpts{}, "exec", "--broker-addr="+c.addr, "--credentials="+creds(auth.Submit), "--", "sleep 4; echo first")
	eventually(t, 10*time.Second, "the first command runs", func() bool { return show().Running == 1 })
	t0 := time.Now()
	second := start(t, "second", bins.node, procOpts{}, "exec", "--broker-addr="+c.addr, "--credentials="+creds(auth.Submit), "--", "echo second")
	eventually(t, 10*time.Second, "the second command waits", func() bool { s := show(); return s.Running == 1 && s.Waiting == 1 })
	if code := second.wait(15 * time.Second); code != 0 || second.stdout.String() != "second\n" {
		t.Errorf("second: exit %d, %q", code, second.stdout.String())
	}
	if code := first.wait(15 * time.Second); code != 0 || first.stdout.String() != "first\n" {
		t.Errorf("first: exit %d, %q", code, first.stdout.String())
	}
	t.Logf("both done %v after the second was sent", time.Since(t0).Round(time.Millisecond))

	// A shorter default run time: a command asking for none is killed.
	set("exec-timeout", "1s", "alpha: exec-timeout 1s (was 5s)")
	t0 = time.Now()
	if _, errOut, code := run(auth.Submit, "exec", "--", "sleep 4"); code != 124 || !strings.Contains(errOut, "timed out after 1s") {
		t.Errorf("sleep 4 under exec-timeout 1s: exit %d, %q; want 124, timed out after 1s", code, errOut)
	}
	if took := time.Since(t0); took > 3500*time.Millisecond {
		t.Errorf("sleep 4 under exec-timeout 1s took %v", took)
	}

	// Errors: one line each; unknown name and bad value 2, refused role 1.
	for _, tc := range []struct {
		cred auth.Role
		args []string
		code int
		says string
	}{
		{auth.Admin, []string{"ctl", "gamma", "show"}, 2, `no member is named "gamma" (members: alpha, beta;`},
		{auth.Admin, []string{"ctl", "alpha", "set", "max-parallel", "0"}, 2, "a number from 1 to 10000"},
		{auth.Admin, []string{"ctl", "alpha", "set", "max-parallel", "many"}, 2, "not a number"},
		{auth.Admin, []string{"ctl", "alpha", "set", "exec-timeout", "1h"}, 2, "from 100ms to the node's --max-exec-timeout of 5m0s"},
		{auth.Admin, []string{"ctl", "alpha", "set", "memory-limit", "1MiB"}, 2, "at least 16 MiB"},
		{auth.Admin, []string{"ctl", "alpha", "set", "colour", "red"}, 2, "must be one of"},
		{auth.Submit, []string{"ctl", "alpha", "show"}, 1, "may not control nodes (it needs the admin role"},
		{auth.Watch, []string{"ctl", "alpha", "leave"}, 1, "may not control nodes (it needs the admin role"},
		{auth.Node, []string{"ctl", "alpha", "set", "max-parallel", "9"}, 1, "may not control nodes (it needs the admin role"},
	} {
		_, errOut, code := run(tc.cred, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.says) || strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
			t.Errorf("%s as %s: exit %d, stderr %q; want %d and one line saying %q", strings.Join(tc.args, " "), tc.cred, code, errOut, tc.code, tc.says)
		}
	}
	if s := show(); s.MaxParallel != 1 || s.ExecTimeoutMs != 1000 {
		t.Errorf("refused requests changed something: %+v", s)
	}

	// leave: as SIGTERM does.
	since := time.Now()
	if out, errOut, code := run(auth.Admin, "ctl", "alpha", "leave"); code != 0 || !strings.Contains(out, "alpha: leaving the cluster, as on SIGTERM; it was master: the next in rank takes over") {
		t.Errorf("ctl alpha leave: exit %d, %q %q", code, out, errOut)
	}
	at, _ := w.waitMaster("beta", since, 5*time.Second)
	t.Logf("beta master %v after the leave was asked", at.Sub(since).Round(time.Millisecond))
	if code := alpha.wait(15 * time.Second); code != 0 {
		t.Errorf("alpha exited %d after leaving, want 0", code)
	}
	if !strings.Contains(alpha.stderr.String(), "asked to leave by node ctl") {
		t.Errorf("alpha's log does not say why it left")
	}
}
