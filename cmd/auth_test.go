package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"baton/auth"
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
	c := &cluster{t: t, addr: freeAddr(t), dataDir: dataDir, brokerBin: bins.broker}
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
