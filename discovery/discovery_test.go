package discovery

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"baton/internal/testlog"
	"baton/messages"
)

func listen(t *testing.T, answer *messages.DiscoverReply) *Responder {
	t.Helper()
	cfg := DefaultResponderConfig("127.0.0.1:0", answer)
	cfg.Logger = testlog.Logger(t)
	r, err := Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func TestFind_Loopback(t *testing.T) {
	r := listen(t, &messages.DiscoverReply{Addrs: []string{"127.0.0.1:4222"}, CredentialsRequired: true, TlsRequired: true, Version: "v9", Protocol: messages.Protocol})
	start := time.Now()
	f, err := Find(context.Background(), r.Addr(), Timeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("answered in %v", time.Since(start))
	if !slices.Equal(f.Addrs, []string{"127.0.0.1:4222"}) || !f.CredentialsRequired || !f.TLSRequired || f.Version != "v9" || f.Protocol != messages.Protocol {
		t.Fatalf("found %+v", f)
	}
	if f.From.String() != r.Addr() {
		t.Fatalf("answer from %v, want %v", f.From, r.Addr())
	}
}

func TestFind_NobodyAnswers(t *testing.T) {
	// A port that is bound, and never answers.
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	start := time.Now()
	_, err = Find(context.Background(), pc.LocalAddr().String(), 300*time.Millisecond)
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err %v, want ErrNotFound", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("gave up after %v, want about 300ms", took)
	}
	t.Log(err)
}

// A datagram that is not the answer to this request (another nonce, junk)
// is ignored, and the right one still taken.
func TestFind_IgnoresOtherDatagrams(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 2048)
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		req, err := decodeRequest(buf[:n])
		if err != nil {
			t.Errorf("request: %v", err)
			return
		}
		other, _ := encodeAnswer(&messages.DiscoverReply{Nonce: bytes.Repeat([]byte{1}, nonceLen), Addrs: []string{"10.9.9.9:1"}}, RequestSize)
		right, _ := encodeAnswer(&messages.DiscoverReply{Nonce: req.Nonce, Addrs: []string{"127.0.0.1:7"}}, RequestSize)
		for _, d := range [][]byte{other, []byte("junk"), append(bytes.Clone(AnswerMagic), 0xff, 0xff), right} {
			_, _ = pc.WriteTo(d, from)
		}
	}()
	f, err := Find(context.Background(), pc.LocalAddr().String(), Timeout)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.Addrs, []string{"127.0.0.1:7"}) {
		t.Fatalf("took %v", f.Addrs)
	}
}

// What is not a request of the right size draws nothing; a request is
// answered in at most its own size, whatever the answer holds; the
// responder goes on answering after a flood.
func TestResponder_Ignores(t *testing.T) {
	long := make([]string, 40)
	for i := range long {
		long[i] = "a-rather-long-host-name-of-the-broker.example.com:4222"
	}
	r := listen(t, &messages.DiscoverReply{Addrs: long})
	c, err := net.Dial("udp4", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	good, err := encodeRequest(bytes.Repeat([]byte{7}, nonceLen))
	if err != nil {
		t.Fatal(err)
	}
	if len(good) != RequestSize {
		t.Fatalf("request of %d bytes, want %d", len(good), RequestSize)
	}
	short := bytes.Clone(good[:RequestSize-1])
	oversized := append(bytes.Clone(good), make([]byte, MaxRequestSize)...)
	badMagic := bytes.Clone(good)
	badMagic[0] = 'B'
	badBody := append(bytes.Clone(RequestMagic), bytes.Repeat([]byte{0xff}, RequestSize)...)
	for _, d := range [][]byte{nil, []byte("x"), short, oversized, badMagic, badBody} {
		if _, err := c.Write(d); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 4096)
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := c.Read(buf); err == nil {
		t.Fatalf("answered a malformed request: %q", buf[:n])
	}
	for range 10_000 {
		_, _ = c.Write(badBody)
	}
	// As a node does: asking again, since a full socket buffer drops
	// datagrams, the request among them.
	var n int
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := c.Write(good); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if n, err = c.Read(buf); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer after the flood: %v", err)
		}
	}
	if n > len(good) {
		t.Fatalf("answer of %d bytes to a request of %d", n, len(good))
	}
	a, err := decodeAnswer(buf[:n], bytes.Repeat([]byte{7}, nonceLen))
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Addrs) == 0 || len(a.Addrs) >= len(long) {
		t.Fatalf("answer holds %d of %d addresses, want those that fit", len(a.Addrs), len(long))
	}
}

// Past its burst, a responder stops answering, whoever asks.
func TestResponder_Rate(t *testing.T) {
	cfg := DefaultResponderConfig("127.0.0.1:0", &messages.DiscoverReply{Addrs: []string{"127.0.0.1:1"}})
	cfg.Rate, cfg.Burst, cfg.Logger = 0.001, 3, testlog.Logger(t)
	r, err := Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c, err := net.Dial("udp4", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req, _ := encodeRequest(bytes.Repeat([]byte{7}, nonceLen))
	answers := 0
	buf := make([]byte, 2048)
	for range 6 {
		_, _ = c.Write(req)
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := c.Read(buf); err == nil {
			answers++
		}
	}
	if answers != 3 {
		t.Fatalf("%d answers, want the burst of 3", answers)
	}
}

func TestTarget(t *testing.T) {
	for in, want := range map[string]string{
		"":                Broadcast,
		"10.0.0.5":        "10.0.0.5:4222",
		"10.0.0.5:4300":   "10.0.0.5:4300",
		"broker.lan":      "broker.lan:4222",
		"[::1]:4222":      "[::1]:4222",
		"192.168.1.255":   "192.168.1.255:4222",
		"127.0.0.1:65535": "127.0.0.1:65535",
	} {
		if got, err := Target(in); err != nil || got != want {
			t.Errorf("Target(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"10.0.0.5:0", "10.0.0.5:99999", "h:port", ":4222", "a b"} {
		if got, err := Target(bad); err == nil {
			t.Errorf("Target(%q) = %q, want an error", bad, got)
		}
	}
}

func TestOrder(t *testing.T) {
	addrs := []string{"broker:4222", "10.0.0.9:4222", "172.18.0.2:4222"}
	from := netip.MustParseAddr("172.18.0.2")
	if got := order(addrs, from, false); !slices.Equal(got, []string{"172.18.0.2:4222", "broker:4222", "10.0.0.9:4222"}) {
		t.Errorf("without TLS: %v", got)
	}
	if got := order(addrs, from, true); !slices.Equal(got, []string{"broker:4222", "172.18.0.2:4222", "10.0.0.9:4222"}) {
		t.Errorf("with TLS: %v", got)
	}
}

func TestAdvertised(t *testing.T) {
	if got, err := Advertised("127.0.0.1:4300"); err != nil || !slices.Equal(got, []string{"127.0.0.1:4300"}) {
		t.Fatalf("a specific address: %v, %v", got, err)
	}
	got, err := Advertised("0.0.0.0:4300")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range got {
		host, port, _ := net.SplitHostPort(a)
		if ip, err := netip.ParseAddr(host); port != "4300" || err == nil && (ip.IsLoopback() || !ip.Is4()) {
			t.Errorf("advertised %s", a)
		}
	}
	t.Logf("0.0.0.0:4300 advertises %v", got)
	// Every answer fits a request.
	if _, err := encodeAnswer(&messages.DiscoverReply{Nonce: make([]byte, nonceLen), Addrs: got}, RequestSize); err != nil {
		t.Fatal(err)
	}
}

// One address that asks too often uses up its own answers, not the
// others'.
func TestResponder_PerSource(t *testing.T) {
	cfg := DefaultResponderConfig("127.0.0.1:0", &messages.DiscoverReply{Addrs: []string{"127.0.0.1:1"}})
	cfg.SourceRate, cfg.SourceBurst, cfg.Logger = 0.001, 2, testlog.Logger(t)
	r, err := Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	req, _ := encodeRequest(bytes.Repeat([]byte{7}, nonceLen))
	answers := func(from string, n int) int {
		t.Helper()
		c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(from+":0")), net.UDPAddrFromAddrPort(netip.MustParseAddrPort(r.Addr())))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		got := 0
		buf := make([]byte, 2048)
		for range n {
			_, _ = c.Write(req)
			_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if _, err := c.Read(buf); err == nil {
				got++
			}
		}
		return got
	}
	if got := answers("127.0.0.1", 4); got != 2 {
		t.Fatalf("127.0.0.1: %d answers of 4, want its burst of 2", got)
	}
	if got := answers("127.0.0.2", 1); got != 1 {
		t.Fatalf("127.0.0.2: %d answers after 127.0.0.1 used up its own, want 1", got)
	}
}

func TestOnNetworks(t *testing.T) {
	nets := []netip.Prefix{netip.MustParsePrefix("172.18.0.0/16"), netip.MustParsePrefix("fd00::/64")}
	for a, want := range map[string]bool{
		"127.0.0.1": true, "::1": true, "172.18.5.9": true, "fd00::7": true,
		"172.19.0.1": false, "8.8.8.8": false, "2001:db8::1": false,
	} {
		if got := onNetworks(netip.MustParseAddr(a), nets); got != want {
			t.Errorf("onNetworks(%s) = %v, want %v", a, got, want)
		}
	}
}
