package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"baton/bus"
	"baton/election"
	"baton/messages"
)

// History is what the job history costs on the hot path, and how fast it
// answers with many jobs stored.
type History struct {
	// OffOn is what the history costs: --no-history against the default.
	OffOn
	// Jobs is how many jobs were stored for the queries; StoreSeconds how
	// long storing them took.
	Jobs         int     `json:"jobs"`
	StoreSeconds float64 `json:"store_seconds"`
	// JobsMs and GrepMs are `node jobs` and `node jobs --grep` (a text no
	// job holds: every record read), median of five, process start to
	// exit; LoadMs is a restarted broker's index load.
	JobsMs float64 `json:"jobs_ms"`
	GrepMs float64 `json:"grep_ms"`
	LoadMs float64 `json:"load_ms"`
	// PageMs, DeepPageMs and FailedPageMs are the dashboard's Jobs page
	// (50 jobs): the first, one half-way through the history, and "failed
	// only" when no job failed (every job looked at); median of five,
	// request to last byte.
	PageMs       float64 `json:"page_ms"`
	DeepPageMs   float64 `json:"deep_page_ms"`
	FailedPageMs float64 `json:"failed_page_ms"`
}

// Targets of the history.
const (
	targetHistoryCost = 0.05
	targetJobsMs      = 200
	targetGrepMs      = 2000
	targetPageMs      = 200
)

// historyCost compares the same cluster with the history on and off,
// interleaved in one run, as security does for credentials.
func historyCost(ctx context.Context, cfg Config, r *Report) error {
	n, d, _, _ := cfg.sizes()
	off, err := servingClusterWith(ctx, cfg, "master", false, "--no-history")
	if err != nil {
		return fmt.Errorf("cluster without history: %w", err)
	}
	defer off.close()
	on, err := servingCluster(ctx, cfg, "master")
	if err != nil {
		return err
	}
	defer on.close()
	// Throughput in alternating quarters: the machine's drift over a run
	// is larger than the cost measured.
	p, err := versus(ctx, off, on, n, d, 4)
	if err != nil {
		return err
	}
	r.History.OffOn = offOn(n, p)
	return nil
}

// historyJobs is how many jobs the queries run against.
func (c Config) historyJobs() int {
	if c.Quick {
		return 20_000
	}
	return 100_000
}

// historyQueries stores many jobs through the broker's own intake (as
// masters report them, a thousand a batch), then times `node jobs`, a
// `node jobs --grep` that reads every record, and the index load of a
// restarted broker.
func historyQueries(ctx context.Context, cfg Config, r *Report) error {
	httpAddr, err := freeAddr()
	if err != nil {
		return err
	}
	c, err := newClusterWith(ctx, cfg, false, "--http="+httpAddr)
	if err != nil {
		return err
	}
	defer c.close()
	nc, err := bus.Connect(ctx, c.conn("bench-history"))
	if err != nil {
		return err
	}
	defer nc.Close()
	// The history takes records only from a node, of its own jobs: the
	// benchmark joins as the master it reports for.
	mcfg := election.DefaultMemberConfig("master")
	mcfg.Logger = cfg.Logger
	m, err := election.NewMember(nc, mcfg)
	if err != nil {
		return err
	}
	if err := m.Start(ctx); err != nil {
		return err
	}
	defer m.Close(context.WithoutCancel(ctx))
	total := cfg.historyJobs()
	t0 := time.Now()
	middle, err := storeJobs(ctx, nc, total)
	if err != nil {
		return err
	}
	h := &r.History
	h.Jobs, h.StoreSeconds = total, time.Since(t0).Seconds()
	if h.JobsMs, err = c.timeNode(ctx, "jobs"); err != nil {
		return err
	}
	if h.GrepMs, err = c.timeNode(ctx, "jobs", "--grep=text no job holds"); err != nil {
		return err
	}
	base := "http://" + httpAddr
	if h.PageMs, err = timeGet(ctx, base+"/jobs"); err != nil {
		return err
	}
	if h.DeepPageMs, err = timeGet(ctx, base+"/jobs?before="+middle); err != nil {
		return err
	}
	if h.FailedPageMs, err = timeGet(ctx, base+"/jobs?state=failed"); err != nil {
		return err
	}
	// A restart: how long until the history answers again.
	c.broker.stop(10 * time.Second)
	t0 = time.Now()
	if err := c.startBroker(); err != nil {
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := c.timeNode(ctx, "jobs", "--limit=1"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return errors.New("history not answering a minute after a restart")
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.LoadMs = msSince(t0)
	return nil
}

// storeJobs sends n finished jobs' records to the history, each with a
// few hundred bytes of output, and returns the ID of the one half-way.
func storeJobs(ctx context.Context, nc *nats.Conn, n int) (middle string, err error) {
	const batch = 1000
	now := time.Now()
	out := strings.Repeat("some output of a command\n", 10)
	for i := 0; i < n; i += batch {
		var recs messages.JobRecords
		for j := i; j < min(i+batch, n); j++ {
			at := timestamppb.New(now.Add(time.Duration(j-n) * time.Millisecond))
			id := messages.NewJobID(at.AsTime())
			if j == n/2 {
				middle = id
			}
			recs.Records = append(recs.Records, &messages.JobRecord{
				Id: id, Cmd: fmt.Sprintf("echo job %d | tee /tmp/x", j),
				State: messages.JobState_JOB_STATE_SUCCEEDED, SubmittedAt: at, StartedAt: at, FinishedAt: at,
				Master: "master", Epoch: 2, Submitter: "bench", Via: messages.ViaExec, Stdout: out,
			})
		}
		b, err := proto.Marshal(&recs)
		if err != nil {
			return "", err
		}
		msg, err := nc.RequestWithContext(ctx, messages.SubjectJobRecord, b)
		if err != nil {
			return "", fmt.Errorf("store jobs: %w", err)
		}
		var ack messages.JobRecordsAck
		if err := proto.Unmarshal(msg.Data, &ack); err != nil || ack.Error != "" {
			return "", fmt.Errorf("store jobs: %v %s", err, ack.Error)
		}
	}
	return middle, nil
}

// timeGet fetches url five times and returns the median time, request to
// last byte, in milliseconds.
func timeGet(ctx context.Context, url string) (float64, error) {
	var times []time.Duration
	for range 5 {
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		t0 := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		if err != nil {
			return 0, err
		}
		times = append(times, time.Since(t0))
	}
	slices.Sort(times)
	return ms(times[len(times)/2]), nil
}

// timeNode runs `node ARGS…` against the cluster five times and returns
// the median wall time, process start to exit, in milliseconds.
func (c *cluster) timeNode(ctx context.Context, args ...string) (float64, error) {
	return c.timeNodeAs(ctx, append(args, "--broker-addr="+c.addr)...)
}

// timeNodeAs is timeNode with ARGS saying how to find the broker.
func (c *cluster) timeNodeAs(ctx context.Context, args ...string) (float64, error) {
	var times []time.Duration
	for range 5 {
		cmd := exec.CommandContext(ctx, c.cfg.Bins.Node, args...)
		t0 := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("node %s: %w: %s", strings.Join(args, " "), err, out)
		}
		times = append(times, time.Since(t0))
	}
	slices.Sort(times)
	return ms(times[len(times)/2]), nil
}
