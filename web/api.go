package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"baton/history"
	"baton/messages"
)

// historyTimeout bounds one question to the history: a text search
// through a hundred thousand jobs takes a second or two.
const historyTimeout = 15 * time.Second

// writeJSON answers v as JSON, with <, > and & as they are.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// apiError answers {"error": msg}.
func apiError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// apiMethods are the API's endpoints' methods, by path pattern.
var apiMethods = map[string]string{
	"/api/status": "GET", "/api/jobs": "GET", "/api/events": "GET", "/api/exec": "POST",
}

// apiNotFound answers a request the API has no endpoint for: 405 for a
// known path asked with another method, else 404.
func apiNotFound(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if strings.HasPrefix(path, "/api/jobs/") {
		path = "/api/jobs/ID"
	}
	method, ok := apiMethods[path]
	if path == "/api/jobs/ID" {
		method, ok = "GET", true
	}
	if ok {
		w.Header().Set("Allow", method)
		apiError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: this endpoint takes %s", r.Method, r.URL.Path, method))
		return
	}
	apiError(w, http.StatusNotFound, fmt.Sprintf("%s: no such endpoint (the API: GET /api/status, /api/jobs, /api/jobs/ID, /api/events; POST /api/exec)", r.URL.Path))
}

// handleStatus is GET /api/status: what `node status --json` prints.
func (s *Server) handleStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.cluster.Status())
}

// errNoHistory is the answer of every history endpoint of a broker that
// keeps none.
const errNoHistory = "this broker keeps no job history (it runs with --no-history)"

// lookupJob reads the job raw names (an ID in either case) for a page or
// the API; when there is none, the status code and error say why: 404
// without a history or for an unknown job, 400 for what is no job ID, 503
// for a history that could not answer now.
func (s *Server) lookupJob(ctx context.Context, raw string) (*messages.Job, int, error) {
	if s.history == nil {
		return nil, http.StatusNotFound, errors.New(errNoHistory)
	}
	id := strings.ToLower(raw)
	if !messages.ValidJobID(id) {
		return nil, http.StatusBadRequest, errors.New(badJobID(raw))
	}
	ctx, cancel := context.WithTimeout(ctx, historyTimeout)
	defer cancel()
	job, err := s.history.Get(ctx, id)
	switch {
	case errors.Is(err, history.ErrUnknownJob):
		return nil, http.StatusNotFound, err
	case err != nil:
		return nil, http.StatusServiceUnavailable, err
	}
	return job, http.StatusOK, nil
}

// listJobs answers q for a page or the API, within historyTimeout.
func (s *Server) listJobs(ctx context.Context, q messages.JobQuery) (*messages.JobList, error) {
	ctx, cancel := context.WithTimeout(ctx, historyTimeout)
	defer cancel()
	return s.history.List(ctx, q)
}

// jobQuery reads the filters of /jobs and /api/jobs: state, node, q
// (text in the command or its output), since and before (a time, a
// duration before now such as 1h, or for before a job ID: the next page
// after that job), limit.
func jobQuery(v url.Values, now time.Time) (messages.JobQuery, error) {
	q := messages.JobQuery{State: strings.ToLower(strings.TrimSpace(v.Get("state"))), Node: strings.TrimSpace(v.Get("node")), Grep: v.Get("q")}
	switch {
	case q.State != "" && !slices.Contains(messages.JobStates(), q.State):
		return q, fmt.Errorf("state %q: want one of %s", q.State, strings.Join(messages.JobStates(), ", "))
	case len(q.Grep) > messages.MaxCommandBytes:
		return q, fmt.Errorf("q: text of %d bytes is longer than the %d allowed", len(q.Grep), messages.MaxCommandBytes)
	}
	if s := strings.TrimSpace(v.Get("since")); s != "" {
		t, err := parseTime(s, now)
		if err != nil {
			return q, fmt.Errorf("since: %w", err)
		}
		q.Since = &t
	}
	if s := strings.TrimSpace(v.Get("before")); s != "" {
		if id := strings.ToLower(s); messages.ValidJobID(id) {
			q.Before = id
		} else {
			t, err := parseTime(s, now)
			if err != nil {
				return q, fmt.Errorf("before: %w, or a job ID", err)
			}
			// IDs sort as submission times: the first ID of t's millisecond.
			q.Before = messages.FirstJobID(t)
		}
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > messages.MaxJobLimit {
			return q, fmt.Errorf("limit %q: want a number from 1 to %d", s, messages.MaxJobLimit)
		}
		q.Limit = n
	}
	return q, nil
}

// timeLayouts are the times parseTime reads, in UTC unless they say: RFC
// 3339, and what a person types or a datetime-local field sends.
var timeLayouts = []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02"}

// parseTime reads a time, or a duration before now such as 90m or 2d.
func parseTime(s string, now time.Time) (time.Time, error) {
	d, err := time.ParseDuration(s)
	if days, ok := strings.CutSuffix(s, "d"); ok && err != nil {
		var n float64
		if n, err = strconv.ParseFloat(days, 64); err == nil {
			d = time.Duration(n * float64(24*time.Hour))
		}
	}
	if err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("%q: a duration before now must be positive", s)
		}
		return now.Add(-d), nil
	}
	for _, layout := range timeLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is neither a time (such as %s, or %s in UTC) nor a duration before now (such as 30m, 1h or 2d)",
		s, now.UTC().Format("2006-01-02T15:04:05Z"), now.UTC().Format("2006-01-02 15:04"))
}

// handleJobList is GET /api/jobs: {"jobs": [...]}, newest first, each as a
// line of `node jobs --json`.
func (s *Server) handleJobList(w http.ResponseWriter, r *http.Request) {
	if s.history == nil {
		apiError(w, http.StatusNotFound, errNoHistory)
		return
	}
	q, err := jobQuery(r.URL.Query(), time.Now())
	if err != nil {
		apiError(w, http.StatusBadRequest, err.Error())
		return
	}
	list, err := s.listJobs(r.Context(), q)
	if err != nil {
		apiError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, list)
}

// badJobID says why id is no job ID.
func badJobID(id string) string {
	return fmt.Sprintf("%q is not a job ID (%d characters of 0-9 and a-z, as the Jobs page shows them)", id, messages.JobIDLen)
}

// getJob reads the job of the path's {id} for the API, answering the
// error itself.
func (s *Server) getJob(w http.ResponseWriter, r *http.Request) (*messages.Job, bool) {
	job, code, err := s.lookupJob(r.Context(), r.PathValue("id"))
	if err != nil {
		apiError(w, code, err.Error())
		return nil, false
	}
	return job, true
}

// handleJobGet is GET /api/jobs/{id}: what `node job ID --json` prints.
func (s *Server) handleJobGet(w http.ResponseWriter, r *http.Request) {
	if job, ok := s.getJob(w, r); ok {
		writeJSON(w, http.StatusOK, job)
	}
}

// handleJobOutput is GET /api/jobs/{id}/stdout and /stderr: the whole
// stored stream, as a file to download.
// outputsZip names the archive of the files a job brought back.
const outputsZip = "outputs.zip"

// sendOutputs answers with the zip of the files job brought back, as the
// file store holds it.
func (s *Server) sendOutputs(w http.ResponseWriter, r *http.Request, job *messages.Job) {
	if job.OutputBundle == "" || s.files == nil {
		apiError(w, http.StatusNotFound, fmt.Sprintf("job %s brought back no files", job.ID))
		return
	}
	rc, size, err := s.files.Open(r.Context(), job.OutputBundle)
	if err != nil {
		apiError(w, http.StatusNotFound, err.Error())
		return
	}
	defer rc.Close()
	h := w.Header()
	h.Set("Content-Type", "application/zip")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s-outputs.zip"`, job.ID))
	h.Set("Content-Length", strconv.FormatUint(size, 10))
	if _, err := io.Copy(w, rc); err != nil {
		s.cfg.Logger.Warn("outputs not sent whole", keyJob, job.ID, keyErr, err)
	}
}

func (s *Server) handleJobOutput(w http.ResponseWriter, r *http.Request) {
	stream := r.PathValue("stream")
	if stream != "stdout" && stream != "stderr" && stream != outputsZip {
		apiError(w, http.StatusNotFound, fmt.Sprintf("no %q for a job: want stdout, stderr or %s", stream, outputsZip))
		return
	}
	job, ok := s.getJob(w, r)
	if !ok {
		return
	}
	if stream == outputsZip {
		s.sendOutputs(w, r, job)
		return
	}
	out := job.Stdout
	if stream == "stderr" {
		out = job.Stderr
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s.%s.txt"`, job.ID, stream))
	h.Set("Content-Length", strconv.Itoa(len(out)))
	_, _ = w.Write([]byte(out))
}
