package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"baton/agent"
	"baton/bundle"
	"baton/messages"
)

// ExecRequest is the body of POST /api/exec: JSON, or a multipart form
// with the same fields, a "collect" field per pattern, and the files to
// send as "file" parts.
type ExecRequest struct {
	Cmd string `json:"cmd"`
	// TimeoutMs asks the master for a run time; 0 takes its default.
	TimeoutMs int64 `json:"timeout_ms"`
	// Collect names the files to bring back (globs relative to the work
	// directory); the result lists them, and the job's outputs.zip holds
	// them.
	Collect []string `json:"collect,omitempty"`
	// files are the uploaded files, in a temporary directory.
	files []string
}

// maxCollect bounds a request's collect patterns, as masters do.
const maxCollect = 256

// maxExecBody bounds a request's body: the longest command, every byte
// escaped, and room for the rest.
const maxExecBody = 6*messages.MaxCommandBytes + 1024

// maxTimeout bounds the run time a dashboard may ask for (the master
// enforces its own --max-exec-timeout too).
const maxTimeout = 24 * time.Hour

// readExec reads and checks a request's body; the error is a one-line
// answer, 413 for a body too large and 400 for the rest.
func readExec(w http.ResponseWriter, r *http.Request) (ExecRequest, int, error) {
	var req ExecRequest
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(formTimeout))
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxExecBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(&req)
	if err == nil && dec.More() {
		err = errors.New("more follows the object")
	}
	var typeErr *json.UnmarshalTypeError
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return req, http.StatusRequestEntityTooLarge, fmt.Errorf("body larger than the %d bytes a command takes", tooBig.Limit)
	case errors.As(err, &typeErr):
		return req, http.StatusBadRequest, fmt.Errorf("%s: want a %s", typeErr.Field, map[string]string{"cmd": "string", "timeout_ms": "whole number of milliseconds", "collect": "list of strings"}[typeErr.Field])
	case err != nil && strings.HasPrefix(err.Error(), "json: unknown field "):
		return req, http.StatusBadRequest, fmt.Errorf("%s (want cmd, timeout_ms and collect)", strings.TrimPrefix(err.Error(), "json: "))
	case err != nil:
		return req, http.StatusBadRequest, fmt.Errorf(`body is not one JSON object such as {"cmd": "uname -a", "timeout_ms": 5000}: %v`, err)
	}
	return checkExec(req)
}

// checkExec checks a request's fields.
func checkExec(req ExecRequest) (ExecRequest, int, error) {
	switch {
	case len(req.Collect) > maxCollect:
		return req, http.StatusBadRequest, fmt.Errorf("%d collect patterns, more than the %d allowed", len(req.Collect), maxCollect)
	case bundle.CheckGlobs(req.Collect) != nil:
		return req, http.StatusBadRequest, bundle.CheckGlobs(req.Collect)
	case strings.TrimSpace(req.Cmd) == "":
		return req, http.StatusBadRequest, errors.New("no command: cmd is empty")
	case len(req.Cmd) > messages.MaxCommandBytes:
		return req, http.StatusBadRequest, fmt.Errorf("command of %d bytes is longer than the %d allowed", len(req.Cmd), messages.MaxCommandBytes)
	case req.TimeoutMs < 0:
		return req, http.StatusBadRequest, fmt.Errorf("timeout_ms %d: want 0 (the master's default) or more", req.TimeoutMs)
	case time.Duration(req.TimeoutMs)*time.Millisecond > maxTimeout:
		return req, http.StatusBadRequest, fmt.Errorf("a timeout of %v is longer than the %v the dashboard allows", time.Duration(req.TimeoutMs)*time.Millisecond, maxTimeout)
	}
	return req, http.StatusOK, nil
}

// handleExec is POST /api/exec: it runs a command and answers what `node
// exec --json` prints. With ?stream=1 it answers NDJSON instead: the
// output as it comes ({"stdout": TEXT} or {"stderr": TEXT}), then
// {"result": RESULT}. A client that goes away cancels the command.
func (s *Server) handleExec(w http.ResponseWriter, r *http.Request) {
	a := accessOf(r.Context())
	if !a.CanRun() {
		apiError(w, http.StatusForbidden, fmt.Sprintf("the %s role may not run commands (sign in with submit.token or admin.token)", a.Role))
		return
	}
	role := a.Role
	if a.Open {
		role = ""
	}
	sub := s.submitter(role)
	if sub == nil {
		apiError(w, http.StatusServiceUnavailable, "the broker is still starting; try again in a moment")
		return
	}
	var req ExecRequest
	var code int
	var err error
	if isMultipart(r) {
		dir, derr := os.MkdirTemp("", "baton-upload-*")
		if derr != nil {
			apiError(w, http.StatusInternalServerError, fmt.Sprintf("no room for the files: %v", derr))
			return
		}
		defer os.RemoveAll(dir)
		req, code, err = s.readExecForm(w, r, dir)
	} else {
		req, code, err = readExec(w, r)
	}
	if err == nil && len(req.Collect) > 0 && s.files == nil {
		code, err = http.StatusBadRequest, errors.New("this broker keeps no files (it runs with --no-history): it cannot bring any back")
	}
	if err != nil {
		apiError(w, code, err.Error())
		return
	}
	if st := s.cluster.Status(); st.Master == "" && len(st.Members) == 0 {
		// Nobody to wait for: say so now (a node that joins later takes
		// the next try).
		apiError(w, http.StatusServiceUnavailable, "no node is a member, so nothing can run it; start a node (the Cluster page says how); the command did not run")
		return
	}
	select {
	case s.running <- struct{}{}:
		defer func() { <-s.running }()
	default:
		apiError(w, http.StatusTooManyRequests, fmt.Sprintf("%d commands from the dashboard are waiting for their results, the most this broker holds; try again when some have ended", s.cfg.MaxRunning))
		return
	}
	timeout := time.Duration(req.TimeoutMs) * time.Millisecond
	cancel := make(chan struct{})
	job := &agent.Job{Cmd: req.Cmd, Timeout: timeout, Cancel: cancel, Via: messages.ViaWeb, Collect: req.Collect}
	if len(req.files) > 0 {
		// Stored before anything runs; over the limits, refused before
		// it is stored.
		b, err := sub.SendFiles(r.Context(), req.files)
		switch {
		case errors.Is(err, bundle.ErrTooMuch):
			apiError(w, http.StatusRequestEntityTooLarge, err.Error()+"; the command did not run")
			return
		case err != nil:
			apiError(w, http.StatusBadGateway, fmt.Sprintf("the files were not stored: %v; the command did not run", err))
			return
		}
		job.Inputs = []*messages.Bundle{b}
	}
	var out *ndjson
	if r.URL.Query().Get("stream") == "1" {
		out = newNDJSON(w)
		job.Output = out.output
	}
	var taken struct{ master, job string }
	job.Taken = func(master, id string) {
		taken.master, taken.job = master, id
		if out != nil {
			out.write(map[string]string{"job": id, "master": master})
		}
	}
	// The browser going away cancels the command; the broker stopping
	// does not (the command runs on, and the history records how it ends),
	// but stops waiting for it. (The request's context also ends when this
	// handler returns: the command is over by then, the cancel unheard.)
	go func() {
		select {
		case <-r.Context().Done():
			if s.life.Err() == nil {
				close(cancel)
			}
		case <-s.life.Done():
		}
	}()
	ctx, stop := context.WithCancel(context.WithoutCancel(r.Context()))
	defer stop()
	defer context.AfterFunc(s.life, stop)()
	res, err := sub.SubmitJob(ctx, job)
	out.finish()
	if err != nil && s.life.Err() != nil {
		err = fmt.Errorf("the broker is stopping, so it no longer waits for this command; the command runs on, and its job says how it ended%s", jobNote(taken.job))
	}
	body := resultOf(job, res, err)
	if res == nil && taken.job != "" {
		// No result, but the master said which job it was.
		body.Job, body.Master = taken.job, taken.master
	}
	code, state := http.StatusOK, ""
	switch {
	case res != nil:
		st, _ := messages.StateOf(res)
		state = st.Name()
	case errors.Is(err, agent.ErrNoMaster), errors.Is(err, agent.ErrCancelled), errors.Is(err, agent.ErrDenied):
		// The command did not run.
		code, state = http.StatusServiceUnavailable, stateNotRun
	case errors.Is(err, agent.ErrMasterLost):
		code, state = http.StatusBadGateway, messages.StateLost
	default:
		// It may or may not have run.
		code, state = http.StatusBadGateway, stateUnknown
	}
	if out != nil {
		out.write(map[string]any{"result": body, "state": state})
		return
	}
	writeJSON(w, code, body)
}

// jobNote names a job in an error, if any.
func jobNote(id string) string {
	if id == "" {
		return ""
	}
	return " (job " + id + ")"
}

// The outcomes of a streamed exec besides the history's states.
const (
	// stateNotRun: no master took the command.
	stateNotRun = "not_run"
	// stateUnknown: no result came back; the history may know more.
	stateUnknown = "unknown"
)

// resultOf is what /api/exec answers: the result, or why there is none.
func resultOf(job *agent.Job, res *messages.ExecResult, err error) messages.ResultJSON {
	if res == nil {
		res = &messages.ExecResult{ExitCode: -1}
	}
	j := messages.NewResultJSON(job.ID, job.Cmd, res)
	if err != nil {
		j.Error = err.Error()
	}
	return j
}

// ndjson writes a streamed exec's lines: each output chunk as it comes,
// whole characters only (a chunk may end inside one).
type ndjson struct {
	w     http.ResponseWriter
	rc    *http.ResponseController
	enc   *json.Encoder
	carry [3][]byte // per stream, the start of a character cut off
	err   error
}

func newNDJSON(w http.ResponseWriter) *ndjson {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	n := &ndjson{w: w, rc: http.NewResponseController(w), enc: enc}
	// The headers now: the page shows the command started.
	_ = n.rc.Flush()
	return n
}

// output is agent.Job.Output.
func (n *ndjson) output(stream int, data []byte) {
	if n.err != nil || stream < 1 || stream > 2 {
		return
	}
	if len(data) > 0 && utf8.RuneStart(data[0]) {
		// What the carry holds can no longer be completed: the client
		// gives a character cut short again, whole, with the result.
		n.carry[stream] = nil
	}
	data = append(n.carry[stream], data...)
	cut := len(data)
	// Hold back at most 3 bytes: the start of a character not yet whole.
	for i := len(data) - 1; i >= 0 && i >= len(data)-3; i-- {
		if utf8.RuneStart(data[i]) {
			if !utf8.FullRune(data[i:]) {
				cut = i
			}
			break
		}
	}
	n.carry[stream] = append([]byte(nil), data[cut:]...)
	if cut == 0 {
		return
	}
	key := "stdout"
	if stream == 2 {
		key = "stderr"
	}
	n.write(map[string]string{key: string(data[:cut])})
}

func (n *ndjson) write(v any) {
	if n.err != nil {
		return
	}
	_ = n.rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	if n.err = n.enc.Encode(v); n.err == nil {
		n.err = n.rc.Flush()
	}
}

// finish writes what the carries hold.
func (n *ndjson) finish() {
	if n == nil {
		return
	}
	for stream := 1; stream <= 2; stream++ {
		if len(n.carry[stream]) > 0 {
			c := n.carry[stream]
			n.carry[stream] = nil
			key := map[int]string{1: "stdout", 2: "stderr"}[stream]
			n.write(map[string]string{key: string(c)})
		}
	}
}
