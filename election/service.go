package election

import (
	"context"
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

// Log keys.
const (
	keyNode   = "node"
	keyEpoch  = "epoch"
	keyMaster = "master"
	keyCause  = "cause"
	keyErr    = "err"
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

// Broker is what the Service needs of the embedded NATS server.
type Broker interface {
	// Conn opens an in-process connection in the clients' account.
	Conn(name string, opts ...nats.Option) (*nats.Conn, error)
	// SystemConn opens an in-process connection to the system account.
	SystemConn(name string, opts ...nats.Option) (*nats.Conn, error)
	// Kick closes a client connection by server client id.
	Kick(clientID uint64)
}

// ServiceConfig tunes the broker-side election service.
type ServiceConfig struct {
	// DataDir holds the persisted epoch.
	DataDir string
	// HeartbeatTimeout is how long a member may stay silent before it is
	// declared dead. After a start, the service also waits this long to hear
	// from every node before it elects.
	HeartbeatTimeout time.Duration
	// AnnounceInterval is how often master.current is re-published.
	AnnounceInterval time.Duration
	Logger           *slog.Logger
}

// DefaultServiceConfig returns the broker's defaults.
func DefaultServiceConfig() ServiceConfig {
	return ServiceConfig{
		// Like etcd's default.etcd: next to where the broker runs.
		DataDir: "baton-broker.data",
		// Four missed beats at the nodes' default 250 ms: long enough not to
		// evict a node for one late beat, short enough to replace a hung
		// master within about a second.
		HeartbeatTimeout: time.Second,
		// A late subscriber learns the master within a second.
		AnnounceInterval: time.Second,
		Logger:           slog.Default().With("component", "election"),
	}
}

func (c ServiceConfig) validate() error {
	switch {
	case c.DataDir == "":
		return fmt.Errorf("%w: empty data directory", ErrInvalidConfig)
	case c.HeartbeatTimeout <= 0:
		return fmt.Errorf("%w: heartbeat timeout %v must be positive", ErrInvalidConfig, c.HeartbeatTimeout)
	case c.AnnounceInterval <= 0:
		return fmt.Errorf("%w: announce interval %v must be positive", ErrInvalidConfig, c.AnnounceInterval)
	}
	return nil
}

// member is a live node as the service tracks it.
type member struct {
	candidate
	clientID      uint64
	serveClientID uint64
	lastBeat      time.Time
}

// Service is the broker-side election: it admits nodes, tracks their
// liveness (deregistration, connection close, heartbeat silence), and
// announces the master on master.current.
type Service struct {
	cfg    ServiceConfig
	broker Broker

	nc, sys *nats.Conn
	store   *epochStore
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closeMu sync.Mutex
	closed  bool

	mu        sync.Mutex
	members   map[string]*member
	byClient  map[uint64]string
	epoch     uint64
	master    string
	electFrom time.Time // no election before this: hear from everyone first
	event     string
	departed  []*messages.Departure // departures since the last publication
	// published is the last announcement published on master.current (its
	// member list cut to AnnouncedMembersMax) and publishedData its
	// encoding; dirty says the state changed since.
	stopping        bool // Close has begun
	published       *messages.Announcement
	publishedData   []byte
	publishedHeader nats.Header
	dirty           bool
}

// NewService prepares the service. It starts nothing.
func NewService(b Broker, cfg ServiceConfig) (*Service, error) {
	if cfg.Logger == nil {
		cfg.Logger = DefaultServiceConfig().Logger
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Service{
		cfg: cfg, broker: b,
		members:  make(map[string]*member),
		byClient: make(map[uint64]string),
	}, nil
}

// Start loads the epoch, subscribes, and starts the liveness and
// announcement loop. It returns once the service answers requests. The
// first election happens one heartbeat timeout later.
func (s *Service) Start(ctx context.Context) error {
	store, err := openEpochStore(s.cfg.DataDir)
	if err != nil {
		return err
	}
	epoch, err := store.load()
	if err != nil {
		store.close()
		return err
	}
	s.store = store
	// The state handlers read is set before they can run.
	s.mu.Lock()
	s.epoch = epoch
	s.electFrom = time.Now().Add(s.cfg.HeartbeatTimeout)
	s.mu.Unlock()
	if err := s.connect(); err != nil {
		s.closeConns()
		store.close()
		return err
	}
	s.mu.Lock()
	// Whoever was master before this start is unknown now: that is a change
	// of master, to none, and fences any master of the previous epoch.
	s.changeMaster("", "broker started; waiting one heartbeat timeout for nodes")
	s.mu.Unlock()

	ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.wg.Go(func() { s.loop(ctx) })
	return nil
}

func (s *Service) connect() error {
	var err error
	if s.nc, err = s.broker.Conn("baton-election"); err != nil {
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
		{s.nc, bus.SubjectRegister, s.handleRegister},
		{s.nc, bus.SubjectHeartbeat, s.handleHeartbeat},
		{s.nc, bus.SubjectDeregister, s.handleDeregister},
		{s.nc, bus.SubjectMasterGet, s.handleGet},
		{s.sys, bus.DisconnectEvents, s.handleDisconnect},
	}
	for _, sub := range subs {
		if _, err := sub.nc.Subscribe(sub.subject, sub.handler); err != nil {
			return fmt.Errorf("subscribe %s: %w", sub.subject, err)
		}
	}
	if err := s.nc.Flush(); err != nil {
		return fmt.Errorf("flush subscriptions: %w", err)
	}
	if err := s.sys.Flush(); err != nil {
		return fmt.Errorf("flush subscriptions: %w", err)
	}
	return nil
}

// stepDownGrace is how long a stopping broker waits after announcing "no
// master": long enough for the master to hear it and stop taking requests,
// so that requests sent meanwhile find no responder (and are retried once a
// broker is back) rather than being lost in a closing connection.
const stepDownGrace = 250 * time.Millisecond

// Close stops the service and releases the data directory. A running
// service first announces that there is no master (flagged as stopping)
// and, if there was one, waits stepDownGrace for it to step down (or until
// ctx ends). It is safe to call twice.
func (s *Service) Close(ctx context.Context) error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.cancel != nil {
		s.mu.Lock()
		s.electFrom = time.Now().Add(time.Hour) // no election while stopping
		s.stopping = true
		hadMaster := s.master != ""
		if hadMaster {
			s.changeMaster("", "broker stopping")
		} else {
			s.event = "broker stopping"
			s.publish()
		}
		s.mu.Unlock()
		// Without a master nothing is delivered anywhere: no need to wait.
		if hadMaster {
			t := time.NewTimer(stepDownGrace)
			select {
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
		}
	}
	if s.cancel != nil {
		s.cancel()
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("close election service: %w", ctx.Err())
	}
	s.closeConns()
	if s.store != nil {
		return s.store.close()
	}
	return nil
}

func (s *Service) closeConns() {
	for _, nc := range []*nats.Conn{s.nc, s.sys} {
		if nc != nil {
			nc.Close()
		}
	}
}

// Current returns the cluster's state now, with every member listed.
func (s *Service) Current() *messages.Announcement {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.announcement(0)
}

// loop expires silent members, runs the first election when the start-up
// wait is over, and re-publishes the announcement.
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
			if s.dirty {
				s.publish()
			}
			s.mu.Unlock()
		case <-announce.C:
			s.mu.Lock()
			s.republish()
			s.mu.Unlock()
		}
	}
}

// expire removes members silent for longer than the heartbeat timeout and
// cuts their connections, so that a hung master's subscriptions vanish
// with them. It runs the election once the start-up wait is over.
func (s *Service) expire(now time.Time) {
	var lost []string
	var departed []*messages.Departure
	for name, m := range s.members {
		if now.Sub(m.lastBeat) > s.cfg.HeartbeatTimeout {
			lost = append(lost, name)
			departed = append(departed, &messages.Departure{Name: name, Cause: messages.Cause_CAUSE_HEARTBEAT_TIMEOUT})
			s.remove(name)
			s.broker.Kick(m.clientID)
			if m.serveClientID != 0 {
				s.broker.Kick(m.serveClientID)
			}
		}
	}
	switch {
	case len(lost) > 0:
		s.cfg.Logger.Warn("members lost", "nodes", lost, keyCause, "heartbeat timeout")
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

// elect finds the best member and, if the master changes, moves the epoch
// and announces at once. A change of members alone is announced with the
// next sweep, so that a storm of joins costs a few announcements, not one
// (and one full ranking) per join. departed are the members whose
// departure caused the change. Callers hold s.mu.
func (s *Service) elect(event string, departed ...*messages.Departure) {
	s.departed = append(s.departed, departed...)
	s.event, s.dirty = event, true
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

// changeMaster moves the epoch forward, persists it, and announces.
// Callers hold s.mu.
func (s *Service) changeMaster(master, event string) {
	s.epoch++
	if err := s.store.save(s.epoch); err != nil {
		// Announcing anyway keeps the cluster available; the risk is an
		// epoch reused after a restart, which the operator must hear of.
		s.cfg.Logger.Error("epoch not persisted; fix the data directory", keyEpoch, s.epoch, keyErr, err)
	}
	s.master, s.event = master, event
	s.cfg.Logger.Info("master changed", keyMaster, master, keyEpoch, s.epoch, "event", event)
	s.publish()
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
		MemberCount:    uint32(len(s.members)),
		Departed:       s.departed,
		BrokerStopping: s.stopping,
	}
}

// publish builds and sends a fresh announcement. Departures travel in the
// first publication after them (and its once-a-second repeats). Callers
// hold s.mu, which keeps announcements in epoch order on the wire.
func (s *Service) publish() {
	s.published = s.announcement(AnnouncedMembersMax)
	s.departed, s.dirty = nil, false
	b, err := proto.Marshal(s.published)
	if err != nil {
		s.cfg.Logger.Error("encode announcement", keyEpoch, s.epoch, keyErr, err)
		return
	}
	s.publishedData = b
	s.publishedHeader = nats.Header{
		bus.HeaderMaster:  {s.published.Master},
		bus.HeaderEpoch:   {strconv.FormatUint(s.published.Epoch, 10)},
		bus.HeaderEvent:   {s.published.Event},
		bus.HeaderMembers: {strconv.Itoa(int(s.published.MemberCount))},
	}
	s.republish()
}

// republish sends the last announcement again. Callers hold s.mu.
func (s *Service) republish() {
	msg := &nats.Msg{Subject: bus.SubjectMaster, Data: s.publishedData, Header: s.publishedHeader}
	if err := s.nc.PublishMsg(msg); err != nil {
		s.cfg.Logger.Error("publish announcement", keyEpoch, s.published.Epoch, keyErr, err)
	}
}

func (s *Service) reply(m *nats.Msg, pm proto.Message) {
	if m.Reply == "" {
		return
	}
	b, err := proto.Marshal(pm)
	if err == nil {
		err = s.nc.Publish(m.Reply, b)
	}
	if err != nil {
		s.cfg.Logger.Error("reply", "subject", m.Subject, keyErr, err)
	}
}

func (s *Service) handleRegister(msg *nats.Msg) {
	var req messages.Register
	if err := proto.Unmarshal(msg.Data, &req); err != nil {
		s.cfg.Logger.Warn("malformed registration", keyErr, err)
		s.reply(msg, &messages.RegisterReply{Error: fmt.Sprintf("not a protobuf Register message: %v", err)})
		return
	}
	if err := validateRegister(&req); err != nil {
		s.cfg.Logger.Warn("registration refused", keyNode, req.Name, keyErr, err)
		s.reply(msg, &messages.RegisterReply{Error: err.Error()})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.members[req.Name]; ok && old.instanceID != req.InstanceId {
		err := fmt.Errorf("name %q is taken by another live node; pick another --name, or retry once that node has stopped", req.Name)
		s.cfg.Logger.Warn("registration refused", keyNode, req.Name, keyErr, err)
		s.reply(msg, &messages.RegisterReply{Error: err.Error()})
		return
	}
	_, rejoin := s.members[req.Name]
	s.remove(req.Name)
	s.members[req.Name] = &member{
		candidate: candidate{name: req.Name, priority: req.Priority, startedAt: req.StartedAt.AsTime(), instanceID: req.InstanceId},
		clientID:  req.ClientId,
		lastBeat:  time.Now(),
	}
	s.byClient[req.ClientId] = req.Name
	event := req.Name + " joined"
	if rejoin {
		event = req.Name + " re-registered"
	}
	s.cfg.Logger.Info("member registered", keyNode, req.Name, "priority", req.Priority, "client_id", req.ClientId)
	s.elect(event)
	s.reply(msg, &messages.RegisterReply{
		// The last published announcement: its epoch and master are
		// current, since a change of master is published at once.
		Current:            s.published,
		HeartbeatTimeoutMs: uint32(s.cfg.HeartbeatTimeout.Milliseconds()),
	})
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
	case r.ClientId == 0:
		return fmt.Errorf("%q has no client id", r.Name)
	case r.Priority < MinPriority:
		return fmt.Errorf("priority %d of %q is outside the range %d to %d", r.Priority, r.Name, MinPriority, MaxPriority)
	case r.StartedAt == nil || r.StartedAt.CheckValid() != nil:
		return fmt.Errorf("%q has no valid start time", r.Name)
	}
	return nil
}

func (s *Service) handleHeartbeat(msg *nats.Msg) {
	var hb messages.Heartbeat
	if err := proto.Unmarshal(msg.Data, &hb); err != nil {
		s.cfg.Logger.Warn("malformed heartbeat", keyErr, err)
		s.reply(msg, &messages.HeartbeatAck{Error: fmt.Sprintf("not a protobuf Heartbeat message: %v", err)})
		return
	}
	s.mu.Lock()
	m, ok := s.members[hb.Name]
	known := ok && m.instanceID == hb.InstanceId
	if known {
		m.lastBeat = time.Now()
		m.serveClientID = hb.ServeClientId
	}
	ack := &messages.HeartbeatAck{Reregister: !known, Epoch: s.epoch, Seq: hb.Seq}
	s.mu.Unlock()
	if !known {
		s.cfg.Logger.Debug("heartbeat from unknown member; asking it to register", keyNode, hb.Name)
	}
	// A beat without a reply subject wants no ack (see Member.beat).
	s.reply(msg, ack)
}

func (s *Service) handleDeregister(msg *nats.Msg) {
	var req messages.Deregister
	if err := proto.Unmarshal(msg.Data, &req); err != nil {
		s.cfg.Logger.Warn("malformed deregistration", keyErr, err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.members[req.Name]; ok && m.instanceID == req.InstanceId {
		s.remove(req.Name)
		s.cfg.Logger.Info("member left", keyNode, req.Name, "reason", req.Reason)
		s.elect(req.Name+" left", &messages.Departure{Name: req.Name, Cause: messages.Cause_CAUSE_LEFT})
	}
	s.reply(msg, s.published)
}

func (s *Service) handleGet(msg *nats.Msg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reply(msg, s.announcement(0))
}

func (s *Service) handleDisconnect(msg *nats.Msg) {
	var ev server.DisconnectEventMsg
	if err := json.Unmarshal(msg.Data, &ev); err != nil {
		s.cfg.Logger.Warn("malformed disconnect event", keyErr, err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	name, ok := s.byClient[ev.Client.ID]
	if !ok {
		return
	}
	s.remove(name)
	s.cfg.Logger.Warn("member lost", keyNode, name, keyCause, "connection closed", "reason", ev.Reason)
	s.elect(name+" lost: connection closed", &messages.Departure{Name: name, Cause: messages.Cause_CAUSE_CONNECTION_CLOSED})
}
