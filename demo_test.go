// Package demo_test runs README.md's "Try it" steps against the real
// docker compose demo cluster, then breaks it further: a network partition
// and a paused master.
package demo_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"baton/auth"
	"baton/bus"
	"baton/election"
	"baton/internal/testlog"
	"baton/messages"
)

// demo is one compose project of the demo cluster.
type demo struct {
	t       *testing.T
	env     []string
	port    string
	project string
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

// run runs a command in the repository with the project's environment and
// returns its combined output.
func (d *demo) run(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), d.env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (d *demo) must(timeout time.Duration, name string, args ...string) string {
	d.t.Helper()
	out, err := d.run(timeout, name, args...)
	if err != nil {
		d.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// hostname is the README's check: which node runs a command.
func (d *demo) hostname() string {
	d.t.Helper()
	return strings.TrimSpace(d.must(30*time.Second, "docker", "compose", "exec", "-T", "node-c", "node", "exec", "--", "hostname"))
}

// watcher timestamps every announcement the host sees.
type watcher struct {
	mu   sync.Mutex
	seen []seen
}

type seen struct {
	at     time.Time
	master string
}

func (w *watcher) waitMaster(t *testing.T, master string, since time.Time) time.Duration {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		w.mu.Lock()
		for _, s := range w.seen {
			if s.at.After(since) && s.master == master {
				w.mu.Unlock()
				return s.at.Sub(since)
			}
		}
		w.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s never announced master", master)
	return 0
}

func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an image and runs a cluster in containers")
	}
	if out, err := exec.Command("docker", "info").CombinedOutput(); err != nil {
		t.Skipf("no Docker engine answers (docker info: %v): skipping the demo cluster test\n%s", err, out)
	}
	d := &demo{t: t, port: freePort(t), project: fmt.Sprintf("baton-test-%d", os.Getpid())}
	demoDir := filepath.Join(t.TempDir(), "demo")
	httpPort := freePort(t)
	d.env = []string{"COMPOSE_PROJECT_NAME=" + d.project, "BATON_PORT=" + d.port, "BATON_HTTP_PORT=" + httpPort, "BATON_DEMO_DIR=" + demoDir}
	watchCreds := filepath.Join(auth.Dir(demoDir), auth.FileName(auth.Watch))
	// Torn down whatever happens, first thing registered, last thing run.
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := d.run(time.Minute, "docker", "compose", "logs", "--timestamps")
			t.Logf("docker compose logs:\n%s", out)
		}
		if out, err := d.run(2*time.Minute, "make", "demo-down"); err != nil {
			t.Errorf("make demo-down: %v\n%s", err, out)
		}
	})
	t0 := time.Now()
	d.must(10*time.Minute, "make", "demo")
	t.Logf("make demo: cluster healthy after %v", time.Since(t0).Round(time.Second))
	// The nodes were told no address: each found the broker by a UDP
	// broadcast on the compose network, answered from the broker's.
	brokerIP := strings.TrimSpace(d.must(time.Minute, "docker", "compose", "exec", "-T", "broker", "hostname", "-i"))
	for _, n := range []string{"node-a", "node-b", "node-c"} {
		if logs := d.must(time.Minute, "docker", "compose", "logs", n); !strings.Contains(logs, "found the broker") || !strings.Contains(logs, "from="+brokerIP+":4222") {
			t.Errorf("%s did not find the broker at %s by discovery:\n%s", n, brokerIP, logs)
		}
	}

	// The broker requires credentials: the README's commands use these.
	conn := bus.DefaultConnConfig()
	conn.Addrs, conn.Name, conn.ConnectTimeout = []string{"127.0.0.1:" + d.port}, "demo-test", 10*time.Second
	conn.Credentials, conn.InboxPrefix = watchCreds, auth.Watch.InboxPrefix()
	conn.TLSCA = filepath.Join(auth.TLSDir(demoDir), "ca.pem")
	nc, err := bus.Connect(context.Background(), conn)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	w := &watcher{}
	if _, err := nc.Subscribe(messages.SubjectMaster, func(m *nats.Msg) {
		var a messages.Announcement
		if proto.Unmarshal(m.Data, &a) == nil {
			w.mu.Lock()
			w.seen = append(w.seen, seen{time.Now(), a.Master})
			w.mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	// The README's nats sub, from the host.
	natsBin := filepath.Join(t.TempDir(), "nats")
	d.must(5*time.Minute, "go", "build", "-o", natsBin, "github.com/nats-io/natscli/nats")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub := exec.CommandContext(ctx, natsBin, "--nkey", watchCreds, "--inbox-prefix", auth.Watch.InboxPrefix(),
		"--tlsca", conn.TLSCA, "sub", "master.current")
	sub.Env = append(os.Environ(), "NATS_URL=nats://127.0.0.1:"+d.port, "HOME="+t.TempDir())
	var subOut testlog.Buffer
	sub.Stdout = &subOut
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	defer sub.Wait()
	defer cancel()

	// Try it, as the README says.
	if got := d.hostname(); got != "node-a" {
		t.Fatalf("hostname ran on %q, want node-a", got)
	}
	d.dashboard("http://127.0.0.1:"+httpPort, filepath.Join(auth.Dir(demoDir), auth.TokenFileName(auth.Admin)))
	d.breakMaster(w, "docker compose kill", []string{"docker", "compose", "kill", "node-a"},
		[]string{"docker", "compose", "start", "node-a"}, nil)
	for _, want := range []string{"Baton-Master: node-a", "Baton-Master: node-b"} {
		if !strings.Contains(subOut.String(), want) {
			t.Errorf("nats sub master.current on the host lacks %q", want)
		}
	}

	// A network partition of the master: failover by heartbeat timeout,
	// and the cut-off master stops taking commands on its own.
	container := strings.TrimSpace(d.must(time.Minute, "docker", "compose", "ps", "-q", "node-a"))
	network := d.project + "_default"
	d.breakMaster(w, "docker network disconnect", []string{"docker", "network", "disconnect", network, container},
		[]string{"docker", "network", "connect", network, container}, func() {
			for range 4 {
				if got := d.hostname(); got != "node-b" {
					t.Errorf("during the partition: ran on %q, want node-b", got)
				}
			}
			deadline := time.Now().Add(10 * time.Second)
			for !strings.Contains(d.must(time.Minute, "docker", "compose", "logs", "node-a"), "not taking commands") {
				if time.Now().After(deadline) {
					t.Fatal("partitioned node-a never stopped taking commands on its own")
				}
				time.Sleep(200 * time.Millisecond)
			}
		})

	// A paused master.
	d.breakMaster(w, "docker compose pause", []string{"docker", "compose", "pause", "node-a"},
		[]string{"docker", "compose", "unpause", "node-a"}, nil)
}

// dashboard checks what the README says of the demo's dashboard: the page
// asks to sign in, and admin.token opens it and the API.
func (d *demo) dashboard(base, tokenFile string) {
	d.t.Helper()
	token, err := os.ReadFile(tokenFile)
	if err != nil {
		d.t.Fatalf("the demo's dashboard token: %v", err)
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(base + "/")
	if err != nil {
		d.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/signin") {
		d.t.Errorf("GET %s/: %s to %q, want a redirect to sign in", base, resp.Status, resp.Header.Get("Location"))
	}
	req, _ := http.NewRequest("GET", base+"/api/status", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	var st election.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || st.Master != "node-a" || len(st.Members) != 3 {
		d.t.Errorf("GET /api/status with admin.token: %s %+v %v, want node-a master of 3", resp.Status, st, err)
	}
}

// breakMaster breaks node-a with one command, checks that node-b takes
// over and runs commands (and runs during, if set), then heals node-a with
// another and checks that it is master again. It logs the failover time
// the host saw.
func (d *demo) breakMaster(w *watcher, what string, breakIt, heal []string, during func()) {
	d.t.Helper()
	t0 := time.Now()
	d.must(time.Minute, breakIt[0], breakIt[1:]...)
	d.t.Logf("failover after %s: %v", what, w.waitMaster(d.t, "node-b", t0))
	if got := d.hostname(); got != "node-b" {
		d.t.Errorf("after %s: ran on %q, want node-b", what, got)
	}
	if during != nil {
		during()
	}
	t0 = time.Now()
	d.must(time.Minute, heal[0], heal[1:]...)
	w.waitMaster(d.t, "node-a", t0)
	if got := d.hostname(); got != "node-a" {
		d.t.Errorf("after healing %s: ran on %q, want node-a", what, got)
	}
}
