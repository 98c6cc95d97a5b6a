package e2e

import (
	"crypto/rand"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"baton/auth"
	"baton/discovery"
)

// A node finds a broker with TLS and credentials through
// --discover=127.0.0.1:PORT, joins and serves; exec and status find it
// the same way. A flood of 10,000 malformed datagrams leaves the broker
// serving and answering. Without credentials, the node is told the broker
// it found requires them; against a broker with --discovery=false, it is
// told no broker answered.
func TestDiscovery(t *testing.T) {
	t.Parallel() // mostly waiting
	dataDir := filepath.Join(t.TempDir(), "broker.data")
	certs, _, err := auth.EnsureCertificates(auth.TLSDir(dataDir), []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, addr: freeAddr(t), dataDir: dataDir, brokerBin: bins.broker, nodeBin: bins.node}
	c.startBroker("--auth=required", "--tls-cert="+certs.Cert, "--tls-key="+certs.Key)
	creds := func(r auth.Role) string { return filepath.Join(auth.Dir(c.dataDir), auth.FileName(r)) }
	discover := "--discover=" + c.addr
	run := func(args ...string) (string, string, int) {
		t.Helper()
		p := start(t, "node "+strings.Join(args, " "), bins.node, procOpts{}, args...)
		code := p.wait(30 * time.Second)
		return p.stdout.String(), p.stderr.String(), code
	}
	node := start(t, "alpha", bins.node, procOpts{dir: t.TempDir()}, discover, "--name=alpha", "--serve",
		"--credentials="+creds(auth.Node), "--tls-ca="+certs.CA)
	eventually(t, 15*time.Second, "alpha joins through discovery", func() bool {
		return strings.Contains(node.stderr.String(), "found the broker") && strings.Contains(node.stderr.String(), "serving as master")
	})
	exec := func() (string, string, int) {
		return run("exec", discover, "--credentials="+creds(auth.Submit), "--tls-ca="+certs.CA, "--", "echo found")
	}
	eventually(t, 15*time.Second, "a command through discovery", func() bool {
		out, _, code := exec()
		return code == 0 && out == "found\n"
	})
	if out, errOut, code := run("status", discover, "--credentials="+creds(auth.Watch), "--tls-ca="+certs.CA); code != 0 || !strings.Contains(out, "master alpha") {
		t.Errorf("status through discovery: exit %d, %q %q", code, out, errOut)
	}

	// One on the command line beats the other's environment variable.
	for _, tc := range []struct{ env, flag string }{
		{"BATON_BROKER_ADDR=127.0.0.1:1", discover},
		{"BATON_DISCOVER=127.0.0.1:1", "--broker-addr=" + c.addr},
	} {
		p := start(t, "status "+tc.env, bins.node, procOpts{env: []string{tc.env}}, "status", tc.flag, "--credentials="+creds(auth.Watch), "--tls-ca="+certs.CA)
		if code := p.wait(30 * time.Second); code != 0 || !strings.Contains(p.stdout.String(), "master alpha") {
			t.Errorf("%s and %s: exit %d, %q %q", tc.env, tc.flag, code, p.stdout.String(), p.stderr.String())
		}
	}
	if _, errOut, code := run("status", "--discover", c.addr); code != 2 || !strings.Contains(errOut, "--discover takes its address after '='") {
		t.Errorf("--discover ADDR: exit %d, stderr %q; want 2 and a hint", code, errOut)
	}
	// Several addresses: any that answers will do.
	if out, errOut, code := run("status", "--broker-addr=127.0.0.1:1,"+c.addr, "--credentials="+creds(auth.Watch), "--tls-ca="+certs.CA); code != 0 || !strings.Contains(out, "master alpha") {
		t.Errorf("--broker-addr with a dead address first: exit %d, %q %q", code, out, errOut)
	}
	// A credential goes only to a broker whose certificate the node checks.
	if _, errOut, code := run("status", discover, "--credentials="+creds(auth.Watch)); code != 2 || !strings.Contains(errOut, "--discover with --credentials needs --tls-ca") {
		t.Errorf("a credential without --tls-ca: exit %d, stderr %q; want 2, needs --tls-ca", code, errOut)
	}

	// The flood: every kind of malformed datagram, 10,000 of them.
	conn, err := net.Dial("udp", c.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	junk := make([]byte, discovery.MaxRequestSize*2)
	for i := range 10_000 {
		_, _ = rand.Read(junk)
		d := junk[:i%len(junk)]
		if i%3 == 0 && len(d) >= len(discovery.RequestMagic) {
			copy(d, discovery.RequestMagic) // the magic, and garbage
		}
		if _, err := conn.Write(d); err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
	}
	if out, errOut, code := exec(); code != 0 || out != "found\n" {
		t.Errorf("after the flood: exit %d, %q %q", code, out, errOut)
	}
	if !strings.Contains(c.broker.stderr.String(), "ignored a datagram on the discovery port") {
		t.Errorf("the broker did not log what it ignored")
	}
	if n := strings.Count(c.broker.stderr.String(), "discovery port"); n > 2 {
		t.Errorf("the broker logged the flood %d times, want at most a line a minute", n)
	}

	if _, errOut, code := run("status", discover); code != 1 || !strings.Contains(errOut, "requires credentials") || strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
		t.Errorf("without credentials: exit %d, stderr %q; want 1 and one line saying credentials are required", code, errOut)
	}

	off := newCluster(t, "--discovery=false")
	t0 := time.Now()
	_, errOut, code := run("status", "--discover="+off.addr)
	if code != 1 || !strings.Contains(errOut, "no broker answered within 2s") {
		t.Errorf("discovery off: exit %d, stderr %q; want 1 and 'no broker answered within 2s'", code, errOut)
	}
	if took := time.Since(t0); took > 5*time.Second {
		t.Errorf("discovery off: gave up after %v, want about 2s", took)
	}
}
