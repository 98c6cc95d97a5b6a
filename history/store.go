package history

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"slices"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
	"google.golang.org/protobuf/proto"

	"baton/bus"
	"baton/messages"
)

// Broker is what the history needs of the broker.
type Broker interface {
	// ServiceConn opens an in-process connection to the broker's own
	// account, where JetStream is on and ServiceSubjects are answered.
	ServiceConn(name string, opts ...nats.Option) (*nats.Conn, error)
	// EnableJetStream turns JetStream on in that account; it may take
	// seconds (recovery after a crash), and is called once.
	EnableJetStream() error
}

// ServiceSubjects are the subjects the Store answers for clients.
func ServiceSubjects() []string {
	return []string{messages.SubjectJobRecord, messages.SubjectJobList, messages.SubjectJobGet}
}

// ErrUnknownJob is why a job is not in the history.
var ErrUnknownJob = errors.New("history: no such job")

// errLoading is why a request waited in vain for the index.
var errLoading = errors.New("history: still loading; try again in a moment")

// opTimeout bounds one JetStream operation of the broker's own: the store
// is in this process, so only a wedged one takes this long.
const opTimeout = 5 * time.Second

// Store is the job history. Masters send it job records (jobs.record);
// it keeps the latest state of each job, answers queries (jobs.list,
// jobs.get), marks the jobs of a lost master lost, and trims itself to
// its limits.
type Store struct {
	cfg    Config
	broker Broker
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream

	loaded chan struct{} // closed once the index holds the stored jobs
	jsOnce sync.Once
	jsErr  error

	writeMu sync.Mutex // one writer at a time: decisions read the index
	mu      sync.Mutex // guards idx
	idx     *index

	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// New prepares a history on b. It starts nothing.
func New(b Broker, cfg Config) (*Store, error) {
	if cfg.Logger == nil {
		cfg.Logger = DefaultConfig().Logger
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Store{cfg: cfg, broker: b, loaded: make(chan struct{}), idx: newIndex()}, nil
}

// Start subscribes, so that a master's records find a responder from the
// moment the broker is announced, and returns; the stream is created or
// opened and the index loaded in the background, and requests wait for
// them.
// After a failed Start, Close releases what it took.
func (s *Store) Start(ctx context.Context) error {
	var err error
	if s.nc, err = s.broker.ServiceConn("baton-history"); err != nil {
		return err
	}
	for subject, handle := range map[string]nats.MsgHandler{
		messages.SubjectJobRecord: s.handleRecords,
		messages.SubjectJobList:   s.handleList,
		messages.SubjectJobGet:    s.handleGet,
	} {
		if _, err := s.nc.Subscribe(subject, handle); err != nil {
			return fmt.Errorf("subscribe %s: %w", subject, err)
		}
	}
	if err := s.nc.Flush(); err != nil {
		return fmt.Errorf("flush subscriptions: %w", err)
	}
	if s.js, err = jetstream.New(s.nc); err != nil {
		return err
	}
	life, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	// In the background: JetStream recovering a stream after a crash can
	// take seconds, and the broker's election must not wait for it.
	s.wg.Go(func() {
		for attempt := 1; ; attempt++ {
			err := s.open(life)
			if err == nil {
				break
			}
			if life.Err() != nil {
				return
			}
			s.cfg.Logger.Error("history not opened; trying again", keyErr, err, "attempt", attempt)
			select {
			case <-life.Done():
				return
			case <-time.After(time.Second):
			}
		}
		s.sweep(life)
	})
	return nil
}

// open creates or opens the stream and loads the index, then closes
// loaded.
func (s *Store) open(ctx context.Context) error {
	s.jsOnce.Do(func() { s.jsErr = s.broker.EnableJetStream() })
	if s.jsErr != nil {
		return s.jsErr
	}
	var err error
	s.stream, err = s.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        messages.JobStream,
		Description: "baton job history: one JSON record per job, on " + messages.JobSubjectPrefix + "<job id>",
		Subjects:    []string{messages.JobSubjectPrefix + "*"},
		Storage:     jetstream.FileStorage,
		// The latest state of each job (as choria asyncjobs keeps tasks).
		MaxMsgsPerSubject: 1,
		MaxMsgSize:        messages.MaxPayload,
		// No MaxAge or MaxBytes: the stream would drop running jobs with
		// the rest. The sweeper enforces both and spares them.
		AllowDirect: true,
	})
	if err != nil {
		return fmt.Errorf("create stream %s: %w", messages.JobStream, err)
	}
	return s.load(ctx)
}

// Close stops the sweeper and closes the connection, waiting for what is
// under way. It is safe to call twice, and after a failed Start.
func (s *Store) Close() {
	s.once.Do(func() {
		if s.cancel != nil {
			s.cancel()
		}
		if s.nc != nil {
			s.nc.Close()
		}
		s.wg.Wait()
	})
}

// load reads every stored record into the index, a batch at a time.
func (s *Store) load(ctx context.Context) error {
	began := time.Now()
	info, err := s.stream.Info(ctx)
	if err != nil {
		return err
	}
	last := info.State.LastSeq
	for seq := info.State.FirstSeq; seq <= last && info.State.Msgs > 0; {
		msgs, err := jetstreamext.GetBatch(ctx, s.js, messages.JobStream, 1000,
			jetstreamext.GetBatchSeq(seq), jetstreamext.GetBatchMaxBytes(8<<20))
		if err != nil {
			return err
		}
		n := 0
		for m, err := range msgs {
			if err != nil {
				if errors.Is(err, jetstream.ErrMsgNotFound) {
					break
				}
				return err
			}
			n++
			seq = m.Sequence + 1
			// The index holds no output: the decoder skips it.
			var job messages.JobSummary
			if err := json.Unmarshal(m.Data, &job); err != nil || !messages.ValidJobID(job.ID) {
				s.cfg.Logger.Warn("unreadable history record skipped", "seq", m.Sequence, keyErr, err)
				continue
			}
			e := newEntry(&job, m.Sequence, len(m.Data), m.Time)
			s.mu.Lock()
			// A record written since the load began is newer than this.
			if old := s.idx.get(job.ID); old == nil || old.seq < m.Sequence {
				s.idx.put(e)
			}
			s.mu.Unlock()
		}
		if n == 0 {
			break
		}
	}
	s.mu.Lock()
	jobs := len(s.idx.order)
	s.mu.Unlock()
	close(s.loaded)
	s.cfg.Logger.Info("history loaded", keyJobs, jobs, keyTook, time.Since(began).Round(time.Millisecond))
	return nil
}

// waitLoaded blocks until the index is loaded or ctx ends.
func (s *Store) waitLoaded(ctx context.Context) error {
	select {
	case <-s.loaded:
		return nil
	case <-ctx.Done():
		return errLoading
	}
}

// Loaded is closed once the stored jobs are indexed and the history answers.
func (s *Store) Loaded() <-chan struct{} { return s.loaded }

func (s *Store) respond(msg *nats.Msg, data []byte) {
	if msg.Reply == "" {
		return
	}
	if err := msg.Respond(data); err != nil {
		s.cfg.Logger.Warn("history reply lost", keyErr, err)
	}
}

// handleRecords stores a master's batch of records and acknowledges it
// once all are stored.
func (s *Store) handleRecords(msg *nats.Msg) {
	ack := &messages.JobRecordsAck{}
	var batch messages.JobRecords
	var err error
	if err = proto.Unmarshal(msg.Data, &batch); err != nil {
		ack.Error = fmt.Sprintf("unreadable job records: %v", err)
	} else if batch.Records, err = s.fromSender(msg, batch.Records); err != nil {
		ack.Error = err.Error()
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		if err := s.Record(ctx, batch.Records...); err != nil {
			ack.Error = err.Error()
		}
		cancel()
	}
	b, _ := proto.Marshal(ack)
	s.respond(msg, b)
}

// fromSender keeps the records of recs that msg's sender may report: a
// node, its own jobs. A connection that is no node's (yet: a master
// registering again after a reconnect) gets an error, and sends again.
func (s *Store) fromSender(msg *nats.Msg, recs []*messages.JobRecord) ([]*messages.JobRecord, error) {
	if s.cfg.Sender == nil {
		return recs, nil
	}
	sender, ok := bus.SenderOf(msg)
	name := ""
	if ok {
		name, ok = s.cfg.Sender(sender.ClientID)
	}
	if !ok {
		return nil, errors.New("history: job records only come from a registered node; send them again once registered")
	}
	return slices.DeleteFunc(recs, func(r *messages.JobRecord) bool {
		if r.Master != name {
			s.cfg.Logger.Warn("job record refused: a node reports its own jobs only", keyJob, r.Id, keyMaster, r.Master, "sender", name)
			return true
		}
		return false
	}), nil
}

// Record stores what recs say of their jobs, once each: a record of a job
// that has ended changes nothing, but for a lost job, which takes the
// outcome its master reports and keeps a note that it was lost. It
// returns once every record is stored, or with the first failure (then
// some may be stored: sending them again is harmless).
func (s *Store) Record(ctx context.Context, recs ...*messages.JobRecord) error {
	if err := s.waitLoaded(ctx); err != nil {
		return err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	type write struct {
		job *messages.Job
		ack jetstream.PubAckFuture
		n   int
	}
	var writes []write
	seen := make(map[string]*messages.Job)
	for _, r := range recs {
		if reason := invalid(r); reason != "" {
			s.cfg.Logger.Warn("job record refused", keyJob, r.Id, "reason", reason)
			continue
		}
		job := messages.JobOf(r)
		prior := seen[r.Id]
		if prior == nil {
			s.mu.Lock()
			if e := s.idx.get(r.Id); e != nil {
				prior = &messages.Job{JobSummary: e.sum}
			}
			s.mu.Unlock()
		}
		switch {
		case prior == nil && !job.Finished() && s.running() >= maxRunning:
			s.cfg.Logger.Warn("job record refused: too many jobs running", keyJob, r.Id, keyMaster, r.Master, keyJobs, maxRunning)
			continue
		case prior == nil:
		case prior.State == messages.StateLost && job.Finished():
			job.Note = fmt.Sprintf("its master was lost at %s (%s); this is the outcome %s reported when it came back",
				prior.FinishedAt.Format(time.RFC3339), prior.Error, job.Master)
		case prior.Finished() || !job.Finished():
			continue // ended already, or running still
		}
		seen[r.Id] = job
		data, err := encode(job)
		if err != nil {
			return err
		}
		ack, err := s.js.PublishMsgAsync(&nats.Msg{Subject: messages.JobSubject(job.ID), Data: data})
		if err != nil {
			return fmt.Errorf("store job %s: %w", job.ID, err)
		}
		writes = append(writes, write{job, ack, len(data)})
	}
	for _, w := range writes {
		select {
		case pa := <-w.ack.Ok():
			s.stored(newEntry(&w.job.JobSummary, pa.Sequence, w.n, time.Now()))
		case err := <-w.ack.Err():
			return fmt.Errorf("store job %s: %w", w.job.ID, err)
		case <-ctx.Done():
			return fmt.Errorf("store job %s: %w", w.job.ID, ctx.Err())
		}
	}
	return nil
}

// stored indexes a record written, and tells Config.Changed. Callers
// hold writeMu.
func (s *Store) stored(e *entry) {
	s.mu.Lock()
	s.idx.put(e)
	s.mu.Unlock()
	if s.cfg.Changed != nil {
		s.cfg.Changed(&e.sum)
	}
}

// maxRunning bounds the jobs the history holds running: a record of one
// more is refused. Running jobs never expire, so what a misbehaving master
// could make them take is bounded too.
const maxRunning = 100_000

// running counts the jobs held running.
func (s *Store) running() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.idx.running
}

// invalid says why r cannot be stored, empty when it can.
func invalid(r *messages.JobRecord) string {
	switch {
	case !messages.ValidJobID(r.Id):
		return "malformed job id"
	case r.State == messages.JobState_JOB_STATE_LOST || r.State.Name() == "":
		// Only the broker knows a master lost.
		return fmt.Sprintf("state %v is not a master's to report", r.State)
	case len(r.Cmd) > messages.MaxCommandBytes:
		return "command too long"
	case r.OutputBundle != "" && !messages.ValidSHA256(r.OutputBundle):
		return "malformed output bundle"
	case len(r.InputBundles) > maxBundles || len(r.Collect) > maxBundles:
		return "too many bundles or collect patterns"
	}
	for _, sha := range r.InputBundles {
		if !messages.ValidSHA256(sha) {
			return "malformed input bundle"
		}
	}
	return ""
}

// maxBundles bounds the input archives and the collect patterns of a
// record: far more than a command line can name.
const maxBundles = 256

// Referenced reports whether a record names the archive sha of the file
// store (see files.Config.Referenced).
func (s *Store) Referenced(sha string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.idx.refs[sha] > 0
}

// MasterLost marks the running jobs of the named master lost, at at,
// because of why. It blocks until they are stored or ctx ends.
func (s *Store) MasterLost(ctx context.Context, master, why string, at time.Time) error {
	return s.markLost(ctx, at, func(e *entry) (string, bool) {
		return fmt.Sprintf("master %s was lost while it ran: %s", master, why), e.sum.Master == master
	})
}

// Reconcile marks lost the running jobs whose master is not live: after a
// broker restart, the masters that did not come back.
func (s *Store) Reconcile(ctx context.Context, live func(name string) bool, at time.Time) error {
	return s.markLost(ctx, at, func(e *entry) (string, bool) {
		return fmt.Sprintf("master %s did not come back after the broker restarted", e.sum.Master), !live(e.sum.Master)
	})
}

func (s *Store) markLost(ctx context.Context, at time.Time, lost func(*entry) (string, bool)) error {
	if err := s.waitLoaded(ctx); err != nil {
		return err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	type victim struct {
		id, why string
	}
	var victims []victim
	s.mu.Lock()
	for _, e := range s.idx.order {
		if e.sum.State == messages.StateRunning {
			if why, ok := lost(e); ok {
				victims = append(victims, victim{e.sum.ID, why})
			}
		}
	}
	s.mu.Unlock()
	var errs []error
	for _, v := range victims {
		job, err := s.read(ctx, v.id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if job.Finished() {
			// Stored finished by a write whose acknowledgement was missed.
			continue
		}
		job.State, job.Error, job.ExitCode = messages.StateLost, v.why, -1
		job.FinishedAt = &at
		if job.StartedAt != nil {
			job.DurationMs = at.Sub(*job.StartedAt).Milliseconds()
		}
		data, err := encode(job)
		if err == nil {
			var pa *jetstream.PubAck
			if pa, err = s.js.Publish(ctx, messages.JobSubject(job.ID), data); err == nil {
				s.stored(newEntry(&job.JobSummary, pa.Sequence, len(data), time.Now()))
				s.cfg.Logger.Info("job lost with its master", keyJob, job.ID, keyMaster, job.Master)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("mark job %s lost: %w", job.ID, err))
		}
	}
	return errors.Join(errs...)
}

// encode is v as JSON with <, > and & as they are: records as stored
// (`nats stream get` shows commands as typed) and the answers to queries.
func encode(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// read returns job id's stored record.
func (s *Store) read(ctx context.Context, id string) (*messages.Job, error) {
	m, err := s.stream.GetLastMsgForSubject(ctx, messages.JobSubject(id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrUnknownJob, id)
	}
	if err != nil {
		return nil, fmt.Errorf("read job %s: %w", id, err)
	}
	var job messages.Job
	if err := json.Unmarshal(m.Data, &job); err != nil {
		return nil, fmt.Errorf("read job %s: %w", id, err)
	}
	return &job, nil
}
