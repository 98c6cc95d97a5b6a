package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"baton/agent"
	"baton/broker"
	"baton/broker/brokertest"
	"baton/bus/bustest"
	"baton/internal/testlog"
	"baton/messages"
)

// startCluster starts a broker on a random loopback port, with a short
// heartbeat timeout, and closes it when the test ends.
func startCluster(t testing.TB) *broker.Broker {
	t.Helper()
	cfg := brokertest.Config(t)
	cfg.HTTP = "" // no dashboard: its clients would be members' company
	return brokertest.Start(t, cfg)
}

func startNode(t testing.TB, b *broker.Broker, name string, priority int32, mutate func(*agent.Config)) *agent.Node {
	t.Helper()
	cfg := agent.DefaultConfig(name)
	cfg.Conn = bustest.ConnConfig(t, b.Addr())
	cfg.Priority = priority
	cfg.HeartbeatInterval = 75 * time.Millisecond
	cfg.WorkRoot = t.TempDir()
	cfg.Logger = testlog.Logger(t).With("node", name)
	if mutate != nil {
		mutate(&cfg)
	}
	n, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = n.Close(ctx)
	})
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return n
}

// servingMaster starts a cluster whose master "m" takes requests, and a raw
// connection to send it some. Raw requests do not retry, so it waits until
// the master serves.
func servingMaster(t testing.TB) (*agent.Node, *nats.Conn) {
	t.Helper()
	b := startCluster(t)
	m := startNode(t, b, "m", 1, nil)
	waitMaster(t, m, "m")
	if _, err := m.Submit(context.Background(), "true"); err != nil {
		t.Fatal(err)
	}
	return m, bustest.Connect(t, b.Addr())
}

// dial returns a started client of b's cluster, closed when the test ends.
func dial(t testing.TB, b *broker.Broker, cfg agent.ClientConfig) *agent.Client {
	t.Helper()
	cfg.Logger = testlog.Logger(t).With("client", cfg.Name)
	c, err := agent.Dial(context.Background(), bustest.ConnConfig(t, b.Addr()), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func waitMaster(t testing.TB, n *agent.Node, master string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if a := n.Master(); a != nil && a.Master == master {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("master %q not announced; last %v", master, n.Master())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestNode_SubmitRunsOnMaster(t *testing.T) {
	srv := startCluster(t)
	startNode(t, srv, "alpha", 100, nil)
	b := startNode(t, srv, "beta", 1, nil)
	waitMaster(t, b, "alpha")
	res, err := b.Submit(context.Background(), "echo out; echo err >&2; exit 4")
	if err != nil {
		t.Fatal(err)
	}
	if res.Stdout != "out\n" || res.Stderr != "err\n" || res.ExitCode != 4 || res.Master != "alpha" || res.Epoch == 0 || res.Error != "" {
		t.Errorf("got %v, want out/err/exit 4 from alpha", res)
	}
}

// A master that loses its role still runs and answers what it was
// already given: the running command and those waiting for a slot.
func TestNode_HandoverFinishesDeliveredCommands(t *testing.T) {
	srv := startCluster(t)
	old := startNode(t, srv, "old", 10, func(c *agent.Config) { c.MaxParallel = 1 })
	waitMaster(t, old, "old")
	if res, err := old.Submit(context.Background(), "true"); err != nil || res.Master != "old" {
		t.Fatalf("old not serving: %v %v", res, err)
	}

	type outcome struct {
		res *messages.ExecResult
		err error
	}
	const n = 3
	outcomes := make([]outcome, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			res, err := old.Submit(context.Background(), fmt.Sprintf("sleep 0.3; echo %d", i))
			outcomes[i] = outcome{res, err}
		})
	}
	time.Sleep(100 * time.Millisecond) // all three delivered, one running
	startNode(t, srv, "new", 100, nil)
	waitMaster(t, old, "new")
	wg.Wait()
	for i, o := range outcomes {
		if o.err != nil || o.res.Error != "" || o.res.Stdout != fmt.Sprintf("%d\n", i) || o.res.Master != "old" {
			t.Errorf("command %d: got %v %v, want it run and answered by old", i, o.res, o.err)
		}
	}
	res, err := old.Submit(context.Background(), "true")
	if err != nil || res.Master != "new" {
		t.Errorf("after the handover: got %v %v, want it run by new", res, err)
	}
}

func TestNode_Busy(t *testing.T) {
	srv := startCluster(t)
	m := startNode(t, srv, "m", 1, func(c *agent.Config) { c.MaxParallel = 1 })
	waitMaster(t, m, "m")
	hurried := agent.DefaultClientConfig("hurried")
	hurried.QueueTimeout = 100 * time.Millisecond
	client := dial(t, srv, hurried)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = m.Submit(context.Background(), "sleep 1")
	}()
	time.Sleep(200 * time.Millisecond)
	res, err := client.Submit(context.Background(), "true")
	if err != nil || res.ErrorKind != messages.ErrorKind_ERROR_KIND_BUSY || !strings.Contains(res.Error, "busy") {
		t.Errorf("got %v %v, want a busy error", res, err)
	}
	<-done
}

func TestNode_BadRequests(t *testing.T) {
	m, nc := servingMaster(t)
	encode := func(cmd string) []byte {
		b, _ := proto.Marshal(&messages.ExecRequest{Id: "x", Cmd: cmd})
		return b
	}
	cases := []struct {
		name     string
		body     []byte
		wantJSON bool
		want     string
	}{
		{"not protobuf", []byte("\xff\xff\xff garbage"), true, `neither a protobuf ExecRequest nor JSON such as {"cmd":"uname -a"}`},
		{"empty body", nil, true, "empty request"},
		{"empty command", encode(""), false, "empty command"},
		{"whitespace command", encode(" \t "), false, "empty command"},
		{"too long", encode(strings.Repeat("x", messages.MaxCommandBytes+1)), false, "longer than"},
		{"empty JSON command", []byte(`{"cmd":""}`), true, "empty command"},
		{"bad JSON", []byte(`{"cmd":`), true, "not valid JSON"},
		{"id too long", func() []byte {
			b, _ := proto.Marshal(&messages.ExecRequest{Id: strings.Repeat("i", 129), Cmd: "true"})
			return b
		}(), false, "request id of 129 bytes"},
		{"bad claim hash", func() []byte {
			b, _ := proto.Marshal(&messages.ExecRequest{Id: "y", Cmd: "true", ClaimHash: strings.Repeat("c", 1<<20)})
			return b
		}(), false, "claim hash of 1048576 characters"},
		{"bad requester key", func() []byte {
			b, _ := proto.Marshal(&messages.ExecRequest{Id: "z", Cmd: "true", RequesterKey: []byte("short")})
			return b
		}(), false, "requester key of 5 bytes"},
	}
	t.Run("no reply subject", func(t *testing.T) {
		// Nobody to answer: dropped (and logged), the master unharmed.
		if err := nc.Publish(messages.SubjectExec, encode("echo unanswerable")); err != nil {
			t.Fatal(err)
		}
		if res, err := m.Submit(context.Background(), "echo fine"); err != nil || res.Stdout != "fine\n" {
			t.Errorf("after a request without reply subject: %v %v", res, err)
		}
	})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg, err := nc.Request(messages.SubjectExec, tc.body, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantJSON {
				var res messages.ResultJSON
				if err := json.Unmarshal(msg.Data, &res); err != nil {
					t.Fatalf("reply %q: %v", msg.Data, err)
				}
				if !strings.HasPrefix(res.Error, "rejected: ") || !strings.Contains(res.Error, tc.want) || res.ExitCode != -1 || res.Master != "m" {
					t.Errorf("got %+v, want rejected with %q", res, tc.want)
				}
				return
			}
			var res messages.ExecResult
			if err := proto.Unmarshal(msg.Data, &res); err != nil {
				t.Fatalf("reply %q: %v", msg.Data, err)
			}
			if res.ErrorKind != messages.ErrorKind_ERROR_KIND_REJECTED || !strings.Contains(res.Error, tc.want) || res.ExitCode != -1 || res.Master != "m" {
				t.Errorf("got %v, want rejected with %q", &res, tc.want)
			}
		})
	}
}

// A JSON request is answered in JSON with exactly the keys and types of
// `node --json`, zero values too.
func TestNode_JSONRequest(t *testing.T) {
	_, nc := servingMaster(t)
	msg, err := nc.Request(messages.SubjectExec, []byte(`{"cmd":"echo hi"}`), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Count(msg.Data, []byte("\n")) > 0 {
		t.Errorf("reply spans lines: %s", msg.Data)
	}
	var obj map[string]any
	if err := json.Unmarshal(msg.Data, &obj); err != nil {
		t.Fatalf("reply %s: %v", msg.Data, err)
	}
	want := map[string]string{"id": "string", "cmd": "string", "exit_code": "float64", "stdout": "string", "stderr": "string",
		"stdout_dropped": "float64", "stderr_dropped": "float64", "error": "string", "timed_out": "bool",
		"master": "string", "epoch": "float64", "duration_ms": "float64", "job": "string"}
	for key, typ := range want {
		if got := fmt.Sprintf("%T", obj[key]); got != typ {
			t.Errorf("reply %s: %q is a %s, want a %s", msg.Data, key, got, typ)
		}
	}
	if len(obj) != len(want) {
		t.Errorf("reply %s has %d keys, want exactly %d", msg.Data, len(obj), len(want))
	}
	if obj["stdout"] != "hi\n" || obj["exit_code"] != float64(0) || obj["master"] != "m" || obj["cmd"] != "echo hi" || obj["id"] == "" {
		t.Errorf("reply %s, want hi from m", msg.Data)
	}
}

func TestClient_NoMaster(t *testing.T) {
	srv := startCluster(t)
	cfg := agent.DefaultClientConfig("lonely")
	cfg.SubmitRetry = 300 * time.Millisecond
	_, err := dial(t, srv, cfg).Submit(context.Background(), "true")
	if err == nil || !strings.Contains(err.Error(), "no master available") {
		t.Fatalf("got %v, want no master available", err)
	}
}

// Close is safe after a failed Start (here: no broker), and twice.
func TestNode_CloseAfterFailedStart(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := agent.DefaultConfig("lonely")
	cfg.WorkRoot = t.TempDir()
	cfg.Conn = bustest.ConnConfig(t, addr)
	cfg.Conn.ConnectTimeout = 200 * time.Millisecond
	cfg.Logger = testlog.Logger(t)
	n, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("got %v, want a failure naming %s", err, addr)
	}
	for range 2 {
		if err := n.Close(context.Background()); err != nil {
			t.Fatalf("Close after a failed Start: %v", err)
		}
	}
}

func TestNew_InvalidConfig(t *testing.T) {
	cases := map[string]func(*agent.Config){
		"no name":           func(c *agent.Config) { c.Name = "" },
		"negative priority": func(c *agent.Config) { c.Priority = -1 },
		"zero parallel":     func(c *agent.Config) { c.MaxParallel = 0 },
		"output over cap":   func(c *agent.Config) { c.MaxOutput = messages.MaxOutputCap + 1 },
		"zero heartbeat":    func(c *agent.Config) { c.HeartbeatInterval = 0 },
		"zero exec timeout": func(c *agent.Config) { c.ExecTimeout = 0 },
		"negative retry":    func(c *agent.Config) { c.SubmitRetry = -time.Second },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := agent.DefaultConfig("n")
			mutate(&cfg)
			if _, err := agent.New(cfg); !errors.Is(err, agent.ErrInvalidConfig) {
				t.Fatalf("got %v, want ErrInvalidConfig", err)
			}
		})
	}
	if _, err := agent.New(agent.DefaultConfig("n")); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

// A node that starts removes the work directories that dead nodes left
// (their locks held by no one), and nothing of a live node's or of what
// is not a node's.
func TestNode_RemovesLeftWorkDirectories(t *testing.T) {
	b := startCluster(t)
	root := t.TempDir()
	startNode(t, b, "live", 1, func(c *agent.Config) { c.WorkRoot = root })
	dead := filepath.Join(root, "dead.abc123")
	job := filepath.Join(dead, messages.NewJobID(time.Now()))
	other := filepath.Join(root, "not-a-node")
	for _, d := range []string{filepath.Join(job, "sub"), other} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dead, ".lock"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// Read-only, as a command may leave it.
	if err := os.Chmod(filepath.Join(job, "sub"), 0o500); err != nil {
		t.Fatal(err)
	}
	startNode(t, b, "next", 0, func(c *agent.Config) { c.WorkRoot = root })
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("the dead node's directory: %v, want it removed", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("a directory that is no node's: %v, want it kept", err)
	}
	entries, _ := os.ReadDir(root)
	nodes := 0
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "live.") || strings.HasPrefix(e.Name(), "next.") {
			nodes++
		}
	}
	if nodes != 2 {
		t.Errorf("got %d live nodes' directories in %v, want 2", nodes, entries)
	}
}
