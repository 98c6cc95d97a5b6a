package e2e

import (
	"context"
	"errors"
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
	"baton/messages"
)

// A broker that requires credentials: a node joins with node.creds, exec
// runs with submit.creds, watch.creds may look but not run, no credential
// is refused at once; the nats CLI works with the file and its inbox
// prefix.
func TestAuth(t *testing.T) {
	t.Parallel() // mostly waiting; no tight timing
	c := newCluster(t, "--auth=required")
	creds := func(r auth.Role) string { return filepath.Join(auth.Dir(c.dataDir), auth.FileName(r)) }
	w := c.watchAs(creds(auth.Watch))
	c.node("alpha", 1, procOpts{}, "--serve", "--credentials="+creds(auth.Node))
	w.waitMaster("alpha", time.Time{}, 10*time.Second)

	run := func(args ...string) (string, string, int) {
		t.Helper()
		p := start(t, "node "+strings.Join(args, " "), bins.node, procOpts{}, args...)
		code := p.wait(30 * time.Second)
		return p.stdout.String(), p.stderr.String(), code
	}
	if out, errOut, code := run("exec", "--broker-addr="+c.addr, "--credentials="+creds(auth.Submit), "--", "echo hi"); code != 0 || out != "hi\n" {
		t.Errorf("exec with submit.creds: exit %d, %q %q; want hi", code, out, errOut)
	}
	_, errOut, code := run("exec", "--broker-addr="+c.addr, "--credentials="+creds(auth.Watch), "--", "echo hi")
	if code != 125 || !strings.Contains(errOut, "may not publish to exec.request") || strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
		t.Errorf("exec with watch.creds: exit %d, stderr %q; want 125 and one line naming exec.request", code, errOut)
	}
	t0 := time.Now()
	_, errOut, code = run("exec", "--broker-addr="+c.addr, "--", "echo hi")
	if code != 125 || !strings.Contains(errOut, "requires credentials") || !strings.Contains(errOut, c.addr) {
		t.Errorf("exec without credentials: exit %d, stderr %q; want 125 and a line naming %s", code, errOut, c.addr)
	}
	t.Logf("refused without credentials after %v", time.Since(t0).Round(time.Millisecond))
	if out, errOut, code := run("status", "--broker-addr="+c.addr, "--credentials="+creds(auth.Watch)); code != 0 || !strings.Contains(out, "master alpha") {
		t.Errorf("status with watch.creds: exit %d, %q %q", code, out, errOut)
	}
	dup := c.node("beta", 1, procOpts{}, "--serve", "--credentials="+creds(auth.Submit))
	if code := dup.wait(10 * time.Second); code == 0 || !strings.Contains(dup.stderr.String(), "node.register") {
		t.Errorf("joining with submit.creds: exit %d, stderr %q; want refused, naming node.register", code, dup.stderr.String())
	}

	nats := c.nats("--nkey", creds(auth.Submit), "--inbox-prefix", auth.Submit.InboxPrefix(), "req", "exec.request", `{"cmd":"echo via nats"}`)
	if code := nats.wait(20 * time.Second); code != 0 || !strings.Contains(nats.stdout.String(), `via nats`) {
		t.Errorf("nats req with submit.creds: exit %d, %q %q", code, nats.stdout.String(), nats.stderr.String())
	}

	// The history: admins read it; others are told in one line that they
	// may not.
	eventually(t, 10*time.Second, "the jobs in the history", func() bool {
		out, _, code := run("jobs", "--broker-addr="+c.addr, "--credentials="+creds(auth.Admin))
		return code == 0 && strings.Contains(out, "echo hi") && strings.Contains(out, "echo via nats")
	})
	out, _, _ := run("jobs", "--json", "--broker-addr="+c.addr, "--credentials="+creds(auth.Admin))
	if !strings.Contains(out, `"role":"submit"`) {
		t.Errorf("jobs --json: %q, want the submitter's role", out)
	}
	for _, r := range []auth.Role{auth.Watch, auth.Submit, auth.Node} {
		_, errOut, code := run("jobs", "--broker-addr="+c.addr, "--credentials="+creds(r))
		if code != 1 || !strings.Contains(errOut, "may not read the job history") || strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
			t.Errorf("jobs with %s.creds: exit %d, stderr %q; want 1 and one line", r, code, errOut)
		}
	}
	admin := []string{"--nkey", creds(auth.Admin), "--inbox-prefix", auth.Admin.InboxPrefix()}
	if out := c.natsOutput(append(admin, "stream", "ls")...); !strings.Contains(out, messages.JobStream) {
		t.Errorf("nats stream ls with admin.creds printed %q, want %s", out, messages.JobStream)
	}
	rm := c.nats(append(admin, "stream", "rm", "-f", messages.JobStream)...)
	rm.wait(20 * time.Second)
	if out := c.natsOutput(append(admin, "stream", "info", messages.JobStream)...); !strings.Contains(out, "Messages: 2") {
		t.Errorf("after nats stream rm: info printed %q, want the stream and its 2 jobs still there", out)
	}
}

// A broker with TLS and credentials: a node that trusts its authority
// joins and serves; a client that does not, or trusts another, is refused
// with a line saying which; the nats CLI works with --tlsca.
func TestTLS(t *testing.T) {
	t.Parallel() // mostly waiting; no tight timing
	dataDir := filepath.Join(t.TempDir(), "broker.data")
	certs, _, err := auth.EnsureCertificates(auth.TLSDir(dataDir), []string{"localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := auth.EnsureCertificates(t.TempDir(), []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, addr: freeAddr(t), dataDir: dataDir, brokerBin: bins.broker, nodeBin: bins.node}
	c.startBroker("--auth=required", "--tls-cert="+certs.Cert, "--tls-key="+certs.Key)
	creds := func(r auth.Role) string { return filepath.Join(auth.Dir(c.dataDir), auth.FileName(r)) }
	c.node("alpha", 1, procOpts{}, "--serve", "--credentials="+creds(auth.Node), "--tls-ca="+certs.CA)

	exec := func(args ...string) (string, string, int) {
		t.Helper()
		args = append([]string{"exec", "--broker-addr=" + c.addr, "--credentials=" + creds(auth.Submit)}, args...)
		p := start(t, "node "+strings.Join(args, " "), bins.node, procOpts{}, args...)
		code := p.wait(30 * time.Second)
		return p.stdout.String(), p.stderr.String(), code
	}
	eventually(t, 15*time.Second, "a command run over TLS", func() bool {
		out, _, code := exec("--tls-ca="+certs.CA, "--", "echo over tls")
		return code == 0 && out == "over tls\n"
	})
	for name, tc := range map[string]struct{ args []string }{
		"no authority":    {[]string{"--", "true"}},
		"other authority": {[]string{"--tls-ca=" + other.CA, "--", "true"}},
	} {
		_, errOut, code := exec(tc.args...)
		if code != 125 || !strings.Contains(errOut, "TLS certificate") || strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
			t.Errorf("%s: exit %d, stderr %q; want 125 and one line about the TLS certificate", name, code, errOut)
		}
	}
	nats := c.nats("--nkey", creds(auth.Submit), "--inbox-prefix", auth.Submit.InboxPrefix(), "--tlsca", certs.CA,
		"req", "exec.request", `{"cmd":"echo via nats"}`)
	if code := nats.wait(20 * time.Second); code != 0 || !strings.Contains(nats.stdout.String(), "via nats") {
		t.Errorf("nats req over TLS: exit %d, %q %q", code, nats.stdout.String(), nats.stderr.String())
	}
}

// A submitter floods every subject it may publish to with maximum-size
// messages (4 publishers × 25 × 16 MiB each): the master stays master. Like
// TestResources, it runs the binaries built without the race detector,
// whose 5-10x CPU would starve a 2-core machine of its own.
func TestAttack_FloodCausesNoMasterChange(t *testing.T) {
	c := &cluster{t: t, addr: freeAddr(t), dataDir: filepath.Join(t.TempDir(), "broker.data"),
		brokerBin: bins.plainBroker, nodeBin: bins.plainNode}
	c.startBroker("--auth=required")
	creds := func(r auth.Role) string { return filepath.Join(auth.Dir(c.dataDir), auth.FileName(r)) }
	w := c.watchAs(creds(auth.Watch))
	c.node("alpha", 100, procOpts{}, "--serve", "--credentials="+creds(auth.Node))
	c.node("beta", 10, procOpts{}, "--serve", "--credentials="+creds(auth.Node))
	_, epoch := w.waitMaster("alpha", time.Time{}, 10*time.Second)
	conn := c.connAs("flood", creds(auth.Submit))
	var instance string
	probe, err := bus.Connect(context.Background(), conn)
	if err != nil {
		t.Fatal(err)
	}
	a, err := election.Get(ctxTimeout(t, 5*time.Second), probe)
	probe.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range a.Members {
		if m.Name == "alpha" {
			instance = m.InstanceId
		}
	}
	if instance == "" {
		t.Fatalf("no instance id for alpha in %v: the flood would miss its status subject", a)
	}
	big := make([]byte, 16<<20-1024)
	subjects := []string{messages.SubjectExec, messages.ExecStatusSubject(instance), messages.SubjectMasterGet, "$SRV.PING"}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			nc, err := bus.Connect(context.Background(), conn)
			if err != nil {
				t.Error(err)
				return
			}
			defer nc.Close()
			for i := range 25 {
				_ = nc.Publish(subjects[i%len(subjects)], big)
			}
			_ = nc.Flush()
		})
	}
	wg.Wait()
	time.Sleep(3 * time.Second) // past a heartbeat timeout
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.seen {
		if s.a.Epoch > epoch {
			t.Errorf("epoch %d (master %q, %s) after the flood, want %d unchanged", s.a.Epoch, s.a.Master, s.a.Event, epoch)
			break
		}
	}
}

// A forged announcement that lists the master as lost (attack 5) cannot
// be published by a node's credential, so a running command's requester
// still gets its real result.
func TestAttack_ForgedDepartureRefused(t *testing.T) {
	t.Parallel() // mostly waiting; no tight timing
	c := newCluster(t, "--auth=required")
	creds := func(r auth.Role) string { return filepath.Join(auth.Dir(c.dataDir), auth.FileName(r)) }
	w := c.watchAs(creds(auth.Watch))
	c.node("alpha", 100, procOpts{}, "--serve", "--credentials="+creds(auth.Node))
	_, epoch := w.waitMaster("alpha", time.Time{}, 10*time.Second)
	p := start(t, "exec", bins.node, procOpts{}, "exec", "--broker-addr="+c.addr, "--credentials="+creds(auth.Submit), "--", "sleep 2; echo done")
	time.Sleep(time.Second) // running on alpha

	forger, err := bus.Connect(context.Background(), c.connAs("forger", creds(auth.Node)))
	if err != nil {
		t.Fatal(err)
	}
	defer forger.Close()
	b, _ := proto.Marshal(&messages.Announcement{Epoch: epoch + 1, Departed: []*messages.Departure{{Name: "alpha", Cause: messages.Cause_CAUSE_CONNECTION_CLOSED}}})
	err = forger.Publish(messages.SubjectMaster, b)
	if err == nil {
		err = forger.Flush()
	}
	if err == nil {
		err = forger.LastError()
	}
	if !errors.Is(err, nats.ErrPermissionViolation) {
		t.Errorf("publishing a forged announcement with node.creds: %v, want a permission violation", err)
	}
	if code := p.wait(20 * time.Second); code != 0 || p.stdout.String() != "done\n" {
		t.Errorf("the running command: exit %d, %q %q; want its real result", code, p.stdout.String(), p.stderr.String())
	}
}
