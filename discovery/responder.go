package discovery

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"

	"baton/messages"
)

// ResponderConfig says where a responder listens and what it answers.
type ResponderConfig struct {
	// Addr is the UDP host:port to listen on: the broker's client
	// address. Only a responder on an unspecified address (0.0.0.0) hears
	// broadcasts.
	Addr string
	// Answer is what every request is answered (its nonce aside).
	Answer *messages.DiscoverReply
	// Rate and Burst bound the answers per second, whoever asks: a flood
	// of requests costs the broker little and draws little from it.
	// SourceRate and SourceBurst bound them per address asking, so that
	// one flooder does not use up the rest's.
	Rate        rate.Limit
	Burst       int
	SourceRate  rate.Limit
	SourceBurst int
	// ReportEvery is how often, at most, ignored datagrams are logged.
	ReportEvery time.Duration
	Logger      *slog.Logger
}

// DefaultResponderConfig answers at most 100 requests a second, 500 at
// once (a whole cluster starting), 5 a second (20 at once) to one address,
// and logs what it ignored once a minute.
func DefaultResponderConfig(addr string, answer *messages.DiscoverReply) ResponderConfig {
	return ResponderConfig{Addr: addr, Answer: answer, Rate: 100, Burst: 500, SourceRate: 5, SourceBurst: 20,
		ReportEvery: time.Minute, Logger: slog.Default().With(keyComponent, "discovery")}
}

// Responder answers discovery requests on a UDP address until closed. It
// answers only requests from loopback and from the networks of the host's
// interfaces: discovery is for the LAN.
type Responder struct {
	cfg  ResponderConfig
	conn *net.UDPConn
	lim  *rate.Limiter
	done chan struct{}
	once sync.Once

	// Owned by the serving goroutine.
	sources   map[netip.Addr]*rate.Limiter
	networks  []netip.Prefix
	refreshed time.Time
}

// maxSources bounds the addresses whose answers are counted apart; past
// it, the count starts again.
const maxSources = 4096

// networksEvery is how often the host's networks are read again.
const networksEvery = 30 * time.Second

// Listen starts answering as cfg says.
func Listen(cfg ResponderConfig) (*Responder, error) {
	if cfg.Logger == nil {
		cfg.Logger = DefaultResponderConfig("", nil).Logger
	}
	if cfg.Answer == nil || len(cfg.Answer.Addrs) == 0 {
		return nil, errors.New("discovery: no address to answer with")
	}
	if _, err := encodeAnswer(cfg.Answer, RequestSize); err != nil {
		return nil, err
	}
	ua, err := net.ResolveUDPAddr("udp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	conn, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("discovery: %w (--discovery=false turns discovery off)", err)
	}
	r := &Responder{cfg: cfg, conn: conn, lim: rate.NewLimiter(cfg.Rate, cfg.Burst), done: make(chan struct{})}
	go r.serve()
	return r, nil
}

// Addr is the UDP address the responder listens on.
func (r *Responder) Addr() string { return r.conn.LocalAddr().String() }

// Close stops answering and waits for the responder to end.
func (r *Responder) Close() error {
	var err error
	r.once.Do(func() {
		err = r.conn.Close()
		<-r.done
	})
	return err
}

func (r *Responder) serve() {
	defer close(r.done)
	// One byte more than a request may have: a datagram that fills the
	// buffer was longer, and is ignored.
	buf := make([]byte, MaxRequestSize+1)
	var ignored int
	var last netip.AddrPort
	reported := time.Now()
	first := true
	for {
		n, from, err := r.conn.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			if ignored > 0 {
				r.cfg.Logger.Info("ignored datagrams on the discovery port", keyCount, ignored, keySince, reported.Format(time.RFC3339), keyLastFrom, last.String())
			}
			return
		}
		if err != nil {
			r.cfg.Logger.Debug("discovery read failed", keyErr, err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if r.answer(buf[:n], from) {
			continue
		}
		ignored, last = ignored+1, from
		switch {
		case first:
			r.cfg.Logger.Info("ignored a datagram on the discovery port: malformed, oversized, from outside the host's networks, or over the answer rate; more are counted and logged at most once a period",
				keyFrom, from.String(), keyBytes, n, keyPeriod, r.cfg.ReportEvery)
			first, ignored, reported = false, 0, time.Now()
		case time.Since(reported) >= r.cfg.ReportEvery:
			r.cfg.Logger.Warn("ignored datagrams on the discovery port", keyCount, ignored, keySince, reported.Format(time.RFC3339), keyLastFrom, last.String())
			ignored, reported = 0, time.Now()
		}
	}
}

// answer answers the request d holds, if it is one and the rate allows,
// and reports whether it did.
func (r *Responder) answer(d []byte, from netip.AddrPort) bool {
	req, err := decodeRequest(d)
	if err != nil || !r.local(from.Addr().Unmap()) || !r.source(from.Addr().Unmap()).Allow() || !r.lim.Allow() {
		return false
	}
	a := proto.CloneOf(r.cfg.Answer)
	a.Nonce = req.Nonce
	out, err := encodeAnswer(a, len(d))
	if err != nil {
		return false
	}
	if _, err := r.conn.WriteToUDPAddrPort(out, from); err != nil {
		r.cfg.Logger.Debug("discovery answer not sent", keyTo, from.String(), keyErr, err)
	}
	return true
}

// source is the answer rate of one address.
func (r *Responder) source(a netip.Addr) *rate.Limiter {
	if r.sources == nil || len(r.sources) >= maxSources {
		r.sources = make(map[netip.Addr]*rate.Limiter)
	}
	lim, ok := r.sources[a]
	if !ok {
		lim = rate.NewLimiter(r.cfg.SourceRate, r.cfg.SourceBurst)
		r.sources[a] = lim
	}
	return lim
}

// local reports whether a is on loopback or one of the host's networks.
func (r *Responder) local(a netip.Addr) bool {
	if time.Since(r.refreshed) > networksEvery {
		r.networks, r.refreshed = hostNetworks(), time.Now()
	}
	return onNetworks(a, r.networks)
}

// hostNetworks are the networks of the host's interfaces.
func hostNetworks() []netip.Prefix {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var nets []netip.Prefix
	for _, ia := range addrs {
		if p, err := netip.ParsePrefix(ia.String()); err == nil {
			nets = append(nets, netip.PrefixFrom(p.Addr().Unmap(), p.Bits()).Masked())
		}
	}
	return nets
}

// onNetworks reports whether a is on loopback or on one of nets.
func onNetworks(a netip.Addr, nets []netip.Prefix) bool {
	if a.IsLoopback() {
		return true
	}
	for _, n := range nets {
		if n.Contains(a) {
			return true
		}
	}
	return false
}

// Advertised are the addresses to answer with for a broker listening on
// listen (host:port): that address, or, when its host is unspecified (all
// of the host's addresses), the host's name and every address of its
// interfaces that other hosts can reach.
func Advertised(listen string) ([]string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, err
	}
	ip, err := netip.ParseAddr(host)
	if host != "" && (err != nil || !ip.IsUnspecified()) {
		return []string{listen}, nil
	}
	var addrs []string
	if name, err := os.Hostname(); err == nil && name != "" {
		addrs = append(addrs, net.JoinHostPort(name, port))
	}
	ifaces, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("discovery: the host's addresses: %w", err)
	}
	for _, ia := range ifaces {
		prefix, err := netip.ParsePrefix(ia.String())
		if err != nil {
			continue
		}
		a := prefix.Addr()
		if a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsMulticast() || (ip.IsValid() && ip.Is4() && !a.Is4()) {
			continue
		}
		addrs = append(addrs, net.JoinHostPort(a.String(), port))
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("discovery: the host has no name and no address other hosts reach; listen on one (%s)", listen)
	}
	return addrs, nil
}

// Log keys.
const (
	keyComponent = "component"
	keyErr       = "err"
	keyFrom      = "from"
	keyTo        = "to"
	keyBytes     = "bytes"
	keyCount     = "count"
	keySince     = "since"
	keyLastFrom  = "last_from"
	keyPeriod    = "period"
)
