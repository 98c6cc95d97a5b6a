package election

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"baton/bus"
	"baton/messages"
)

// ErrInvalidConfig is wrapped by every config validation error.
var ErrInvalidConfig = errors.New("election: invalid config")

// The documented range of priorities: 0 is the lowest (the default).
const (
	MinPriority = 0
	MaxPriority = math.MaxInt32
)

// AnnouncedMembersMax bounds the members listed on master.current: every
// member receives every announcement, so its size multiplies by the
// cluster's size. master.get lists them all.
const AnnouncedMembersMax = 20

// maxNameLen bounds node names (a DNS name's length).
const maxNameLen = 253

// maxVersionLen bounds the version a node reports: room for what `git
// describe --dirty` prints.
const maxVersionLen = 128

// The session keys accepted: at least 128 bits in hex.
const (
	minSessionKeyLen = 32
	maxSessionKeyLen = 256
)

// Broker is what the Service needs of the embedded NATS server.
type Broker interface {
	// ServiceConn opens an in-process connection to the account where the
	// Service answers ServiceSubjects and publishes StreamSubjects, which
	// the server routes from and to the clients' account, sharing who sent
	// each message (see bus.SenderOf).
	ServiceConn(name string, opts ...nats.Option) (*nats.Conn, error)
	// SystemConn opens an in-process connection to the system account.
	SystemConn(name string, opts ...nats.Option) (*nats.Conn, error)
	// Kick closes a client connection by server client id.
	Kick(clientID uint64)
	// Connected reports whether a client connection is open.
	Connected(clientID uint64) bool
}

// ServiceSubjects are the subjects on which the Service answers clients.
func ServiceSubjects() []string {
	return []string{messages.SubjectRegister, messages.SubjectHeartbeat, messages.SubjectDeregister, messages.SubjectMasterGet}
}

// StreamSubjects are the subjects on which the Service publishes to
// clients.
func StreamSubjects() []string { return []string{messages.SubjectMaster} }

// ServiceConfig tunes the broker-side election service.
type ServiceConfig struct {
	// HeartbeatTimeout is how long a member may stay silent before it is
	// declared dead. After a start, the service also waits this long to hear
	// from every node before it elects.
	HeartbeatTimeout time.Duration
	// AnnounceInterval is how often master.current is re-published.
	AnnounceInterval time.Duration
	// Events, when set, is told what happens to the election (see Event).
	// It is called from one goroutine, in order, never concurrently; events
	// queue while it runs.
	Events func(Event)
	// History is announced (Announcement.history): masters send the
	// broker their jobs' records only when it keeps a history.
	History bool
	// MaxBundleBytes and MaxBundleFiles are announced
	// (Announcement.max_bundle_bytes, max_bundle_files): the file store's
	// limits, which masters unpack and collect within; zero without one.
	MaxBundleBytes int64
	MaxBundleFiles int
	// Version is the broker's build, named when it refuses a node whose
	// protocol it does not speak.
	Version string
	// MaxMembers is the most live members admitted, the master included;
	// 0 admits any number. A registration past it is refused with a
	// retry (see RegisterReply.retry) until a slot is free.
	MaxMembers int
	Logger     *slog.Logger
}

// DefaultServiceConfig returns the broker's defaults.
func DefaultServiceConfig() ServiceConfig {
	return ServiceConfig{
		// Four missed beats at the nodes' default interval (see
		// DefaultMemberConfig): long enough not to evict a node for one
		// late beat, short enough to replace a hung master within about a
		// second.
		HeartbeatTimeout: 4 * DefaultMemberConfig("").HeartbeatInterval,
		// A late subscriber learns the master within a second.
		AnnounceInterval: time.Second,
		Logger:           slog.Default().With(keyComponent, "election"),
	}
}

func (c ServiceConfig) validate() error {
	switch {
	case c.HeartbeatTimeout <= 0:
		return fmt.Errorf("%w: heartbeat timeout %v must be positive", ErrInvalidConfig, c.HeartbeatTimeout)
	case c.AnnounceInterval <= 0:
		return fmt.Errorf("%w: announce interval %v must be positive", ErrInvalidConfig, c.AnnounceInterval)
	case c.MaxMembers < 0:
		return fmt.Errorf("%w: max members %d must not be negative", ErrInvalidConfig, c.MaxMembers)
	}
	return nil
}

// member is a live node as the service tracks it. It is bound to the
// connection that registered it: only that connection beats for it and
// deregisters it.
type member struct {
	candidate
	clientID      uint64
	serveClientID uint64
	sessionKey    string
	lastBeat      time.Time
}

// Service is the broker-side election: it admits nodes, tracks their
// liveness (deregistration, connection close, heartbeat silence), and
// announces the master on master.current.
//
// Its state is under mu, which heartbeat handlers need and which is never
// held across I/O. A decision (a new master, a changed membership) is
// committed by commit: the epoch saved to the store, then announced. Only
// commit publishes, one at a time under pubMu, so announcements leave in
// epoch order and only once their epoch is durable.
type Service struct {
	cfg    ServiceConfig
	broker Broker
	store  Store
	events *eventQueue

	// nc publishes announcements and answers registrations, leaves and
	// master.get; hb answers heartbeats alone, so that a flood of large
	// master.get requests (anyone may send them) never delays a beat;
	// sys hears disconnect events.
	nc, hb, sys *nats.Conn
	// ctx is the service's lifetime, from Start to release; stopLoop and
	// stopEvents end the loop and the events hook's goroutine, which
	// loopWG and eventsWG wait for.
	ctx        context.Context
	stopLoop   context.CancelFunc
	stopEvents context.CancelFunc
	loopWG     sync.WaitGroup
	eventsWG   sync.WaitGroup

	closeOnce sync.Once
	closed    chan struct{} // closed when Close has released everything
	closeErr  error

	mu       sync.Mutex
	members  map[string]*member
	byClient map[uint64]string
	// left names the members that left, by their connection, until it
	// closes: they finish what they run and report it.
	left map[uint64]string
	// waiting holds the nodes refused for the cap and not admitted yet,
	// by instance id, each counted once in refused.
	waiting map[string]bool
	refused uint64
	// oldProtocol holds the nodes refused for their protocol, by
	// instance id: their refusal is logged once.
	oldProtocol map[string]bool
	epoch       uint64 // decided; published once committed
	master      string
	electFrom   time.Time // no election before this: hear from everyone first
	event       string
	eventAt     time.Time
	departed    []*messages.Departure // departures since the last commit
	pending     []Event               // events decided since the last commit
	stopping    bool                  // Close has begun
	dirty       bool                  // the state changed since the last commit
	// published is the last announcement committed (its member list cut
	// to AnnouncedMembersMax): what the cluster has been told.
	published *messages.Announcement

	pubMu           sync.Mutex // held by commit and republish
	saved           uint64     // the epoch last saved to the store
	publishedData   []byte
	publishedHeader nats.Header
}

// NewService prepares the service on broker b, keeping its epoch in store,
// which it then owns: Close closes it. It starts nothing.
func NewService(b Broker, store Store, cfg ServiceConfig) (*Service, error) {
	if cfg.Logger == nil {
		cfg.Logger = DefaultServiceConfig().Logger
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if store == nil {
		return nil, fmt.Errorf("%w: no store", ErrInvalidConfig)
	}
	return &Service{
		cfg: cfg, broker: b, store: store,
		events:      newEventQueue(cfg.Events, cfg.Logger),
		closed:      make(chan struct{}),
		members:     make(map[string]*member),
		byClient:    make(map[uint64]string),
		left:        make(map[uint64]string),
		waiting:     make(map[string]bool),
		oldProtocol: make(map[string]bool),
	}, nil
}

// Start loads the epoch, subscribes, and starts the liveness and
// announcement loop. It returns once the service answers requests. The
// first election happens one heartbeat timeout later. After a failed Start,
// Close releases what it took.
func (s *Service) Start(ctx context.Context) error {
	epoch, err := s.store.Load(ctx)
	if err != nil {
		return err
	}
	// The state handlers read is set before they can run.
	s.mu.Lock()
	s.epoch, s.saved = epoch, epoch
	s.electFrom = time.Now().Add(s.cfg.HeartbeatTimeout)
	s.mu.Unlock()
	life := context.WithoutCancel(ctx)
	s.ctx, s.stopLoop = context.WithCancel(life)
	eventsCtx, stopEvents := context.WithCancel(life)
	s.stopEvents = stopEvents
	s.eventsWG.Go(func() { s.events.run(eventsCtx) })
	if err := s.connect(); err != nil {
		return err
	}
	s.mu.Lock()
	// Whoever was master before this start is unknown now: that is a change
	// of master, to none, and fences any master of the previous epoch.
	s.changeMaster("", "broker started")
	s.mu.Unlock()
	s.commit(ctx, false)
	s.loopWG.Go(func() { s.loop(s.ctx) })
	return nil
}

func (s *Service) connect() error {
	var err error
	if s.nc, err = s.broker.ServiceConn("baton-election"); err != nil {
		return err
	}
	if s.hb, err = s.broker.ServiceConn("baton-election-heartbeats"); err != nil {
		return err
	}
	if s.sys, err = s.broker.SystemConn("baton-election-events"); err != nil {
		return err
	}
	subs := []struct {
		nc      *nats.Conn
		subject string
		handler nats.MsgHandler
	}{
		{s.nc, messages.SubjectRegister, s.handleRegister},
		{s.hb, messages.SubjectHeartbeat, s.handleHeartbeat},
		{s.nc, messages.SubjectDeregister, s.handleDeregister},
		{s.nc, messages.SubjectMasterGet, s.handleGet},
		{s.sys, bus.DisconnectEvents, s.handleDisconnect},
	}
	for _, sub := range subs {
		if _, err := sub.nc.Subscribe(sub.subject, sub.handler); err != nil {
			return fmt.Errorf("subscribe %s: %w", sub.subject, err)
		}
	}
	for _, nc := range []*nats.Conn{s.nc, s.hb, s.sys} {
		if err := nc.Flush(); err != nil {
			return fmt.Errorf("flush subscriptions: %w", err)
		}
	}
	return nil
}

// stepDownGrace is how long a stopping broker waits after announcing "no
// master": long enough for the master to hear it and stop taking requests,
// so that requests sent meanwhile find no responder (and are retried once a
// broker is back) rather than being lost in a closing connection.
const stepDownGrace = 250 * time.Millisecond

// Close stops the service, closes its connections and the store. A running
// service first announces that there is no master (flagged as stopping)
// and, if there was one, waits stepDownGrace for it to step down (cut short
// when ctx ends). It blocks until everything is released or ctx ends; in
// the latter case the release finishes in the background and a later Close
// waits for it. It is safe to call twice, and after a failed Start.
func (s *Service) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		stepDown := s.stepDown(ctx)
		go func() {
			<-stepDown
			s.closeErr = s.release()
			close(s.closed)
		}()
	})
	select {
	case <-s.closed:
		return s.closeErr
	case <-ctx.Done():
		return fmt.Errorf("close election service: %w", ctx.Err())
	}
}

// stepDown announces that the broker is stopping; the returned channel is
// closed once the step-down grace is over (or ctx ended).
func (s *Service) stepDown(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	if s.nc == nil { // never connected: nobody to tell
		close(done)
		return done
	}
	s.mu.Lock()
	s.electFrom = time.Now().Add(time.Hour) // no election while stopping
	s.stopping = true
	hadMaster := s.master != ""
	if hadMaster {
		s.changeMaster("", "broker stopping")
	} else {
		s.setEvent("broker stopping")
	}
	s.mu.Unlock()
	s.commit(ctx, false)
	if !hadMaster {
		// Without a master nothing is delivered anywhere: no need to wait.
		close(done)
		return done
	}
	go func() {
		defer close(done)
		t := time.NewTimer(stepDownGrace)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}()
	return done
}

// release stops the loop, closes the connections (no handler is called
// after that), lets the events hook hear what is still queued, and closes
// the store.
func (s *Service) release() error {
	if s.stopLoop != nil {
		s.stopLoop()
	}
	s.loopWG.Wait()
	for _, nc := range []*nats.Conn{s.nc, s.hb, s.sys} {
		if nc != nil {
			nc.Close()
		}
	}
	if s.stopEvents != nil {
		s.stopEvents()
	}
	s.eventsWG.Wait()
	return s.store.Close()
}

// Current returns the cluster's state as last announced, with every member
// listed.
func (s *Service) Current() *messages.Announcement {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current()
}

// ConnectionOf names the node whose connection has the given server client
// id: a member, or one that left and has not closed it yet.
func (s *Service) ConnectionOf(clientID uint64) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if name, ok := s.byClient[clientID]; ok {
		return name, true
	}
	name, ok := s.left[clientID]
	return name, ok
}

// Members names the live members, in no order.
func (s *Service) Members() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.members))
	for name := range s.members {
		names = append(names, name)
	}
	return names
}

// current is Current for callers that hold s.mu.
func (s *Service) current() *messages.Announcement {
	a := s.announcement(0)
	for _, m := range a.Members {
		if mem, ok := s.members[m.Name]; ok {
			m.HeardAt = timestamppb.New(mem.lastBeat)
		}
	}
	// What was committed, not what is being decided.
	if p := s.published; p != nil {
		a.Epoch, a.Master, a.Event = p.Epoch, p.Master, p.Event
	} else {
		a.Epoch, a.Master, a.Event = 0, "", "broker starting"
	}
	return a
}

// loop expires silent members, runs the first election when the start-up
// wait is over, commits what changed, and re-publishes the announcement.
func (s *Service) loop(ctx context.Context) {
	// Check ten times per timeout so that a silent member is declared dead
	// at most a tenth of the timeout late.
	sweep := time.NewTicker(max(s.cfg.HeartbeatTimeout/10, time.Millisecond))
	defer sweep.Stop()
	announce := time.NewTicker(s.cfg.AnnounceInterval)
	defer announce.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-sweep.C:
			s.mu.Lock()
			s.expire(now)
			s.mu.Unlock()
			s.commit(ctx, false)
		case <-announce.C:
			s.republish()
		}
	}
}

// expire removes members silent for longer than the heartbeat timeout and
// cuts their connections, so that a hung master's subscriptions vanish
// with them. It runs the election once the start-up wait is over. Callers
// hold s.mu.
func (s *Service) expire(now time.Time) {
	var lost []string
	var departed []*messages.Departure
	for name, m := range s.members {
		if now.Sub(m.lastBeat) > s.cfg.HeartbeatTimeout {
			lost = append(lost, name)
			departed = append(departed, &messages.Departure{Name: name, Cause: messages.Cause_CAUSE_HEARTBEAT_TIMEOUT})
			s.remove(name)
			s.pending = append(s.pending, Event{Kind: EventLost, At: now, Node: name, Cause: messages.Cause_CAUSE_HEARTBEAT_TIMEOUT})
			s.broker.Kick(m.clientID)
			if m.serveClientID != 0 {
				s.broker.Kick(m.serveClientID)
			}
		}
	}
	switch {
	case len(lost) > 0:
		s.cfg.Logger.Warn("members lost", keyNodes, lost, keyCause, "heartbeat timeout")
		s.elect(fmt.Sprintf("%s lost: heartbeat timeout", strings.Join(lost, ", ")), departed...)
	case s.master == "" && len(s.members) > 0 && !now.Before(s.electFrom):
		s.elect("election after start-up wait")
	}
}

func (s *Service) remove(name string) {
	if m, ok := s.members[name]; ok {
		delete(s.byClient, m.clientID)
		delete(s.members, name)
	}
}

// elect finds the best member and, if the master changes, moves the epoch.
// departed are the members whose departure caused the change. The caller
// commits after releasing s.mu: at once when the master changed, while a
// change of members alone waits for the next sweep, so that a storm of
// joins costs a few announcements, not one (and one full ranking) per
// join. Callers hold s.mu.
func (s *Service) elect(event string, departed ...*messages.Departure) {
	s.departed = append(s.departed, departed...)
	s.setEvent(event)
	master := ""
	if !time.Now().Before(s.electFrom) {
		var best *member
		for _, m := range s.members {
			if best == nil || compareRank(m.candidate, best.candidate) < 0 {
				best = m
			}
		}
		if best != nil {
			master = best.name
		}
	}
	if master != s.master {
		s.changeMaster(master, event)
	}
}

// changeMaster decides a new epoch for master. Callers hold s.mu, and
// commit after releasing it.
func (s *Service) changeMaster(master, event string) {
	s.epoch++
	s.master = master
	s.setEvent(event)
}

// setEvent records what changed last, and when. Callers hold s.mu, and
// commit after releasing it.
func (s *Service) setEvent(event string) {
	s.event, s.eventAt, s.dirty = event, time.Now(), true
}

// commit hands the events decided since the last commit to the events
// hook, then saves and announces what changed; with urgent, only a change
// of master is announced (membership changes wait for the next sweep).
// Decisions made meanwhile wait for the next commit, so the hook hears a
// change of master after the events that led to it and before later ones.
// Two changes of master decided before one commit are announced as one:
// the later epoch. Callers do not hold s.mu.
func (s *Service) commit(ctx context.Context, urgent bool) {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	s.mu.Lock()
	events := s.pending
	s.pending = nil
	if !s.dirty || urgent && s.epoch == s.saved {
		s.mu.Unlock()
		s.events.push(events...)
		return
	}
	a := s.announcement(AnnouncedMembersMax)
	s.departed, s.dirty = nil, false
	s.mu.Unlock()
	s.events.push(events...)

	masterChanged := a.Epoch != s.saved
	if masterChanged {
		if err := s.store.Save(ctx, a.Epoch); err != nil {
			// Announcing anyway keeps the cluster available; the risk is an
			// epoch reused after a restart, which the operator must hear of.
			s.cfg.Logger.Error("epoch not persisted; fix the data directory", keyEpoch, a.Epoch, keyErr, err)
		}
		s.saved = a.Epoch
	}
	b, err := proto.Marshal(a)
	if err != nil {
		s.cfg.Logger.Error("encode announcement", keyEpoch, a.Epoch, keyErr, err)
		return
	}
	header := func(a *messages.Announcement) nats.Header {
		h := nats.Header{
			messages.HeaderMaster:  {a.Master},
			messages.HeaderEpoch:   {strconv.FormatUint(a.Epoch, 10)},
			messages.HeaderMembers: {strconv.Itoa(int(a.MemberCount))},
		}
		if a.Event != "" {
			h.Set(messages.HeaderEvent, a.Event)
		}
		return h
	}
	s.publishedData, s.publishedHeader = b, header(a)
	s.publish()
	// Its repeats say the same state, but no change of their own.
	repeat := proto.CloneOf(a)
	repeat.Repeat, repeat.Event = true, ""
	if b, err := proto.Marshal(repeat); err == nil {
		s.publishedData, s.publishedHeader = b, header(repeat)
	}
	s.mu.Lock()
	s.published = a
	s.mu.Unlock()
	if masterChanged {
		s.cfg.Logger.Info("master changed", keyMaster, a.Master, keyEpoch, a.Epoch, keyEvent, a.Event)
		s.events.push(Event{Kind: EventMasterChanged, At: a.At.AsTime(), Master: a.Master, Epoch: a.Epoch, Reason: a.Event})
	}
}

// announcement builds the cluster's state now, listing the best limit
// members (all when limit is 0). Callers hold s.mu.
func (s *Service) announcement(limit int) *messages.Announcement {
	cs := make([]candidate, 0, len(s.members))
	for _, m := range s.members {
		cs = append(cs, m.candidate)
	}
	return &messages.Announcement{
		Epoch:          s.epoch,
		Master:         s.master,
		Members:        rank(cs, limit),
		Event:          s.event,
		At:             timestamppb.Now(),
		ChangedAt:      timestamppb.New(s.eventAt),
		MemberCount:    uint32(len(s.members)),
		Departed:       s.departed,
		BrokerStopping: s.stopping,
		History:        s.cfg.History,
		MaxBundleBytes: uint64(s.cfg.MaxBundleBytes),
		MaxBundleFiles: uint32(s.cfg.MaxBundleFiles),
		MaxMembers:     uint32(s.cfg.MaxMembers),
		Refused:        s.refused,
		NodeControl:    true,
	}
}

// republish sends the last announcement again, as a repeat: the event
// travels only in the first publication after it, the departures in the
// repeats too (a requester that missed the first still learns of them).
func (s *Service) republish() {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	s.publish()
}

// publish sends the last committed announcement. Callers hold s.pubMu.
func (s *Service) publish() {
	if s.publishedData == nil {
		return
	}
	msg := &nats.Msg{Subject: messages.SubjectMaster, Data: s.publishedData, Header: s.publishedHeader}
	if err := s.nc.PublishMsg(msg); err != nil {
		s.cfg.Logger.Error("publish announcement", keyErr, err)
	}
}

func (s *Service) reply(m *nats.Msg, pm proto.Message) {
	if m.Reply == "" {
		return
	}
	b, err := proto.Marshal(pm)
	if err == nil {
		// On the connection the request came in on.
		nc := s.nc
		if m.Subject == messages.SubjectHeartbeat {
			nc = s.hb
		}
		err = nc.Publish(m.Reply, b)
	}
	if err != nil {
		s.cfg.Logger.Error("reply", keySubject, m.Subject, keyErr, err)
	}
}

// refuse answers a registration with err and reports it. Callers do not
// hold s.mu.
func (s *Service) refuse(msg *nats.Msg, name string, err error) {
	s.cfg.Logger.Warn("registration refused", keyNode, name, keyErr, err)
	s.mu.Lock()
	s.pending = append(s.pending, Event{Kind: EventRefused, At: time.Now(), Node: name, Reason: err.Error()})
	s.mu.Unlock()
	s.commit(s.ctx, true)
	s.reply(msg, &messages.RegisterReply{Error: err.Error()})
}

// maxWaiting bounds the nodes remembered as waiting for a slot; past it
// the memory starts afresh (and a node still waiting is counted again).
const maxWaiting = 10_000

// refuseFull turns req away for the cap, and says why: the node
// registers again until a slot is free. Only its first refusal is
// logged, counted and an event (first): it asks again several times a
// second. Callers hold s.mu.
func (s *Service) refuseFull(req *messages.Register, n, max int) (first bool, why string) {
	why = fmt.Sprintf("cluster full: %d of %d members", n, max)
	if s.waiting[req.InstanceId] {
		return false, why
	}
	if len(s.waiting) >= maxWaiting {
		clear(s.waiting)
	}
	s.waiting[req.InstanceId] = true
	s.refused++
	// The count is announced.
	s.dirty = true
	s.cfg.Logger.Info("registration refused until a slot is free", keyNode, req.Name, keyErr, why)
	s.pending = append(s.pending, Event{Kind: EventRefused, At: time.Now(), Node: req.Name, Reason: why})
	return true, why
}

func (s *Service) handleRegister(msg *nats.Msg) {
	var req messages.Register
	if err := proto.Unmarshal(msg.Data, &req); err != nil {
		s.refuse(msg, "", fmt.Errorf("not a protobuf Register message: %v", err))
		return
	}
	if err := validateRegister(&req); err != nil {
		s.refuse(msg, req.Name, err)
		return
	}
	if err := s.checkProtocol(&req); err != nil {
		// A running node of an old build asks again every second, for
		// good: say it once.
		s.mu.Lock()
		told := s.oldProtocol[req.InstanceId]
		if !told {
			if len(s.oldProtocol) >= maxWaiting {
				clear(s.oldProtocol)
			}
			s.oldProtocol[req.InstanceId] = true
		}
		s.mu.Unlock()
		if told {
			s.reply(msg, &messages.RegisterReply{Error: err.Error()})
		} else {
			s.refuse(msg, req.Name, err)
		}
		return
	}
	sender, ok := bus.SenderOf(msg)
	if !ok {
		s.refuse(msg, req.Name, errors.New("the broker cannot tell which connection sent this registration"))
		return
	}
	s.mu.Lock()
	if other, ok := s.byClient[sender.ClientID]; ok && other != req.Name {
		s.mu.Unlock()
		s.refuse(msg, req.Name, fmt.Errorf("this connection is member %q already; a node registers once", other))
		return
	}
	if old, ok := s.members[req.Name]; ok {
		var taken error
		switch {
		case old.instanceID != req.InstanceId:
			taken = fmt.Errorf("name %q is taken by another live node; pick another --name, or retry once that node has stopped", req.Name)
		case old.clientID != sender.ClientID && s.broker.Connected(old.clientID):
			// The same process id from another connection while the
			// first is open: an impostor (instance ids are announced), or
			// the node itself reconnecting before the server has closed
			// its old connection, which a retry soon gets past.
			taken = fmt.Errorf("name %q is registered from another open connection; retry once it has closed", req.Name)
		}
		if taken != nil {
			s.mu.Unlock()
			s.refuse(msg, req.Name, taken)
			return
		}
	}
	_, rejoin := s.members[req.Name]
	if max := s.cfg.MaxMembers; !rejoin && max > 0 && len(s.members) >= max {
		// A member that is already one keeps its place; a newcomer, or
		// one declared lost a moment ago, waits like any other.
		first, why := s.refuseFull(&req, len(s.members), max)
		s.mu.Unlock()
		if first {
			s.commit(s.ctx, true)
		}
		s.reply(msg, &messages.RegisterReply{Error: why, Retry: true})
		return
	}
	delete(s.waiting, req.InstanceId)
	s.remove(req.Name)
	now := time.Now()
	s.members[req.Name] = &member{
		candidate: candidate{name: req.Name, priority: req.Priority, startedAt: req.StartedAt.AsTime(),
			instanceID: req.InstanceId, execKey: req.ExecKey, version: req.Version},
		clientID:   sender.ClientID,
		sessionKey: req.SessionKey,
		lastBeat:   now,
	}
	s.byClient[sender.ClientID] = req.Name
	delete(s.left, sender.ClientID)
	event := req.Name + " joined"
	if rejoin {
		event = req.Name + " re-registered"
	}
	s.cfg.Logger.Info("member registered", keyNode, req.Name, keyPriority, req.Priority, keyClientID, sender.ClientID)
	s.pending = append(s.pending, Event{Kind: EventJoined, At: now, Node: req.Name, Priority: req.Priority, Rejoined: rejoin})
	s.elect(event)
	s.mu.Unlock()
	s.commit(s.ctx, true)
	s.mu.Lock()
	// The last committed announcement: its epoch and master are current,
	// since a change of master is committed at once.
	reply := &messages.RegisterReply{Current: s.published, HeartbeatTimeoutMs: uint32(s.cfg.HeartbeatTimeout.Milliseconds())}
	s.mu.Unlock()
	s.reply(msg, reply)
}

func validateRegister(r *messages.Register) error {
	switch {
	case r.Name == "":
		return errors.New("empty name")
	case len(r.Name) > maxNameLen:
		return fmt.Errorf("name is %d bytes, at most %d allowed", len(r.Name), maxNameLen)
	case strings.IndexFunc(r.Name, func(c rune) bool { return unicode.IsSpace(c) || !unicode.IsPrint(c) }) >= 0:
		return fmt.Errorf("name %q has a space or unprintable character", r.Name)
	case r.InstanceId == "":
		return fmt.Errorf("%q has no instance id", r.Name)
	case len(r.SessionKey) < minSessionKeyLen || len(r.SessionKey) > maxSessionKeyLen:
		return fmt.Errorf("%q has no session key of %d to %d characters", r.Name, minSessionKeyLen, maxSessionKeyLen)
	case r.Priority < MinPriority:
		return fmt.Errorf("priority %d of %q is outside the range %d to %d", r.Priority, r.Name, MinPriority, MaxPriority)
	case r.StartedAt == nil || r.StartedAt.CheckValid() != nil:
		return fmt.Errorf("%q has no valid start time", r.Name)
	case len(r.Version) > maxVersionLen:
		return fmt.Errorf("%q has a version of %d bytes, at most %d allowed", r.Name, len(r.Version), maxVersionLen)
	case len(r.ExecKey) != 0 && len(r.ExecKey) != 32:
		return fmt.Errorf("%q has an exec key of %d bytes, want an X25519 public key of 32", r.Name, len(r.ExecKey))
	}
	return nil
}

// checkProtocol refuses a node whose protocol the broker does not speak,
// naming both builds.
func (s *Service) checkProtocol(r *messages.Register) error {
	p := max(r.Protocol, 1) // before the field, protocol 1
	version := r.Version
	if version == "" {
		version = "unknown"
	}
	switch {
	case p < messages.MinProtocol:
		return fmt.Errorf("node %q is version %s (protocol %d); this broker is version %s (protocols %d to %d): upgrade the node",
			r.Name, version, p, s.brokerVersion(), messages.MinProtocol, messages.Protocol)
	case p > messages.Protocol:
		return fmt.Errorf("node %q is version %s (protocol %d); this broker is version %s (protocols %d to %d): upgrade the broker",
			r.Name, version, p, s.brokerVersion(), messages.MinProtocol, messages.Protocol)
	}
	return nil
}

func (s *Service) brokerVersion() string {
	if s.cfg.Version == "" {
		return "unknown"
	}
	return s.cfg.Version
}

func (s *Service) handleHeartbeat(msg *nats.Msg) {
	var hb messages.Heartbeat
	if err := proto.Unmarshal(msg.Data, &hb); err != nil {
		s.cfg.Logger.Warn("malformed heartbeat", keyErr, err)
		s.reply(msg, &messages.HeartbeatAck{Error: fmt.Sprintf("not a protobuf Heartbeat message: %v", err)})
		return
	}
	sender, _ := bus.SenderOf(msg)
	s.mu.Lock()
	m, ok := s.members[hb.Name]
	known := ok && m.instanceID == hb.InstanceId && sender.ClientID != 0
	switch {
	case known && hb.Serving:
		// The connection a master is about to serve on, proving with the
		// node's session key that it is the node's.
		known = subtle.ConstantTimeCompare([]byte(hb.SessionKey), []byte(m.sessionKey)) == 1
		if known {
			m.serveClientID = sender.ClientID
		}
	case known:
		known = sender.ClientID == m.clientID
		if known {
			m.lastBeat = time.Now()
		}
	}
	// The epoch decided, which no announcement can be ahead of: a node
	// that has seen a newer one resynchronises.
	epoch := s.epoch
	s.mu.Unlock()
	if !known {
		s.cfg.Logger.Debug("heartbeat from a connection that is not the member's; asking it to register", keyNode, hb.Name)
	}
	// A beat without a reply subject wants no ack (see Member.beat).
	s.reply(msg, &messages.HeartbeatAck{Reregister: !known, Epoch: epoch, Seq: hb.Seq})
}

func (s *Service) handleDeregister(msg *nats.Msg) {
	var req messages.Deregister
	if err := proto.Unmarshal(msg.Data, &req); err != nil {
		s.cfg.Logger.Warn("malformed deregistration", keyErr, err)
		return
	}
	sender, _ := bus.SenderOf(msg)
	s.mu.Lock()
	if m, ok := s.members[req.Name]; ok && m.instanceID == req.InstanceId && m.clientID == sender.ClientID {
		s.left[m.clientID] = req.Name
		s.remove(req.Name)
		s.cfg.Logger.Info("member left", keyNode, req.Name, keyReason, req.Reason)
		s.pending = append(s.pending, Event{Kind: EventLeft, At: time.Now(), Node: req.Name})
		s.elect(req.Name+" left", &messages.Departure{Name: req.Name, Cause: messages.Cause_CAUSE_LEFT})
	}
	s.mu.Unlock()
	s.commit(s.ctx, true)
	s.mu.Lock()
	reply := s.published
	s.mu.Unlock()
	s.reply(msg, reply)
}

func (s *Service) handleGet(msg *nats.Msg) {
	s.mu.Lock()
	a := s.current()
	s.mu.Unlock()
	s.reply(msg, a)
}

func (s *Service) handleDisconnect(msg *nats.Msg) {
	var ev server.DisconnectEventMsg
	if err := json.Unmarshal(msg.Data, &ev); err != nil {
		s.cfg.Logger.Warn("malformed disconnect event", keyErr, err)
		return
	}
	s.mu.Lock()
	if name, ok := s.left[ev.Client.ID]; ok {
		delete(s.left, ev.Client.ID)
		s.pending = append(s.pending, Event{Kind: EventGone, At: time.Now(), Node: name, Cause: messages.Cause_CAUSE_CONNECTION_CLOSED})
	}
	name, ok := s.byClient[ev.Client.ID]
	if ok {
		// Its serving connection goes with it: a node whose own connection
		// is gone must not keep taking requests on another.
		if m := s.members[name]; m != nil && m.serveClientID != 0 {
			s.broker.Kick(m.serveClientID)
		}
		s.remove(name)
		s.cfg.Logger.Warn("member lost", keyNode, name, keyCause, "connection closed", keyReason, ev.Reason)
		s.pending = append(s.pending, Event{Kind: EventLost, At: time.Now(), Node: name, Cause: messages.Cause_CAUSE_CONNECTION_CLOSED})
		s.elect(name+" lost: connection closed", &messages.Departure{Name: name, Cause: messages.Cause_CAUSE_CONNECTION_CLOSED})
	}
	s.mu.Unlock()
	s.commit(s.ctx, true)
}
