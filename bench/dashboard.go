package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"sync"
	"time"
)

// Dashboards is what open dashboards cost the broker: its CPU while the
// cluster is idle, and the exec round trip while they watch.
type Dashboards struct {
	Tabs int `json:"tabs"`
	// IdleCPU and TabsIdleCPU are the broker's CPU time over wall time
	// (1.0 is one core) while idle, without and with Tabs dashboards open;
	// IdleCPUCost is their difference.
	IdleCPU     float64 `json:"idle_cpu"`
	TabsIdleCPU float64 `json:"tabs_idle_cpu"`
	IdleCPUCost float64 `json:"idle_cpu_cost"`
	// Events is how many events the open dashboards read in all while
	// the round trips and throughput were measured.
	Events int64 `json:"events"`
	// OffOn is exec with no dashboard against exec with Tabs open.
	OffOn
}

// Targets of the dashboard: a hundred tabs left open cost an idle broker
// under 5 % of a core, and the round trip what noise costs.
const (
	dashboardTabs          = 100
	targetDashboardIdleCPU = 0.05
	targetDashboardRTCost  = 0.05
)

// dashboards opens 100 dashboards (each as a browser tab on the Jobs page
// does: the page, its stylesheet and script, then the event stream with
// job events) on one of two like clusters, and measures the idle broker
// and the round trip of both, interleaved.
func dashboards(ctx context.Context, cfg Config, r *Report) error {
	n, d, _, _ := cfg.sizes()
	window := 10 * time.Second
	if cfg.Quick {
		window = 4 * time.Second
	}
	// Two like clusters, each with its dashboard.
	var clusters [2]*cluster
	var bHTTP string
	for i := range clusters {
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		c, err := servingClusterWith(ctx, cfg, "master", false, "--http="+addr)
		if err != nil {
			return err
		}
		defer c.close()
		clusters[i], bHTTP = c, addr
	}
	a, b := clusters[0], clusters[1]
	ds := &r.Dashboards
	ds.Tabs = dashboardTabs
	pid := b.broker.cmd.Process.Pid
	var err error
	if ds.IdleCPU, err = cpuShare(pid, window); err != nil {
		return err
	}
	tabs, err := openTabs(ctx, "http://"+bHTTP, dashboardTabs)
	if err != nil {
		return err
	}
	defer tabs.close()
	if ds.TabsIdleCPU, err = cpuShare(pid, window); err != nil {
		return err
	}
	ds.IdleCPUCost = ds.TabsIdleCPU - ds.IdleCPU
	before := tabs.events()
	p, err := versus(ctx, a, b, n, d, 4)
	if err != nil {
		return err
	}
	ds.Events = tabs.events() - before
	ds.OffOn = offOn(n, p)
	if err := tabs.err(); err != nil {
		return fmt.Errorf("a dashboard's event stream: %w", err)
	}
	return nil
}

// cpuShare is process pid's CPU time over a window of wall time.
func cpuShare(pid int, window time.Duration) (float64, error) {
	before, err := cpuTime(pid)
	if err != nil {
		return 0, err
	}
	time.Sleep(window)
	after, err := cpuTime(pid)
	if err != nil {
		return 0, err
	}
	return float64(after-before) / float64(window), nil
}

// tabs are open dashboards, each reading its event stream.
type tabs struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	count    int64
	firstErr error
}

// cursorAttr is where a page says which event it was rendered at.
var cursorAttr = regexp.MustCompile(`data-cursor="([^"]*)"`)

// openTabs loads the Jobs page n times and opens its event stream each
// time; they are read until close.
func openTabs(ctx context.Context, base string, n int) (*tabs, error) {
	ctx, cancel := context.WithCancel(ctx)
	t := &tabs{cancel: cancel}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n}}
	get := func(path string) ([]byte, error) {
		req, _ := http.NewRequestWithContext(ctx, "GET", base+path, nil)
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("GET %s: %s", path, resp.Status)
		}
		return body, err
	}
	for range n {
		page, err := get("/jobs")
		if err == nil {
			_, err = get("/static/style.css")
		}
		if err == nil {
			_, err = get("/static/app.js")
		}
		if err != nil {
			t.close()
			return nil, err
		}
		cursor := ""
		if m := cursorAttr.FindSubmatch(page); m != nil {
			cursor = string(m[1])
		}
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/events?after="+cursor, nil)
		resp, err := client.Do(req)
		if err == nil && resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			err = fmt.Errorf("GET /api/events: %s", resp.Status)
		}
		if err != nil {
			t.close()
			return nil, err
		}
		t.wg.Go(func() { t.read(ctx, resp.Body) })
	}
	return t, nil
}

func (t *tabs) read(ctx context.Context, body io.ReadCloser) {
	defer body.Close()
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var n int64
	for sc.Scan() {
		if len(sc.Bytes()) > 6 && string(sc.Bytes()[:6]) == "event:" {
			n++
			if n%64 == 0 {
				t.add(n)
				n = 0
			}
		}
	}
	t.add(n)
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		t.mu.Lock()
		if t.firstErr == nil {
			t.firstErr = err
		}
		t.mu.Unlock()
	}
}

func (t *tabs) add(n int64) {
	t.mu.Lock()
	t.count += n
	t.mu.Unlock()
}

func (t *tabs) events() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.count
}

func (t *tabs) err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.firstErr
}

// close ends every stream and waits for the readers.
func (t *tabs) close() {
	t.cancel()
	t.wg.Wait()
}
