package agent

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"baton/messages"
)

// A master reports each job to the broker's history: a record when the
// command is taken, another when it ends. Records wait in an outbox until
// the broker has stored them, off the path of the command and its reply;
// whatever is pending when the broker is away goes again once it is back,
// and the broker ignores what it stored already.

// outbox holds the job records a master owes the history, the latest of
// each job, in the order the jobs came. It is safe for concurrent use.
type outbox struct {
	nc      *nats.Conn
	enabled func() bool // whether the broker keeps a history
	logger  *slog.Logger

	mu      sync.Mutex
	pending map[string]*messages.JobRecord
	order   []string // job ids, first queued first
	bytes   int
	dropped int
	wake    chan struct{}
	empty   chan struct{} // closed while nothing is pending
}

// The outbox's bounds.
const (
	// maxOutboxBytes bounds what waits for a broker that is away: at a
	// thousand jobs a second with a few KiB of output each, more than
	// the ten seconds a broker restart takes.
	maxOutboxBytes = 64 << 20
	// maxBatchBytes bounds one batch, well within a message.
	maxBatchBytes = 4 << 20
	// recordTimeout bounds the wait for the broker to store a batch.
	recordTimeout = 5 * time.Second
	// linger is how long records gather before a batch goes (as Kafka's
	// linger.ms): under load, one batch of many costs the broker and this
	// node far less than many of one.
	linger = 10 * time.Millisecond
	// The pause after a failed send grows from minRetry to maxRetry.
	minRetry = 100 * time.Millisecond
	maxRetry = 2 * time.Second
)

func newOutbox(nc *nats.Conn, enabled func() bool, logger *slog.Logger) *outbox {
	o := &outbox{nc: nc, enabled: enabled, logger: logger, pending: make(map[string]*messages.JobRecord),
		wake: make(chan struct{}, 1), empty: make(chan struct{})}
	close(o.empty)
	return o
}

// put queues r, replacing what is pending for its job (a job that ends
// before its first record went needs only its last). It never blocks.
func (o *outbox) put(r *messages.JobRecord) {
	if !o.enabled() {
		return
	}
	size := proto.Size(r)
	o.mu.Lock()
	if old, ok := o.pending[r.Id]; ok {
		if old.State != messages.JobState_JOB_STATE_RUNNING && r.State == messages.JobState_JOB_STATE_RUNNING {
			// A late report that it runs: it has ended.
			o.mu.Unlock()
			return
		}
		o.bytes -= proto.Size(old)
	} else {
		o.order = append(o.order, r.Id)
	}
	if len(o.pending) == 0 {
		o.empty = make(chan struct{})
	}
	o.pending[r.Id] = r
	o.bytes += size
	for o.bytes > maxOutboxBytes && len(o.order) > 1 {
		id := o.order[0]
		o.order = o.order[1:]
		if old, ok := o.pending[id]; ok {
			o.bytes -= proto.Size(old)
			delete(o.pending, id)
			o.dropped++
		}
	}
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// batch takes the pending records, oldest first, up to maxBatchBytes (at
// least one).
func (o *outbox) batch() []*messages.JobRecord {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.dropped > 0 {
		o.logger.Warn("job records dropped: the broker's history has been away too long", keyCount, o.dropped)
		o.dropped = 0
	}
	var recs []*messages.JobRecord
	size := 0
	for _, id := range o.order {
		r := o.pending[id]
		if r == nil {
			continue
		}
		s := proto.Size(r)
		if len(recs) > 0 && size+s > maxBatchBytes {
			break
		}
		size += s
		recs = append(recs, r)
	}
	return recs
}

// done removes the records sent, unless a newer one of the same job came
// meanwhile.
func (o *outbox) done(sent []*messages.JobRecord) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, r := range sent {
		if o.pending[r.Id] == r {
			delete(o.pending, r.Id)
			o.bytes -= proto.Size(r)
		}
	}
	o.order = slicesDeleteGone(o.order, o.pending)
	if len(o.pending) == 0 {
		close(o.empty)
	}
}

// drop forgets everything pending: the broker keeps no history.
func (o *outbox) drop() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.pending) > 0 {
		clear(o.pending)
		o.order, o.bytes = nil, 0
		close(o.empty)
	}
}

func slicesDeleteGone(order []string, pending map[string]*messages.JobRecord) []string {
	kept := order[:0]
	for _, id := range order {
		if _, ok := pending[id]; ok {
			kept = append(kept, id)
		}
	}
	return kept
}

// run sends batches until ctx ends, one at a time: while one waits for
// the broker, the next gathers.
func (o *outbox) run(ctx context.Context) {
	pause := minRetry
	retry := time.NewTimer(0)
	<-retry.C
	defer retry.Stop()
	failing := false // then only the retry timer sends again
	for {
		select {
		case <-ctx.Done():
			return
		case <-o.wake:
			if failing {
				continue
			}
		case <-retry.C:
		}
		failing = false
		select {
		case <-ctx.Done():
			return
		case <-time.After(linger):
		}
		for {
			if !o.enabled() {
				o.drop()
				break
			}
			recs := o.batch()
			if len(recs) == 0 {
				pause = minRetry
				break
			}
			if err := o.send(ctx, recs); err != nil {
				if ctx.Err() == nil {
					o.logger.Warn("job records not stored yet; sending them again", keyErr, err, keyRetryIn, pause)
					retry.Reset(pause)
					pause = min(2*pause, maxRetry)
					failing = true
				}
				break
			}
			pause = minRetry
			o.done(recs)
			// At most one batch a linger: under load, many records each.
			select {
			case <-ctx.Done():
				return
			case <-time.After(linger):
			}
		}
	}
}

func (o *outbox) send(ctx context.Context, recs []*messages.JobRecord) error {
	b, err := proto.Marshal(&messages.JobRecords{Records: recs})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, recordTimeout)
	defer cancel()
	msg, err := o.nc.RequestWithContext(ctx, messages.SubjectJobRecord, b)
	if err != nil {
		return err
	}
	var ack messages.JobRecordsAck
	if err := proto.Unmarshal(msg.Data, &ack); err != nil {
		return err
	}
	if ack.Error != "" {
		return errors.New(ack.Error)
	}
	return nil
}

// flush blocks until nothing is pending or ctx ends.
func (o *outbox) flush(ctx context.Context) error {
	o.mu.Lock()
	empty := o.empty
	o.mu.Unlock()
	select {
	case <-empty:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// jobRecord starts the record of job id, made by req (nil when it could
// not be read) arriving on reply at received.
func (n *Node) jobRecord(id string, req *messages.ExecRequest, reply string, received time.Time, epoch uint64) *messages.JobRecord {
	r := &messages.JobRecord{Id: id, Master: n.cfg.Name, Epoch: epoch, Role: replyRole(reply),
		SubmittedAt: timestamppb.New(received), Via: messages.ViaNATS}
	if req != nil {
		// A command refused for its length is kept as long as one may be.
		r.Cmd, r.Submitter = cut(req.Cmd, messages.MaxCommandBytes), cut(req.Requester, maxRequesterBytes)
		r.TimeoutMs = req.TimeoutMs
		for _, in := range req.Inputs[:min(len(req.Inputs), maxInputs)] {
			if messages.ValidSHA256(in.Sha256) {
				r.InputBundles = append(r.InputBundles, in.Sha256)
			}
		}
		for _, g := range req.Collect[:min(len(req.Collect), maxInputs)] {
			r.Collect = append(r.Collect, cut(g, maxRequesterBytes))
		}
		if req.SubmittedAt.IsValid() && !req.SubmittedAt.AsTime().After(received) {
			r.SubmittedAt = req.SubmittedAt
		}
		switch req.Via {
		case messages.ViaPrompt, messages.ViaExec, messages.ViaWeb:
			r.Via = req.Via
		}
	}
	return r
}

// cut is s cut to at most n bytes, on a character boundary (a record with
// invalid UTF-8 could not be sent).
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// maxRequesterBytes bounds the submitter's name a record keeps.
const maxRequesterBytes = 256

// replyRole is the role whose inbox reply is in (see auth.Role), empty
// for the shared inbox of a broker without credentials. Only that role
// reads answers there, so a requester naming another's gets none.
func replyRole(reply string) string {
	inbox, _, _ := strings.Cut(reply, ".")
	role, ok := strings.CutPrefix(inbox, "_INBOX_")
	if !ok {
		return ""
	}
	return role
}

// runningDelay is how long a command runs before the history is told it
// runs: most end sooner, and then their one record says how.
const runningDelay = ackDelay

// recordRunning reports, once it has run for runningDelay, that job r was
// taken at started and runs; the returned function cancels a pending
// report.
func (n *Node) recordRunning(r *messages.JobRecord, started time.Time) (cancel func()) {
	rec := &messages.JobRecord{Id: r.Id, Cmd: r.Cmd, State: messages.JobState_JOB_STATE_RUNNING,
		SubmittedAt: r.SubmittedAt, StartedAt: timestamppb.New(started), Master: r.Master, Epoch: r.Epoch,
		Submitter: r.Submitter, Role: r.Role, Via: r.Via, TimeoutMs: r.TimeoutMs,
		InputBundles: r.InputBundles, Collect: r.Collect}
	t := time.AfterFunc(runningDelay, func() { n.outbox.put(rec) })
	return func() { t.Stop() }
}

// recordEnd reports how job r ended: res, unless res ends no job. r is
// the outbox's from then on.
func (n *Node) recordEnd(r *messages.JobRecord, res *messages.ExecResult) {
	state, ok := messages.StateOf(res)
	if !ok {
		return
	}
	now := time.Now()
	r.State, r.ExitCode, r.Error, r.TimedOut = state, res.ExitCode, res.Error, res.TimedOut
	r.FinishedAt, r.DurationMs = timestamppb.New(now), res.DurationMs
	if state != messages.JobState_JOB_STATE_REJECTED {
		r.StartedAt = timestamppb.New(now.Add(-time.Duration(res.DurationMs) * time.Millisecond))
	}
	r.Stdout, r.Stderr, r.StdoutDropped, r.StderrDropped = res.Stdout, res.Stderr, res.StdoutDropped, res.StderrDropped
	n.outbox.put(r)
}
