package election

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"baton/bus"
	"baton/messages"
)

// ErrRefused is wrapped by the error of a registration the broker refused.
var ErrRefused = errors.New("election: registration refused")

// errFull is wrapped by the error of a registration refused until a slot
// is free (the broker's --max-members): the member asks again.
var errFull = errors.New("election: not admitted yet")

// fullRetry is how often a member that the cap turned away asks again:
// it joins well within a second of a slot freeing.
const fullRetry = 200 * time.Millisecond

// MemberConfig describes a node to the election.
type MemberConfig struct {
	Name     string
	Priority int32
	// StartedAt breaks priority ties (earlier ranks first).
	StartedAt time.Time
	// HeartbeatInterval is the time between beats.
	HeartbeatInterval time.Duration
	// RegisterTimeout bounds one registration attempt.
	RegisterTimeout time.Duration
	// JoinTimeout bounds how long Start keeps trying to register (the
	// broker may still be starting its election service).
	JoinTimeout time.Duration
	Version     string
	// ExecKey is the node's public key for sealing results, which the
	// broker announces (see messages.Register.exec_key).
	ExecKey []byte
	Logger  *slog.Logger
}

// DefaultMemberConfig returns a node's defaults, named after the host.
func DefaultMemberConfig(name string) MemberConfig {
	return MemberConfig{
		Name:      name,
		StartedAt: time.Now(),
		// The broker's default heartbeat timeout is four of these (see
		// DefaultServiceConfig): a beat may be late three times in a row.
		HeartbeatInterval: 250 * time.Millisecond,
		// A broker on a LAN answers in milliseconds; a second covers a GC
		// pause or a busy broker without delaying a retry for long.
		RegisterTimeout: time.Second,
		// As long as the first connection may take: a node started with its
		// broker waits for the broker's election service as well.
		JoinTimeout: bus.DefaultConnConfig().ConnectTimeout,
		Logger:      slog.Default().With(keyComponent, "member"),
	}
}

func (c MemberConfig) validate() error {
	switch {
	case c.Name == "":
		return fmt.Errorf("%w: empty name", ErrInvalidConfig)
	case c.StartedAt.IsZero():
		return fmt.Errorf("%w: no start time", ErrInvalidConfig)
	case c.HeartbeatInterval <= 0:
		return fmt.Errorf("%w: heartbeat interval %v must be positive", ErrInvalidConfig, c.HeartbeatInterval)
	case c.RegisterTimeout <= 0:
		return fmt.Errorf("%w: register timeout %v must be positive", ErrInvalidConfig, c.RegisterTimeout)
	case c.JoinTimeout <= 0:
		return fmt.Errorf("%w: join timeout %v must be positive", ErrInvalidConfig, c.JoinTimeout)
	}
	return nil
}

// Member is a node's membership in the election: it registers, beats, and
// keeps the process's View of the master up to date. The connection's
// owner calls Reconnected after each reconnect.
type Member struct {
	cfg        MemberConfig
	nc         *nats.Conn
	view       *View
	instanceID string

	kick     chan struct{} // asks the loop to register again now
	resync   chan struct{} // asks the loop to ask the broker for the truth
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	ackSub   *nats.Subscription
	ackInbox string

	// lastHeard is when the broker was last known to have us alive: the
	// send time of the newest acknowledged heartbeat or registration, in
	// unix nanos. Send times, not arrival times: an ack that sat in a
	// socket buffer while this process was stopped proves nothing recent.
	lastHeard atomic.Int64
	hbTimeout atomic.Int64 // the broker's heartbeat timeout, in nanos
	// registerFrom is when the last registration attempt began, in unix
	// nanos.
	registerFrom atomic.Int64
	sessionKey   string
	seq          atomic.Uint64
	sentMu       sync.Mutex
	sent         map[uint64]time.Time // send times of recent heartbeats
}

// NewMember prepares a member on nc. It starts nothing.
func NewMember(nc *nats.Conn, cfg MemberConfig) (*Member, error) {
	if cfg.Logger == nil {
		cfg.Logger = DefaultMemberConfig(cfg.Name).Logger
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	key := make([]byte, minSessionKeyLen/2)
	if _, err := crand.Read(key); err != nil {
		return nil, fmt.Errorf("session key: %w", err)
	}
	return &Member{
		cfg: cfg, nc: nc, instanceID: nuid.Next(), sessionKey: hex.EncodeToString(key),
		view:   NewView(nc, cfg.Logger),
		sent:   make(map[uint64]time.Time),
		kick:   make(chan struct{}, 1),
		resync: make(chan struct{}, 1),
	}, nil
}

// Start follows announcements, registers, and starts beating. It blocks
// until the broker admitted the node, and fails with ErrRefused (a
// duplicate name, an invalid registration) or when the broker did not
// admit it within JoinTimeout. After a failed Start, Close is still safe.
func (m *Member) Start(ctx context.Context) error {
	if err := m.view.Start(ctx); err != nil {
		return err
	}
	m.ackInbox = m.nc.NewRespInbox()
	sub, err := m.nc.Subscribe(m.ackInbox, m.handleAck)
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", m.ackInbox, err)
	}
	m.ackSub = sub
	if err := m.join(ctx); err != nil {
		return err
	}
	ctx, m.cancel = context.WithCancel(context.WithoutCancel(ctx))
	m.wg.Go(func() { m.loop(ctx) })
	return nil
}

// View is the process's view of the master, which the member keeps up to
// date. It is closed with the member.
func (m *Member) View() *View { return m.view }

// Current returns the newest announcement seen, nil before the first.
func (m *Member) Current() *messages.Announcement { return m.view.Current() }

// ReportServing introduces to the broker serving, the connection on which
// the node is about to take exec requests, so that the broker can cut it
// off if the node goes silent: serving sends a beat marked as such, with
// the node's session key. It blocks until the broker acknowledged it (or
// ctx ends): a connection must not subscribe before the broker knows it,
// or a node that hangs at once would keep a subscription alive. The
// acknowledgement also proves the broker has the node alive (SinceHeard).
// It fails with an error wrapping ErrNotCurrent when the broker does not
// know the node (it was declared dead and has not registered again yet) or
// has decided an epoch other than epoch, the one the node would serve
// under: the node then waits for the broker's next word.
func (m *Member) ReportServing(ctx context.Context, serving *nats.Conn, epoch uint64) error {
	msg, err := m.heartbeat(m.Current(), false, true)
	if err != nil {
		return fmt.Errorf("report serving connection: %w", err)
	}
	sentAt := time.Now()
	ctx, cancel := context.WithTimeout(ctx, m.cfg.RegisterTimeout)
	defer cancel()
	resp, err := serving.RequestMsgWithContext(ctx, &nats.Msg{Subject: msg.Subject, Data: msg.Data, Header: msg.Header})
	if err != nil {
		return fmt.Errorf("report serving connection: %w", err)
	}
	var ack messages.HeartbeatAck
	if err := proto.Unmarshal(resp.Data, &ack); err != nil {
		return fmt.Errorf("report serving connection: malformed ack: %w", err)
	}
	switch {
	case ack.Error != "":
		return fmt.Errorf("report serving connection: %s", ack.Error)
	case ack.Reregister:
		m.registerSoon()
		return fmt.Errorf("%w: the broker does not know this node (registering again)", ErrNotCurrent)
	}
	m.heard(sentAt)
	if ack.Epoch != epoch {
		m.resyncSoon()
		return fmt.Errorf("%w: the broker is at epoch %d, not %d", ErrNotCurrent, ack.Epoch, epoch)
	}
	return nil
}

// ErrNotCurrent is wrapped by ReportServing's error when the node's view
// of the election is behind the broker's.
var ErrNotCurrent = errors.New("election: not the current master")

// Reconnected makes the member register again at once, with the new
// connection's client id. Call it from the connection's reconnect handler.
func (m *Member) Reconnected() { m.registerSoon() }

// HeartbeatTimeout is the broker's silence limit, as it last told this
// member.
func (m *Member) HeartbeatTimeout() time.Duration { return time.Duration(m.hbTimeout.Load()) }

// SinceHeard is the time since the broker last answered this member.
func (m *Member) SinceHeard() time.Duration {
	return time.Since(time.Unix(0, m.lastHeard.Load()))
}

// InstanceID identifies this node process (see messages.Member).
func (m *Member) InstanceID() string { return m.instanceID }

// heard records that the broker had us alive at t.
func (m *Member) heard(t time.Time) {
	for {
		old := m.lastHeard.Load()
		if t.UnixNano() <= old || m.lastHeard.CompareAndSwap(old, t.UnixNano()) {
			return
		}
	}
}

func (m *Member) handleAck(msg *nats.Msg) {
	var ack messages.HeartbeatAck
	if err := proto.Unmarshal(msg.Data, &ack); err != nil {
		m.cfg.Logger.Warn("malformed heartbeat ack", keyErr, err)
		return
	}
	m.sentMu.Lock()
	sentAt, ok := m.sent[ack.Seq]
	delete(m.sent, ack.Seq)
	m.sentMu.Unlock()
	// Only an ack that accepts the beat says the broker has us alive; one
	// asking to re-register says it declared us dead.
	if ok && !ack.Reregister && ack.Error == "" {
		m.heard(sentAt)
	}
	if ack.Error != "" {
		m.cfg.Logger.Error("broker could not read a heartbeat", keyErr, ack.Error)
	}
	// A beat sent before the last registration began speaks of the time
	// before it: that registration answers it (and retries on its own if
	// it fails), so registering again would only do it twice.
	if ack.Reregister && (!ok || sentAt.UnixNano() > m.registerFrom.Load()) {
		m.registerSoon()
	}
	if cur := m.Current(); cur != nil && ack.Epoch < cur.Epoch && ack.Error == "" {
		m.resyncSoon()
	}
}

// resyncSoon asks the loop to ask the broker for its word, unless it is
// asked already.
func (m *Member) resyncSoon() {
	select {
	case m.resync <- struct{}{}:
	default:
	}
}

// resynchronise replaces the view with the broker's own word when the view
// is ahead of the broker: it holds an announcement the broker did not make.
func (m *Member) resynchronise(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.RegisterTimeout)
	defer cancel()
	a, err := Get(ctx, m.nc)
	if err != nil {
		m.cfg.Logger.Warn("cannot ask the broker for the master", keyErr, err)
		return
	}
	switch cur := m.Current(); {
	case cur != nil && a.Epoch < cur.Epoch:
		m.cfg.Logger.Warn("an announcement the broker did not make was seen; back to the broker's",
			keyEpoch, cur.Epoch, keyBrokerEpoch, a.Epoch)
		m.view.Reset(a)
	default:
		// Behind the broker (announcements missed while hung or cut
		// off): catch up.
		m.view.Offer(a)
	}
}

// registerSoon asks the loop to register again, unless it is asked already.
func (m *Member) registerSoon() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// named reports whether a names this node master.
func (m *Member) named(a *messages.Announcement) bool { return a != nil && a.Master == m.cfg.Name }

// join registers, retrying with backoff until JoinTimeout.
func (m *Member) join(ctx context.Context) error {
	giveUp := time.Now().Add(m.cfg.JoinTimeout)
	told := false
	for attempt := 1; ; attempt++ {
		err := m.register(ctx)
		if errors.Is(err, errFull) {
			// The broker answers: no deadline while it is full.
			told = m.waitForSlot(ctx, err, told)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			giveUp, attempt = time.Now().Add(m.cfg.JoinTimeout), 0
			continue
		}
		if err == nil || errors.Is(err, ErrRefused) || ctx.Err() != nil {
			return err
		}
		wait := bus.ReconnectDelay(attempt)
		if time.Now().Add(wait).After(giveUp) {
			return fmt.Errorf("%w (no answer for %v; is that a baton broker?)", err, m.cfg.JoinTimeout)
		}
		m.cfg.Logger.Debug("registration not answered; retrying", keyErr, err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// waitForSlot says, once (unless told), that the cluster is full, and
// waits fullRetry or until ctx ends; it returns that it has told.
func (m *Member) waitForSlot(ctx context.Context, err error, told bool) bool {
	if !told {
		m.cfg.Logger.Warn(strings.TrimPrefix(err.Error(), errFull.Error()+": ") + "; registering again when a slot is free")
	}
	// ±20 %: nodes waiting together do not ask in lockstep.
	select {
	case <-ctx.Done():
	case <-time.After(fullRetry*4/5 + rand.N(fullRetry*2/5)):
	}
	return true
}

// register admits the node once; it returns an error wrapping ErrRefused
// when the broker said no.
func (m *Member) register(ctx context.Context) error {
	b, err := proto.Marshal(&messages.Register{
		Name: m.cfg.Name, Priority: m.cfg.Priority, StartedAt: timestamppb.New(m.cfg.StartedAt),
		InstanceId: m.instanceID, Version: m.cfg.Version, SessionKey: m.sessionKey, ExecKey: m.cfg.ExecKey,
		Protocol: messages.Protocol,
	})
	if err != nil {
		return fmt.Errorf("register %q: %w", m.cfg.Name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.RegisterTimeout)
	defer cancel()
	sentAt := time.Now()
	m.registerFrom.Store(sentAt.UnixNano())
	resp, err := m.nc.RequestMsgWithContext(ctx, &nats.Msg{Subject: messages.SubjectRegister, Data: b, Header: nats.Header{
		messages.HeaderNode:     {m.cfg.Name},
		messages.HeaderPriority: {strconv.Itoa(int(m.cfg.Priority))},
	}})
	if err != nil {
		if denied := m.nc.LastError(); errors.Is(denied, nats.ErrPermissionViolation) && strings.Contains(denied.Error(), messages.SubjectRegister) {
			// The server dropped the request: no retry will pass.
			return fmt.Errorf("%w: this credential may not publish to %s (joining needs the node role)", ErrRefused, messages.SubjectRegister)
		}
		return fmt.Errorf("register %q: %w", m.cfg.Name, err)
	}
	var reply messages.RegisterReply
	if err := proto.Unmarshal(resp.Data, &reply); err != nil {
		return fmt.Errorf("register %q: malformed reply: %w", m.cfg.Name, err)
	}
	if reply.Error != "" && reply.Retry {
		return fmt.Errorf("%w: %s", errFull, reply.Error)
	}
	if reply.Error != "" {
		return fmt.Errorf("%w: %s", ErrRefused, reply.Error)
	}
	m.heard(sentAt)
	m.hbTimeout.Store(int64(time.Duration(reply.HeartbeatTimeoutMs) * time.Millisecond))
	m.view.Offer(reply.Current)
	m.cfg.Logger.Info("registered")
	return nil
}

// loop beats every interval (after a random first stagger, so that nodes
// started together do not beat in lockstep) and registers again when asked.
func (m *Member) loop(ctx context.Context) {
	t := time.NewTimer(rand.N(m.cfg.HeartbeatInterval))
	defer t.Stop()
	told := false // that the cluster is full, while it is
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.kick:
			// A refusal too is retried: the name may be held by an
			// impostor, or by this node's old connection that the server
			// has not closed yet, or the cluster may be full; none should
			// end this node.
			err := m.register(ctx)
			if errors.Is(err, errFull) {
				told = m.waitForSlot(ctx, err, told)
				m.registerSoon()
				continue
			}
			told = false
			if err != nil && ctx.Err() == nil {
				m.cfg.Logger.Warn("re-registration failed; will retry", keyErr, err)
				m.registerSoon()
				select {
				case <-ctx.Done():
					return
				case <-time.After(max(m.cfg.HeartbeatInterval, m.cfg.RegisterTimeout)):
				}
			}
		case <-m.resync:
			m.resynchronise(ctx)
		case <-t.C:
			m.beat()
			t.Reset(m.cfg.HeartbeatInterval)
		}
	}
}

// ackEvery is how often a node that is not master asks for an ack (every
// 2 s at the default interval): a node the broker forgot learns it then at
// the latest, though a broker that forgets a node (restart, eviction) has
// closed its connection and the reconnect registers it at once. The master
// asks every time, since it must stop serving as soon as the broker may
// have given up on it. Acks are a message per beat that the broker pays for
// every member.
const ackEvery = 8

func (m *Member) beat() {
	a := m.Current()
	msg, err := m.heartbeat(a, m.named(a), false)
	if err == nil {
		err = m.nc.PublishMsg(msg)
	}
	if err != nil {
		m.cfg.Logger.Warn("heartbeat not sent", keyErr, err)
	}
}

// heartbeat builds the next heartbeat; with wantAck it asks for an ack
// (every ackEvery-th beat asks anyway) and records its send time. With
// serving it is the beat a serving connection reports itself with (see
// ReportServing).
func (m *Member) heartbeat(a *messages.Announcement, wantAck, serving bool) (*nats.Msg, error) {
	var epoch uint64
	if a != nil {
		epoch = a.Epoch
	}
	seq := m.seq.Add(1)
	hb := &messages.Heartbeat{Name: m.cfg.Name, InstanceId: m.instanceID, Seq: seq, Epoch: epoch}
	if serving {
		// Sent as a request by the serving connection, which awaits the
		// reply itself.
		hb.Serving, hb.SessionKey, wantAck = true, m.sessionKey, false
	} else {
		wantAck = wantAck || seq%ackEvery == 0
	}
	b, err := proto.Marshal(hb)
	if err != nil {
		return nil, err
	}
	msg := &nats.Msg{Subject: messages.SubjectHeartbeat, Data: b, Header: nats.Header{
		messages.HeaderNode:  {m.cfg.Name},
		messages.HeaderSeq:   {strconv.FormatUint(seq, 10)},
		messages.HeaderEpoch: {strconv.FormatUint(epoch, 10)},
	}}
	if wantAck {
		m.sentMu.Lock()
		m.sent[seq] = time.Now()
		// Acks older than a few heartbeat timeouts will never be awaited.
		delete(m.sent, seq-64)
		m.sentMu.Unlock()
		msg.Reply = m.ackInbox
	}
	return msg, nil
}

// Leave deregisters the node so that the broker elects a new master at
// once. It first stops beating and registering: a node that has left must
// never be admitted again, however long it then takes to finish its
// commands. It blocks until the broker answered or ctx ends, and returns
// the broker's announcement made after the removal; the view keeps
// following announcements until Close.
func (m *Member) Leave(ctx context.Context, reason string) (*messages.Announcement, error) {
	if err := m.stopLoop(ctx); err != nil {
		return nil, fmt.Errorf("leave: %w", err)
	}
	b, err := proto.Marshal(&messages.Deregister{Name: m.cfg.Name, InstanceId: m.instanceID, Reason: reason})
	if err != nil {
		return nil, fmt.Errorf("leave: %w", err)
	}
	resp, err := m.nc.RequestMsgWithContext(ctx, &nats.Msg{Subject: messages.SubjectDeregister, Data: b, Header: nats.Header{
		messages.HeaderNode:   {m.cfg.Name},
		messages.HeaderReason: {reason},
	}})
	if err != nil {
		return nil, fmt.Errorf("leave: %w", err)
	}
	var a messages.Announcement
	if err := proto.Unmarshal(resp.Data, &a); err != nil {
		return nil, fmt.Errorf("leave: malformed reply: %w", err)
	}
	m.view.Offer(&a)
	return &a, nil
}

// Close stops beating, unsubscribes and closes the view; it does not
// deregister (see Leave). It blocks until the loop has stopped, which takes
// at most one RegisterTimeout, or until ctx ends; either way it releases
// the subscriptions and the view. It is safe to call twice and after a
// failed Start.
func (m *Member) Close(ctx context.Context) error {
	err := m.stopLoop(ctx)
	if m.ackSub != nil {
		_ = m.ackSub.Unsubscribe()
	}
	return errors.Join(err, m.view.Close(ctx))
}

// stopLoop ends the beating and registering loop and waits for it, at most
// one RegisterTimeout, or until ctx ends.
func (m *Member) stopLoop(ctx context.Context) error {
	if m.cancel != nil {
		m.cancel()
	}
	stopped := make(chan struct{})
	go func() {
		m.wg.Wait()
		close(stopped)
	}()
	select {
	case <-stopped:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("member %q: the loop is still stopping: %w", m.cfg.Name, ctx.Err())
	}
}
