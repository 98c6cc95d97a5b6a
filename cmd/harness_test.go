// Package e2e drives the real broker and node binaries as processes, the
// way users and outside tests do.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
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

// bins are the binaries under test; plain* are built without the race
// detector, for measuring resources.
var bins struct {
	broker, node                       string
	plainBroker, plainNode, plainBench string
	// nats is the stock nats CLI (natscli, pinned in go.mod as a tool).
	nats string
	// dir holds the race-built broker and node, for PATH.
	dir string
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "baton-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		build := func(out string, race bool, pkgs ...string) error {
			args := []string{"build", "-o", out + "/"}
			if race {
				args = append(args, "-race")
			}
			cmd := exec.Command("go", append(args, pkgs...)...)
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			return cmd.Run()
		}
		plain := filepath.Join(dir, "plain")
		if err := build(dir, raceEnabled, "baton/cmd/broker", "baton/cmd/node"); err != nil {
			fmt.Fprintln(os.Stderr, "build binaries:", err)
			return 1
		}
		if err := build(plain, false, "baton/cmd/broker", "baton/cmd/node", "baton/cmd/bench", "github.com/nats-io/natscli/nats"); err != nil {
			fmt.Fprintln(os.Stderr, "build binaries:", err)
			return 1
		}
		bins.broker, bins.node = filepath.Join(dir, "broker"), filepath.Join(dir, "node")
		bins.plainBroker, bins.plainNode = filepath.Join(plain, "broker"), filepath.Join(plain, "node")
		bins.plainBench = filepath.Join(plain, "bench")
		bins.nats, bins.dir = filepath.Join(plain, "nats"), dir
		return m.Run()
	}()
	os.Exit(code)
}

// proc is a running broker or node process.
type proc struct {
	t      testing.TB
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *testlog.Buffer
	stderr *testlog.Buffer
	done   chan struct{}
	state  *os.ProcessState
}

type procOpts struct {
	dir   string
	env   []string
	stdin bool   // keep a pipe to stdin open (see proc.send)
	input string // otherwise, the whole of stdin
}

// start runs a binary and stops it (SIGKILL) when the test ends, unless
// the test already did.
func start(t testing.TB, name, bin string, o procOpts, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, stdout: &testlog.Buffer{}, stderr: &testlog.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Dir = o.dir
	p.cmd.Env = append(os.Environ(), o.env...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if o.stdin {
		w, err := p.cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		p.stdin = w
	} else {
		p.cmd.Stdin = strings.NewReader(o.input)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.state = p.cmd.ProcessState
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Signal(syscall.SIGCONT)
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s stdout:\n%s", name, p.stdout.String())
			t.Logf("%s stderr:\n%s", name, p.stderr.String())
		}
	})
	return p
}

func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %s to %s: %v", sig, p.name, err)
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.state.ExitCode()
	case <-time.After(timeout):
		p.t.Fatalf("%s still running after %v", p.name, timeout)
		return -1
	}
}

func (p *proc) send(lines ...string) {
	p.t.Helper()
	for _, l := range lines {
		if _, err := io.WriteString(p.stdin, l+"\n"); err != nil {
			p.t.Fatalf("write to %s: %v", p.name, err)
		}
	}
}

// closeStdin ends the input of a process started with procOpts.stdin.
func (p *proc) closeStdin() {
	p.t.Helper()
	if err := p.stdin.Close(); err != nil {
		p.t.Fatalf("close stdin of %s: %v", p.name, err)
	}
}

// freeAddr returns a loopback address with a port nothing listens on.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// cluster is a broker and the nodes of one test.
type cluster struct {
	t         testing.TB
	addr      string
	dataDir   string
	brokerBin string
	// nodeBin is the node binary the cluster's nodes run.
	nodeBin string
	broker  *proc
}

func newCluster(t testing.TB, brokerArgs ...string) *cluster {
	t.Helper()
	c := &cluster{t: t, addr: freeAddr(t), dataDir: filepath.Join(t.TempDir(), "broker.data"), brokerBin: bins.broker, nodeBin: bins.node}
	c.startBroker(brokerArgs...)
	return c
}

// conn is a connection config for this test's broker, named name.
func (c *cluster) conn(name string) bus.ConnConfig {
	cfg := bus.DefaultConnConfig()
	cfg.Addrs, cfg.Name = []string{c.addr}, name
	cfg.Logger = testlog.Logger(c.t).With("component", "nats-client")
	return cfg
}

func (c *cluster) startBroker(args ...string) {
	c.t.Helper()
	c.broker = start(c.t, "broker", c.brokerBin, procOpts{}, append([]string{c.addr, "--data-dir", c.dataDir}, args...)...)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if conn, err := net.Dial("tcp", c.addr); err == nil {
			conn.Close()
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("broker not listening on %s", c.addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// node starts `node --broker-addr=ADDR --name=NAME --priority=P ARGS...`
// in its own working directory, with $BATON_E2E_NODE set to its name so
// that a command can tell where it ran.
func (c *cluster) node(name string, priority int, o procOpts, args ...string) *proc {
	c.t.Helper()
	if o.dir == "" {
		o.dir = c.t.TempDir()
	}
	o.env = append(o.env, "BATON_E2E_NODE="+name, "BATON_WORK_DIR="+filepath.Join(o.dir, "work"))
	return start(c.t, name, c.nodeBin, o, append([]string{
		"--broker-addr=" + c.addr, "--name=" + name, fmt.Sprintf("--priority=%d", priority),
	}, args...)...)
}

// exec runs `node exec -- ARGS...` and returns stdout, stderr, exit code.
func (c *cluster) exec(args ...string) (string, string, int) {
	c.t.Helper()
	p := start(c.t, "exec", bins.node, procOpts{}, append([]string{"exec", "--broker-addr=" + c.addr, "--"}, args...)...)
	code := p.wait(30 * time.Second)
	return p.stdout.String(), p.stderr.String(), code
}

// masterAndStandby starts alpha (priority 100) and beta (10), both
// serving, and returns alpha once it is master and beta registered.
func (c *cluster) masterAndStandby(w *watcher) *proc {
	c.t.Helper()
	alpha := c.node("alpha", 100, procOpts{}, "--serve")
	c.node("beta", 10, procOpts{}, "--serve")
	w.waitMaster("alpha", time.Time{}, 10*time.Second)
	c.waitMembers(2)
	return alpha
}

// waitMembers waits until the broker lists n members.
func (c *cluster) waitMembers(n int) {
	c.t.Helper()
	eventually(c.t, 10*time.Second, fmt.Sprintf("%d members registered", n), func() bool { return len(c.status().Members) == n })
}

func (c *cluster) status() election.Status {
	c.t.Helper()
	p := start(c.t, "status", bins.node, procOpts{}, "status", "--json", "--broker-addr="+c.addr)
	if code := p.wait(15 * time.Second); code != 0 {
		c.t.Fatalf("node status exited %d: %s", code, p.stderr.String())
	}
	var s election.Status
	if err := json.Unmarshal([]byte(p.stdout.String()), &s); err != nil {
		c.t.Fatalf("node status --json printed %q: %v", p.stdout.String(), err)
	}
	return s
}

// watcher records every announcement on master.current with its arrival
// time, as a client of the broker sees them.
type watcher struct {
	t  testing.TB
	mu sync.Mutex
	// seen holds announcements in arrival order.
	seen []seenAnnouncement
}

type seenAnnouncement struct {
	at time.Time
	a  *messages.Announcement
}

func (c *cluster) watch() *watcher { return c.watchAs("") }

// connAs is conn with a credential file (none when empty).
func (c *cluster) connAs(name, credential string) bus.ConnConfig {
	c.t.Helper()
	conn := c.conn(name)
	if credential != "" {
		cred, err := auth.Load(credential)
		if err != nil {
			c.t.Fatal(err)
		}
		conn.Credentials, conn.InboxPrefix = cred.Path, cred.Role.InboxPrefix()
	}
	return conn
}

// watchAs is watch with a credential file (none when empty).
func (c *cluster) watchAs(credential string) *watcher {
	c.t.Helper()
	w := &watcher{t: c.t}
	nc, err := bus.Connect(context.Background(), c.connAs("e2e-watcher", credential))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(nc.Close)
	if _, err := nc.Subscribe(messages.SubjectMaster, func(m *nats.Msg) {
		now := time.Now()
		var a messages.Announcement
		if err := proto.Unmarshal(m.Data, &a); err != nil {
			return
		}
		w.mu.Lock()
		w.seen = append(w.seen, seenAnnouncement{now, &a})
		w.mu.Unlock()
	}); err != nil {
		c.t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		c.t.Fatal(err)
	}
	return w
}

// waitMaster waits for an announcement after since that names master, and
// returns when it arrived and its epoch.
func (w *watcher) waitMaster(master string, since time.Time, timeout time.Duration) (time.Time, uint64) {
	w.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		w.mu.Lock()
		for _, s := range w.seen {
			if s.at.After(since) && s.a.Master == master {
				w.mu.Unlock()
				return s.at, s.a.Epoch
			}
		}
		w.mu.Unlock()
		if time.Now().After(deadline) {
			w.t.Fatalf("no announcement of master %q within %v", master, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// jsonResults parses `node --json` output, by command.
func jsonResults(t testing.TB, out string) map[string]messages.ResultJSON {
	t.Helper()
	res := make(map[string]messages.ResultJSON)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var r messages.ResultJSON
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("output line %q is not a JSON result: %v", line, err)
		}
		res[r.Cmd] = r
	}
	return res
}

// eventually polls cond until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ctxTimeout is a context bounded by d, canceled when the test ends.
func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
