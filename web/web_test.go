package web_test

import (
	"archive/zip"
	"bufio"
	"context"
	"encoding/json"
	"io"
	mime "mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"baton/agent"
	"baton/auth"
	"baton/broker"
	"baton/broker/brokertest"
	"baton/bus/bustest"
	"baton/election"
	"baton/internal/testlog"
	"baton/messages"
)

// site is a broker with its dashboard, and a master to run commands.
type site struct {
	t    testing.TB
	b    *broker.Broker
	base string
	cfg  broker.Config
	// watch is the watch role's token, when credentials are required.
	watch string
}

func newSite(t testing.TB, mutate func(*broker.Config)) *site {
	t.Helper()
	cfg := brokertest.Config(t)
	cfg.Web.StatusInterval = 200 * time.Millisecond
	if mutate != nil {
		mutate(&cfg)
	}
	b := brokertest.Start(t, cfg)
	s := &site{t: t, b: b, base: "http://" + b.HTTPAddr(), cfg: cfg}
	if cfg.Auth == broker.AuthRequired {
		token, err := os.ReadFile(filepath.Join(auth.Dir(cfg.DataDir), auth.TokenFileName(auth.Watch)))
		if err != nil {
			t.Fatal(err)
		}
		s.watch = strings.TrimSpace(string(token))
	}
	return s
}

// startNode starts a node; with credentials required it uses the node
// role's.
func (s *site) startNode(name string, priority int32) *agent.Node {
	s.t.Helper()
	cfg := agent.DefaultConfig(name)
	cfg.Conn = bustest.ConnConfig(s.t, s.b.Addr())
	if s.cfg.Auth == broker.AuthRequired {
		cfg.Conn.Credentials = filepath.Join(auth.Dir(s.cfg.DataDir), auth.FileName(auth.Node))
		cfg.Conn.InboxPrefix = auth.Node.InboxPrefix()
	}
	cfg.Priority = priority
	cfg.HeartbeatInterval = 75 * time.Millisecond
	cfg.Version = "v9.9.9-test"
	cfg.WorkRoot = s.t.TempDir()
	cfg.Logger = testlog.Logger(s.t).With("node", name)
	n, err := agent.New(cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = n.Close(ctx)
	})
	if err := n.Start(context.Background()); err != nil {
		s.t.Fatal(err)
	}
	s.eventually(5*time.Second, name+" master", func() bool {
		var st election.Status
		code := s.getJSON("/api/status", s.watch, &st)
		return code == http.StatusOK && st.Master != ""
	})
	return n
}

type reply struct {
	code   int
	header http.Header
	body   string
}

// do sends a request; header lines are "Key: value".
func (s *site) do(method, path, body string, header ...string) reply {
	s.t.Helper()
	req, err := http.NewRequest(method, s.base+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	for _, h := range header {
		k, v, _ := strings.Cut(h, ": ")
		if k == "Host" {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, string(b)}
}

func (s *site) getJSON(path, token string, v any) int {
	s.t.Helper()
	var h []string
	if token != "" {
		h = append(h, "Authorization: Bearer "+token)
	}
	r := s.do("GET", path, "", h...)
	if r.code == http.StatusOK {
		if err := json.Unmarshal([]byte(r.body), v); err != nil {
			s.t.Fatalf("GET %s: %v in %s", path, err, r.body)
		}
	}
	return r.code
}

func (s *site) eventually(d time.Duration, what string, ok func() bool) {
	s.t.Helper()
	for deadline := time.Now().Add(d); !ok(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: not within %v", what, d)
		}
	}
}

// job waits until the history holds job id finished.
func (s *site) job(id, token string) messages.Job {
	s.t.Helper()
	var job messages.Job
	s.eventually(5*time.Second, "job "+id+" in the history", func() bool {
		return s.getJSON("/api/jobs/"+id, token, &job) == http.StatusOK && job.Finished()
	})
	return job
}

// The 13 keys of `node exec --json`.
var resultKeys = []string{"cmd", "duration_ms", "epoch", "error", "exit_code", "id", "job", "master", "stderr", "stderr_dropped", "stdout", "stdout_dropped", "timed_out"}

func keysOf(t testing.TB, body string) []string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("%v in %s", err, body)
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Without credentials (a loopback broker), the API needs no sign-in:
// status, exec, the jobs and each job answer, bad input gets a one-line
// 4xx, and nothing from another site's page or host name gets through.
func TestAPI_Open(t *testing.T) {
	s := newSite(t, nil)
	s.startNode("alpha", 10)

	var st election.Status
	if code := s.getJSON("/api/status", "", &st); code != http.StatusOK || st.Master != "alpha" || len(st.Members) != 1 ||
		st.Members[0].Version != "v9.9.9-test" || st.Members[0].HeartbeatAgeMs < 0 || st.Members[0].HeartbeatAgeMs > 1000 {
		t.Fatalf("GET /api/status: %d %+v, want alpha master, version v9.9.9-test, heard within a second", code, st)
	}

	r := s.do("POST", "/api/exec", `{"cmd": "echo hello; echo oops >&2; exit 3"}`)
	var res messages.ResultJSON
	_ = json.Unmarshal([]byte(r.body), &res)
	if r.code != http.StatusOK || res.Stdout != "hello\n" || res.Stderr != "oops\n" || res.ExitCode != 3 || res.Master != "alpha" || !messages.ValidJobID(res.Job) {
		t.Fatalf("POST /api/exec: %d %s", r.code, r.body)
	}
	if keys := keysOf(t, r.body); !slices.Equal(keys, resultKeys) {
		t.Errorf("POST /api/exec keys %v, want %v", keys, resultKeys)
	}
	job := s.job(res.Job, "")
	if job.State != messages.StateFailed || job.Via != messages.ViaWeb || job.Submitter != "web" || job.Stdout != "hello\n" {
		t.Errorf("job %+v, want failed, via web, submitted by web, stdout hello", job)
	}
	ok := s.do("POST", "/api/exec", `{"cmd": "echo fine", "timeout_ms": 2000}`)
	if ok.code != http.StatusOK {
		t.Fatalf("POST /api/exec: %d %s", ok.code, ok.body)
	}
	var okRes messages.ResultJSON
	_ = json.Unmarshal([]byte(ok.body), &okRes)
	s.job(okRes.Job, "")

	var list messages.JobList
	if code := s.getJSON("/api/jobs?state=failed", "", &list); code != http.StatusOK || len(list.Jobs) != 1 || list.Jobs[0].ID != res.Job {
		t.Errorf("GET /api/jobs?state=failed: %d %+v, want job %s alone", code, list, res.Job)
	}
	if code := s.getJSON("/api/jobs?q=fine&limit=5&since=1h", "", &list); code != http.StatusOK || len(list.Jobs) != 1 || list.Jobs[0].ID != okRes.Job {
		t.Errorf("GET /api/jobs?q=fine: %d %+v, want job %s alone", code, list, okRes.Job)
	}
	if code := s.getJSON("/api/jobs?before="+okRes.Job, "", &list); code != http.StatusOK || len(list.Jobs) != 1 || list.Jobs[0].ID != res.Job {
		t.Errorf("GET /api/jobs?before=%s: %d %+v, want the older job alone", okRes.Job, code, list)
	}
	if code := s.getJSON("/api/jobs?before=2000-01-01", "", &list); code != http.StatusOK || len(list.Jobs) != 0 {
		t.Errorf("GET /api/jobs?before=2000-01-01: %d %+v, want none", code, list)
	}
	out := s.do("GET", "/api/jobs/"+strings.ToUpper(res.Job)+"/stdout", "")
	if out.code != http.StatusOK || out.body != "hello\n" || !strings.Contains(out.header.Get("Content-Disposition"), "attachment") {
		t.Errorf("GET /api/jobs/ID/stdout: %d %q %v", out.code, out.body, out.header)
	}

	// Streamed: the output as it comes, the job once the master has it,
	// then the result and the job's state.
	stream := s.do("POST", "/api/exec?stream=1", `{"cmd": "echo one; sleep 0.2; echo two >&2"}`)
	var stdout, errOut, jobLine string
	var last struct {
		Result messages.ResultJSON
		State  string
	}
	for line := range strings.Lines(stream.body) {
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("stream line %q: %v", line, err)
		}
		var v string
		switch {
		case m["stdout"] != nil:
			_ = json.Unmarshal(m["stdout"], &v)
			stdout += v
		case m["stderr"] != nil:
			_ = json.Unmarshal(m["stderr"], &v)
			errOut += v
		case m["job"] != nil:
			_ = json.Unmarshal(m["job"], &jobLine)
		case m["result"] != nil:
			_ = json.Unmarshal([]byte(line), &last)
		}
	}
	if stream.code != http.StatusOK || stdout != "one\n" || errOut != "two\n" || jobLine == "" || last.Result.Job != jobLine || last.State != messages.StateSucceeded {
		t.Errorf("POST /api/exec?stream=1: %d\n%s", stream.code, stream.body)
	}

	for _, c := range []struct {
		name, method, path, body string
		code                     int
		says                     string
	}{
		{"empty command", "POST", "/api/exec", `{"cmd": "  "}`, 400, "no command"},
		{"unknown field", "POST", "/api/exec", `{"cmd": "ls", "shell": "bash"}`, 400, `unknown field "shell"`},
		{"not JSON", "POST", "/api/exec", `ls`, 400, "not one JSON object"},
		{"two objects", "POST", "/api/exec", `{"cmd": "true"} {"cmd": "reboot"}`, 400, "more follows"},
		{"timeout as text", "POST", "/api/exec", `{"cmd": "ls", "timeout_ms": "5s"}`, 400, "timeout_ms: want a whole number"},
		{"negative timeout", "POST", "/api/exec", `{"cmd": "ls", "timeout_ms": -1}`, 400, "timeout_ms -1"},
		{"long command", "POST", "/api/exec", `{"cmd": "` + strings.Repeat("x", messages.MaxCommandBytes+1) + `"}`, 400, "longer than"},
		{"huge body", "POST", "/api/exec", `{"cmd": "` + strings.Repeat("x", 1<<20) + `"}`, 413, "body larger than"},
		{"unknown state", "GET", "/api/jobs?state=done", "", 400, `state "done"`},
		{"bad limit", "GET", "/api/jobs?limit=0", "", 400, "limit"},
		{"bad since", "GET", "/api/jobs?since=yesterday", "", 400, "since"},
		{"malformed ID", "GET", "/api/jobs/nope", "", 400, "not a job ID"},
		{"unknown job", "GET", "/api/jobs/" + messages.NewJobID(time.Now()), "", 404, "no such job"},
		{"unknown stream", "GET", "/api/jobs/" + res.Job + "/stdin", "", 404, "want stdout, stderr or outputs.zip"},
		{"GET exec", "GET", "/api/exec", "", 405, "takes POST"},
		{"unknown endpoint", "GET", "/api/nodes", "", 404, "no such endpoint"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := s.do(c.method, c.path, c.body)
			var e struct{ Error string }
			_ = json.Unmarshal([]byte(r.body), &e)
			if r.code != c.code || !strings.Contains(e.Error, c.says) || strings.Contains(e.Error, "\n") {
				t.Errorf("%s %s: %d %s, want %d and one line saying %q", c.method, c.path, r.code, r.body, c.code, c.says)
			}
		})
	}

	// Another site's page may not run commands through the browser of
	// someone on this machine, nor may a page of a host name pointed here.
	marker := filepath.Join(t.TempDir(), "ran")
	for _, h := range [][]string{
		{"Origin: http://evil.example", "Content-Type: text/plain"},
		{"Sec-Fetch-Site: cross-site"},
	} {
		if r := s.do("POST", "/api/exec", `{"cmd": "touch `+marker+`"}`, h...); r.code != http.StatusForbidden {
			t.Errorf("POST /api/exec with %v: %d %s, want 403", h, r.code, r.body)
		}
	}
	if r := s.do("GET", "/", "", "Host: rebound.evil.example:8222"); r.code != http.StatusMisdirectedRequest {
		t.Errorf("GET / for host rebound.evil.example: %d, want 421", r.code)
	}
	if r := s.do("POST", "/api/exec", `{"cmd": "touch `+marker+`"}`, "Host: rebound.evil.example"); r.code != http.StatusMisdirectedRequest {
		t.Errorf("POST /api/exec for host rebound.evil.example: %d, want 421", r.code)
	}
	time.Sleep(200 * time.Millisecond)
	if _, err := os.Stat(marker); err == nil {
		t.Error("a refused request ran its command")
	}
	// The same site's page may.
	if r := s.do("POST", "/api/exec", `{"cmd": "true"}`, "Origin: "+s.base, "Sec-Fetch-Site: same-origin"); r.code != http.StatusOK {
		t.Errorf("POST /api/exec from the dashboard's own origin: %d %s", r.code, r.body)
	}
	if r := s.do("GET", "/", ""); r.code != http.StatusOK || !strings.Contains(r.body, "alpha") ||
		!strings.Contains(r.header.Get("Content-Security-Policy"), "default-src 'self'") {
		t.Errorf("GET /: %d %v", r.code, r.header)
	}
}

// With credentials required, the broker makes the dashboard's tokens
// (mode 0600), and each gets its role's rights: watch sees everything
// and runs nothing, submit and admin run commands recorded under their
// role; a session cookie is HttpOnly and SameSite=Strict.
func TestAPI_Tokens(t *testing.T) {
	s := newSite(t, func(c *broker.Config) { c.Auth = broker.AuthRequired })
	s.startNode("alpha", 10)
	tokens := map[auth.Role]string{}
	for _, r := range auth.TokenRoles() {
		path := filepath.Join(auth.Dir(s.cfg.DataDir), auth.TokenFileName(r))
		info, err := os.Stat(path)
		if err != nil || info.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v, want mode 0600", path, info, err)
		}
		b, _ := os.ReadFile(path)
		tokens[r] = strings.TrimSpace(string(b))
	}

	if r := s.do("GET", "/api/status", ""); r.code != http.StatusUnauthorized || !strings.Contains(r.body, "Bearer") {
		t.Errorf("GET /api/status without a token: %d %s, want 401", r.code, r.body)
	}
	if r := s.do("GET", "/api/status", "", "Authorization: Bearer "+tokens[auth.Watch]+"x"); r.code != http.StatusUnauthorized {
		t.Errorf("GET /api/status with a wrong token: %d, want 401", r.code)
	}
	if r := s.do("GET", "/jobs?state=failed&node=alpha", ""); r.code != http.StatusSeeOther ||
		r.header.Get("Location") != "/signin?next="+url.QueryEscape("/jobs?state=failed&node=alpha") {
		t.Errorf("GET /jobs without a session: %d %v, want a redirect to sign in, then back with both filters", r.code, r.header)
	}
	// Monitoring names every client: it needs a token too, but for the
	// health check.
	for path, want := range map[string]int{"/healthz": 200, "/varz": 401, "/connz": 401, "/status": 401} {
		if r := s.do("GET", path, ""); r.code != want {
			t.Errorf("GET %s without a token: %d, want %d", path, r.code, want)
		}
	}
	if r := s.do("GET", "/connz", "", "Authorization: Bearer "+s.watch); r.code != http.StatusOK {
		t.Errorf("GET /connz with watch.token: %d, want 200", r.code)
	}
	// Without credentials the host name is no concern.
	if r := s.do("GET", "/signin", "", "Host: baton.example"); r.code != http.StatusOK {
		t.Errorf("GET /signin for host baton.example: %d", r.code)
	}

	watch := "Authorization: Bearer " + tokens[auth.Watch]
	var st election.Status
	if code := s.getJSON("/api/status", tokens[auth.Watch], &st); code != http.StatusOK || st.Master != "alpha" {
		t.Errorf("watch GET /api/status: %d %+v", code, st)
	}
	if r := s.do("POST", "/api/exec", `{"cmd": "true"}`, watch); r.code != http.StatusForbidden || !strings.Contains(r.body, "watch role may not run") {
		t.Errorf("watch POST /api/exec: %d %s, want 403", r.code, r.body)
	}
	if r := s.do("GET", "/", "", watch); r.code != http.StatusOK || strings.Contains(r.body, `href="/run"`) {
		t.Errorf("watch GET /: %d, want a page without the Run tab", r.code)
	}
	if r := s.do("GET", "/run", "", watch); r.code != http.StatusForbidden || strings.Contains(r.body, "<textarea") {
		t.Errorf("watch GET /run: %d, want 403 without a form", r.code)
	}

	for _, role := range []auth.Role{auth.Submit, auth.Admin} {
		r := s.do("POST", "/api/exec", `{"cmd": "echo by `+string(role)+`"}`, "Authorization: Bearer "+tokens[role])
		var res messages.ResultJSON
		_ = json.Unmarshal([]byte(r.body), &res)
		if r.code != http.StatusOK || res.Stdout != "by "+string(role)+"\n" {
			t.Fatalf("%s POST /api/exec: %d %s", role, r.code, r.body)
		}
		if job := s.job(res.Job, tokens[auth.Watch]); job.Role != string(role) || job.Via != messages.ViaWeb {
			t.Errorf("%s's job %+v, want role %s via web", role, job, role)
		}
	}

	// Sign-in: a cookie for the browser, for that role only.
	bad := s.do("POST", "/signin", url.Values{"token": {"nope"}}.Encode(), "Content-Type: application/x-www-form-urlencoded")
	if bad.code != http.StatusUnauthorized || !strings.Contains(bad.body, "not one of this broker&#39;s tokens") || bad.header.Get("Set-Cookie") != "" {
		t.Errorf("sign in with a wrong token: %d %v", bad.code, bad.header)
	}
	in := s.do("POST", "/signin", url.Values{"token": {tokens[auth.Watch]}, "next": {"/jobs"}}.Encode(), "Content-Type: application/x-www-form-urlencoded")
	cookie := in.header.Get("Set-Cookie")
	if in.code != http.StatusSeeOther || in.header.Get("Location") != "/jobs" ||
		!strings.Contains(cookie, "HttpOnly") || !strings.Contains(cookie, "SameSite=Strict") {
		t.Fatalf("sign in: %d %v", in.code, in.header)
	}
	session := "Cookie: " + strings.Split(cookie, ";")[0]
	if r := s.do("GET", "/api/status", "", session); r.code != http.StatusOK {
		t.Errorf("GET /api/status with the session: %d", r.code)
	}
	if r := s.do("POST", "/api/exec", `{"cmd": "true"}`, session); r.code != http.StatusForbidden {
		t.Errorf("POST /api/exec with a watch session: %d, want 403", r.code)
	}
	// A proxy's Basic authorization leaves the session be.
	if r := s.do("GET", "/api/status", "", session, "Authorization: Basic dXNlcjpwYXNz"); r.code != http.StatusOK {
		t.Errorf("GET /api/status with the session and a proxy's Basic authorization: %d", r.code)
	}
	if r := s.do("GET", "/api/status", "", "Authorization: bearer "+tokens[auth.Watch]); r.code != http.StatusOK {
		t.Errorf("GET /api/status with scheme 'bearer' in lower case: %d", r.code)
	}
	forged := strings.Replace(session, "watch.", "admin.", 1)
	if r := s.do("POST", "/api/exec", `{"cmd": "true"}`, forged); r.code != http.StatusUnauthorized {
		t.Errorf("POST /api/exec with a session whose role was edited: %d, want 401", r.code)
	}
	if r := s.do("POST", "/signin", url.Values{"token": {tokens[auth.Admin]}, "next": {"//evil.example/"}}.Encode(), "Content-Type: application/x-www-form-urlencoded"); r.header.Get("Location") != "/" {
		t.Errorf("sign in with next=//evil.example/: sent to %q, want /", r.header.Get("Location"))
	}
}

// event is one server-sent event.
type event struct {
	id, name, data string
}

// events reads a stream's events until it ends.
func events(body io.Reader, out chan<- event) {
	defer close(out)
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var e event
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if e.name != "" {
				out <- e
			}
			e = event{}
		case strings.HasPrefix(line, "id: "):
			e.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			e.name = line[7:]
		case strings.HasPrefix(line, "data: "):
			e.data = line[6:]
		}
	}
}

// openEvents opens /api/events with the given Last-Event-ID (none when
// empty); the stream ends with the test.
func (s *site) openEvents(last string) <-chan event {
	s.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s.t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", s.base+"/api/events", nil)
	if last != "" {
		req.Header.Set("Last-Event-ID", last)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		s.t.Fatalf("GET /api/events: %d %v", resp.StatusCode, resp.Header)
	}
	ch := make(chan event, 1024)
	go events(resp.Body, ch)
	s.t.Cleanup(func() { resp.Body.Close() })
	return ch
}

// next waits for the next event named one of names, skipping others.
func next(t testing.TB, ch <-chan event, d time.Duration, names ...string) event {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatalf("event stream ended, waiting for %v", names)
			}
			if slices.Contains(names, e.name) {
				return e
			}
		case <-timeout:
			t.Fatalf("no %v event within %v", names, d)
		}
	}
}

// The event stream tells of cluster changes and job states as they
// happen; a client that reconnects with Last-Event-ID gets what it
// missed, and one with another broker start's id is told to reload.
func TestEvents_ResumeAfterReconnect(t *testing.T) {
	s := newSite(t, nil)
	ch := s.openEvents("")
	s.startNode("alpha", 10)
	joined := next(t, ch, 5*time.Second, "cluster")
	if !strings.Contains(joined.data, `"kind":"joined"`) || !strings.Contains(joined.data, `"text":"alpha joined (priority 10)"`) || joined.id == "" {
		t.Errorf("first cluster event %+v, want alpha's join with an id", joined)
	}
	var st election.Status
	for st.Master != "alpha" {
		e := next(t, ch, 5*time.Second, "status")
		_ = json.Unmarshal([]byte(e.data), &st)
	}
	// Periodic status carries the heartbeat's age and no id.
	tick := next(t, ch, 5*time.Second, "status")
	for tick.id != "" {
		tick = next(t, ch, 5*time.Second, "status")
	}

	var last string
	r := s.do("POST", "/api/exec", `{"cmd": "echo one"}`)
	var res messages.ResultJSON
	_ = json.Unmarshal([]byte(r.body), &res)
	for {
		e := next(t, ch, 5*time.Second, "job")
		if strings.Contains(e.data, `"id":"`+res.Job+`"`) && strings.Contains(e.data, `"state":"succeeded"`) {
			last = e.id
			break
		}
	}

	// Missed while away: a second node's join and a job.
	s.startNode("beta", 5)
	r = s.do("POST", "/api/exec", `{"cmd": "echo two"}`)
	_ = json.Unmarshal([]byte(r.body), &res)
	s.job(res.Job, "")
	again := s.openEvents(last)
	sawBeta, sawJob := false, false
	for !sawBeta || !sawJob {
		e := next(t, again, 5*time.Second, "cluster", "job")
		if strings.Contains(e.data, "alpha joined") {
			t.Errorf("after reconnecting at %s, an event from before it came again: %+v", last, e)
		}
		sawBeta = sawBeta || strings.Contains(e.data, "beta joined")
		sawJob = sawJob || strings.Contains(e.data, `"id":"`+res.Job+`"`)
	}

	stale := s.openEvents("0123abcd-42")
	if e := next(t, stale, 5*time.Second, "reset", "cluster", "job"); e.name != "reset" {
		t.Errorf("after another start's id, first event %+v, want reset", e)
	}
}

// A broker that stops leaves the commands run from its dashboard running
// (a planned restart fails none), and stops waiting for them at once.
func TestExec_BrokerStopLeavesCommandsRunning(t *testing.T) {
	s := newSite(t, nil)
	s.startNode("alpha", 10)
	marker := filepath.Join(t.TempDir(), "ran")
	answered := make(chan reply, 1)
	go func() {
		req, _ := http.NewRequest("POST", s.base+"/api/exec?stream=1", strings.NewReader(`{"cmd": "echo started; sleep 1; touch `+marker+`"}`))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			answered <- reply{body: err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		answered <- reply{code: resp.StatusCode, body: string(b)}
	}()
	s.eventually(5*time.Second, "the command running", func() bool {
		var list messages.JobList
		return s.getJSON("/api/jobs?state=running", "", &list) == http.StatusOK && len(list.Jobs) == 1
	})
	t0 := time.Now()
	if err := s.b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(t0); took > 2*time.Second {
		t.Errorf("broker took %v to stop with a dashboard command running, want it not to wait for the command", took)
	}
	<-answered
	s.eventually(5*time.Second, "the command's file", func() bool {
		_, err := os.Stat(marker)
		return err == nil
	})
}

// With no node at all, a command is refused at once, saying why.
func TestExec_NoMember(t *testing.T) {
	s := newSite(t, nil)
	t0 := time.Now()
	r := s.do("POST", "/api/exec", `{"cmd": "true"}`)
	var e struct{ Error string }
	_ = json.Unmarshal([]byte(r.body), &e)
	if r.code != http.StatusServiceUnavailable || !strings.Contains(e.Error, "no node is a member") || time.Since(t0) > time.Second {
		t.Errorf("POST /api/exec without nodes: %d %s after %v, want 503 at once", r.code, r.body, time.Since(t0))
	}
}

// multipart is a form with fields (name, value pairs) and files (name,
// content pairs), and its content type.
func multipart(t testing.TB, fields []string, files ...string) (string, string) {
	t.Helper()
	var b strings.Builder
	w := mime.NewWriter(&b)
	for i := 0; i+1 < len(fields); i += 2 {
		if err := w.WriteField(fields[i], fields[i+1]); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i+1 < len(files); i += 2 {
		f, err := w.CreateFormFile("file", files[i])
		if err == nil {
			_, err = io.WriteString(f, files[i+1])
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.String(), w.FormDataContentType()
}

// Files go with a command run from the dashboard, as a form, and what it
// brings back downloads as a zip from its job; the job's page lists both.
func TestExec_Files(t *testing.T) {
	s := newSite(t, func(c *broker.Config) { c.Files.MaxBytes, c.Files.MaxFiles = 64<<10, 3 })
	s.startNode("alpha", 10)
	body, ctype := multipart(t, []string{"cmd", "tr a-z A-Z < in.txt > out.txt; chmod 750 out.txt; ls", "collect", "out.txt"},
		"in.txt", "hello files\n")
	r := s.do("POST", "/api/exec", body, "Content-Type: "+ctype)
	var res messages.ResultJSON
	_ = json.Unmarshal([]byte(r.body), &res)
	if r.code != http.StatusOK || res.ExitCode != 0 || res.Stdout != "in.txt\nout.txt\n" || len(res.Outputs) != 1 || res.Outputs[0].Name != "out.txt" {
		t.Fatalf("POST /api/exec with a file: %d %s", r.code, r.body)
	}
	job := s.job(res.Job, "")
	if len(job.Inputs) != 1 || job.Inputs[0].Name != "in.txt" || job.OutputBundle == "" {
		t.Errorf("job %+v, want in.txt in and an output bundle", job)
	}

	z := s.do("GET", "/api/jobs/"+res.Job+"/outputs.zip", "")
	zr, err := zip.NewReader(strings.NewReader(z.body), int64(len(z.body)))
	if z.code != http.StatusOK || err != nil || len(zr.File) != 1 || zr.File[0].Name != "out.txt" || zr.File[0].Mode().Perm() != 0o750 {
		t.Fatalf("GET outputs.zip: %d, %v", z.code, err)
	}
	f, _ := zr.File[0].Open()
	got, _ := io.ReadAll(f)
	if string(got) != "HELLO FILES\n" {
		t.Errorf("out.txt holds %q", got)
	}

	page := s.do("GET", "/jobs/"+res.Job, "")
	for _, want := range []string{"Sent with the command", "in.txt", "Brought back", "out.txt", "-rwxr-x---", "/api/jobs/" + res.Job + "/outputs.zip"} {
		if !strings.Contains(page.body, want) {
			t.Errorf("the job's page lacks %q", want)
		}
	}

	t.Run("over the limit", func(t *testing.T) {
		body, ctype := multipart(t, []string{"cmd", "true"}, "big", strings.Repeat("x", 100<<10))
		r := s.do("POST", "/api/exec", body, "Content-Type: "+ctype)
		if r.code != http.StatusRequestEntityTooLarge || !strings.Contains(r.body, "over the broker's --max-bundle-bytes of 64 KiB") && !strings.Contains(r.body, "larger than the broker's --max-bundle-bytes of 64 KiB") {
			t.Errorf("POST /api/exec with 100 KiB: %d %s, want 413 naming the limit", r.code, r.body)
		}
	})
	t.Run("too many files", func(t *testing.T) {
		body, ctype := multipart(t, []string{"cmd", "true"}, "a", "1", "b", "2", "c", "3", "d", "4")
		r := s.do("POST", "/api/exec", body, "Content-Type: "+ctype)
		if r.code != http.StatusRequestEntityTooLarge || !strings.Contains(r.body, "more than 3 files, over the broker's --max-bundle-files of 3") {
			t.Errorf("POST /api/exec with 4 files: %d %s, want 413 naming the limit", r.code, r.body)
		}
	})
	t.Run("no files brought back", func(t *testing.T) {
		var plain messages.ResultJSON
		_ = json.Unmarshal([]byte(s.do("POST", "/api/exec", `{"cmd": "true"}`).body), &plain)
		s.job(plain.Job, "")
		if r := s.do("GET", "/api/jobs/"+plain.Job+"/outputs.zip", ""); r.code != http.StatusNotFound || !strings.Contains(r.body, "brought back no files") {
			t.Errorf("outputs.zip of a job without files: %d %s", r.code, r.body)
		}
	})
}
