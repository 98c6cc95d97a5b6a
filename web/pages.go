package web

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"baton/bundle"
	"baton/election"
	"baton/messages"
)

//go:embed templates/*.html
var templateFiles embed.FS

//go:embed static
var staticFS embed.FS

// staticFiles serves the stylesheet and the script, embedded.
func staticFiles() http.Handler {
	files := http.FileServerFS(staticFS)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		securityHeaders(w.Header())
		if strings.HasSuffix(r.URL.Path, "/") {
			// Files, no listings.
			http.NotFound(w, r)
			return
		}
		// The embedded files change only with the binary; a reload after
		// an upgrade revalidates them (FileServerFS sends no Last-Modified
		// for embedded files, so no-cache costs a full fetch: small).
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}

// pages are the templates, each parsed with the layout.
type pages map[string]*template.Template

var funcs = template.FuncMap{
	"stamp": func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	},
	"stampText": func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"timeStamp": func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) },
	"timeText":  func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
	"duration":  duration,
	"states":    messages.JobStates,
	"label":     func(state string) string { return strings.ReplaceAll(state, "_", " ") },
	"oneLine": func(s string) string {
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			return s[:i] + " …"
		}
		return s
	},
	"bytes":   byteSize,
	"timeout": timeoutText,
	"plural": func(n int, word string) string {
		if n == 1 {
			return "1 " + word
		}
		return fmt.Sprintf("%d %ss", n, word)
	},
	// exitShown is whether a job's exit code means something: it ran to
	// an end of its own (or was killed for its time).
	"exitShown": func(j messages.JobSummary) bool { return j.FinishedAt != nil && j.ExitCode >= 0 },
}

// timeoutText is a run time asked for, as the Run page's field takes it;
// empty for the master's default.
func timeoutText(ms uint32) string {
	if ms == 0 {
		return ""
	}
	return (time.Duration(ms) * time.Millisecond).String()
}

func parsePages() (pages, error) {
	p := make(pages)
	for _, name := range []string{"cluster", "run", "jobs", "job", "signin"} {
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFiles, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("page %s: %w", name, err)
		}
		p[name] = t
	}
	return p, nil
}

// view is what every page's layout needs.
type view struct {
	Title   string
	Page    string
	Access  access
	Version string
	// Cursor is the event id the page was rendered at: its script asks
	// the event stream for what came after.
	Cursor string
	Data   any
}

// render writes v as a page with status code. v.Cursor must have been
// read before the page's data: a change in between then comes again
// through the event stream (applying it twice is harmless), and none is
// lost.
func (s *Server) render(w http.ResponseWriter, r *http.Request, code int, v view) {
	v.Version = s.cfg.Version
	var b bytes.Buffer
	if err := s.pages[v.Page].ExecuteTemplate(&b, "layout", v); err != nil {
		s.cfg.Logger.Error("render page", keyPath, r.URL.Path, keyErr, err)
		http.Error(w, "baton: the page failed to render", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(b.Bytes())
}

// clusterData is the Cluster page's.
type clusterData struct {
	Status   election.Status
	Timeline []TimelineEntry
}

// timelineShown is how many changes the Cluster page lists.
const timelineShown = 200

func (s *Server) handleCluster(w http.ResponseWriter, r *http.Request) {
	a := accessOf(r.Context())
	// The timeline with its cursor, at once: an entry is either on the
	// page or after the cursor, never both (the list would show it twice).
	timeline, cursor := s.hub.recent(timelineShown)
	d := clusterData{Status: s.cluster.Status(), Timeline: timeline}
	s.render(w, r, http.StatusOK, view{Title: "Cluster", Page: "cluster", Access: a, Cursor: cursor, Data: d})
}

// runData is the Run page's: a command to show, and whether to start it
// at once (a re-run, posted from a job's page).
type runData struct {
	Cmd, Timeout, From string
	// Collect is the patterns to bring back, one per line; Files the most
	// the files sent may take, 0 when the broker keeps none.
	Collect   string
	Files     int64
	Autostart bool
	Error     string
}

// handleRun is GET /run[?cmd=&timeout=|?from=ID] (a form, filled in) and
// POST /run (a re-run from a job's page: filled in and started).
func (s *Server) handleRun(w http.ResponseWriter, r *http.Request) {
	a := accessOf(r.Context())
	v := view{Title: "Run", Page: "run", Access: a, Cursor: s.hub.cursor()}
	if !a.CanRun() {
		v.Data = runData{Error: fmt.Sprintf("The %s role may not run commands.", a.Role)}
		s.render(w, r, http.StatusForbidden, v)
		return
	}
	if !readForm(w, r) {
		return
	}
	d := runData{Cmd: r.FormValue("cmd"), Timeout: r.FormValue("timeout"), Collect: strings.Join(r.Form["collect"], "\n"),
		Autostart: r.Method == http.MethodPost}
	if s.files != nil {
		d.Files = s.cfg.MaxUpload
	}
	if from := strings.ToLower(r.FormValue("from")); messages.ValidJobID(from) && d.Cmd != "" {
		// A re-run: a reload of the page should not run it again.
		d.From = from
	} else if from != "" && d.Cmd == "" {
		if job, _, err := s.lookupJob(r.Context(), from); err != nil {
			d.Error = err.Error()
		} else {
			d.Cmd, d.From, d.Timeout = job.Cmd, job.ID, timeoutText(job.TimeoutMs)
			d.Collect = strings.Join(job.Collect, "\n")
		}
	}
	if len(d.Cmd) > messages.MaxCommandBytes {
		d.Cmd, d.Autostart = "", false
		d.Error = fmt.Sprintf("The command is longer than the %d bytes allowed.", messages.MaxCommandBytes)
	}
	v.Data = d
	s.render(w, r, http.StatusOK, v)
}

// jobsData is the Jobs page's.
type jobsData struct {
	// The filters, as the URL has them.
	State, Node, Q, Since, Until string
	Limit                        int
	Jobs                         []messages.JobSummary
	// Older is the link to the next page, empty on the last; Paged is
	// set on every page but the first.
	Older template.URL
	Paged bool
	// Failing links to "failed only": these filters, state failed;
	// Newest to the first page of these filters.
	Failing, Newest template.URL
	NoHist          bool
	Error           string
	Took            time.Duration
}

// jobsPage is how many jobs a page of the Jobs page lists.
const jobsPage = 50

func (s *Server) handleJobs(w http.ResponseWriter, r *http.Request) {
	a := accessOf(r.Context())
	page := view{Title: "Jobs", Page: "jobs", Access: a, Cursor: s.hub.cursor()}
	v := r.URL.Query()
	d := jobsData{State: v.Get("state"), Node: v.Get("node"), Q: v.Get("q"), Since: v.Get("since"), Until: v.Get("before"), Limit: jobsPage}
	d.Newest = jobsLink(v, "before", "")
	d.Failing = jobsLink(v, "before", "", "state", messages.StateFailed)
	if s.history == nil {
		d.NoHist = true
		page.Data = &d
		s.render(w, r, http.StatusNotFound, page)
		return
	}
	q, err := jobQuery(v, time.Now())
	if err != nil {
		d.Error = err.Error()
		page.Data = &d
		s.render(w, r, http.StatusBadRequest, page)
		return
	}
	if q.Limit == 0 {
		q.Limit = jobsPage
	}
	d.Limit, d.Paged = q.Limit, q.Before != ""
	// One more than the page shows says whether there is a next page.
	probe := q
	probe.Limit = min(q.Limit+1, messages.MaxJobLimit)
	began := time.Now()
	list, err := s.listJobs(r.Context(), probe)
	d.Took = time.Since(began).Round(time.Millisecond)
	if err != nil {
		d.Error = err.Error()
		page.Data = &d
		s.render(w, r, http.StatusServiceUnavailable, page)
		return
	}
	more := list.More || len(list.Jobs) > q.Limit || len(list.Jobs) == messages.MaxJobLimit
	d.Jobs = list.Jobs[:min(len(list.Jobs), q.Limit)]
	if n := len(d.Jobs); n > 0 && more {
		d.Older = jobsLink(v, "before", d.Jobs[n-1].ID)
	}
	page.Data = &d
	s.render(w, r, http.StatusOK, page)
}

// handleNotFound is every page that is none.
func (s *Server) handleNotFound(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/api/") {
		apiNotFound(w, r)
		return
	}
	v := view{Title: "Not found", Page: "job", Access: accessOf(r.Context()), Cursor: s.hub.cursor(),
		Data: jobData{Error: fmt.Sprintf("There is no page %s here. The dashboard's pages are Cluster (/), Run (/run), Jobs (/jobs) and each job's.", r.URL.Path)}}
	s.render(w, r, http.StatusNotFound, v)
}

// jobsLink is the Jobs page with the filters of v, each key of kv set to
// the value after it (removed when empty). It is encoded here: the
// template would escape the query's = and &.
func jobsLink(v url.Values, kv ...string) template.URL {
	q := maps.Clone(v)
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			q.Del(kv[i])
		} else {
			q.Set(kv[i], kv[i+1])
		}
	}
	return template.URL("/jobs?" + q.Encode())
}

// jobData is the Job page's.
type jobData struct {
	Job    *messages.Job
	Output []outputView
	Error  string
}

// outputView is as much of one output stream as a page shows.
type outputView struct {
	Name string // stdout or stderr
	// Head is all of it, or its start; Tail its end when some is hidden.
	Head, Tail string
	Hidden     int    // bytes hidden between Head and Tail
	Size       int    // bytes stored
	Dropped    uint64 // bytes the master dropped at run time
}

func (s *Server) handleJob(w http.ResponseWriter, r *http.Request) {
	a := accessOf(r.Context())
	v := view{Title: "Job", Page: "job", Access: a, Cursor: s.hub.cursor()}
	job, code, err := s.lookupJob(r.Context(), r.PathValue("id"))
	if err != nil {
		v.Data = jobData{Error: err.Error()}
		s.render(w, r, code, v)
		return
	}
	v.Title, v.Data = "Job "+job.ID, jobData{Job: job, Output: views(job, s.cfg.OutputView)}
	s.render(w, r, http.StatusOK, v)
}

// views cuts a job's output to budget bytes, stdout and stderr together:
// each gets half, or what the other leaves; a stream over its share shows
// its head and tail.
func views(job *messages.Job, budget int) []outputView {
	out, errs := job.Stdout, job.Stderr
	shareOut, shareErr := budget/2, budget-budget/2
	switch {
	case len(out) < shareOut:
		shareErr = budget - len(out)
	case len(errs) < shareErr:
		shareOut = budget - len(errs)
	}
	return []outputView{
		view1("stdout", out, shareOut, job.StdoutDropped),
		view1("stderr", errs, shareErr, job.StderrDropped),
	}
}

func view1(name, s string, share int, dropped uint64) outputView {
	v := outputView{Name: name, Head: s, Size: len(s), Dropped: dropped}
	if len(s) <= share {
		return v
	}
	head, tail := share/2, share-share/2
	h := runeCut(s, head)
	t := len(s) - tail
	for t < len(s) && !utf8.RuneStart(s[t]) {
		t++
	}
	v.Head, v.Tail, v.Hidden = s[:h], s[t:], t-h
	return v
}

// runeCut is the largest n' <= n at which s can be cut between
// characters.
func runeCut(s string, n int) int {
	for n > 0 && n < len(s) && !utf8.RuneStart(s[n]) {
		n--
	}
	return n
}

// duration is ms for a person, as the pages' script shows it too: 4ms,
// 2.03s, 12.5s, 3m12s.
func duration(ms int64) string {
	switch {
	case ms < 1000:
		return fmt.Sprintf("%dms", ms)
	case ms < 10_000:
		return fmt.Sprintf("%.2fs", float64(ms)/1000)
	case ms < 60_000:
		return fmt.Sprintf("%.1fs", float64(ms)/1000)
	}
	return fmt.Sprintf("%dm%ds", ms/60_000, (ms%60_000+500)/1000)
}

// byteSize is n bytes for a person (bundle.Size), whatever integer type
// a template hands it.
func byteSize(n any) string {
	switch x := n.(type) {
	case int:
		return bundle.Size(int64(x))
	case uint64:
		return bundle.Size(int64(x))
	case int64:
		return bundle.Size(x)
	}
	return fmt.Sprint(n)
}
