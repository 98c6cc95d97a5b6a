package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"baton/bus"
	"baton/history"
	"baton/messages"
)

// jobs runs `node jobs --json --limit 1000 ARGS...` and returns the jobs.
func (c *cluster) jobs(args ...string) []messages.JobSummary {
	c.t.Helper()
	p := start(c.t, "jobs", bins.node, procOpts{}, append([]string{"jobs", "--json", "--limit=1000", "--broker-addr=" + c.addr}, args...)...)
	if code := p.wait(20 * time.Second); code != 0 {
		c.t.Fatalf("node jobs exited %d: %s", code, p.stderr.String())
	}
	var jobs []messages.JobSummary
	for line := range strings.Lines(p.stdout.String()) {
		var j messages.JobSummary
		if err := json.Unmarshal([]byte(line), &j); err != nil {
			c.t.Fatalf("node jobs --json printed %q: %v", line, err)
		}
		jobs = append(jobs, j)
	}
	return jobs
}

// jobState waits until job id is in state, and returns its record.
func (c *cluster) jobState(id, state string, timeout time.Duration) messages.JobSummary {
	c.t.Helper()
	var got messages.JobSummary
	eventually(c.t, timeout, fmt.Sprintf("job %s %s", id, state), func() bool {
		for _, j := range c.jobs() {
			if j.ID == id {
				got = j
				return j.State == state
			}
		}
		return false
	})
	return got
}

// execJSON runs `node exec --json ARGS...` and returns its result.
func (c *cluster) execJSON(args ...string) (messages.ResultJSON, int) {
	c.t.Helper()
	p := start(c.t, "exec", bins.node, procOpts{}, append([]string{"exec", "--json", "--broker-addr=" + c.addr}, args...)...)
	code := p.wait(30 * time.Second)
	var res messages.ResultJSON
	if err := json.Unmarshal([]byte(p.stdout.String()), &res); err != nil {
		c.t.Fatalf("node exec --json printed %q (stderr %q): %v", p.stdout.String(), p.stderr.String(), err)
	}
	return res, code
}

// Every state is reached on purpose, and each job is listed with what
// its requester saw; the filters pick what they say.
func TestHistoryStates(t *testing.T) {
	t.Parallel() // mostly waiting on a 5 s timeout
	c := newCluster(t)
	w := c.watch()
	c.node("alpha", 10, procOpts{}, "--serve", "--max-exec-timeout=1m")
	w.waitMaster("alpha", time.Time{}, 10*time.Second)

	var timedOut messages.ResultJSON
	var wg sync.WaitGroup
	wg.Go(func() { timedOut, _ = c.execJSON("--", "sleep 10") }) // the default 5 s timeout
	succeeded, _ := c.execJSON("--", "true")
	failed, _ := c.execJSON("--", "echo needle; false")
	rejected, code := c.execJSON("--timeout=2m", "--", "echo never")
	if code != 125 || rejected.Job == "" {
		t.Errorf("over the cap: exit %d job %q, want 125 and a job", code, rejected.Job)
	}
	cancel := start(t, "exec", bins.node, procOpts{}, "exec", "--json", "--broker-addr="+c.addr, "--", "sleep 20")
	time.Sleep(time.Second)
	cancel.signal(syscall.SIGINT)
	if code := cancel.wait(10 * time.Second); code != 130 {
		t.Errorf("cancelled exec exited %d, want 130", code)
	}
	wg.Wait()

	want := map[string]string{succeeded.Job: "succeeded", failed.Job: "failed", timedOut.Job: "timed_out", rejected.Job: "rejected"}
	jobs := c.jobs()
	got := map[string]messages.JobSummary{}
	for _, j := range jobs {
		got[j.ID] = j
	}
	for id, state := range want {
		if j, ok := got[id]; !ok || j.State != state || j.Master != "alpha" || j.Via != "exec" || j.SubmittedAt == nil {
			t.Errorf("job %s: got %+v, want %s on alpha via exec", id, j, state)
		}
	}
	if j := got[failed.Job]; j.ExitCode != 1 || j.FinishedAt == nil || j.StartedAt == nil {
		t.Errorf("failed job: %+v, want exit 1 with start and end", j)
	}
	if j := got[timedOut.Job]; !j.TimedOut || j.DurationMs < 4900 {
		t.Errorf("timed-out job: %+v, want timed out after 5 s", j)
	}
	if n := len(c.jobs("--state=cancelled")); n != 1 {
		t.Errorf("cancelled jobs: %d, want 1", n)
	}
	if len(jobs) != 5 || jobs[0].ID < jobs[len(jobs)-1].ID {
		t.Errorf("got %d jobs, want 5, newest first", len(jobs))
	}

	// Filters.
	if j := c.jobs("--grep=needle"); len(j) != 1 || j[0].ID != failed.Job {
		t.Errorf("--grep needle (in the output of one): got %v", j)
	}
	if j := c.jobs("--state=failed", "--node=alpha"); len(j) != 1 {
		t.Errorf("--state failed --node alpha: got %d jobs, want 1", len(j))
	}
	if j := c.jobs("--node=nobody"); len(j) != 0 {
		t.Errorf("--node nobody: got %d jobs, want 0", len(j))
	}
	if j := c.jobs("--limit=2"); len(j) != 2 {
		t.Errorf("--limit 2: got %d jobs", len(j))
	}
	if j := c.jobs("--since=1ms"); len(j) != 0 {
		t.Errorf("--since 1ms: got %d jobs, want 0", len(j))
	}

	// One job, and an unknown one.
	p := start(t, "job", bins.node, procOpts{}, "job", "--broker-addr="+c.addr, failed.Job)
	if code := p.wait(10 * time.Second); code != 0 || p.stdout.String() != "needle\n" || !strings.Contains(p.stderr.String(), "job "+failed.Job+": failed (exit 1") {
		t.Errorf("node job: exit %d, stdout %q, stderr %q", code, p.stdout.String(), p.stderr.String())
	}
	p = start(t, "job", bins.node, procOpts{}, "job", "--broker-addr="+c.addr, "0000000000zzzzz")
	if code := p.wait(10 * time.Second); code != 1 || strings.Count(p.stderr.String(), "\n") != 1 || !strings.Contains(p.stderr.String(), "no such job") {
		t.Errorf("unknown job: exit %d, stderr %q; want 1 and one line", code, p.stderr.String())
	}
}

// A master killed while it runs a command loses the job within a second of
// the loss announcement; one that hangs and comes back reports how the
// command really ended, and the record keeps a note of the loss.
func TestHistoryLostJobs(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	w := c.watch()
	alpha := c.node("alpha", 100, procOpts{}, "--serve")
	beta := c.node("beta", 10, procOpts{}, "--serve")
	w.waitMaster("alpha", time.Time{}, 10*time.Second)
	c.waitMembers(2)

	killed := start(t, "exec", bins.node, procOpts{}, "exec", "--json", "--broker-addr="+c.addr, "--", "sleep 3")
	var running messages.JobSummary
	eventually(t, 10*time.Second, "a running job", func() bool {
		j := c.jobs("--state=running")
		if len(j) == 1 {
			running = j[0]
		}
		return len(j) == 1
	})
	t0 := time.Now()
	alpha.signal(syscall.SIGKILL)
	at, _ := w.waitMaster("beta", t0, 10*time.Second)
	lost := c.jobState(running.ID, "lost", 5*time.Second)
	if lost.FinishedAt == nil || lost.FinishedAt.Sub(at) > time.Second || !strings.Contains(lost.Error, "alpha") {
		t.Errorf("lost job: %+v, want lost within 1 s of %v, naming alpha", lost, at)
	}
	killed.wait(20 * time.Second)

	// beta hangs while it runs a command, is declared lost, comes back.
	c.node("gamma", 5, procOpts{}, "--serve")
	c.waitMembers(2)
	exec := start(t, "exec", bins.node, procOpts{}, "exec", "--json", "--timeout=20s", "--broker-addr="+c.addr, "--", "sleep 6; echo finished")
	eventually(t, 10*time.Second, "a running job on beta", func() bool {
		j := c.jobs("--state=running", "--node=beta")
		if len(j) == 1 {
			running = j[0]
		}
		return len(j) == 1
	})
	beta.signal(syscall.SIGSTOP)
	c.jobState(running.ID, "lost", 10*time.Second)
	beta.signal(syscall.SIGCONT)
	back := c.jobState(running.ID, "succeeded", 15*time.Second)
	if !strings.Contains(back.Note, "lost") {
		t.Errorf("returned job: note %q, want one saying its master was lost", back.Note)
	}
	exec.wait(20 * time.Second)
}

// Every command whose result reached its requester is in the history after
// the broker is killed with kill -9 and restarted while commands stream.
func TestHistorySurvivesBrokerKill(t *testing.T) {
	c := newCluster(t)
	w := c.watch()
	c.node("alpha", 10, procOpts{}, "--serve")
	w.waitMaster("alpha", time.Time{}, 10*time.Second)
	sub := c.node("submitter", 1, procOpts{stdin: true}, "--json")
	c.waitMembers(2)
	const total = 200
	for i := range total {
		sub.send(fmt.Sprintf("echo line-%d", i))
		time.Sleep(10 * time.Millisecond)
		if i == total/2 {
			c.broker.signal(syscall.SIGKILL)
			c.broker.wait(5 * time.Second)
			c.startBroker()
		}
	}
	sub.closeStdin()
	if code := sub.wait(60 * time.Second); code != 0 {
		t.Fatalf("submitter exited %d: %s", code, sub.stderr.String())
	}
	received := map[string]messages.ResultJSON{}
	for _, r := range jsonResults(t, sub.stdout.String()) {
		if r.Error == "" && r.ExitCode == 0 {
			received[r.Job] = r
		}
	}
	nc, err := bus.Connect(context.Background(), c.conn("history-check"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	missing := 0
	eventually(t, 15*time.Second, "every received result in the history", func() bool {
		missing = 0
		for id, r := range received {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			job, err := history.Get(ctx, nc, id)
			cancel()
			if err != nil || job.State != "succeeded" || job.Stdout != r.Stdout || job.Cmd != r.Cmd {
				missing++
			}
		}
		return missing == 0
	})
	t.Logf("%d of %d results received; %d missing from the history after kill -9 of the broker", len(received), total, missing)
	if len(received) < total/2 {
		t.Errorf("only %d of %d results received", len(received), total)
	}
}

// Finished jobs expire by age and by size; running ones stay.
func TestHistoryRetention(t *testing.T) {
	t.Parallel()
	t.Run("age", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t, "--history-max-age=2s")
		w := c.watch()
		c.node("alpha", 10, procOpts{}, "--serve")
		w.waitMaster("alpha", time.Time{}, 10*time.Second)
		done, _ := c.execJSON("--", "true")
		slow := start(t, "exec", bins.node, procOpts{}, "exec", "--timeout=8s", "--broker-addr="+c.addr, "--", "sleep 6")
		eventually(t, 10*time.Second, "the finished job expired", func() bool {
			for _, j := range c.jobs() {
				if j.ID == done.Job {
					return false
				}
			}
			return true
		})
		if j := c.jobs("--state=running"); len(j) != 1 {
			t.Errorf("running jobs after the finished one expired: %d, want 1", len(j))
		}
		slow.wait(20 * time.Second)
	})
	t.Run("bytes", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t, "--history-max-bytes=20KiB")
		w := c.watch()
		c.node("alpha", 10, procOpts{}, "--serve")
		w.waitMaster("alpha", time.Time{}, 10*time.Second)
		var last messages.ResultJSON
		for range 10 {
			last, _ = c.execJSON("--", "head -c 4000 /dev/zero | tr '\\0' x")
		}
		eventually(t, 10*time.Second, "the oldest jobs removed", func() bool {
			n := len(c.jobs())
			return n >= 3 && n <= 5
		})
		if j := c.jobs("--limit=1"); len(j) != 1 || j[0].ID != last.Job {
			t.Errorf("newest job %v, want %s kept", j, last.Job)
		}
	})
}
