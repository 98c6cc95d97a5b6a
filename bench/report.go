package bench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Targets and anchors the figures are judged by.
const (
	targetRoundTripRatio  = 1.3
	targetThroughputRatio = 0.9
	targetKillMs          = 50
	targetHangMs          = 1000 + 200 // heartbeat timeout + 200 ms
	targetPreemptMs       = 50
	targetBrokerRestartMs = 3000
	targetAllSeenMs       = 200
	targetBrokerCPU       = 1.0
)

var failoverTargets = map[string]struct {
	ms     float64
	anchor string
}{
	"kill -9":                  {targetKillMs, "etcd election timeout 1 s; NATS-based elections 0.5–60 s"},
	"SIGSTOP (hang)":           {targetHangMs, "Kubernetes leader election 15 s; Consul lock 15 s + 15 s lock delay"},
	"SIGTERM (leave)":          {targetKillMs, "etcd election timeout 1 s"},
	"preemption":               {targetPreemptMs, "etcd election timeout 1 s"},
	"broker restart (kill -9)": {targetBrokerRestartMs, "NATS-based elections 0.5–60 s"},
}

// judge says which targets the figures meet.
func (r *Report) judge() map[string]bool {
	t := map[string]bool{
		"round trip p50 ≤ 1.3 × local": r.RoundTrip.RatioP50 <= targetRoundTripRatio,
		"throughput ≥ 0.9 × local":     r.Throughput.Ratio >= targetThroughputRatio,
		"credentials and TLS cost ≤ 10 %": r.Security.RoundTripCost <= targetSecurityCost &&
			r.Security.ThroughputCost <= targetSecurityCost,
	}
	hi := r.History
	t["history costs ≤ 5 %"] = hi.RoundTripCost <= targetHistoryCost && hi.ThroughputCost <= targetHistoryCost
	if hi.Jobs >= 100_000 {
		t["node jobs with 100,000 jobs < 200 ms"] = hi.JobsMs < targetJobsMs
		t["node jobs --grep with 100,000 jobs < 2 s"] = hi.GrepMs < targetGrepMs
		t["Jobs page with 100,000 jobs < 200 ms (first, deep, failed only)"] = max(hi.PageMs, hi.DeepPageMs, hi.FailedPageMs) < targetPageMs
	}
	t[fmt.Sprintf("live output line at the requester ≤ %d ms", targetLineMs)] = r.Interactive.LineMaxMs <= targetLineMs
	t[fmt.Sprintf("cancel to the process gone ≤ %d ms", targetCancelMs)] = r.Interactive.CancelMaxMs <= targetCancelMs
	for _, f := range r.Failover {
		if tg, ok := failoverTargets[f.Kind]; ok {
			t[fmt.Sprintf("failover %s ≤ %v ms", f.Kind, tg.ms)] = f.MaxMs <= tg.ms
		}
	}
	ds := r.Dashboards
	t[fmt.Sprintf("%d dashboards: idle broker CPU + < %.0f %% of a core", dashboardTabs, 100*targetDashboardIdleCPU)] = ds.IdleCPUCost < targetDashboardIdleCPU
	t[fmt.Sprintf("%d dashboards: round trip cost ≤ %.0f %%", dashboardTabs, 100*targetDashboardRTCost)] = ds.RoundTripCost <= targetDashboardRTCost
	for _, s := range r.Scale {
		if s.Members == 5000 && s.NotReached != "" {
			t["5,000 members: broker under one core"] = false
			t["5,000 members: new master seen by all ≤ 200 ms"] = false
		}
		if s.Members == 5000 && s.NotReached == "" {
			t["5,000 members: broker under one core"] = s.BrokerCPU < targetBrokerCPU
			t["5,000 members: new master seen by all ≤ 200 ms"] = s.AllSeenMs <= targetAllSeenMs
		}
	}
	if ms := r.Membership; len(ms.SlotMs) > 0 {
		t[fmt.Sprintf("discovery answered ≤ %d ms", targetDiscoverMs)] = ms.DiscoverMs-ms.AddrMs <= targetDiscoverMs
		t[fmt.Sprintf("a waiting node joins ≤ %d ms after a slot frees", targetSlotMs)] = ms.SlotMaxMs <= targetSlotMs
	}
	return t
}

func mark(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

// WriteTable prints the report as Markdown tables.
func (r *Report) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "Machine: %s. Quick run: %v.\n\n", r.Machine, r.Quick)
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	row := func(cells ...string) { fmt.Fprintln(tw, "| "+strings.Join(cells, "\t| ")+"\t|") }
	rule := func(n int) { row(strings.Split(strings.Repeat("---,", n), ",")[:n]...) }

	rt := r.RoundTrip
	row("round trip of `true`", "p50", "p99", "target", "")
	rule(5)
	row("local `sh -c true`", fmt.Sprintf("%.3f ms", rt.LocalP50Ms), fmt.Sprintf("%.3f ms", rt.LocalP99Ms), "floor", "")
	row("through the cluster", fmt.Sprintf("%.3f ms", rt.ClusterP50Ms), fmt.Sprintf("%.3f ms", rt.ClusterP99Ms), "", "")
	row("ratio (p50)", fmt.Sprintf("%.2f ×", rt.RatioP50), "", "≤ 1.3 ×", mark(rt.RatioP50 <= targetRoundTripRatio))
	tw.Flush()
	fmt.Fprintf(w, "\n%d samples each, interleaved.\n\n", rt.Samples)

	// The same cluster measured both ways, b against a, in one run.
	costs := func(what, a, b string, aP50, bP50, aRate, bRate, rtCost, tpCost, target float64, samples int) {
		row(what, "round trip p50", "commands/s, 8 workers", "target", "")
		rule(5)
		row(a, fmt.Sprintf("%.3f ms", aP50), fmt.Sprintf("%.0f", aRate), "floor", "")
		row(b, fmt.Sprintf("%.3f ms", bP50), fmt.Sprintf("%.0f", bRate), "", "")
		row("cost", fmt.Sprintf("%+.1f %%", 100*rtCost), fmt.Sprintf("%+.1f %%", -100*tpCost), fmt.Sprintf("≤ %.0f %%", 100*target),
			mark(rtCost <= target && tpCost <= target))
		tw.Flush()
		fmt.Fprintf(w, "\nThe same cluster both ways, %d round trips each, interleaved.\n\n", samples)
	}
	sec := r.Security
	costs("credentials and TLS", "off (--auth=none)", "on (--auth=required, TLS)", sec.PlainP50Ms, sec.SecureP50Ms,
		sec.PlainPerSecond, sec.SecurePerSecond, sec.RoundTripCost, sec.ThroughputCost, targetSecurityCost, sec.Samples)
	hi := r.History
	costs("job history", "off (--no-history)", "on (the default)", hi.OffP50Ms, hi.OnP50Ms,
		hi.OffPerSecond, hi.OnPerSecond, hi.RoundTripCost, hi.ThroughputCost, targetHistoryCost, hi.Samples)
	row(fmt.Sprintf("history with %d jobs stored", hi.Jobs), "median of 5", "target", "")
	rule(4)
	judged := func(ms, target float64) string {
		if hi.Jobs < 100_000 {
			return "(judged at 100,000)"
		}
		return mark(ms < target)
	}
	row("`node jobs` (process start to exit)", fmt.Sprintf("%.0f ms", hi.JobsMs), fmt.Sprintf("< %d ms", targetJobsMs), judged(hi.JobsMs, targetJobsMs))
	row("`node jobs --grep` matching none (every record read)", fmt.Sprintf("%.0f ms", hi.GrepMs), fmt.Sprintf("< %d ms", targetGrepMs), judged(hi.GrepMs, targetGrepMs))
	row("dashboard Jobs page, first 50 (request to last byte)", fmt.Sprintf("%.0f ms", hi.PageMs), fmt.Sprintf("< %d ms", targetPageMs), judged(hi.PageMs, targetPageMs))
	row("Jobs page half-way through the history (`?before=ID`)", fmt.Sprintf("%.0f ms", hi.DeepPageMs), fmt.Sprintf("< %d ms", targetPageMs), judged(hi.DeepPageMs, targetPageMs))
	row("Jobs page, failed only, when none failed (every job looked at)", fmt.Sprintf("%.0f ms", hi.FailedPageMs), fmt.Sprintf("< %d ms", targetPageMs), judged(hi.FailedPageMs, targetPageMs))
	row("broker restart → history answering again", fmt.Sprintf("%.0f ms", hi.LoadMs), "", "")
	tw.Flush()
	fmt.Fprintf(w, "\nStored through jobs.record in batches of 1,000 in %.1f s.\n\n", hi.StoreSeconds)

	th := r.Throughput
	row(fmt.Sprintf("throughput, %d workers", th.Workers), "commands/s", "target", "")
	rule(4)
	row("local `sh -c true`", fmt.Sprintf("%.0f", th.LocalPerSecond), "floor", "")
	row("through the cluster", fmt.Sprintf("%.0f", th.ClusterPerSecond), "", "")
	row("ratio", fmt.Sprintf("%.2f ×", th.Ratio), "≥ 0.9 ×", mark(th.Ratio >= targetThroughputRatio))
	tw.Flush()
	fmt.Fprintln(w)

	in := r.Interactive
	row("node exec, interactive", "p50", "max", "target", "")
	rule(5)
	row("line written → read, local pipe", fmt.Sprintf("%.1f ms", in.LocalLineP50Ms), "", "floor", "")
	row("line written on the master → at the requester", fmt.Sprintf("%.1f ms", in.LineP50Ms), fmt.Sprintf("%.1f ms", in.LineMaxMs),
		fmt.Sprintf("≤ %d ms", targetLineMs), mark(in.LineMaxMs <= targetLineMs))
	row("kill of a local process group → gone", fmt.Sprintf("%.1f ms", in.LocalKillP50Ms), "", "floor", "")
	row("cancel → the master's process gone", fmt.Sprintf("%.1f ms", in.CancelP50Ms), fmt.Sprintf("%.1f ms", in.CancelMaxMs),
		fmt.Sprintf("≤ %d ms", targetCancelMs), mark(in.CancelMaxMs <= targetCancelMs))
	row("cancel → the cancelled result", fmt.Sprintf("%.1f ms", in.CancelToResult), "", "", "")
	tw.Flush()
	fmt.Fprintf(w, "\n%d lines (%d per command, 20 ms apart) and %d cancels of `sleep 30`.\n\n", in.Lines, in.LinesPerCommand, in.Cancels)

	row("failover (client-observed)", "median", "max", "trials", "target", "", "anchor")
	rule(7)
	for _, f := range r.Failover {
		tg := failoverTargets[f.Kind]
		row(f.Kind, fmt.Sprintf("%.0f ms", f.MedianMs), fmt.Sprintf("%.0f ms", f.MaxMs), fmt.Sprint(len(f.TrialsMs)),
			fmt.Sprintf("≤ %.0f ms", tg.ms), mark(f.MaxMs <= tg.ms), tg.anchor)
	}
	tw.Flush()
	fmt.Fprintln(w)

	row("members", "broker CPU", "broker RSS", "loss → new master.current", "loss → seen by all", "")
	rule(6)
	for _, s := range r.Scale {
		if s.NotReached != "" {
			row(fmt.Sprint(s.Members), "not reached", "", "", "", s.NotReached)
			continue
		}
		judged := ""
		if s.Members == 5000 {
			judged = fmt.Sprintf("CPU < 1 core: %s; seen by all ≤ 200 ms: %s", mark(s.BrokerCPU < targetBrokerCPU), mark(s.AllSeenMs <= targetAllSeenMs))
		}
		row(fmt.Sprint(s.Members), fmt.Sprintf("%.0f %% of a core", s.BrokerCPU*100), fmt.Sprintf("%.0f MB", s.BrokerRSSMB),
			fmt.Sprintf("%.1f ms", s.AnnounceMs), fmt.Sprintf("%.1f ms", s.AllSeenMs), judged)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nIdle RSS: broker %.1f MB, node %.1f MB.\n\n", r.Idle.BrokerRSSMB, r.Idle.NodeRSSMB)

	ds := r.Dashboards
	row(fmt.Sprintf("%d open dashboards (Jobs page: page, script, event stream)", ds.Tabs), "broker CPU, idle", "target", "")
	rule(4)
	row("none open", fmt.Sprintf("%.2f %% of a core", 100*ds.IdleCPU), "floor", "")
	row(fmt.Sprintf("%d open", ds.Tabs), fmt.Sprintf("%.2f %% of a core", 100*ds.TabsIdleCPU), "", "")
	row("cost", fmt.Sprintf("%+.2f points", 100*ds.IdleCPUCost), fmt.Sprintf("< %.0f points", 100*targetDashboardIdleCPU), mark(ds.IdleCPUCost < targetDashboardIdleCPU))
	tw.Flush()
	fmt.Fprintln(w)
	row("exec while they watch", "round trip p50", "commands/s, 8 workers", "target", "")
	rule(5)
	row("no dashboard", fmt.Sprintf("%.3f ms", ds.OffP50Ms), fmt.Sprintf("%.0f", ds.OffPerSecond), "floor", "")
	row(fmt.Sprintf("%d dashboards", ds.Tabs), fmt.Sprintf("%.3f ms", ds.OnP50Ms), fmt.Sprintf("%.0f", ds.OnPerSecond), "", "")
	row("cost", fmt.Sprintf("%+.1f %%", 100*ds.RoundTripCost), fmt.Sprintf("%+.1f %%", -100*ds.ThroughputCost),
		fmt.Sprintf("round trip ≤ %.0f %%", 100*targetDashboardRTCost), mark(ds.RoundTripCost <= targetDashboardRTCost))
	tw.Flush()
	fmt.Fprintf(w, "\nTwo like clusters, %d round trips each, interleaved; the dashboards read %d events meanwhile.\n\n", ds.Samples, ds.Events)

	fl := r.Files
	row(fmt.Sprintf("files, %d MiB of random data", fl.Bytes>>20), "MB/s", "target", "")
	rule(4)
	row("local copy (same disk, no sync)", fmt.Sprintf("%.0f", fl.LocalMBs), "floor", "")
	row("input sent (`--file`, until the master ran `true` with it)", fmt.Sprintf("%.0f", fl.SendMBs), "", "")
	row("output returned (`--collect`, until saved on the requester)", fmt.Sprintf("%.0f", fl.ReturnMBs), "", "")
	tw.Flush()
	fmt.Fprintf(w, "\nMedian of %d; each through the broker's object store (pack, SHA-256, 1 MiB pieces, unpack).\n\n", fl.Trials)

	ms := r.Membership
	row("membership", "time", "target", "")
	rule(4)
	row("`node status --broker-addr` (process start to exit)", fmt.Sprintf("%.1f ms", ms.AddrMs), "floor", "")
	row("`node status --discover` (the same, finding the broker first)", fmt.Sprintf("%.1f ms", ms.DiscoverMs), "", "")
	row("discovery's cost", fmt.Sprintf("%+.1f ms", ms.DiscoverMs-ms.AddrMs), fmt.Sprintf("≤ %d ms", targetDiscoverMs), mark(ms.DiscoverMs-ms.AddrMs <= targetDiscoverMs))
	row("SIGTERM of the member → the waiting node admitted (max)", fmt.Sprintf("%.0f ms", ms.SlotMaxMs), fmt.Sprintf("≤ %d ms", targetSlotMs), mark(ms.SlotMaxMs <= targetSlotMs))
	tw.Flush()
	fmt.Fprintf(w, "\nDiscovery on loopback, median of 5; the slot with --max-members=1, %d trials (%v ms).\n", len(ms.SlotMs), ms.SlotMs)
}
