package web

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"

	"baton/agent"
	"baton/auth"
	"baton/election"
	"baton/messages"
)

// Cluster is what the dashboard reads of the election.
type Cluster interface {
	// Status is the cluster's state now, every member listed.
	Status() election.Status
}

// History answers the dashboard's questions about jobs (history.Store).
type History interface {
	List(ctx context.Context, q messages.JobQuery) (*messages.JobList, error)
	Get(ctx context.Context, id string) (*messages.Job, error)
}

// Submitter runs commands on the master (agent.Client), and stores the
// files they take with them.
type Submitter interface {
	SubmitJob(ctx context.Context, job *agent.Job) (*messages.ExecResult, error)
	SendFiles(ctx context.Context, paths []string) (*messages.Bundle, error)
}

// Files reads the archives of the broker's file store (files.Store).
type Files interface {
	Open(ctx context.Context, sha string) (io.ReadCloser, uint64, error)
}

// Server is the dashboard: pages, their JSON API and the event stream. It
// hears of changes through ClusterEvent and JobChanged.
type Server struct {
	cfg     Config
	cluster Cluster
	history History // nil: the broker keeps none
	files   Files   // likewise
	// submitter runs commands for a role that may (nil while it cannot);
	// role "" serves everyone when sign-in is off.
	submitter func(auth.Role) Submitter
	hub       *hub
	pages     pages
	running   chan struct{} // a slot per command waiting for its result

	// life ends at Close: the periodic status stops, and commands stop
	// being waited for (not cancelled).
	life   context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// New prepares a dashboard. hist may be nil (no history); submitter gives
// the Submitter that runs the commands of a role (role "" when cfg has no
// tokens), or nil while there is none. It starts nothing.
func New(cfg Config, cluster Cluster, hist History, files Files, submitter func(auth.Role) Submitter) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = DefaultConfig().Logger
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	p, err := parsePages()
	if err != nil {
		return nil, err
	}
	life, cancel := context.WithCancel(context.Background())
	return &Server{
		cfg: cfg, cluster: cluster, history: hist, files: files, submitter: submitter,
		hub: newHub(cfg.ClusterEvents, cfg.JobEvents), pages: p,
		running: make(chan struct{}, cfg.MaxRunning),
		life:    life, cancel: cancel,
	}, nil
}

// Start begins the periodic status for open dashboards; Close ends it.
func (s *Server) Start() {
	s.wg.Go(func() { s.ticks(s.life) })
}

// Close stops what Start began, and stops waiting for the commands run
// from the dashboard, leaving them running: call it before the HTTP
// server shuts down, whose requests then end. Open event streams end with
// that server. It is safe to call twice.
func (s *Server) Close() {
	s.once.Do(func() {
		s.cancel()
		s.wg.Wait()
	})
}

// ClusterEvent tells open dashboards what happened to the election. It
// never blocks for long: call it from the election's event hook.
func (s *Server) ClusterEvent(e election.Event) {
	if t, ok := timelineOf(e); ok {
		s.hub.publishCluster(t, s.cluster.Status())
	}
}

// JobChanged tells open dashboards of a job's new state. It never blocks
// for long: call it from the history's change hook.
func (s *Server) JobChanged(sum *messages.JobSummary) { s.hub.publishJob(sum) }

// Register adds the dashboard's routes to mux.
func (s *Server) Register(mux *http.ServeMux) {
	page := func(h http.HandlerFunc) http.HandlerFunc { return s.guard(false, h) }
	api := func(h http.HandlerFunc) http.HandlerFunc { return s.guard(true, h) }
	mux.HandleFunc("GET /{$}", page(s.handleCluster))
	mux.HandleFunc("GET /run", page(s.handleRun))
	mux.HandleFunc("POST /run", page(s.handleRun))
	mux.HandleFunc("GET /jobs", page(s.handleJobs))
	mux.HandleFunc("GET /jobs/{id}", page(s.handleJob))
	mux.HandleFunc("GET /signin", s.handleSignIn)
	mux.HandleFunc("POST /signin", s.handleSignIn)
	mux.HandleFunc("POST /signout", s.handleSignOut)
	mux.Handle("GET /static/", staticFiles())

	mux.HandleFunc("GET /api/status", api(s.handleStatus))
	mux.HandleFunc("GET /api/jobs", api(s.handleJobList))
	mux.HandleFunc("GET /api/jobs/{id}", api(s.handleJobGet))
	mux.HandleFunc("GET /api/jobs/{id}/{stream}", api(s.handleJobOutput))
	mux.HandleFunc("POST /api/exec", api(s.handleExec))
	mux.HandleFunc("GET /api/events", api(s.handleEvents))
	mux.HandleFunc("/api/", api(apiNotFound))
	mux.HandleFunc("/", page(s.handleNotFound))
}

// Protect lets requests through to h as the API's are: signed in (when
// sign-in is on) and addressed to this machine (when it is off).
func (s *Server) Protect(h http.Handler) http.Handler { return s.guard(true, h.ServeHTTP) }

// Handler wraps the routes of a mux (Register's and any others) with the
// check that refuses requests that would change something from another
// site's page (their Origin, or Sec-Fetch-Site, names another site).
func Handler(mux *http.ServeMux) http.Handler {
	p := http.NewCrossOriginProtection()
	p.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		const why = "refused: this request comes from another site's page (its Origin or Sec-Fetch-Site says so)"
		if strings.HasPrefix(r.URL.Path, "/api/") {
			apiError(w, http.StatusForbidden, why)
			return
		}
		http.Error(w, "baton: "+why, http.StatusForbidden)
	}))
	return p.Handler(mux)
}
