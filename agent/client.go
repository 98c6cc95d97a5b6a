package agent

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"baton/bus"
	"baton/election"
	"baton/executor"
	"baton/messages"
)

// Submission failures: the command's outcome is unknown or it never ran.
var (
	// ErrNoMaster: no node took the request during the retry window; the
	// command did not run.
	ErrNoMaster = errors.New("no master available")
	// ErrNoReply: the request may have reached a master but no result came
	// back in time; the command may or may not have run.
	ErrNoReply = errors.New("no result from the master")
	// ErrMasterLost: the master that had the request was lost (crash, hang,
	// partition); the command may or may not have run.
	ErrMasterLost = errors.New("master lost")
	// ErrDenied: the broker refused this credential the right to submit;
	// the command did not run.
	ErrDenied = errors.New("permission denied")
)

// deniedPublish finds the subject in the server's permission violation
// for a publication.
var deniedPublish = regexp.MustCompile(`(?i)publish to "([^"]+)"`)

// replyGrace is added to a command's queue and run time for the reply to
// travel back; past it the requester gives up.
const replyGrace = 2 * time.Second

// statusTimeout bounds one ExecStatusQuery.
const statusTimeout = time.Second

// Client submits commands to the master. It does not join the election.
// It is safe for concurrent use. The connection's owner calls Reconnected
// after each reconnect (Dial's client does so itself).
type Client struct {
	nc    *nats.Conn
	view  *election.View
	cfg   ClientConfig
	keys  *keyring // checks that results come from the announced master
	inbox string
	sub   *nats.Subscription
	// unfollow stops the view's calls to observe.
	unfollow func()
	// owned are closed with the client: Dial's connection and view.
	owned     *nats.Conn
	closeOnce sync.Once
	closeErr  error

	mu     sync.Mutex
	calls  map[string]*call
	latest *messages.Announcement // newest announcement observed
	// memberKeys and epochMasters are what verify judges results by.
	memberKeys   map[string][]byte
	epochMasters map[uint64]string
	// prev is the master before latest's, which may still hold the exec
	// subscription for a moment after it is demoted.
	prev *messages.Member
	// reconnected is closed and replaced at every reconnect; latestAt is
	// when latest last changed.
	reconnected chan struct{}
	latestAt    time.Time
}

// call is one Submit in progress.
type call struct {
	events chan callEvent
	chunks chan *messages.OutputChunk
	// sent is whether a copy may be out (no 503 or refusal since the last
	// send), and sentEpoch the requester's epoch when it sent it.
	sent      bool
	sentEpoch uint64
	acked     *messages.ExecAck
	// masters are the nodes (instance id → name) that may have received
	// the request: every master announced since it was first sent, and
	// the one before.
	masters map[string]string
}

// addMaster records the master of a (if any) as one that may receive
// requests now. Callers hold c.mu.
func (cl *call) addMaster(m *messages.Member) {
	if m != nil {
		cl.masters[m.InstanceId] = m.Name
	}
}

type callEvent struct {
	result       *messages.ExecResult
	noResponders bool
	lost         string
	denied       error
	ack          *messages.ExecAck
}

// NewClient prepares a client that submits on nc and learns the master
// from view, which must be started. It starts nothing.
func NewClient(nc *nats.Conn, view *election.View, cfg ClientConfig) (*Client, error) {
	if cfg.Logger == nil {
		cfg.Logger = DefaultClientConfig(cfg.Name).Logger
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	keys, err := newKeyring()
	if err != nil {
		return nil, fmt.Errorf("result key: %w", err)
	}
	return &Client{
		keys: keys, memberKeys: make(map[string][]byte), epochMasters: make(map[uint64]string),
		// The connection's inbox prefix: the one its credential may read.
		nc: nc, view: view, cfg: cfg, inbox: nc.NewInbox(),
		calls:       make(map[string]*call),
		reconnected: make(chan struct{}),
	}, nil
}

// Dial connects to the broker as conn says and returns a started client
// that owns the connection and a view of its own; Close closes them. It
// blocks until connected and, at most a second more, until the current
// master is known.
func Dial(ctx context.Context, conn bus.ConnConfig, cfg ClientConfig) (*Client, error) {
	// Errors before the client exists concern no submission.
	var client atomic.Pointer[Client]
	conn.OnError = func(err error) {
		if c := client.Load(); c != nil {
			c.asyncError(err)
		}
	}
	nc, err := bus.Connect(ctx, conn)
	if err != nil {
		return nil, err
	}
	c, err := Open(ctx, nc, cfg)
	if err != nil {
		return nil, err
	}
	client.Store(c)
	nc.SetReconnectHandler(func(*nats.Conn) { c.Reconnected() })
	return c, nil
}

// Open returns a started client on nc, with a view of its own, as Dial
// does for a connection it makes: the client owns nc, and Close closes the
// view and nc (as does a failed Open). It blocks as Dial does.
func Open(ctx context.Context, nc *nats.Conn, cfg ClientConfig) (*Client, error) {
	view := election.NewView(nc, cfg.Logger)
	c, err := NewClient(nc, view, cfg)
	if err == nil {
		c.owned = nc
		err = view.Start(ctx)
	}
	if err == nil {
		err = c.Start(ctx)
	}
	if err != nil {
		_ = view.Close(ctx)
		nc.Close()
		return nil, err
	}
	return c, nil
}

// Start subscribes to results and follows the view. When the view knows
// no master yet, it asks the broker, waiting at most a second for the
// answer (a broker still starting is no error: the view learns the master
// from the next announcement).
func (c *Client) Start(ctx context.Context) error {
	sub, err := c.nc.Subscribe(c.inbox+".>", c.handleInbox)
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", c.inbox+".>", err)
	}
	c.sub = sub
	c.mu.Lock()
	c.unfollow = c.view.Follow(c.observe)
	c.mu.Unlock()
	if a := c.view.Current(); a != nil {
		c.mu.Lock()
		if c.latest == nil { // the view has offered nothing newer meanwhile
			c.observeLocked(a)
		}
		c.mu.Unlock()
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	if err := c.view.Fetch(ctx); err != nil {
		c.cfg.Logger.Debug("no cluster status yet", keyErr, err)
	}
	return nil
}

// Close unsubscribes and stops following the view; a client made by Dial
// also closes its view and connection. It is safe to call twice (the
// second returns the first's result) and after a failed Start.
func (c *Client) Close(ctx context.Context) error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		unfollow := c.unfollow
		c.mu.Unlock()
		if unfollow != nil {
			unfollow()
		}
		if c.sub != nil {
			_ = c.sub.Unsubscribe()
		}
		if c.owned != nil {
			c.closeErr = c.view.Close(ctx)
			c.owned.Close()
		}
	})
	return c.closeErr
}

// Reconnected tells in-flight submissions that replies may have been lost
// while the connection was down; they ask the masters once the cluster has
// settled.
func (c *Client) Reconnected() {
	c.mu.Lock()
	defer c.mu.Unlock()
	close(c.reconnected)
	c.reconnected = make(chan struct{})
}

// observe takes every announcement the view accepts, in order: each one's
// departures may fail calls in progress. The view keeps the order (an
// older epoch comes only when it resets to the broker's word).
func (c *Client) observe(a *messages.Announcement) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.observeLocked(a)
}

// observeLocked is observe for callers that hold c.mu.
func (c *Client) observeLocked(a *messages.Announcement) {
	if c.latest != nil && c.latest.Master != a.Master {
		c.prev = master(c.latest)
	}
	c.latest, c.latestAt = a, time.Now()
	c.remember(a)
	for _, cl := range c.calls {
		cl.addMaster(master(a))
	}
	for _, d := range a.Departed {
		if d.Cause == messages.Cause_CAUSE_LEFT {
			// A leaving master finishes what it runs: keep waiting.
			continue
		}
		for _, cl := range c.calls {
			lost := false
			switch {
			case cl.acked != nil:
				lost = cl.acked.Master == d.Name && cl.acked.Epoch < a.Epoch
			case cl.sent && a.Epoch > cl.sentEpoch:
				// Unacknowledged: any master that could have received it
				// (the requester's view may lag a takeover) counts, but
				// only for a departure newer than the request.
				lost = slices.Contains(slices.Collect(maps.Values(cl.masters)), d.Name)
			}
			if lost {
				c.deliver(cl, callEvent{lost: fmt.Sprintf("master %s was lost while running the command (%s); it may or may not have run", d.Name, d.Cause.Text())})
			}
		}
	}
}

// maxEpochs bounds the epochs a client remembers the master of.
const maxEpochs = 256

// remember records the keys of a's members and the master of its epoch,
// by which verify judges results. Callers hold c.mu.
func (c *Client) remember(a *messages.Announcement) {
	if len(c.memberKeys) >= maxKeys {
		clear(c.memberKeys)
	}
	for _, m := range a.Members {
		if len(m.ExecKey) > 0 {
			c.memberKeys[m.Name] = m.ExecKey
		}
	}
	c.epochMasters[a.Epoch] = a.Master
	if len(c.epochMasters) > maxEpochs {
		delete(c.epochMasters, slices.Min(slices.Collect(maps.Keys(c.epochMasters))))
	}
}

// verify accepts res only when it is sealed (see seal.go) by the member it
// names and the announcement for its epoch names that member master, and
// opens it (res then holds its output). A refusal unrun (stale) needs only
// the seal, since the master that refuses may serve an epoch this client
// never saw. The seal is checked first, with no round trip: only then is an
// epoch newer than any seen looked up from the broker (the result can
// overtake the announcement), so a forged result costs a hash, not a
// request.
func (c *Client) verify(ctx context.Context, res *messages.ExecResult) error {
	c.mu.Lock()
	peer := c.memberKeys[res.Master]
	c.mu.Unlock()
	if len(peer) == 0 {
		return fmt.Errorf("%w: %q is no member this client knows", errUnsealed, res.Master)
	}
	keys, err := c.keys.shared(peer)
	if err != nil {
		return fmt.Errorf("%w: %w", errUnsealed, err)
	}
	if err := openResult(keys, res); err != nil {
		return err
	}
	if res.ErrorKind == messages.ErrorKind_ERROR_KIND_STALE {
		return nil
	}
	c.mu.Lock()
	_, known := c.epochMasters[res.Epoch]
	newer := c.latest == nil || res.Epoch > c.latest.Epoch
	c.mu.Unlock()
	if !known && newer {
		ctx, cancel := context.WithTimeout(ctx, statusTimeout)
		err := c.view.Fetch(ctx)
		cancel()
		if err != nil {
			return fmt.Errorf("%w: epoch %d is not known: %w", errUnsealed, res.Epoch, err)
		}
	}
	c.mu.Lock()
	announced, known := c.epochMasters[res.Epoch]
	c.mu.Unlock()
	if !known || announced != res.Master {
		return fmt.Errorf("%w: epoch %d's master is %q, not %q", errUnsealed, res.Epoch, announced, res.Master)
	}
	return nil
}

// asyncError fails every submission in progress when the broker refused
// this connection the right to publish requests: none of them reached a
// master.
func (c *Client) asyncError(err error) {
	m := deniedPublish.FindStringSubmatch(err.Error())
	if !errors.Is(err, nats.ErrPermissionViolation) || m == nil || m[1] != messages.SubjectExec {
		c.cfg.Logger.Warn("nats connection error", keyErr, err)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cl := range c.calls {
		c.deliver(cl, callEvent{denied: fmt.Errorf("%w: this credential may not publish to %s (submitting needs the submit, node or admin role); the command did not run", ErrDenied, m[1])})
	}
}

// openChunk accepts a chunk of live output only from the master announced
// for the chunk's epoch, sealed by it for this client; it opens it in
// place. A chunk of an epoch this client has not seen announced is
// dropped: the result, checked as every result is, fills in what it held.
func (c *Client) openChunk(chunk *messages.OutputChunk) error {
	c.mu.Lock()
	peer := c.memberKeys[chunk.Master]
	announced, known := c.epochMasters[chunk.Epoch]
	c.mu.Unlock()
	switch {
	case !known || announced != chunk.Master || chunk.Master == "":
		return fmt.Errorf("%w: %q is not the master announced for epoch %d", errUnsealed, chunk.Master, chunk.Epoch)
	case len(peer) == 0:
		return fmt.Errorf("%w: %q is no member this client knows", errUnsealed, chunk.Master)
	}
	keys, err := c.keys.shared(peer)
	if err != nil {
		return fmt.Errorf("%w: %w", errUnsealed, err)
	}
	return openChunk(keys, chunk)
}

// deliver hands ev to cl without blocking; a call has room for every
// event it can get before it reads one. Callers hold c.mu.
func (c *Client) deliver(cl *call, ev callEvent) {
	select {
	case cl.events <- ev:
	default:
		c.cfg.Logger.Warn("dropped a submission event: queue full")
	}
}

// handleInbox takes results (INBOX.r.ID), no-responder statuses (also on
// INBOX.r.ID), acks (INBOX.a.ID) and live output (INBOX.o.ID).
func (c *Client) handleInbox(msg *nats.Msg) {
	rest := msg.Subject[len(c.inbox)+1:]
	if len(rest) < 3 || rest[1] != '.' {
		return
	}
	kind, id := rest[0], rest[2:]
	// Decode before taking the lock: a result can be megabytes, and the
	// lock is every submission's.
	var res *messages.ExecResult
	var ack *messages.ExecAck
	var chunk *messages.OutputChunk
	switch {
	case kind == 'r' && msg.Header.Get("Status") == "503":
	case kind == 'r':
		res = &messages.ExecResult{}
		if err := proto.Unmarshal(msg.Data, res); err != nil {
			c.cfg.Logger.Warn("malformed result", keyID, id, keyErr, err)
			return
		}
	case kind == 'a':
		ack = &messages.ExecAck{}
		if err := proto.Unmarshal(msg.Data, ack); err != nil {
			c.cfg.Logger.Warn("malformed ack", keyID, id, keyErr, err)
			return
		}
	case kind == 'o':
		chunk = &messages.OutputChunk{}
		if err := proto.Unmarshal(msg.Data, chunk); err != nil {
			c.cfg.Logger.Warn("malformed output", keyID, id, keyErr, err)
			return
		}
		if err := c.openChunk(chunk); err != nil {
			c.cfg.Logger.Warn("ignored live output", keyID, id, keyMaster, chunk.Master, keyErr, err)
			return
		}
	default:
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cl := c.calls[id]
	switch {
	case cl == nil && res != nil:
		c.cfg.Logger.Warn("late result ignored: the command was already reported lost or unanswered",
			keyID, id, keyMaster, res.Master, keyEpoch, res.Epoch, keyExitCode, res.ExitCode, keyError, res.Error)
	case cl == nil:
	case chunk != nil:
		// A chunk that finds its queue full is dropped: the gap shows in
		// the next one's offset, and the result fills it in.
		select {
		case cl.chunks <- chunk:
		default:
		}
	case ack != nil:
		// Only from the master announced for an epoch no older than the
		// request's: a forged ack naming an old master could otherwise
		// make its later departure fail a command that ran elsewhere.
		if ack.Epoch >= cl.sentEpoch && c.epochMasters[ack.Epoch] == ack.Master && ack.Master != "" {
			cl.acked = ack
			c.deliver(cl, callEvent{ack: ack})
		} else {
			c.cfg.Logger.Warn("ignored an ack", keyID, id, keyMaster, ack.Master, keyEpoch, ack.Epoch)
		}
	case res != nil:
		c.deliver(cl, callEvent{result: res})
	default:
		c.deliver(cl, callEvent{noResponders: true})
	}
}

// Job is one command to submit.
type Job struct {
	// ID is the request's id; SubmitJob makes one when it is empty (128
	// random bits: nobody can guess another's).
	ID  string
	Cmd string
	// Timeout asks the master for a run time; 0 takes the client's
	// Timeout, and if that is 0 too, the master's default.
	Timeout time.Duration
	// Stdin, when not nil (even empty), is the command's whole input.
	Stdin []byte
	// Output, when set, receives the command's output as it is produced:
	// stream 1 is stdout, 2 stderr. Once the result is in, Output has been
	// given exactly the result's stdout and stderr, in order (what live
	// output missed, such as chunks lost in a reconnect, is given then,
	// after a note on stderr). Calls come from the submitting goroutine.
	Output func(stream int, data []byte)
	// Cancel, when it closes, asks the master to kill the command; the
	// result then says it was cancelled (or how it ended, if it ended
	// first). A command not yet taken by a master is not sent.
	Cancel <-chan struct{}
	// Via says to the history how the command was submitted
	// (messages.ViaPrompt, ViaExec, ViaWeb).
	Via string
	// Inputs are archives in the broker's file store (SendFiles,
	// SendArchive), unpacked into the fresh work directory the command
	// runs in; Collect names the files to bring back from it (the
	// result's ResultBundle, for Save).
	Inputs  []*messages.Bundle
	Collect []string
	// Taken, when set, hears which master took the command and its job in
	// the history, once the command has run a moment (a command that ends
	// sooner has its result instead). It is called from the submitting
	// goroutine, at most once per master.
	Taken func(master, job string)
}

// ErrCancelled: the job was cancelled before any master took it; the
// command did not run.
var ErrCancelled = errors.New("cancelled")

// Submit sends cmd to the master and blocks until its result arrives; see
// SubmitJob.
func (c *Client) Submit(ctx context.Context, cmd string) (*messages.ExecResult, error) {
	return c.SubmitJob(ctx, &Job{Cmd: cmd})
}

// SubmitJob sends job to the master and blocks until its result arrives.
//
// A command runs at most once: a request is sent again only when it
// provably reached no one: NATS answered "no responders" (mid-election),
// or a master refused it unrun (its epoch was stale, or it had lost touch
// with the broker). After a reconnect, replies that were lost are fetched
// from the masters that may have run the request. The error wraps
// ErrNoMaster, ErrMasterLost, ErrNoReply or ErrCancelled when no result
// came back; a command that ran but failed (timeout, rejected, busy,
// cancelled) is a result, not an error.
func (c *Client) SubmitJob(ctx context.Context, job *Job) (*messages.ExecResult, error) {
	if job.ID == "" {
		job.ID = rand.Text()
	}
	timeout := job.Timeout
	if timeout == 0 {
		timeout = c.cfg.Timeout
	}
	// The claim is 128 random bits: only this submission can show it.
	s := &submission{c: c, job: job, id: job.ID, claim: rand.Text(), timeout: timeout,
		cl: &call{events: make(chan callEvent, 16), masters: make(map[string]string)}}
	claimHash := sha256.Sum256([]byte(s.claim))
	s.req = &messages.ExecRequest{
		Id: s.id, Cmd: job.Cmd, Requester: c.cfg.Name, ClaimHash: hex.EncodeToString(claimHash[:]),
		TimeoutMs:      uint32(timeout.Milliseconds()),
		QueueTimeoutMs: uint32(c.cfg.QueueTimeout.Milliseconds()),
		AckSubject:     c.inbox + ".a." + s.id,
		RequesterKey:   c.keys.public(),
		Stdin:          job.Stdin,
		Via:            job.Via,
		SubmittedAt:    timestamppb.Now(),
		Inputs:         job.Inputs,
		Collect:        job.Collect,
	}
	if job.Output != nil {
		// Only a job that shows its output has a queue for it (and a nil
		// one, never ready, for chunks nobody asked for).
		s.req.OutputSubject = c.inbox + ".o." + s.id
		s.cl.chunks = make(chan *messages.OutputChunk, 256)
	}
	c.mu.Lock()
	c.calls[s.id] = s.cl
	s.cl.addMaster(c.prev)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.calls, s.id)
		c.mu.Unlock()
	}()
	res, err := s.run(ctx)
	if res != nil && job.Output != nil {
		s.complete(res)
	}
	return res, err
}

// jobNote names the job the master said it took, for an error that leaves
// the command's outcome to the history.
func (s *submission) jobNote() string {
	if s.jobID == "" {
		return ""
	}
	return " (job " + s.jobID + "; the history says how it ended)"
}

// submission is the state of one SubmitJob.
type submission struct {
	// jobID is the job the master said it took (its ack).
	jobID      string
	c          *Client
	job        *Job
	id         string
	claim      string // the secret whose hash the request carries
	timeout    time.Duration
	req        *messages.ExecRequest
	cl         *call
	attempt    int
	retryUntil time.Time
	// unknown counts the recovery rounds in which no master had the
	// request.
	unknown int
	// cancelled is set once the job's Cancel closed.
	cancelled bool
	// live is the output given to job.Output so far, by stream; broken
	// once a chunk went missing.
	live   [3][]byte
	broken [3]bool
}

// defaultRunWait is how long a requester that asked for the master's
// default run time expects a command to take until the master says (the
// ack of a command that runs longer than a moment carries its limits).
var defaultRunWait = executor.DefaultConfig().Timeout

func (s *submission) run(ctx context.Context) (*messages.ExecResult, error) {
	c := s.c
	runWait := s.timeout
	if runWait == 0 {
		runWait = defaultRunWait
	}
	wait := runWait + c.cfg.QueueTimeout + replyGrace
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	s.retryUntil = time.Now().Add(c.cfg.SubmitRetry)
	c.mu.Lock()
	reconnected := c.reconnected
	c.mu.Unlock()
	select {
	case <-s.job.Cancel:
		return nil, fmt.Errorf("%w before it was sent; the command did not run", ErrCancelled)
	default:
	}
	if err := s.send(); err != nil {
		return nil, err
	}
	// After a reconnect, recover polls until the cluster has settled and
	// the masters have been asked.
	var recover <-chan time.Time
	var since time.Time
	// Once cancelled, the masters are asked to cancel until the result
	// comes (the request may still be on its way to one), one round at a
	// time.
	cancel := s.job.Cancel
	var cancelAgain <-chan time.Time
	var asking atomic.Bool
	for {
		select {
		case chunk := <-s.cl.chunks:
			s.show(chunk)
		case ev := <-s.cl.events:
			if ev.result != nil {
				if err := c.verify(ctx, ev.result); err != nil {
					c.cfg.Logger.Warn("ignored a result", keyID, s.id, keyMaster, ev.result.Master, keyEpoch, ev.result.Epoch, keyErr, err)
					continue
				}
			}
			switch {
			case ev.ack != nil:
				// The master says how long the command may wait and run.
				wait = time.Duration(ev.ack.QueueTimeoutMs+ev.ack.TimeoutMs)*time.Millisecond + replyGrace
				deadline.Reset(wait)
				if ev.ack.Job != "" && ev.ack.Job != s.jobID {
					s.jobID = ev.ack.Job
					if s.job.Taken != nil {
						s.job.Taken(ev.ack.Master, ev.ack.Job)
					}
				}
			case ev.denied != nil:
				return nil, ev.denied
			case ev.lost != "":
				return nil, fmt.Errorf("%w: %s%s", ErrMasterLost, ev.lost, s.jobNote())
			case ev.noResponders,
				ev.result != nil && ev.result.ErrorKind == messages.ErrorKind_ERROR_KIND_STALE:
				// Nobody received it, or the master refused it unrun.
				c.mu.Lock()
				s.cl.sent = false
				c.mu.Unlock()
				if s.cancelled {
					return nil, fmt.Errorf("%w before any master took it; the command did not run", ErrCancelled)
				}
				if err := s.backoff(ctx); err != nil {
					return nil, err
				}
				if err := s.send(); err != nil {
					return nil, err
				}
			case ev.result != nil:
				s.drainChunks()
				return ev.result, nil
			}
		case <-cancel:
			cancel, s.cancelled = nil, true
			cancelAgain = time.After(0)
		case <-cancelAgain:
			if asking.CompareAndSwap(false, true) {
				go func() {
					defer asking.Store(false)
					s.askCancel(ctx)
				}()
			}
			cancelAgain = time.After(cancelRetry)
		case <-reconnected:
			c.mu.Lock()
			reconnected = c.reconnected
			c.mu.Unlock()
			since = time.Now()
			recover = time.After(0)
		case <-recover:
			res, settled, err := s.recover(ctx, since)
			if res != nil || err != nil {
				return res, err
			}
			// Poll for the cluster to settle; then ask once more a second
			// later, since a master may still be reconnecting.
			recover = time.After(100 * time.Millisecond)
			if settled {
				recover = time.After(time.Second)
			}
		case <-deadline.C:
			if res, _ := s.ask(ctx); res != nil {
				return res, nil
			}
			return nil, fmt.Errorf("%w within %v; the master may have been lost while running the command; it may or may not have run%s", ErrNoReply, wait, s.jobNote())
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", ErrNoReply, ctx.Err())
		}
	}
}

// cancelRetry is how often a cancelled submission asks its masters again.
const cancelRetry = 100 * time.Millisecond

// askCancel asks every master that may have the request to cancel it.
func (s *submission) askCancel(ctx context.Context) {
	s.c.mu.Lock()
	masters := maps.Clone(s.cl.masters)
	s.c.mu.Unlock()
	for inst, name := range masters {
		if _, err := s.query(ctx, inst, true); err != nil {
			s.c.cfg.Logger.Debug("cancel unanswered", keyID, s.id, keyMaster, name, keyErr, err)
		}
	}
}

// show gives a chunk of live output to the job, if it continues what was
// given of its stream; after a gap, the stream waits for the result.
func (s *submission) show(chunk *messages.OutputChunk) {
	st := int(chunk.Stream)
	if st != 1 && st != 2 || s.broken[st] || chunk.Id != s.id {
		return
	}
	if chunk.Offset != uint64(len(s.live[st])) {
		s.broken[st] = true
		return
	}
	s.live[st] = append(s.live[st], chunk.Data...)
	s.job.Output(st, chunk.Data)
}

// drainChunks shows the chunks that arrived before the result: the master
// sends the last chunk before the result, on the same connection.
func (s *submission) drainChunks() {
	for {
		select {
		case chunk := <-s.cl.chunks:
			s.show(chunk)
		default:
			return
		}
	}
}

// complete gives the job what live output missed of res's record.
func (s *submission) complete(res *messages.ExecResult) {
	for st, record := range [3]string{1: res.Stdout, 2: res.Stderr} {
		if st == 0 {
			continue
		}
		// A character cut at the end of what was shown is not compared:
		// the record holds it whole.
		live := s.live[st]
		for cut := 1; cut <= utf8.UTFMax-1 && cut <= len(live); cut++ {
			if utf8.RuneStart(live[len(live)-cut]) {
				if !utf8.FullRune(live[len(live)-cut:]) {
					live = live[:len(live)-cut]
				}
				break
			}
		}
		shown := strings.ToValidUTF8(string(live), "\uFFFD")
		if rest, ok := strings.CutPrefix(record, shown); ok {
			if rest != "" {
				s.job.Output(st, []byte(rest))
			}
			continue
		}
		// Live output went astray (chunks lost mid-character): the record
		// is the truth.
		s.job.Output(2, []byte("\nbaton: live output was interrupted; the whole output follows\n"))
		s.job.Output(st, []byte(record))
	}
}

func (s *submission) send() error {
	c := s.c
	c.mu.Lock()
	if v := c.latest; v != nil && v.BrokerStopping || !c.nc.IsConnected() {
		// The broker is about to close our connection, or it is closed:
		// hold the request, as if nobody had taken it, until a broker
		// announces again (a request buffered while reconnecting could
		// not be told from one lost).
		c.deliver(s.cl, callEvent{noResponders: true})
		c.mu.Unlock()
		return nil
	}
	if v := c.latest; v != nil {
		s.req.Epoch = v.Epoch
		s.cl.addMaster(master(v))
	}
	s.cl.sent, s.cl.sentEpoch = true, s.req.Epoch
	c.mu.Unlock()
	data, err := proto.Marshal(s.req)
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	if err := c.nc.PublishMsg(&nats.Msg{Subject: messages.SubjectExec, Reply: c.inbox + ".r." + s.id, Data: data}); err != nil {
		if errors.Is(err, nats.ErrMaxPayload) {
			return fmt.Errorf("command of %d bytes is too large: %w", len(s.req.Cmd), err)
		}
		return fmt.Errorf("send request: %w", err)
	}
	return nil
}

// brokers is where the client's connection looks for the broker.
func (c *Client) brokers() string {
	urls := make([]string, len(c.nc.Opts.Servers))
	for i, u := range c.nc.Opts.Servers {
		_, urls[i], _ = strings.Cut(u, "://")
	}
	return strings.Join(urls, ",")
}

// master returns the master's entry in a's members, nil if none.
func master(a *messages.Announcement) *messages.Member {
	for _, m := range a.Members {
		if a.Master != "" && m.Name == a.Master {
			return m
		}
	}
	return nil
}

// backoff waits before a resend: 10 ms doubling to 200 ms. It fails with
// ErrNoMaster once the retry window is over.
func (s *submission) backoff(ctx context.Context) error {
	s.attempt++
	d := min(10*time.Millisecond<<min(s.attempt-1, 5), 200*time.Millisecond)
	if time.Now().Add(d).After(s.retryUntil) {
		if !s.c.nc.IsConnected() {
			return fmt.Errorf("%w: broker unreachable at %s for %v; the command did not run", ErrNoMaster, s.c.brokers(), s.c.cfg.SubmitRetry)
		}
		return fmt.Errorf("%w: no node took the request for %v; is any node running (see `node status`)?", ErrNoMaster, s.c.cfg.SubmitRetry)
	}
	s.c.cfg.Logger.Debug("no master took the request; retrying", keyID, s.id, keyAttempt, s.attempt)
	select {
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrNoMaster, ctx.Err())
	case <-s.job.Cancel:
		return fmt.Errorf("%w before any master took it; the command did not run", ErrCancelled)
	case <-time.After(d):
		return nil
	}
}

// recover runs after a reconnect: replies sent while this connection was
// down are lost, so once an announcement naming a master has arrived since
// the reconnect (every live node has re-registered by then), it asks the
// masters that may have the request. A result found is returned. The
// request is never sent again here: a master's "unknown" does not prove
// that no copy is still on its way to one. When no master has it in two
// rounds a second apart, it was lost in transit, and that is reported.
// settled is false while the cluster has not settled yet.
func (s *submission) recover(ctx context.Context, since time.Time) (res *messages.ExecResult, settled bool, err error) {
	c := s.c
	c.mu.Lock()
	settled = c.latest != nil && c.latest.Master != "" && c.latestAt.After(since)
	c.mu.Unlock()
	if !settled {
		return nil, false, nil
	}
	res, known := s.ask(ctx)
	switch {
	case res != nil:
		return res, true, nil
	case known:
		s.unknown = 0
		return nil, true, nil
	}
	s.unknown++
	if s.unknown >= 2 {
		return nil, true, fmt.Errorf("%w: the request was lost in transit while the connection to the broker was down, and no live master has it; it most likely did not run", ErrNoReply)
	}
	return nil, true, nil
}

// ask asks every master that may have the request. It returns the result
// if one has it; known is whether any has received it (or did not answer,
// so might have).
func (s *submission) ask(ctx context.Context) (res *messages.ExecResult, known bool) {
	s.c.mu.Lock()
	masters := maps.Clone(s.cl.masters)
	s.c.mu.Unlock()
	for inst, name := range masters {
		st, err := s.query(ctx, inst, false)
		switch {
		case err != nil:
			s.c.cfg.Logger.Debug("status query unanswered", keyID, s.id, keyMaster, name, keyErr, err)
			known = true
		case st.Result != nil && s.c.verify(ctx, st.Result) == nil:
			return st.Result, true
		case st.Known:
			known = true
		}
	}
	return nil, known
}

func (s *submission) query(ctx context.Context, instanceID string, cancel bool) (*messages.ExecStatus, error) {
	b, err := proto.Marshal(&messages.ExecStatusQuery{Id: s.id, Claim: s.claim, Cancel: cancel})
	if err != nil {
		return nil, err
	}
	ctx, stop := context.WithTimeout(ctx, statusTimeout)
	defer stop()
	msg, err := s.c.nc.RequestWithContext(ctx, messages.ExecStatusSubject(instanceID), b)
	if err != nil {
		return nil, err
	}
	var st messages.ExecStatus
	if err := proto.Unmarshal(msg.Data, &st); err != nil {
		return nil, err
	}
	return &st, nil
}
