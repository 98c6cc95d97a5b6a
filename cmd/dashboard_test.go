package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"baton/auth"
	"baton/messages"
)

// browser starts a headless Chromium (Debian's chromium package, which
// .ci/run installs) and returns a tab's context; the browser is stopped
// when the test ends.
func browser(t testing.TB) context.Context {
	t.Helper()
	var path string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless_shell"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		t.Fatal("no Chromium to drive: install Debian's chromium package (apt-get install chromium), as .ci/run does")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		// Root in a container has no user namespace for the sandbox.
		chromedp.NoSandbox,
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("lang", "en-US"),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancel()
		cancelAlloc() // waits for the browser to exit
	})
	if err := chromedp.Run(ctx); err != nil {
		t.Fatalf("start chromium %s: %v", path, err)
	}
	return ctx
}

// screenshot saves the page as build/screenshots/NAME.png: the test's
// artifacts, and what docs/ shows.
func screenshot(t testing.TB, ctx context.Context, name string) {
	t.Helper()
	dir := filepath.Join("..", "build", "screenshots")
	var png []byte
	if err := chromedp.Run(ctx, chromedp.FullScreenshot(&png, 100)); err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// run runs actions in the tab, failing the test if they do not finish
// within timeout.
func run(t testing.TB, ctx context.Context, timeout time.Duration, what string, actions ...chromedp.Action) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := chromedp.Run(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// text is the trimmed text of the first element matching a CSS selector.
func text(t testing.TB, ctx context.Context, sel string) string {
	t.Helper()
	var s string
	run(t, ctx, 10*time.Second, "read "+sel, chromedp.Text(sel, &s, chromedp.ByQuery))
	return strings.TrimSpace(s)
}

// exists reports whether a CSS selector matches anything on the page.
func exists(t testing.TB, ctx context.Context, sel string) bool {
	t.Helper()
	var n int
	run(t, ctx, 10*time.Second, "count "+sel, chromedp.Evaluate(fmt.Sprintf("document.querySelectorAll(%q).length", sel), &n))
	return n > 0
}

// signIn signs the tab in with token through the sign-in page.
func signIn(t testing.TB, ctx context.Context, base, token string) {
	t.Helper()
	run(t, ctx, 10*time.Second, "sign in",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible("#token", chromedp.ByQuery),
		chromedp.SendKeys("#token", token, chromedp.ByQuery),
		chromedp.Submit("#token", chromedp.ByQuery),
		chromedp.WaitVisible("#master", chromedp.ByQuery),
	)
}

// apiExec runs cmd through POST /api/exec with a bearer token.
func apiExec(t testing.TB, base, token, cmd string) messages.ResultJSON {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"cmd": cmd})
	req, _ := http.NewRequest("POST", base+"/api/exec", strings.NewReader(string(body)))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var res messages.ResultJSON
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /api/exec %q: %d %v", cmd, resp.StatusCode, err)
	}
	return res
}

// The dashboard, in a real browser, against real processes with
// credentials required: an admin signs in and sees the master; the
// master is killed and the page names its successor within a second,
// without a reload; `echo hello` runs from the Run page and its output
// appears; the jobs are filtered to failed only in one click; a job with
// 5 MB of output shows its head and tail under a banner; a watch token
// finds no way to run anything.
func TestDashboard(t *testing.T) {
	httpAddr := freeAddr(t)
	c := newCluster(t, "--auth=required", "--http="+httpAddr)
	base := "http://" + httpAddr
	creds := func(r auth.Role) string { return filepath.Join(auth.Dir(c.dataDir), auth.FileName(r)) }
	token := func(r auth.Role) string {
		b, err := os.ReadFile(filepath.Join(auth.Dir(c.dataDir), auth.TokenFileName(r)))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	w := c.watchAs(creds(auth.Watch))
	alpha := c.node("alpha", 100, procOpts{}, "--serve", "--credentials="+creds(auth.Node))
	c.node("beta", 10, procOpts{}, "--serve", "--credentials="+creds(auth.Node))
	w.waitMaster("alpha", time.Time{}, 10*time.Second)
	c.waitMembersAs(2, creds(auth.Watch))
	ctx := browser(t)

	// Cluster: the master, live.
	signIn(t, ctx, base, token(auth.Admin))
	if got := text(t, ctx, "#master"); got != "alpha" {
		t.Fatalf("cluster page names master %q, want alpha", got)
	}
	run(t, ctx, 5*time.Second, "wait for the event stream", chromedp.WaitVisible("#live.on", chromedp.ByQuery))
	screenshot(t, ctx, "cluster")
	var navigations int
	run(t, ctx, 5*time.Second, "mark the page", chromedp.Evaluate(`window.notReloaded = true; performance.getEntriesByType("navigation").length`, &navigations))
	killed := time.Now()
	alpha.signal(syscall.SIGKILL)
	run(t, ctx, 5*time.Second, "see beta master",
		chromedp.Poll(`document.querySelector("#master").textContent.trim() === "beta"`, nil, chromedp.WithPollingInterval(10*time.Millisecond)))
	shown := time.Since(killed)
	var kept bool
	run(t, ctx, 5*time.Second, "check for a reload", chromedp.Evaluate(`window.notReloaded === true`, &kept))
	t.Logf("the page named the new master %v after the kill", shown.Round(time.Millisecond))
	if shown > time.Second || !kept {
		t.Errorf("new master shown %v after the kill (reloaded: %v), want within 1s without a reload", shown, !kept)
	}
	if tl := text(t, ctx, "#timeline"); !strings.Contains(tl, "alpha lost: connection closed") || !strings.Contains(tl, "master beta") {
		t.Errorf("timeline %q, want alpha's loss and beta's election", tl)
	}

	// Run: echo hello, its output live, then its job.
	var stopShown bool
	run(t, ctx, 15*time.Second, "open the Run page",
		chromedp.Navigate(base+"/run"),
		chromedp.WaitVisible("#cmd", chromedp.ByQuery),
		chromedp.Evaluate(`getComputedStyle(document.querySelector("#stop-button")).display !== "none"`, &stopShown))
	if stopShown {
		t.Error("the Run page shows Stop with nothing running")
	}
	run(t, ctx, 15*time.Second, "run echo hello",
		// Two streams, in order: stderr a while after stdout.
		chromedp.SendKeys("#cmd", "echo hello; sleep 0.3; echo from-stderr >&2", chromedp.ByQuery),
		chromedp.Click("#run-button", chromedp.ByQuery),
		chromedp.Poll(`document.querySelector("#output").textContent.includes("hello")`, nil),
		chromedp.WaitVisible(`#result-summary .badge:not(.st-running)`, chromedp.ByQuery),
	)
	if got := text(t, ctx, "#output"); got != "hello\nfrom-stderr" {
		t.Errorf("Run page output %q, want hello and from-stderr", got)
	}
	if got := text(t, ctx, "#output span.err"); got != "from-stderr" {
		t.Errorf("Run page stderr %q, want from-stderr marked as stderr", got)
	}
	if s := text(t, ctx, "#result-summary"); !strings.Contains(s, "succeeded") || !strings.Contains(s, "beta") {
		t.Errorf("Run page result %q, want succeeded on beta", s)
	}
	if !exists(t, ctx, `#result-summary a[href^="/jobs/"]`) {
		t.Error("Run page result links to no job")
	}
	screenshot(t, ctx, "run")

	// Jobs: failed only, in one click.
	failed := apiExec(t, base, token(auth.Admin), "echo about to fail; exit 3")
	big := apiExec(t, base, token(auth.Admin), "head -c 2500000 /dev/zero | tr '\\0' o; head -c 2500000 /dev/zero | tr '\\0' e >&2")
	c.jobStateAs(big.Job, messages.StateSucceeded, creds(auth.Admin))
	run(t, ctx, 15*time.Second, "open the jobs", chromedp.Navigate(base+"/jobs"), chromedp.WaitVisible("#jobs", chromedp.ByQuery))
	run(t, ctx, 15*time.Second, "filter failed only",
		chromedp.Evaluate(`document.body.dataset.before = "click"`, nil),
		chromedp.Click(`a[href*="state=failed"]`, chromedp.ByQuery),
		chromedp.WaitNotPresent(`body[data-before]`, chromedp.ByQuery),
		chromedp.WaitVisible("#jobs", chromedp.ByQuery),
	)
	var loc string
	run(t, ctx, 5*time.Second, "read the URL", chromedp.Location(&loc))
	rows := text(t, ctx, "#jobs tbody")
	if !strings.Contains(loc, "state=failed") || !strings.Contains(rows, failed.Job) || strings.Contains(rows, "succeeded") || strings.Contains(rows, big.Job) {
		t.Errorf("failed only: at %s, rows %q; want job %s and no other", loc, rows, failed.Job)
	}
	run(t, ctx, 10*time.Second, "all jobs", chromedp.Navigate(base+"/jobs"), chromedp.WaitVisible("#jobs", chromedp.ByQuery))
	screenshot(t, ctx, "jobs")

	// Job: 5 MB of output, head and tail under a banner.
	var html string
	run(t, ctx, 15*time.Second, "open the big job",
		chromedp.Navigate(base+"/jobs/"+big.Job),
		chromedp.WaitVisible("pre.output", chromedp.ByQuery),
		chromedp.OuterHTML("html", &html, chromedp.ByQuery),
	)
	banner := text(t, ctx, "p.banner[role=note]")
	if !strings.Contains(banner, "Showing the first") || !strings.Contains(banner, "hidden") {
		t.Errorf("big job's banner %q, want the head/tail banner", banner)
	}
	if len(html) > 1<<20+64<<10 {
		t.Errorf("big job's page holds %d bytes, want at most about 1 MiB", len(html))
	}
	if !exists(t, ctx, `a[href="/api/jobs/`+big.Job+`/stdout"]`) {
		t.Error("big job's page has no download of its stdout")
	}
	screenshot(t, ctx, "job")

	// Re-run, from the failed job's page: the Run page starts it at once.
	run(t, ctx, 15*time.Second, "re-run the failed job",
		chromedp.Navigate(base+"/jobs/"+failed.Job),
		chromedp.WaitVisible(`form[action="/run"] button`, chromedp.ByQuery),
		chromedp.Submit(`form[action="/run"] button`, chromedp.ByQuery),
		chromedp.WaitVisible("#output", chromedp.ByQuery),
		chromedp.Poll(`document.querySelector("#output").textContent.includes("about to fail")`, nil),
		chromedp.WaitVisible(`#result-summary .badge:not(.st-running)`, chromedp.ByQuery),
	)
	if s := text(t, ctx, "#result-summary"); !strings.Contains(s, "failed") || !strings.Contains(s, "3") {
		t.Errorf("re-run's result %q, want failed with exit code 3", s)
	}
	run(t, ctx, 5*time.Second, "read the URL", chromedp.Location(&loc))
	if loc != base+"/run?from="+failed.Job {
		t.Errorf("after a re-run the page is at %s, want %s/run?from=%s (a reload runs nothing)", loc, base, failed.Job)
	}
	var prefilled string
	run(t, ctx, 10*time.Second, "edit and run",
		chromedp.Navigate(base+"/run?from="+failed.Job),
		chromedp.WaitVisible("#cmd", chromedp.ByQuery),
		chromedp.Value("#cmd", &prefilled, chromedp.ByQuery),
	)
	if prefilled != "echo about to fail; exit 3" || exists(t, ctx, "#result-panel:not([hidden])") {
		t.Errorf("edit and run: the form holds %q (or it ran), want the job's command, not run", prefilled)
	}

	// Files: two sent with a command, what it makes brought back, both
	// listed on its job's page.
	dir := t.TempDir()
	in, script := filepath.Join(dir, "in.csv"), filepath.Join(dir, "count.sh")
	if err := os.WriteFile(in, []byte("a,1\nb,2\nc,3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(script, []byte("#!/bin/sh\nwc -l < \"$1\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, ctx, 20*time.Second, "run with files",
		chromedp.Navigate(base+"/run"),
		chromedp.WaitVisible("#cmd", chromedp.ByQuery),
		chromedp.Click(".files-box summary", chromedp.ByQuery),
		chromedp.SetUploadFiles("#files", []string{in, script}, chromedp.ByQuery),
		chromedp.SendKeys("#collect", "out/*", chromedp.ByQuery),
		// Browsers send no modes: the script runs through sh.
		chromedp.SendKeys("#cmd", "mkdir out && sh count.sh in.csv > out/count.txt && cat out/count.txt", chromedp.ByQuery),
		chromedp.Click("#run-button", chromedp.ByQuery),
		chromedp.WaitVisible("#outputs-link", chromedp.ByQuery),
	)
	if got, s := text(t, ctx, "#output"), text(t, ctx, "#result-summary"); got != "3" || !strings.Contains(s, "succeeded") || !strings.Contains(s, "1 file (zip)") {
		t.Errorf("run with files: output %q, result %q; want 3, succeeded, 1 file brought back", got, s)
	}
	screenshot(t, ctx, "run-files")
	var filesJob string
	run(t, ctx, 15*time.Second, "open the job with files",
		chromedp.AttributeValue(`#result-summary a[href^="/jobs/"]`, "href", &filesJob, nil, chromedp.ByQuery),
		chromedp.Navigate(base+"/api/jobs/0"), // away, then to the job
	)
	run(t, ctx, 15*time.Second, "see its files",
		chromedp.Navigate(base+filesJob),
		chromedp.WaitVisible("#files", chromedp.ByQuery),
	)
	if f := text(t, ctx, "#files"); !strings.Contains(f, "in.csv") || !strings.Contains(f, "count.sh") || !strings.Contains(f, "-rw-r--r--") ||
		!strings.Contains(f, "out/count.txt") || !exists(t, ctx, `#files a[href$="/outputs.zip"]`) {
		t.Errorf("the job's files panel says %q, want in.csv, count.sh, out/count.txt and a download", f)
	}
	screenshot(t, ctx, "job-files")

	// Dark mode follows the browser.
	run(t, ctx, 10*time.Second, "dark mode",
		emulation.SetEmulatedMedia().WithFeatures([]*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}),
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible("#master", chromedp.ByQuery),
	)
	var bg string
	run(t, ctx, 5*time.Second, "read the background", chromedp.Evaluate(`getComputedStyle(document.body).backgroundColor`, &bg))
	if bg != "rgb(20, 21, 23)" {
		t.Errorf("dark mode background %s, want rgb(20, 21, 23)", bg)
	}
	screenshot(t, ctx, "cluster-dark")
	run(t, ctx, 10*time.Second, "light mode", emulation.SetEmulatedMedia().WithFeatures([]*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "light"}}))

	// Watch: everything to see, nothing to run.
	run(t, ctx, 10*time.Second, "sign out", chromedp.Submit(`form[action="/signout"] button`, chromedp.ByQuery), chromedp.WaitVisible("#token", chromedp.ByQuery))
	signIn(t, ctx, base, token(auth.Watch))
	if exists(t, ctx, `a[href="/run"]`) {
		t.Error("a watch session's page has a Run tab")
	}
	run(t, ctx, 10*time.Second, "open a job as watch", chromedp.Navigate(base+"/jobs/"+failed.Job), chromedp.WaitVisible("pre.cmd", chromedp.ByQuery))
	if exists(t, ctx, `form[action="/run"]`) || exists(t, ctx, `a[href^="/run"]`) {
		t.Error("a watch session's job page offers to run it again")
	}
	run(t, ctx, 10*time.Second, "open /run as watch", chromedp.Navigate(base+"/run"), chromedp.WaitVisible("main", chromedp.ByQuery))
	if exists(t, ctx, "#cmd") || !strings.Contains(text(t, ctx, "main"), "may not run commands") {
		t.Error("a watch session's /run has a form, or no refusal")
	}
	run(t, ctx, 10*time.Second, "cluster as watch", chromedp.Navigate(base+"/"), chromedp.WaitVisible("#master", chromedp.ByQuery))
	screenshot(t, ctx, "watch")
}

// waitMembersAs waits until a status read with credential lists n
// members.
func (c *cluster) waitMembersAs(n int, credential string) {
	c.t.Helper()
	eventually(c.t, 10*time.Second, fmt.Sprintf("%d members", n), func() bool {
		p := start(c.t, "status", bins.node, procOpts{}, "status", "--json", "--broker-addr="+c.addr, "--credentials="+credential)
		if p.wait(10*time.Second) != 0 {
			return false
		}
		var st struct{ Members []json.RawMessage }
		return json.Unmarshal([]byte(p.stdout.String()), &st) == nil && len(st.Members) == n
	})
}

// jobStateAs waits until the history, read with credential, holds job id
// in state.
func (c *cluster) jobStateAs(id, state, credential string) {
	c.t.Helper()
	eventually(c.t, 10*time.Second, "job "+id+" "+state, func() bool {
		p := start(c.t, "job", bins.node, procOpts{}, "job", id, "--json", "--broker-addr="+c.addr, "--credentials="+credential)
		if p.wait(10*time.Second) != 0 {
			return false
		}
		var j messages.JobSummary
		return json.Unmarshal([]byte(p.stdout.String()), &j) == nil && j.State == state
	})
}
