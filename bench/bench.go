package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"baton/agent"
	"baton/auth"
	"baton/bus"
	"baton/messages"
)

// Config describes a run.
type Config struct {
	Bins Binaries
	// Dir is scratch space (broker data, node working directories).
	Dir string
	// Quick makes a run of under a minute, with fewer samples, trials and
	// cluster sizes, for CI.
	Quick bool
	// Parts, when set, names the only parts to measure (see Run).
	Parts  []string
	Logger *slog.Logger
}

// sizes returns the run's sample counts and durations.
func (c Config) sizes() (roundTrips int, throughput time.Duration, trials int, scale []int) {
	if c.Quick {
		return 300, 2 * time.Second, 2, []int{10, 100}
	}
	return 2000, 5 * time.Second, 5, []int{10, 100, 1000, 5000}
}

// Report holds every figure of a run.
type Report struct {
	Machine    string     `json:"machine"`
	Quick      bool       `json:"quick"`
	RoundTrip  RoundTrip  `json:"round_trip"`
	Security   Security   `json:"security"`
	History    History    `json:"history"`
	Throughput Throughput `json:"throughput"`
	// Interactive is live output and cancel, as node exec sees them.
	Interactive Interactive     `json:"interactive"`
	Failover    []Failover      `json:"failover"`
	Scale       []Scale         `json:"scale"`
	Idle        Idle            `json:"idle"`
	Dashboards  Dashboards      `json:"dashboards"`
	Files       Files           `json:"files"`
	Membership  Membership      `json:"membership"`
	Targets     map[string]bool `json:"targets_met"`
}

// RoundTrip compares `true` through the cluster with a local fork/exec.
type RoundTrip struct {
	Samples      int     `json:"samples"`
	LocalP50Ms   float64 `json:"local_p50_ms"`
	LocalP99Ms   float64 `json:"local_p99_ms"`
	ClusterP50Ms float64 `json:"cluster_p50_ms"`
	ClusterP99Ms float64 `json:"cluster_p99_ms"`
	RatioP50     float64 `json:"ratio_p50"`
}

// Throughput compares 8 concurrent submitters with 8 local workers.
type Throughput struct {
	Workers          int     `json:"workers"`
	LocalPerSecond   float64 `json:"local_per_second"`
	ClusterPerSecond float64 `json:"cluster_per_second"`
	Ratio            float64 `json:"ratio"`
}

// Failover is one kind of fault, as a client submitting continuously sees
// it: the time from the fault to the first result from the new master.
type Failover struct {
	Kind     string    `json:"kind"`
	TrialsMs []float64 `json:"trials_ms"`
	MedianMs float64   `json:"median_ms"`
	MaxMs    float64   `json:"max_ms"`
}

// Scale is the broker with simulated members.
type Scale struct {
	Members int `json:"members"`
	// NotReached, when set, says why the cluster never settled at this
	// size; the other figures are then zero.
	NotReached string `json:"not_reached,omitempty"`
	// BrokerCPU is the broker's CPU time over wall time: 1.0 is one core.
	BrokerCPU   float64 `json:"broker_cpu"`
	BrokerRSSMB float64 `json:"broker_rss_mb"`
	// AnnounceMs is master loss to the new master.current at an observer;
	// AllSeenMs is master loss to every member having seen it.
	AnnounceMs float64 `json:"announce_ms"`
	AllSeenMs  float64 `json:"all_seen_ms"`
}

// Idle is the resident size of an idle broker and node.
type Idle struct {
	BrokerRSSMB float64 `json:"broker_rss_mb"`
	NodeRSSMB   float64 `json:"node_rss_mb"`
}

// Run measures everything, sequentially, each part on a fresh cluster.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Report{Machine: machine(), Quick: cfg.Quick}
	steps := []struct {
		name string
		run  func(context.Context, Config, *Report) error
	}{
		{"round trip", roundTrip},
		{"security", security},
		{"history", historyCost},
		{"history queries", historyQueries},
		{"throughput", throughput},
		{"live output and cancel", interactive},
		{"failover", failovers},
		{"scale", scale},
		{"idle", idle},
		{"dashboards", dashboards},
		{"files", files},
		{"membership", membership},
	}
	for _, s := range steps {
		if len(cfg.Parts) > 0 && !slices.Contains(cfg.Parts, s.name) {
			continue
		}
		cfg.Logger.Info("measuring", keyPart, s.name)
		t0 := time.Now()
		if err := s.run(ctx, cfg, r); err != nil {
			return r, fmt.Errorf("%s: %w", s.name, err)
		}
		cfg.Logger.Info("measured", keyPart, s.name, keyTook, time.Since(t0).Round(time.Second))
	}
	r.Targets = r.judge()
	return r, nil
}

func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%d cores, %s, %s/%s, %s", runtime.NumCPU(), model, runtime.GOOS, runtime.GOARCH, runtime.Version())
}

// cluster is a broker process, node processes, and a client.
type cluster struct {
	cfg     Config
	addr    string
	dataDir string
	broker  *proc
	nodes   map[string]*proc
	client  *agent.Client
	// secure, when set, makes the broker require credentials and TLS.
	secure *secureFiles
	// brokerArgs are the broker's flags beyond address and data directory.
	brokerArgs []string
}

// secureFiles are what a secure cluster's processes are started with.
type secureFiles struct {
	certs auth.Certificates
	node  string // the node role's credential, which every process uses
}

func newCluster(ctx context.Context, cfg Config) (*cluster, error) {
	return newClusterWith(ctx, cfg, false)
}

// newClusterWith starts a cluster, with credentials and TLS when secure,
// its broker given brokerArgs.
func newClusterWith(ctx context.Context, cfg Config, secure bool, brokerArgs ...string) (*cluster, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(cfg.Dir, "cluster")
	if err != nil {
		return nil, err
	}
	c := &cluster{cfg: cfg, addr: addr, dataDir: filepath.Join(dir, "broker.data"), nodes: map[string]*proc{}, brokerArgs: brokerArgs}
	if secure {
		certs, _, err := auth.EnsureCertificates(auth.TLSDir(c.dataDir), []string{"127.0.0.1"})
		if err != nil {
			return nil, err
		}
		if _, _, err := auth.Ensure(auth.Dir(c.dataDir)); err != nil {
			return nil, err
		}
		c.secure = &secureFiles{certs: certs, node: filepath.Join(auth.Dir(c.dataDir), auth.FileName(auth.Node))}
	}
	if err := c.startBroker(); err != nil {
		return nil, err
	}
	ccfg := agent.DefaultClientConfig("bench")
	ccfg.Logger = cfg.Logger
	if c.client, err = agent.Dial(ctx, c.conn("bench"), ccfg); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// conn is a connection config for this cluster's broker.
func (c *cluster) conn(name string) bus.ConnConfig {
	cfg := bus.DefaultConnConfig()
	cfg.Addrs, cfg.Name, cfg.ConnectTimeout, cfg.Logger = []string{c.addr}, name, 10*time.Second, c.cfg.Logger
	if c.secure != nil {
		cfg.Credentials, cfg.InboxPrefix, cfg.TLSCA = c.secure.node, auth.Node.InboxPrefix(), c.secure.certs.CA
	}
	return cfg
}

func (c *cluster) startBroker() error {
	args := append([]string{c.addr, "--data-dir", c.dataDir}, c.brokerArgs...)
	if c.secure != nil {
		args = append(args, "--auth=required", "--tls-cert="+c.secure.certs.Cert, "--tls-key="+c.secure.certs.Key)
	}
	p, err := startProc(c.cfg.Dir, c.cfg.Bins.Broker, args...)
	if err != nil {
		return err
	}
	c.broker = p
	return waitListening(c.addr, 10*time.Second)
}

func (c *cluster) startNode(name string, priority int) error {
	args := []string{"--broker-addr=" + c.addr, "--name=" + name, "--priority=" + strconv.Itoa(priority), "--serve",
		"--work-dir=" + filepath.Join(filepath.Dir(c.dataDir), "work")}
	if c.secure != nil {
		args = append(args, "--credentials="+c.secure.node, "--tls-ca="+c.secure.certs.CA)
	}
	p, err := startProc(c.cfg.Dir, c.cfg.Bins.Node, args...)
	if err != nil {
		return err
	}
	c.nodes[name] = p
	return nil
}

// servingCluster is a fresh cluster whose one node, master, serves.
func servingCluster(ctx context.Context, cfg Config, master string) (*cluster, error) {
	return servingClusterWith(ctx, cfg, master, false)
}

// servingClusterWith is servingCluster, with credentials and TLS when
// secure, its broker given brokerArgs.
func servingClusterWith(ctx context.Context, cfg Config, master string, secure bool, brokerArgs ...string) (*cluster, error) {
	c, err := newClusterWith(ctx, cfg, secure, brokerArgs...)
	if err != nil {
		return nil, err
	}
	err = c.startNode(master, 1)
	if err == nil {
		err = c.waitServing(ctx, master, 15*time.Second)
	}
	if err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// waitServing submits `true` until master runs it.
func (c *cluster) waitServing(ctx context.Context, master string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if res, err := c.client.Submit(ctx, "true"); err == nil && res.Master == master && res.Error == "" {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("%s not serving after %v", master, timeout)
}

func (c *cluster) close() {
	if c.client != nil {
		_ = c.client.Close(context.Background())
	}
	for _, p := range c.nodes {
		p.stop(15 * time.Second)
	}
	if c.broker != nil {
		c.broker.stop(10 * time.Second)
	}
}

// percentile returns the p-th percentile (0–100) of sorted durations, in
// milliseconds.
func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := min(int(float64(len(sorted))*p/100), len(sorted)-1)
	return ms(sorted[i])
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func localTrue() error { return exec.Command("/bin/sh", "-c", "true").Run() }

func roundTrip(ctx context.Context, cfg Config, r *Report) error {
	n, _, _, _ := cfg.sizes()
	c, err := servingCluster(ctx, cfg, "master")
	if err != nil {
		return err
	}
	defer c.close()
	local := make([]time.Duration, 0, n)
	cluster := make([]time.Duration, 0, n)
	// Interleaved, so that both see the same machine at the same time.
	for i := range n + n/10 {
		t0 := time.Now()
		if err := localTrue(); err != nil {
			return err
		}
		tl := time.Since(t0)
		t0 = time.Now()
		res, err := c.client.Submit(ctx, "true")
		if err != nil || res.ExitCode != 0 {
			return fmt.Errorf("submit true: %v %v", res, err)
		}
		tc := time.Since(t0)
		if i >= n/10 { // the first tenth warms up
			local, cluster = append(local, tl), append(cluster, tc)
		}
	}
	slices.Sort(local)
	slices.Sort(cluster)
	r.RoundTrip = RoundTrip{
		Samples:    n,
		LocalP50Ms: percentile(local, 50), LocalP99Ms: percentile(local, 99),
		ClusterP50Ms: percentile(cluster, 50), ClusterP99Ms: percentile(cluster, 99),
	}
	r.RoundTrip.RatioP50 = r.RoundTrip.ClusterP50Ms / r.RoundTrip.LocalP50Ms
	return nil
}

// rate runs work from workers goroutines for d and returns completions per
// second.
func rate(workers int, d time.Duration, work func() error) (float64, error) {
	var done atomic.Int64
	var firstErr error
	var once sync.Once
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	t0 := time.Now()
	for range workers {
		wg.Go(func() {
			for time.Now().Before(stop) {
				if err := work(); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	return float64(done.Load()) / time.Since(t0).Seconds(), firstErr
}

func throughput(ctx context.Context, cfg Config, r *Report) error {
	_, d, _, _ := cfg.sizes()
	const workers = 8
	c, err := servingCluster(ctx, cfg, "master")
	if err != nil {
		return err
	}
	defer c.close()
	local, err := rate(workers, d, localTrue)
	if err != nil {
		return err
	}
	cluster, err := rate(workers, d, func() error {
		res, err := c.client.Submit(ctx, "true")
		if err == nil && res.ExitCode != 0 {
			err = errors.New(res.Error)
		}
		return err
	})
	if err != nil {
		return err
	}
	r.Throughput = Throughput{Workers: workers, LocalPerSecond: local, ClusterPerSecond: cluster, Ratio: cluster / local}
	return nil
}

// submitter submits `true` continuously and records who ran each.
type submitter struct {
	mu      sync.Mutex
	results []outcome
	stop    chan struct{}
	done    chan struct{}
}

type outcome struct {
	at     time.Time
	master string
	ok     bool
}

func submitContinuously(ctx context.Context, client *agent.Client) *submitter {
	s := &submitter{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			select {
			case <-s.stop:
				return
			default:
			}
			res, err := client.Submit(ctx, "true")
			o := outcome{at: time.Now(), ok: err == nil && res.Error == "" && res.ExitCode == 0}
			if res != nil {
				o.master = res.Master
			}
			s.mu.Lock()
			s.results = append(s.results, o)
			s.mu.Unlock()
			if !o.ok {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	return s
}

// firstFrom waits for the first success after t0 by master ("" for any)
// and returns how long after t0 it came.
func (s *submitter) firstFrom(master string, t0 time.Time, timeout time.Duration) (time.Duration, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		for _, o := range s.results {
			if o.ok && o.at.After(t0) && (master == "" || o.master == master) {
				s.mu.Unlock()
				return o.at.Sub(t0), nil
			}
		}
		s.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
	return 0, fmt.Errorf("no result from %q within %v", master, timeout)
}

func (s *submitter) close() {
	close(s.stop)
	<-s.done
}

func failovers(ctx context.Context, cfg Config, r *Report) error {
	_, _, trials, _ := cfg.sizes()
	c, err := newCluster(ctx, cfg)
	if err != nil {
		return err
	}
	defer c.close()
	for name, prio := range map[string]int{"alpha": 100, "beta": 50} {
		if err := c.startNode(name, prio); err != nil {
			return err
		}
	}
	if err := c.waitServing(ctx, "alpha", 15*time.Second); err != nil {
		return err
	}
	s := submitContinuously(ctx, c.client)
	defer s.close()
	restart := func(name string, prio int) error {
		if err := c.startNode(name, prio); err != nil {
			return err
		}
		return c.waitServing(ctx, name, 15*time.Second)
	}
	// Each fault returns the moment it took effect.
	now := func() (time.Time, error) { return time.Now(), nil }
	kinds := []struct {
		kind  string
		fault func() (time.Time, error)
		to    string
		heal  func() error
	}{
		{"kill -9", func() (time.Time, error) { c.nodes["alpha"].signal(syscall.SIGKILL); return now() }, "beta", func() error {
			<-c.nodes["alpha"].done
			return restart("alpha", 100)
		}},
		{"SIGSTOP (hang)", func() (time.Time, error) { c.nodes["alpha"].signal(syscall.SIGSTOP); return now() }, "beta", func() error {
			c.nodes["alpha"].signal(syscall.SIGCONT)
			return c.waitServing(ctx, "alpha", 15*time.Second)
		}},
		{"SIGTERM (leave)", func() (time.Time, error) { c.nodes["alpha"].signal(syscall.SIGTERM); return now() }, "beta", func() error {
			<-c.nodes["alpha"].done
			return restart("alpha", 100)
		}},
		{"preemption", func() (time.Time, error) {
			t0 := time.Now()
			return t0, c.startNode("gamma", 200)
		}, "gamma", func() error {
			c.nodes["gamma"].stop(15 * time.Second)
			delete(c.nodes, "gamma")
			return c.waitServing(ctx, "alpha", 15*time.Second)
		}},
		{"broker restart (kill -9)", func() (time.Time, error) {
			c.broker.kill() // returns once the broker is gone
			t0 := time.Now()
			return t0, c.startBroker()
		}, "", func() error { return c.waitServing(ctx, "alpha", 15*time.Second) }},
	}
	for _, k := range kinds {
		f := Failover{Kind: k.kind}
		for range trials {
			t0, err := k.fault()
			if err != nil {
				return err
			}
			d, err := s.firstFrom(k.to, t0, 20*time.Second)
			if err != nil {
				return fmt.Errorf("%s: %w", k.kind, err)
			}
			f.TrialsMs = append(f.TrialsMs, ms(d))
			if err := k.heal(); err != nil {
				return fmt.Errorf("%s: heal: %w", k.kind, err)
			}
		}
		sorted := slices.Sorted(slices.Values(f.TrialsMs))
		f.MedianMs, f.MaxMs = sorted[len(sorted)/2], sorted[len(sorted)-1]
		r.Failover = append(r.Failover, f)
	}
	return nil
}

func scale(ctx context.Context, cfg Config, r *Report) error {
	_, _, _, sizes := cfg.sizes()
	for _, n := range sizes {
		// A size the machine cannot hold must not stall the run.
		sctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		sc, err := scaleOnce(sctx, cfg, n)
		cancel()
		if err != nil {
			sc = Scale{Members: n, NotReached: err.Error()}
		}
		cfg.Logger.Info("scale", keyMembers, n, keyFigures, fmt.Sprintf("%+v", sc))
		r.Scale = append(r.Scale, sc)
	}
	return nil
}

func scaleOnce(ctx context.Context, cfg Config, n int) (Scale, error) {
	c, err := newCluster(ctx, cfg)
	if err != nil {
		return Scale{}, err
	}
	defer c.close()
	quiet := slog.New(slog.DiscardHandler)
	ms_, err := StartMembers(ctx, c.conn("m"), "m", n, quiet)
	if err != nil {
		return Scale{}, err
	}
	defer ms_.Close()
	master := "m-" + strconv.Itoa(n-1)
	successor := "m-" + strconv.Itoa(n-2)
	for !ms_.AllSee(master) {
		if ctx.Err() != nil {
			return Scale{}, fmt.Errorf("members never all saw master %s: %w", master, ctx.Err())
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // past the join storm
	pid := c.broker.cmd.Process.Pid
	const window = 3 * time.Second
	before, err := cpuTime(pid)
	if err != nil {
		return Scale{}, err
	}
	time.Sleep(window)
	after, err := cpuTime(pid)
	if err != nil {
		return Scale{}, err
	}
	size, err := rss(pid)
	if err != nil {
		return Scale{}, err
	}
	sc := Scale{Members: n, BrokerCPU: float64(after-before) / float64(window), BrokerRSSMB: float64(size) / 1e6}

	nc, err := bus.Connect(ctx, c.conn("bench-observer"))
	if err != nil {
		return Scale{}, err
	}
	defer nc.Close()
	announced := make(chan time.Time, 1)
	sub, err := nc.Subscribe(messages.SubjectMaster, func(m *nats.Msg) {
		if m.Header.Get(messages.HeaderMaster) == successor {
			select {
			case announced <- time.Now():
			default:
			}
		}
	})
	if err != nil {
		return Scale{}, err
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		return Scale{}, err
	}
	t0 := time.Now()
	ms_.Kill(master)
	for !ms_.AllSee(successor) {
		if ctx.Err() != nil {
			return Scale{}, fmt.Errorf("members never all saw successor %s: %w", successor, ctx.Err())
		}
		time.Sleep(time.Millisecond)
	}
	sc.AllSeenMs = msSince(t0)
	select {
	case at := <-announced:
		sc.AnnounceMs = ms(at.Sub(t0))
	case <-time.After(10 * time.Second):
		return Scale{}, errors.New("no announcement of the new master")
	}
	return sc, nil
}

func msSince(t time.Time) float64 { return ms(time.Since(t)) }

func idle(ctx context.Context, cfg Config, r *Report) error {
	c, err := servingCluster(ctx, cfg, "idle")
	if err != nil {
		return err
	}
	defer c.close()
	time.Sleep(3 * time.Second)
	b, err := rss(c.broker.cmd.Process.Pid)
	if err != nil {
		return err
	}
	n, err := rss(c.nodes["idle"].cmd.Process.Pid)
	if err != nil {
		return err
	}
	r.Idle = Idle{BrokerRSSMB: float64(b) / 1e6, NodeRSSMB: float64(n) / 1e6}
	return nil
}
