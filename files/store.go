package files

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"baton/bundle"
	"baton/bus"
	"baton/messages"
)

// Broker is what the file store needs of the broker.
type Broker interface {
	// ServiceConn opens an in-process connection to the broker's own
	// account, where JetStream is on (once Config.Ready closes) and the
	// store's subjects are answered.
	ServiceConn(name string, opts ...nats.Option) (*nats.Conn, error)
}

// ServiceSubjects are the subjects the Store answers for clients.
func ServiceSubjects() []string {
	return []string{messages.SubjectFilePut, messages.SubjectFileGet}
}

// Bounds on what the store holds for requests under way.
const (
	// maxActive bounds the requests handled at once; more are answered
	// busy. Each may hold a piece of an archive (1 MiB).
	maxActive = 32
	// maxSessions bounds the uploads and the downloads open, each; a
	// stalled download holds a few MiB.
	maxSessions = 64
	// maxClientSessions bounds those of one connection, so that one
	// client cannot take them all.
	maxClientSessions = 8
	// idleTimeout ends an upload or download whose next piece is not
	// asked for in time: its requester is gone.
	idleTimeout = 30 * time.Second
	// opTimeout bounds one request's wait for the store: it is in this
	// process, so only a wedged one takes this long.
	opTimeout = 10 * time.Second
	// maxDeletes bounds the archives one sweep deletes.
	maxDeletes = 100
)

// Store is the file store: it answers files.put and files.get, grants
// tickets, and deletes the archives that no record names and no ticket
// holds.
type Store struct {
	cfg    Config
	broker Broker
	nc     *nats.Conn
	obs    jetstream.ObjectStore
	opened chan struct{} // closed once obs is open and objects loaded
	active chan struct{} // a slot per request handled

	mu sync.Mutex
	// objects are the archives stored.
	objects   map[string]*object
	inflight  map[string]bool // archives being uploaded
	deleting  map[string]bool // archives being deleted
	uploads   map[string]*upload
	downloads map[string]*download
	// sessions counts the uploads and downloads of each connection.
	sessions map[uint64]int

	life   context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// New prepares a file store on b. It starts nothing.
func New(b Broker, cfg Config) (*Store, error) {
	if cfg.Logger == nil {
		cfg.Logger = DefaultConfig().Logger
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Store{cfg: cfg, broker: b, opened: make(chan struct{}), active: make(chan struct{}, maxActive),
		objects: make(map[string]*object), inflight: make(map[string]bool), deleting: make(map[string]bool),
		uploads: make(map[string]*upload), downloads: make(map[string]*download), sessions: make(map[uint64]int)}, nil
}

// object is what the store knows of an archive it holds.
type object struct {
	// granted is the time of its last ticket (or its storing), zero once
	// a record accounts for it.
	granted time.Time
	// proof is its bytes' proof (messages.FilePut.proof), which only the
	// broker knows besides those who hold the bytes.
	proof string
}

// proofPrefix starts what an archive's proof hashes.
const proofPrefix = "baton file proof\x00"

// NewProof is a hash for an archive's proof: write its bytes.
func NewProof() hash.Hash {
	h := sha256.New()
	h.Write([]byte(proofPrefix))
	return h
}

// Start subscribes and returns; the bucket is opened once Config.Ready
// closes, and requests wait for it. After a failed Start, Close releases
// what it took.
func (s *Store) Start(ctx context.Context) error {
	var err error
	if s.nc, err = s.broker.ServiceConn("baton-files"); err != nil {
		return err
	}
	s.life, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	const tooBusy = "files: the broker is busy with other transfers; try again in a moment"
	busy := map[string]proto.Message{
		messages.SubjectFilePut: &messages.FilePutReply{Error: tooBusy, Retry: true},
		messages.SubjectFileGet: &messages.FileChunk{Error: tooBusy, Retry: true},
	}
	for subject, handle := range map[string]func(*nats.Msg){
		messages.SubjectFilePut: s.put,
		messages.SubjectFileGet: s.get,
	} {
		if _, err := s.nc.Subscribe(subject, func(msg *nats.Msg) { s.dispatch(msg, handle, busy[subject]) }); err != nil {
			return fmt.Errorf("subscribe %s: %w", subject, err)
		}
	}
	if err := s.nc.Flush(); err != nil {
		return fmt.Errorf("flush subscriptions: %w", err)
	}
	s.wg.Go(func() {
		select {
		case <-s.life.Done():
			return
		case <-s.cfg.Ready:
		}
		for attempt := 1; ; attempt++ {
			err := s.open(s.life)
			if err == nil {
				break
			}
			if s.life.Err() != nil {
				return
			}
			s.cfg.Logger.Error("file store not opened; trying again", keyErr, err, "attempt", attempt)
			select {
			case <-s.life.Done():
				return
			case <-time.After(time.Second):
			}
		}
		s.sweep()
	})
	return nil
}

// open creates or opens the bucket and learns what it holds.
func (s *Store) open(ctx context.Context) error {
	js, err := jetstream.New(s.nc)
	if err != nil {
		return err
	}
	s.obs, err = js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      messages.FileBucket,
		Description: "baton files: the archives sent with commands and brought back, each named by its SHA-256",
		Storage:     jetstream.FileStorage,
		// A full store refuses new archives, and keeps the history's
		// room.
		MaxBytes: s.cfg.StoreBytes,
	})
	if err != nil {
		return fmt.Errorf("create object store %s: %w", messages.FileBucket, err)
	}
	list, err := s.obs.List(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		return fmt.Errorf("list object store %s: %w", messages.FileBucket, err)
	}
	s.mu.Lock()
	for _, info := range list {
		s.objects[info.Name] = &object{granted: info.ModTime, proof: info.Metadata["proof"]}
	}
	s.mu.Unlock()
	close(s.opened)
	return nil
}

// Close ends the uploads and downloads under way, stops the sweeper and
// closes the connection. It is safe to call twice, and after a failed
// Start.
func (s *Store) Close() {
	s.once.Do(func() {
		if s.cancel != nil {
			s.cancel()
		}
		s.mu.Lock()
		for _, u := range s.uploads {
			u.pw.CloseWithError(errClosing)
		}
		for _, d := range s.downloads {
			d.cancel()
		}
		s.mu.Unlock()
		if s.nc != nil {
			s.nc.Close()
		}
		s.wg.Wait()
	})
}

var errClosing = errors.New("files: the broker is stopping; send the files again")

// dispatch handles msg on a goroutine of its own, so that one slow piece
// holds up no other transfer; past maxActive it answers busy.
func (s *Store) dispatch(msg *nats.Msg, handle func(*nats.Msg), busy proto.Message) {
	select {
	case s.active <- struct{}{}:
	default:
		s.respond(msg, busy)
		return
	}
	s.wg.Go(func() {
		defer func() { <-s.active }()
		handle(msg)
	})
}

// ready waits until the bucket is open.
func (s *Store) ready() error {
	t := time.NewTimer(opTimeout)
	defer t.Stop()
	select {
	case <-s.opened:
		return nil
	case <-s.life.Done():
		return errClosing
	case <-t.C:
		return errors.New("files: the file store is still opening; try again in a moment")
	}
}

// Ticket grants reading the archive sha for the ticket TTL, and keeps
// the archive at least that long.
func (s *Store) Ticket(sha string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ticketLocked(sha)
}

// ticketLocked is Ticket, for a caller that holds s.mu.
func (s *Store) ticketLocked(sha string) string {
	now := time.Now()
	if o, ok := s.objects[sha]; ok {
		o.granted = now
	}
	return ticket(s.cfg.Key, sha, now.Add(s.cfg.TicketTTL))
}

// Used tells the store that a record made at at names the archives shas:
// the tickets granted before no longer need to keep them, the record does.
func (s *Store) Used(shas []string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sha := range shas {
		if o, ok := s.objects[sha]; ok && !o.granted.After(at) {
			o.granted = time.Time{}
		}
	}
}

// Has reports whether the archive sha is stored.
func (s *Store) Has(sha string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.objects[sha]
	return ok
}

func (s *Store) respond(msg *nats.Msg, m proto.Message) {
	if msg.Reply == "" {
		return
	}
	b, err := proto.Marshal(m)
	if err == nil {
		err = msg.Respond(b)
	}
	if err != nil {
		s.cfg.Logger.Warn("file store reply lost", keyErr, err)
	}
}

// upload is an archive being stored: its pieces are written into the
// pipe the object store's Put reads.
type upload struct {
	id     string
	owner  uint64 // the sender's connection
	sha    string
	size   uint64
	format bundle.Format
	pw     *io.PipeWriter
	done   chan error // Put's outcome
	idle   *time.Timer
	closed atomic.Bool
	mu     sync.Mutex // one piece at a time
	next   uint64     // the offset of the next piece
}

// retryable is an error the requester may meet again with the same
// request, after a moment.
type retryable struct{ error }

func (s *Store) put(msg *nats.Msg) {
	var req messages.FilePut
	if err := proto.Unmarshal(msg.Data, &req); err != nil {
		s.respond(msg, &messages.FilePutReply{Error: fmt.Sprintf("files: unreadable request: %v", err)})
		return
	}
	owner := ownerOf(msg)
	var reply *messages.FilePutReply
	var err error
	if req.Upload == "" {
		reply, err = s.begin(&req, owner)
	} else {
		reply, err = s.piece(&req, owner)
	}
	if err != nil {
		var r retryable
		reply = &messages.FilePutReply{Error: err.Error(), Retry: errors.As(err, &r)}
	}
	s.respond(msg, reply)
}

// ownerOf is the connection msg came from, 0 when unknown.
func ownerOf(msg *nats.Msg) uint64 {
	sender, _ := bus.SenderOf(msg)
	return sender.ClientID
}

// takeSession counts one more session of owner's, or says why it may
// not have one; release gives it back. Callers hold s.mu.
func (s *Store) takeSession(owner uint64, open int) error {
	switch {
	case open >= maxSessions:
		return retryable{errors.New("files: the broker is moving too many files at once; try again in a moment")}
	case owner != 0 && s.sessions[owner] >= maxClientSessions:
		return retryable{fmt.Errorf("files: this connection moves %d files at once already, the most it may", maxClientSessions)}
	}
	s.sessions[owner]++
	return nil
}

func (s *Store) releaseSession(owner uint64) {
	if s.sessions[owner]--; s.sessions[owner] <= 0 {
		delete(s.sessions, owner)
	}
}

// begin checks an archive against the limits, and answers with its bundle
// when it is stored already and the request proves it holds the bytes,
// or opens an upload.
func (s *Store) begin(req *messages.FilePut, owner uint64) (*messages.FilePutReply, error) {
	f, err := bundle.ParseFormat(req.Format)
	switch {
	case !messages.ValidSHA256(req.Sha256):
		return nil, errors.New("files: the archive's SHA-256 must be 64 lower-case hex digits")
	case !messages.ValidSHA256(req.Proof):
		return nil, errors.New("files: the archive's proof must be 64 lower-case hex digits")
	case err != nil:
		return nil, err
	case req.Size > uint64(s.cfg.MaxBytes):
		return nil, fmt.Errorf("files: an archive of %s is over the broker's --max-bundle-bytes of %s", bundle.Size(int64(req.Size)), bundle.Size(s.cfg.MaxBytes))
	case req.Files > uint32(s.cfg.MaxFiles):
		return nil, fmt.Errorf("files: an archive of %d files is over the broker's --max-bundle-files of %d", req.Files, s.cfg.MaxFiles)
	}
	if err := s.ready(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if o, ok := s.objects[req.Sha256]; ok {
		if subtle.ConstantTimeCompare([]byte(o.proof), []byte(req.Proof)) != 1 {
			return nil, errors.New("files: an archive of that SHA-256 is stored, and this request does not prove it holds its bytes")
		}
		return s.stored(req.Sha256, req.Size, f), nil
	}
	if s.inflight[req.Sha256] || s.deleting[req.Sha256] {
		// Someone stores the same bytes, or they are on their way out:
		// they are this requester's in a moment.
		return nil, retryable{errors.New("files: the same archive is being stored or removed; try again in a moment")}
	}
	if err := s.takeSession(owner, len(s.uploads)); err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	u := &upload{id: rand.Text(), owner: owner, sha: req.Sha256, size: req.Size, format: f, pw: pw, done: make(chan error, 1)}
	s.inflight[u.sha], s.uploads[u.id] = true, u
	u.idle = time.AfterFunc(idleTimeout, func() { s.endUpload(u, errors.New("files: upload idle for too long; send the files again")) })
	s.wg.Go(func() {
		meta := jetstream.ObjectMeta{Name: u.sha, Metadata: map[string]string{"format": f.String(), "proof": req.Proof}}
		_, err := s.obs.Put(s.life, meta, &checked{r: pr, sum: sha256.New(), proof: NewProof(), sha: u.sha, wantProof: req.Proof, size: u.size})
		// A Put that failed reads no more: the writer must not wait.
		pr.CloseWithError(err)
		s.mu.Lock()
		delete(s.inflight, u.sha)
		if err == nil {
			s.objects[u.sha] = &object{granted: time.Now(), proof: req.Proof}
		}
		s.mu.Unlock()
		u.done <- err
	})
	return &messages.FilePutReply{Upload: u.id}, nil
}

// piece writes one piece of an upload, and on the last one waits until
// the archive is stored.
func (s *Store) piece(req *messages.FilePut, owner uint64) (*messages.FilePutReply, error) {
	s.mu.Lock()
	u := s.uploads[req.Upload]
	s.mu.Unlock()
	if u == nil || u.owner != owner {
		return nil, errors.New("files: no such upload (it ended, or was idle too long); send the files again")
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	fail := func(err error) (*messages.FilePutReply, error) {
		s.endUpload(u, err)
		return nil, err
	}
	switch {
	case u.closed.Load():
		return nil, errors.New("files: the upload has ended; send the files again")
	case req.Offset != u.next:
		return fail(fmt.Errorf("files: a piece at offset %d, want %d", req.Offset, u.next))
	case len(req.Data) > messages.FileChunkBytes:
		return fail(fmt.Errorf("files: a piece of %d bytes, more than the %d allowed", len(req.Data), messages.FileChunkBytes))
	case u.next+uint64(len(req.Data)) > u.size:
		return fail(fmt.Errorf("files: more than the %d bytes announced", u.size))
	}
	u.idle.Reset(idleTimeout)
	if _, err := u.pw.Write(req.Data); err != nil {
		return fail(fmt.Errorf("files: store %s: %w", u.sha, err))
	}
	u.next += uint64(len(req.Data))
	if !req.Last {
		return &messages.FilePutReply{Upload: u.id}, nil
	}
	u.pw.Close()
	err := <-u.done
	s.endUpload(u, nil)
	if err != nil {
		return nil, fmt.Errorf("files: store %s: %w", u.sha, err)
	}
	s.cfg.Logger.Info("archive stored", keySHA, u.sha, keyBytes, u.size)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stored(u.sha, u.size, u.format), nil
}

// endUpload forgets u, ending its Put with err when it has not ended.
func (s *Store) endUpload(u *upload, err error) {
	if u.closed.Swap(true) {
		return
	}
	s.mu.Lock()
	delete(s.uploads, u.id)
	s.releaseSession(u.owner)
	s.mu.Unlock()
	u.idle.Stop()
	if err != nil {
		u.pw.CloseWithError(err)
	}
}

// stored is the bundle of a stored archive, with a fresh ticket. Callers
// hold s.mu, so that the archive cannot go before its ticket keeps it.
func (s *Store) stored(sha string, size uint64, f bundle.Format) *messages.FilePutReply {
	return &messages.FilePutReply{Bundle: &messages.Bundle{Sha256: sha, Size: size, Format: f.String(), Ticket: s.ticketLocked(sha)}}
}

// checked reads an upload, and fails at its end unless it had the size,
// the SHA-256 and the proof announced: a failed read makes the object
// store discard what it wrote, so only the bytes a name says are ever
// stored under it.
type checked struct {
	r         io.Reader
	sum       hash.Hash
	proof     hash.Hash
	sha       string
	wantProof string
	size      uint64
	n         uint64
}

func (c *checked) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.sum.Write(p[:n])
	c.proof.Write(p[:n])
	c.n += uint64(n)
	if errors.Is(err, io.EOF) && (c.n != c.size || hex.EncodeToString(c.sum.Sum(nil)) != c.sha ||
		hex.EncodeToString(c.proof.Sum(nil)) != c.wantProof) {
		return n, fmt.Errorf("files: the archive sent (%d bytes) is not the one announced (%d bytes, SHA-256 %s)", c.n, c.size, c.sha)
	}
	return n, err
}

// download is an archive being read, a piece per request.
type download struct {
	id     string
	owner  uint64
	r      io.ReadCloser
	size   uint64
	cancel context.CancelFunc
	idle   *time.Timer
	ended  atomic.Bool
	mu     sync.Mutex
	next   uint64
}

func (s *Store) get(msg *nats.Msg) {
	var req messages.FileGet
	if err := proto.Unmarshal(msg.Data, &req); err != nil {
		s.respond(msg, &messages.FileChunk{Error: fmt.Sprintf("files: unreadable request: %v", err)})
		return
	}
	chunk, err := s.read(&req, ownerOf(msg))
	if err != nil {
		var r retryable
		chunk = &messages.FileChunk{Error: err.Error(), Retry: errors.As(err, &r)}
	}
	s.respond(msg, chunk)
}

func (s *Store) read(req *messages.FileGet, owner uint64) (*messages.FileChunk, error) {
	var d *download
	if req.Download == "" {
		sha, err := checkTicket(s.cfg.Key, req.Ticket, time.Now())
		if err != nil {
			return nil, err
		}
		if d, err = s.openDownload(sha, owner); err != nil {
			return nil, err
		}
	} else {
		s.mu.Lock()
		d = s.downloads[req.Download]
		s.mu.Unlock()
		if d == nil || d.owner != owner {
			return nil, errors.New("files: no such download (it ended, or was idle too long); ask again with the ticket")
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if req.Offset != d.next {
		s.endDownload(d)
		return nil, fmt.Errorf("files: a piece at offset %d, want %d", req.Offset, d.next)
	}
	d.idle.Reset(idleTimeout)
	buf := make([]byte, messages.FileChunkBytes)
	n, err := io.ReadFull(d.r, buf)
	last := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
	if err != nil && !last {
		s.endDownload(d)
		return nil, fmt.Errorf("files: read: %w", err)
	}
	chunk := &messages.FileChunk{Download: d.id, Offset: d.next, Data: buf[:n], Size: d.size}
	d.next += uint64(n)
	if last || d.next == d.size {
		// The object store checks the digest at the end: read on to it.
		if _, err := d.r.Read(make([]byte, 1)); err != nil && !errors.Is(err, io.EOF) {
			s.endDownload(d)
			return nil, fmt.Errorf("files: read: %w", err)
		}
		chunk.Last, chunk.Download = true, ""
		s.endDownload(d)
	}
	return chunk, nil
}

func (s *Store) openDownload(sha string, owner uint64) (*download, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	err := s.takeSession(owner, len(s.downloads))
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	r, size, err := s.Open(s.life, sha)
	if err != nil {
		s.mu.Lock()
		s.releaseSession(owner)
		s.mu.Unlock()
		return nil, err
	}
	ctx, cancel := context.WithCancel(s.life)
	context.AfterFunc(ctx, func() { r.Close() })
	d := &download{id: rand.Text(), owner: owner, r: r, size: size, cancel: cancel}
	d.idle = time.AfterFunc(idleTimeout, func() { s.endDownload(d) })
	s.mu.Lock()
	s.downloads[d.id] = d
	s.mu.Unlock()
	return d, nil
}

func (s *Store) endDownload(d *download) {
	if d.ended.Swap(true) {
		return
	}
	s.mu.Lock()
	delete(s.downloads, d.id)
	s.releaseSession(d.owner)
	s.mu.Unlock()
	d.idle.Stop()
	d.cancel()
}

// Open reads the archive sha from the store, and says its size; the
// caller closes the reader, which fails at its end if the bytes do not
// match their digest.
func (s *Store) Open(ctx context.Context, sha string) (io.ReadCloser, uint64, error) {
	if err := s.ready(); err != nil {
		return nil, 0, err
	}
	if !s.Has(sha) {
		return nil, 0, fmt.Errorf("files: archive %s is no longer stored (its jobs expired from the history)", sha)
	}
	r, err := s.obs.Get(ctx, sha)
	if err != nil {
		return nil, 0, fmt.Errorf("files: read %s: %w", sha, err)
	}
	info, err := r.Info()
	if err != nil {
		r.Close()
		return nil, 0, fmt.Errorf("files: read %s: %w", sha, err)
	}
	return r, info.Size, nil
}

// sweep deletes, every SweepInterval until the store closes, the archives
// that no record names and no ticket holds.
func (s *Store) sweep() {
	if s.cfg.Referenced == nil {
		return
	}
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.life.Done():
			return
		case <-t.C:
		}
		s.deleteUnused(time.Now())
	}
}

// deleteUnused deletes up to maxDeletes archives that no record names and
// no ticket has held for the ticket TTL. While one goes, an upload of the
// same bytes is asked to come again.
func (s *Store) deleteUnused(now time.Time) {
	s.mu.Lock()
	type victim struct {
		sha string
		o   *object
	}
	var victims []victim
	for sha, o := range s.objects {
		// The grant first: a record that accounts for it is indexed
		// before it is cleared.
		if now.Sub(o.granted) < s.cfg.TicketTTL || s.cfg.Referenced(sha) {
			continue
		}
		delete(s.objects, sha)
		s.deleting[sha] = true
		if victims = append(victims, victim{sha, o}); len(victims) == maxDeletes {
			break
		}
	}
	s.mu.Unlock()
	for _, v := range victims {
		sha := v.sha
		ctx, cancel := context.WithTimeout(s.life, opTimeout)
		err := s.obs.Delete(ctx, sha)
		cancel()
		s.mu.Lock()
		delete(s.deleting, sha)
		if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			// Still there: the next sweep tries again.
			s.objects[sha] = v.o
			s.mu.Unlock()
			s.cfg.Logger.Warn("archive not deleted", keySHA, sha, keyErr, err)
			continue
		}
		s.mu.Unlock()
		s.cfg.Logger.Info("archive deleted: no job names it", keySHA, sha)
	}
}
