package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nats runs the stock nats CLI as a user would, with no flags: NATS_URL
// points it at this test's broker, and HOME keeps its configuration out of
// the real one. PATH finds the node binary for --translate.
func (c *cluster) nats(args ...string) *proc {
	c.t.Helper()
	return start(c.t, "nats "+strings.Join(args, " "), bins.nats, procOpts{env: []string{
		"NATS_URL=nats://" + c.addr,
		"HOME=" + c.t.TempDir(),
		"PATH=" + bins.dir + ":" + os.Getenv("PATH"),
	}}, args...)
}

// natsOutput runs a nats command to its end and returns what it printed.
func (c *cluster) natsOutput(args ...string) string {
	c.t.Helper()
	p := c.nats(args...)
	if code := p.wait(20 * time.Second); code != 0 {
		c.t.Fatalf("nats %s exited %d: %s", strings.Join(args, " "), code, p.stderr.String())
	}
	return p.stdout.String() + p.stderr.String()
}

// `nats sub` shows election traffic readably: who is master at which
// epoch, who registered, beat and left, in headers; and with node decode as
// the translator, every field.
func TestNatsCLI_ReadableTraffic(t *testing.T) {
	c := newCluster(t)
	w := c.watch()
	masterSub := c.nats("sub", "master.current")
	nodeSub := c.nats("sub", "node.>")
	decoded := c.nats("sub", "node.>", "--translate", "node decode --subject {{Subject}}")
	time.Sleep(500 * time.Millisecond) // subscribed
	alpha := c.node("alpha", 100, procOpts{}, "--serve")
	w.waitMaster("alpha", time.Time{}, 10*time.Second)
	beta := c.node("beta", 10, procOpts{}, "--serve")
	c.waitMembers(2)
	t0 := time.Now()
	alpha.signal(syscall.SIGKILL)
	w.waitMaster("beta", t0, 10*time.Second)
	beta.signal(syscall.SIGTERM)
	beta.wait(10 * time.Second)
	w.waitMaster("", t0, 10*time.Second)

	want := map[*proc][]string{
		masterSub: {"Baton-Master: alpha", "Baton-Master: beta", "Baton-Event: alpha lost: connection closed", "Baton-Epoch: "},
		nodeSub: {"node.register", "Baton-Node: beta", "Baton-Priority: 10", "node.heartbeat", "Baton-Seq: ",
			"node.deregister", "Baton-Reason: node stopping"},
		decoded: {`"name":"beta"`, `"priority":10`, `"instance_id":`, `"seq":`},
	}
	for p, lines := range want {
		for _, line := range lines {
			eventually(t, 5*time.Second, p.name+" shows "+line, func() bool { return strings.Contains(p.stdout.String(), line) })
		}
	}
	t.Logf("nats sub master.current during the failover:\n%s", masterSub.stdout.String())
}

// nats req answers JSON with JSON, and garbage or an empty command with an
// error reply, never a timeout or "no responders".
func TestNatsCLI_Request(t *testing.T) {
	c := newCluster(t)
	c.node("alpha", 1, procOpts{}, "--serve")
	c.watch().waitMaster("alpha", time.Time{}, 10*time.Second)
	if out, _, code := c.exec("true"); code != 0 {
		t.Fatalf("cluster not serving: %s", out)
	}
	cases := []struct {
		body string
		want []string
	}{
		{`{"cmd":"uname -a"}`, []string{`"cmd":"uname -a"`, `"exit_code":0`, `"stdout":"Linux`, `"stdout_dropped":0`, `"master":"alpha"`, `"timed_out":false`, `"epoch":2`}},
		{`garbage`, []string{`"exit_code":-1`, `"error":"rejected: request is neither a protobuf ExecRequest nor JSON`}},
		{`{"cmd":""}`, []string{`"exit_code":-1`, `"error":"rejected: empty command"`}},
	}
	for _, tc := range cases {
		out := strings.ReplaceAll(c.natsOutput("req", "exec.request", tc.body), " ", "")
		for _, w := range tc.want {
			if !strings.Contains(out, strings.ReplaceAll(w, " ", "")) {
				t.Errorf("nats req exec.request %s printed:\n%s\nwant %s", tc.body, out, w)
			}
		}
	}

	// The history, as the README reads it with the nats CLI.
	job := regexp.MustCompile(`"job":"([0-9a-z]{15})"`).FindStringSubmatch(c.natsOutput("req", "exec.request", `{"cmd":"echo remembered"}`))
	if job == nil {
		t.Fatal("no job ID in the answer")
	}
	eventually(t, 10*time.Second, "the job in jobs.list", func() bool {
		return strings.Contains(c.natsOutput("req", "jobs.list", `{"limit":1}`), `"cmd":"echo remembered","state":"succeeded"`)
	})
	if out := c.natsOutput("req", "jobs.get", `{"id":"`+job[1]+`"}`); !strings.Contains(out, `"stdout":"remembered\n"`) || !strings.Contains(out, `"via":"nats"`) {
		t.Errorf("nats req jobs.get printed %q", out)
	}
	if out := c.natsOutput("stream", "ls"); !strings.Contains(out, "BATON_JOBS") {
		t.Errorf("nats stream ls printed %q", out)
	}
	if out := c.natsOutput("stream", "get", "BATON_JOBS", "--last-for", "baton.jobs."+job[1]); !strings.Contains(out, `"stdout":"remembered\n"`) {
		t.Errorf("nats stream get printed %q", out)
	}
}

// The exec endpoint is a NATS micro service that moves with the master.
func TestNatsCLI_Micro(t *testing.T) {
	c := newCluster(t)
	w := c.watch()
	alpha := c.masterAndStandby(w)
	if _, _, code := c.exec("true"); code != 0 {
		t.Fatal("cluster not serving")
	}
	if out := c.natsOutput("micro", "ls"); !strings.Contains(out, "baton") {
		t.Errorf("nats micro ls:\n%s\nwant the baton service", out)
	}
	info := c.natsOutput("micro", "info", "baton")
	for _, want := range []string{"exec.request", "baton-exec", "node: alpha"} {
		if !strings.Contains(info, want) {
			t.Errorf("nats micro info baton:\n%s\nwant %q", info, want)
		}
	}
	t0 := time.Now()
	alpha.signal(syscall.SIGKILL)
	w.waitMaster("beta", t0, 10*time.Second)
	if _, _, code := c.exec("true"); code != 0 {
		t.Fatal("cluster not serving after the failover")
	}
	info = c.natsOutput("micro", "info", "baton")
	if !strings.Contains(info, "node: beta") || strings.Contains(info, "node: alpha") {
		t.Errorf("after the failover, nats micro info baton:\n%s\nwant node: beta only", info)
	}
	if stats := c.natsOutput("micro", "stats", "baton"); !strings.Contains(stats, "exec") {
		t.Errorf("nats micro stats baton:\n%s\nwant the exec endpoint", stats)
	}
	// The stats time the commands and count what failed.
	if _, _, code := c.exec("sleep 1"); code != 0 {
		t.Fatal("sleep 1 failed")
	}
	c.natsOutput("req", "exec.request", `{"cmd":""}`)
	var stats []struct {
		Endpoints []struct {
			NumRequests    int    `json:"num_requests"`
			NumErrors      int    `json:"num_errors"`
			LastError      string `json:"last_error"`
			ProcessingTime int64  `json:"processing_time"`
		} `json:"endpoints"`
	}
	out := c.natsOutput("micro", "stats", "baton", "--json")
	if err := json.Unmarshal([]byte(out), &stats); err != nil || len(stats) != 1 || len(stats[0].Endpoints) != 1 {
		t.Fatalf("nats micro stats baton --json printed %s (%v)", out, err)
	}
	e := stats[0].Endpoints[0]
	if e.NumRequests != 3 || e.NumErrors != 1 || !strings.Contains(e.LastError, "empty command") || time.Duration(e.ProcessingTime) < time.Second {
		t.Errorf("stats %+v, want 3 requests (true, sleep 1, an empty command), 1 error, and over a second of processing", e)
	}
}

// node watch prints joins, masters with epochs, leaves and losses with
// their cause, one line each.
func TestNodeWatch(t *testing.T) {
	c := newCluster(t)
	w := c.watch()
	watch := start(t, "node watch", bins.node, procOpts{}, "watch", "--broker-addr="+c.addr)
	watchJSON := start(t, "node watch --json", bins.node, procOpts{}, "watch", "--json", "--broker-addr="+c.addr)
	time.Sleep(500 * time.Millisecond)
	alpha := c.node("alpha", 100, procOpts{}, "--serve")
	w.waitMaster("alpha", time.Time{}, 10*time.Second)
	beta := c.node("beta", 10, procOpts{}, "--serve")
	gamma := c.node("gamma", 5, procOpts{}, "--serve")
	c.waitMembers(3)
	t0 := time.Now()
	alpha.signal(syscall.SIGKILL)
	w.waitMaster("beta", t0, 10*time.Second)
	gamma.signal(syscall.SIGTERM)
	gamma.wait(10 * time.Second)
	beta.signal(syscall.SIGSTOP)
	w.waitMaster("", t0, 10*time.Second)
	for _, line := range []string{
		"join    alpha priority=100", "master  alpha epoch=", "join    beta priority=10",
		"lost    alpha (connection closed)", "master  beta epoch=", "left    gamma",
		"lost    beta (heartbeat timeout)", "master  (none) epoch=",
	} {
		eventually(t, 5*time.Second, "node watch shows "+line, func() bool { return strings.Contains(watch.stdout.String(), line) })
	}
	eventually(t, 5*time.Second, "node watch --json shows the loss", func() bool {
		for _, l := range strings.Split(watchJSON.stdout.String(), "\n") {
			var e map[string]any
			if json.Unmarshal([]byte(l), &e) == nil && e["event"] == "lost" && e["node"] == "beta" && e["cause"] == "heartbeat timeout" {
				return true
			}
		}
		return false
	})
}

// broker --http serves the NATS monitoring endpoints and baton's /status.
func TestBrokerMonitoring(t *testing.T) {
	httpAddr := freeAddr(t)
	c := newCluster(t, "--http="+httpAddr)
	c.node("alpha", 7, procOpts{}, "--serve")
	c.watch().waitMaster("alpha", time.Time{}, 10*time.Second)
	get := func(path string) string {
		var body string
		eventually(t, 5*time.Second, "GET "+path, func() bool {
			resp, err := http.Get("http://" + httpAddr + path)
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			body = string(b)
			return resp.StatusCode == http.StatusOK
		})
		return body
	}
	for path, want := range map[string]string{
		"/varz":    `"server_name": "baton-broker"`,
		"/connz":   `"name": "alpha"`,
		"/healthz": `"status":"ok"`,
		"/status":  `{"epoch":2,"master":"alpha","members":[{"name":"alpha","priority":7,"rank":0,"master":true,"version":"`,
	} {
		if body := get(path); !strings.Contains(body, want) {
			t.Errorf("GET %s:\n%s\nwant %s", path, body, want)
		}
	}
	if _, err := exec.LookPath("curl"); err == nil {
		out, err := exec.Command("curl", "-s", "http://"+httpAddr+"/status").Output()
		if err != nil || !strings.Contains(string(out), `"master":"alpha"`) {
			t.Errorf("curl /status: %s %v", out, err)
		}
	}
}

// Every flag reads from a BATON_ environment variable.
func TestFlagsFromEnvironment(t *testing.T) {
	c := newCluster(t)
	start(t, "env node", bins.node, procOpts{env: []string{
		"BATON_BROKER_ADDR=" + c.addr, "BATON_NAME=from-env", "BATON_PRIORITY=7", "BATON_SERVE=true", "BATON_LOG_FORMAT=json",
	}})
	c.watch().waitMaster("from-env", time.Time{}, 10*time.Second)
	if s := c.status(); len(s.Members) != 1 || s.Members[0].Priority != 7 {
		t.Errorf("status %+v, want from-env at priority 7", s)
	}
}

// Status, watch and the announcements tell the present: an idle broker
// says it has no members and how long ago its last change was, a watch
// started on a settled cluster prints nothing until something happens,
// and only a change carries an event.
func TestThePresentIsTold(t *testing.T) {
	c := newCluster(t)
	time.Sleep(1500 * time.Millisecond) // past the start-up wait
	p := start(t, "status", bins.node, procOpts{}, "status", "--broker-addr="+c.addr)
	if code := p.wait(15 * time.Second); code != 0 {
		t.Fatalf("node status exited %d", code)
	}
	if out := p.stdout.String(); !regexp.MustCompile(`^epoch 1, no master: no node is a member \(last change [1-9]\d*s ago: broker started\)\n`).MatchString(out) {
		t.Errorf("node status on an idle broker printed:\n%s", out)
	}

	w := c.watch()
	c.node("alpha", 100, procOpts{}, "--serve")
	w.waitMaster("alpha", time.Time{}, 10*time.Second)
	time.Sleep(time.Second)
	watch := start(t, "node watch", bins.node, procOpts{}, "watch", "--broker-addr="+c.addr)
	headers := c.nats("sub", "master.current", "--headers-only")
	time.Sleep(2500 * time.Millisecond) // a few repeats
	if out := watch.stdout.String(); out != "" {
		t.Errorf("node watch printed with nothing happening:\n%s", out)
	}
	if n := strings.Count(headers.stdout.String(), "Baton-Event"); n != 0 {
		t.Errorf("repeats of master.current carried %d events:\n%s", n, headers.stdout.String())
	}
	c.node("beta", 10, procOpts{}, "--serve")
	c.waitMembers(2)
	time.Sleep(2500 * time.Millisecond)
	if n := strings.Count(watch.stdout.String(), "join    beta"); n != 1 {
		t.Errorf("node watch printed beta's join %d times, want once:\n%s", n, watch.stdout.String())
	}
	if n := strings.Count(headers.stdout.String(), "Baton-Event: beta joined"); n != 1 {
		t.Errorf("master.current carried beta's join %d times, want once:\n%s", n, headers.stdout.String())
	}
}
