package discovery

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Broadcast is where a node asks by default: every host of its LAN, on
// the broker's default port.
var Broadcast = net.JoinHostPort("255.255.255.255", strconv.Itoa(DefaultPort))

// Timeout is how long a node waits for an answer.
const Timeout = 2 * time.Second

// resends are when a request is sent again, from the first: UDP may drop
// any one of them.
var resends = []time.Duration{300 * time.Millisecond, 900 * time.Millisecond}

// Target is where to ask for a broker, from what --discover was given:
// nothing (Broadcast), HOST (on DefaultPort) or HOST:PORT.
func Target(s string) (string, error) {
	if s == "" {
		return Broadcast, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		// A bare host, IPv6 ones included.
		host, port = strings.Trim(s, "[]"), strconv.Itoa(DefaultPort)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("%q: port %q is not a number from 1 to 65535", s, port)
	}
	if host == "" || strings.ContainsAny(host, " /") {
		return "", fmt.Errorf("%q: want HOST or HOST:PORT, such as 192.168.1.255 or 10.0.0.5:4222", s)
	}
	return net.JoinHostPort(host, port), nil
}

// Found is a broker's answer.
type Found struct {
	// Addrs are where NATS clients reach the broker, best first.
	Addrs []string
	// From is where the answer came from.
	From                             netip.AddrPort
	CredentialsRequired, TLSRequired bool
	// Version and Protocol are the broker's build and wire protocol.
	Version  string
	Protocol uint32
}

// ErrNotFound is wrapped by Find when no broker answered in time.
var ErrNotFound = errors.New("no broker answered")

// Find asks target (host:port, see Target) for brokers and returns the
// first answer to arrive within timeout; datagrams that are not answers
// to this request are ignored.
func Find(ctx context.Context, target string, timeout time.Duration) (*Found, error) {
	to, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return nil, fmt.Errorf("discover at %s: %w", target, err)
	}
	nonce := make([]byte, nonceLen)
	_, _ = rand.Read(nonce)
	req, err := encodeRequest(nonce)
	if err != nil {
		return nil, err
	}
	network := "udp4"
	if to.IP.To4() == nil {
		network = "udp6"
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(ctx, network, ":0")
	if err != nil {
		return nil, fmt.Errorf("discover at %s: %w", target, err)
	}
	conn := pc.(*net.UDPConn)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	_ = conn.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	defer stop()
	if _, err := conn.WriteToUDP(req, to); err != nil {
		return nil, fmt.Errorf("discover at %s: %w", target, err)
	}
	for _, after := range resends {
		t := time.AfterFunc(after, func() { _, _ = conn.WriteToUDP(req, to) })
		defer t.Stop()
	}
	buf := make([]byte, MaxRequestSize+1)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil && context.Cause(ctx) != context.DeadlineExceeded {
				return nil, fmt.Errorf("discover at %s: %w", target, context.Cause(ctx))
			}
			return nil, fmt.Errorf("discover at %s: %w within %v: is a broker running there with discovery on, and does its host let UDP port %d in?",
				target, ErrNotFound, timeout, to.Port)
		}
		a, err := decodeAnswer(buf[:n], nonce)
		if err != nil {
			continue
		}
		f := &Found{From: from, CredentialsRequired: a.CredentialsRequired, TLSRequired: a.TlsRequired, Version: a.Version, Protocol: a.Protocol}
		f.Addrs = order(a.Addrs, from.Addr().Unmap(), a.TlsRequired)
		return f, nil
	}
}

// order sorts a broker's addresses best first: with TLS, names first (a
// certificate names its host more often than its addresses); then the
// address the answer came from, which is known to reach the broker; then
// the rest, as the broker listed them.
func order(addrs []string, from netip.Addr, tls bool) []string {
	rank := func(a string) int {
		host, _, _ := net.SplitHostPort(a)
		ip, err := netip.ParseAddr(host)
		switch {
		case err != nil && tls:
			return 0
		case err == nil && ip.Unmap() == from:
			return 1
		}
		return 2
	}
	out := slices.Clone(addrs)
	slices.SortStableFunc(out, func(a, b string) int { return cmp.Compare(rank(a), rank(b)) })
	return out
}
