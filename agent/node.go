package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"baton/bus"
	"baton/election"
	"baton/executor"
	"baton/messages"
)

// Log keys.
const (
	keyNode  = "node"
	keyEpoch = "epoch"
	keyID    = "id"
	keyErr   = "err"
)

// Node is a cluster member that runs commands while it is master and
// submits commands to whichever node is.
type Node struct {
	cfg    Config
	nc     *nats.Conn
	member *election.Member
	exe    *executor.Executor
	client *Client
	ledger *ledger

	// execCtx is the lifetime of commands; it ends only when Close gives up
	// waiting for them.
	execCtx    context.Context
	execCancel context.CancelFunc
	inflight   sync.WaitGroup
	// closing, under acceptMu, turns away requests that a draining serving
	// connection delivers after Close began waiting for inflight.
	acceptMu sync.RWMutex
	closing  bool

	stop     chan struct{}
	loopDone chan struct{}
	done     chan struct{}
	err      error
	once     sync.Once

	// Owned by the role loop.
	serving      *servingConn
	servingEpoch atomic.Uint64
	connLost     chan struct{}
}

// servingConn is the connection a master takes exec requests on. Each term
// opens its own and never reconnects it, so a subscription can only exist
// on the broker while this node holds the role (see follow).
type servingConn struct {
	nc     *nats.Conn
	svc    micro.Service // the exec endpoint, visible to `nats micro`
	closed chan struct{}
	// live is set once the connection serves; only then does its closing
	// call for a new one (a failed start must not retry in a hot loop).
	live atomic.Bool
}

// New prepares a node. It starts nothing.
func New(cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = DefaultConfig(cfg.Name).Logger
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ecfg := executor.DefaultConfig()
	ecfg.Timeout, ecfg.MaxParallel, ecfg.MaxOutput = cfg.ExecTimeout, cfg.MaxParallel, cfg.MaxOutput
	ecfg.Logger = cfg.Logger.With("component", "executor")
	exe, err := executor.New(ecfg)
	if err != nil {
		return nil, err
	}
	return &Node{
		cfg: cfg, exe: exe,
		// Results stay answerable well past any requester's deadline.
		ledger:   newLedger(time.Minute, 64<<20),
		stop:     make(chan struct{}),
		loopDone: make(chan struct{}),
		done:     make(chan struct{}),
		connLost: make(chan struct{}, 1),
	}, nil
}

// Start connects to the broker, joins the election and starts following
// it. It blocks until the broker admitted the node.
func (n *Node) Start(ctx context.Context) error {
	nc, err := bus.Connect(ctx, n.cfg.BrokerAddr, n.cfg.Name, n.cfg.ConnectTimeout,
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if !nc.IsClosed() {
				n.cfg.Logger.Warn("disconnected from broker; reconnecting", keyErr, err)
			}
		}))
	if err != nil {
		return err
	}
	mcfg := election.DefaultMemberConfig(n.cfg.Name)
	mcfg.Priority, mcfg.HeartbeatInterval, mcfg.Version = n.cfg.Priority, n.cfg.HeartbeatInterval, n.cfg.Version
	mcfg.Logger = n.cfg.Logger.With("component", "member")
	member, err := election.NewMember(nc, mcfg)
	if err == nil {
		err = member.Start(ctx)
	}
	if err != nil {
		nc.Close()
		return fmt.Errorf("join cluster at %s as %q: %w", n.cfg.BrokerAddr, n.cfg.Name, err)
	}
	client, err := NewClient(ctx, nc, n.cfg)
	if err != nil {
		member.Close()
		nc.Close()
		return fmt.Errorf("join cluster at %s as %q: %w", n.cfg.BrokerAddr, n.cfg.Name, err)
	}
	// Set before any handler that reads them can run.
	n.nc, n.member, n.client = nc, member, client
	n.execCtx, n.execCancel = context.WithCancel(context.WithoutCancel(ctx))
	if _, err := nc.Subscribe(bus.ExecStatusSubject(member.InstanceID()), n.handleStatus); err != nil {
		client.Close()
		member.Close()
		nc.Close()
		return fmt.Errorf("join cluster at %s as %q: subscribe status: %w", n.cfg.BrokerAddr, n.cfg.Name, err)
	}
	nc.SetReconnectHandler(func(*nats.Conn) {
		member.Reconnected()
		client.Reconnected()
	})
	go n.roleLoop()
	return nil
}

// silent reports whether the broker has not had this node alive for
// longer than its heartbeat timeout: it may have declared the node dead and
// elected another master, so the node must not take new commands.
func (n *Node) silent() bool {
	timeout := n.member.HeartbeatTimeout()
	return timeout > 0 && n.member.SinceHeard() > timeout
}

// Submit sends cmd to the master; see Client.Submit.
func (n *Node) Submit(ctx context.Context, cmd string) (*messages.ExecResult, error) {
	return n.client.Submit(ctx, cmd)
}

// Done is closed when the node stopped on its own (the broker refused its
// re-registration); Err says why.
func (n *Node) Done() <-chan struct{} { return n.done }

// Err is why the node stopped on its own; valid once Done is closed.
func (n *Node) Err() error { return n.err }

// Master returns the newest announcement the node has seen (nil before the
// first).
func (n *Node) Master() *messages.Announcement { return n.member.Current() }

// roleLoop takes and gives up the master role as announcements say.
func (n *Node) roleLoop() {
	defer close(n.loopDone)
	// Check for silence, and retry a serving connection that failed to
	// open or dropped, once per heartbeat.
	retry := time.NewTicker(n.cfg.HeartbeatInterval)
	defer retry.Stop()
	for {
		select {
		case <-n.stop:
			n.stepDown()
			return
		case a, ok := <-n.member.Changes():
			if !ok {
				n.stepDown()
				n.finish(n.member.Err())
				return
			}
			n.follow(a)
		case <-n.connLost:
			n.follow(n.member.Current())
		case <-retry.C:
			n.follow(n.member.Current())
		}
	}
}

func (n *Node) finish(err error) {
	n.once.Do(func() {
		n.err = err
		close(n.done)
	})
}

// follow makes the node serve exactly when a names it master.
func (n *Node) follow(a *messages.Announcement) {
	if n.serving != nil {
		select {
		case <-n.serving.closed:
			n.cfg.Logger.Warn("serving connection lost")
			n.serving = nil
			n.member.StopServing()
		default:
		}
	}
	if a == nil || a.Master != n.cfg.Name {
		n.stepDown()
		return
	}
	if n.serving != nil && n.silent() {
		n.cfg.Logger.Warn("no word from the broker for longer than its heartbeat timeout; not taking commands",
			"since_heard", n.member.SinceHeard().Round(time.Millisecond))
		n.stepDown()
		return
	}
	n.servingEpoch.Store(a.Epoch)
	if n.serving != nil {
		return
	}
	// Not serving yet: serve proves to the broker, with one acknowledged
	// round trip, that this node is alive before it takes anything.
	sc, err := n.serve()
	if err != nil {
		n.cfg.Logger.Error("cannot take exec requests; will retry", keyEpoch, a.Epoch, keyErr, err)
		return
	}
	n.serving = sc
	n.cfg.Logger.Info("serving as master", keyEpoch, a.Epoch)
}

// serve opens a serving connection and subscribes to exec requests on it.
func (n *Node) serve() (*servingConn, error) {
	sc := &servingConn{closed: make(chan struct{})}
	nc, err := bus.Connect(context.Background(), n.cfg.BrokerAddr, n.cfg.Name+"/exec", time.Second,
		nats.NoReconnect(),
		// Draining needs one round trip to a live broker; a hung one must
		// not hold the role loop for nats.go's default 30 s.
		nats.DrainTimeout(2*time.Second),
		nats.ClosedHandler(func(*nats.Conn) {
			close(sc.closed)
			if sc.live.Load() {
				select {
				case n.connLost <- struct{}{}:
				default:
				}
			}
		}))
	if err != nil {
		return nil, err
	}
	// The broker learns this connection before it subscribes, and its
	// acknowledgement shows the broker still has this node alive (see
	// Member.ReportServing).
	cid, err := nc.GetClientID()
	if err == nil {
		err = n.member.ReportServing(context.Background(), cid)
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	svc, err := micro.AddService(nc, micro.Config{
		Name:        "baton",
		Version:     serviceVersion(n.cfg.Version),
		Description: "runs shell commands on baton's master",
		Metadata:    map[string]string{"node": n.cfg.Name, "epoch": strconv.FormatUint(n.servingEpoch.Load(), 10)},
	})
	if err == nil {
		err = svc.AddEndpoint("exec", micro.HandlerFunc(n.handleExec),
			micro.WithEndpointSubject(bus.SubjectExec), micro.WithEndpointQueueGroup(bus.ExecQueue))
	}
	if err == nil {
		err = nc.Flush()
	}
	if err != nil {
		n.member.StopServing()
		nc.Close()
		return nil, fmt.Errorf("subscribe %s: %w", bus.SubjectExec, err)
	}
	sc.nc, sc.svc = nc, svc
	sc.live.Store(true)
	return sc, nil
}

// semver matches the SemVer 2.0.0 grammar, as the micro service demands.
var semver = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$`)

// serviceVersion turns a build version (a tag such as v1.2.3, or what git
// describe makes of an untagged tree, such as a1b2c3d-dirty) into the
// SemVer the micro service demands: a pre-release of 0.0.0 unless it is
// one already.
func serviceVersion(v string) string {
	if v := strings.TrimPrefix(v, "v"); semver.MatchString(v) {
		return v
	}
	id := strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '-' {
			return r
		}
		return '-'
	}, v)
	if id == "" {
		id = "dev"
	}
	return "0.0.0-" + id
}

// stepDown stops taking requests at once. Requests already delivered are
// still handled: draining unsubscribes, lets the handler take what the
// client had buffered, then closes the connection.
func (n *Node) stepDown() {
	if n.serving == nil {
		return
	}
	sc := n.serving
	n.serving = nil
	n.member.StopServing()
	// Stop drains the endpoint; draining the connection then closes it.
	if err := sc.svc.Stop(); err != nil {
		n.cfg.Logger.Debug("stop exec service", keyErr, err)
	}
	if err := sc.nc.Drain(); err != nil {
		// Drain refuses only a connection that is already closed or
		// reconnecting; closing it leaves the broker no subscription.
		sc.nc.Close()
	}
	n.cfg.Logger.Info("stepped down as master")
	// Block until the handler has taken its last request, so that inflight
	// counts everything this term accepted.
	<-sc.closed
}

func (n *Node) handleExec(req micro.Request) {
	received := time.Now()
	epoch := n.servingEpoch.Load()
	data, reply := req.Data(), req.Reply()
	n.acceptMu.RLock()
	defer n.acceptMu.RUnlock()
	if n.closing {
		n.reply(replyTo{reply, isJSON(data)}, &messages.ExecResult{
			ExitCode: -1, ErrorKind: messages.ErrorKind_ERROR_KIND_STALE,
			Error: "master " + n.cfg.Name + " is stopping; the command did not run", Master: n.cfg.Name, Epoch: epoch,
		})
		return
	}
	n.inflight.Add(1)
	go func() {
		defer n.inflight.Done()
		n.execute(data, reply, received, epoch)
	}()
}

// isJSON reports whether a request body is JSON: a protobuf ExecRequest
// never starts with '{' (it would be a group field, which proto3 lacks).
func isJSON(data []byte) bool {
	b := bytes.TrimLeft(data, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}

// decodeRequest parses a protobuf or JSON (the protobuf JSON mapping)
// ExecRequest. asJSON says how to answer: as asked, and in JSON when the
// body is neither, since a person typing at the nats CLI sent it.
func decodeRequest(data []byte) (req *messages.ExecRequest, asJSON bool, err error) {
	req = &messages.ExecRequest{}
	switch {
	case len(bytes.TrimSpace(data)) == 0:
		return nil, true, errors.New(`empty request; send a protobuf ExecRequest, or JSON such as {"cmd":"uname -a"}`)
	case isJSON(data):
		if err := protojson.Unmarshal(data, req); err != nil {
			return nil, true, fmt.Errorf(`request is not valid JSON for an ExecRequest (such as {"cmd":"uname -a"}): %v`, err)
		}
		return req, true, nil
	}
	if err := proto.Unmarshal(data, req); err != nil {
		return nil, true, fmt.Errorf(`request is neither a protobuf ExecRequest nor JSON such as {"cmd":"uname -a"}: %v`, err)
	}
	return req, false, nil
}

// execute runs one request and replies on the node's main connection (the
// serving connection may be gone by the time the command ends).
func (n *Node) execute(data []byte, reply string, received time.Time, epoch uint64) {
	if reply == "" {
		n.cfg.Logger.Warn("dropped an exec request without a reply subject", "bytes", len(data))
		return
	}
	stamp := func(res *messages.ExecResult) *messages.ExecResult {
		res.Master, res.Epoch = n.cfg.Name, epoch
		return res
	}
	req, asJSON, err := decodeRequest(data)
	to := replyTo{reply, asJSON}
	if err != nil {
		n.reply(to, stamp(rejected("", err.Error())))
		return
	}
	switch {
	case strings.TrimSpace(req.Cmd) == "":
		n.reply(to, stamp(rejected(req.Id, "empty command")))
		return
	case len(req.Cmd) > bus.MaxCommandBytes:
		n.reply(to, stamp(rejected(req.Id, fmt.Sprintf("command of %d bytes is longer than the %d allowed", len(req.Cmd), bus.MaxCommandBytes))))
		return
	case n.silent():
		// Requests read after a hang or partition may already be served by
		// a successor: refuse unrun.
		n.reply(to, stamp(&messages.ExecResult{Id: req.Id, ExitCode: -1, ErrorKind: messages.ErrorKind_ERROR_KIND_STALE,
			Error: fmt.Sprintf("master %s has not heard from the broker for %v; the command did not run", n.cfg.Name, n.member.SinceHeard().Round(time.Millisecond))}))
		return
	case req.Epoch > epoch:
		// The requester has seen a newer epoch: this node is no longer
		// master there. Refuse unrun; the requester sends it again.
		n.reply(to, stamp(&messages.ExecResult{Id: req.Id, ExitCode: -1, ErrorKind: messages.ErrorKind_ERROR_KIND_STALE,
			Error: fmt.Sprintf("master %s serves epoch %d, older than the request's %d; the command did not run", n.cfg.Name, epoch, req.Epoch)}))
		return
	}
	if req.Id == "" {
		req.Id = nuid.Next()
	}
	fresh, prior := n.ledger.begin(req.Id, to)
	if !fresh {
		// A request seen before is never run again: answer with its result,
		// or let it wait for the run in progress.
		if prior != nil {
			n.reply(to, prior)
		}
		return
	}
	if req.AckSubject != "" {
		// A command done within ackDelay needs no ack: its result comes
		// first, and a master lost before acking is caught by the
		// requester anyway (it watches every master that could hold the
		// request). So the common short command costs one message less.
		ack := &messages.ExecAck{Id: req.Id, Master: n.cfg.Name, Epoch: epoch, InstanceId: n.member.InstanceID()}
		t := time.AfterFunc(ackDelay, func() { n.publish(req.AckSubject, ack) })
		defer t.Stop()
	}
	res := stamp(n.run(req, received))
	for _, r := range n.ledger.finish(req.Id, res) {
		n.reply(r, res)
	}
}

// ackDelay is how long a command runs before its requester is told which
// master took it.
const ackDelay = 20 * time.Millisecond

// handleStatus answers an ExecStatusQuery from the ledger.
func (n *Node) handleStatus(msg *nats.Msg) {
	var q messages.ExecStatusQuery
	if err := proto.Unmarshal(msg.Data, &q); err != nil {
		n.cfg.Logger.Warn("malformed status query", keyErr, err)
		return
	}
	n.publish(msg.Reply, n.ledger.status(q.Id))
}

// jsonResult is the JSON a result is answered with: the .proto field
// names, every field present.
var jsonResult = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

func (n *Node) reply(to replyTo, res *messages.ExecResult) {
	if !to.json {
		n.publish(to.subject, res)
		return
	}
	b, err := jsonResult.Marshal(res)
	if err == nil {
		err = n.nc.Publish(to.subject, b)
	}
	if err != nil {
		n.cfg.Logger.Error("reply lost", "subject", to.subject, keyErr, err)
	}
}

func (n *Node) publish(subject string, m proto.Message) {
	if subject == "" {
		return
	}
	b, err := proto.Marshal(m)
	if err == nil {
		err = n.nc.Publish(subject, b)
	}
	if err != nil {
		n.cfg.Logger.Error("reply lost", "subject", subject, keyErr, err)
	}
}

func (n *Node) run(req *messages.ExecRequest, received time.Time) *messages.ExecResult {
	// The master's --exec-timeout is the cluster's limit; a request may
	// only ask for less.
	timeout := n.cfg.ExecTimeout
	if t := time.Duration(req.TimeoutMs) * time.Millisecond; t > 0 && t < timeout {
		timeout = t
	}
	queue := n.cfg.QueueTimeout
	if q := time.Duration(req.QueueTimeoutMs) * time.Millisecond; q > 0 {
		queue = q
	}
	n.cfg.Logger.Debug("running", keyID, req.Id, "cmd", req.Cmd, "requester", req.Requester)
	r := n.exe.Run(n.execCtx, executor.Command{Line: req.Cmd, Timeout: timeout, StartBy: received.Add(queue)})
	return resultMessage(req.Id, r)
}

func rejected(id, why string) *messages.ExecResult {
	return &messages.ExecResult{Id: id, ExitCode: -1, ErrorKind: messages.ErrorKind_ERROR_KIND_REJECTED, Error: "rejected: " + why}
}

var errorKinds = map[executor.ErrorKind]messages.ErrorKind{
	executor.Completed:   messages.ErrorKind_ERROR_KIND_NONE,
	executor.TimedOut:    messages.ErrorKind_ERROR_KIND_TIMEOUT,
	executor.StartFailed: messages.ErrorKind_ERROR_KIND_START_FAILED,
	executor.Busy:        messages.ErrorKind_ERROR_KIND_BUSY,
	executor.Canceled:    messages.ErrorKind_ERROR_KIND_CANCELED,
}

func resultMessage(id string, r executor.Result) *messages.ExecResult {
	res := &messages.ExecResult{
		Id:              id,
		ExitCode:        int32(r.ExitCode),
		Stdout:          strings.ToValidUTF8(string(r.Stdout), "\uFFFD"),
		Stderr:          strings.ToValidUTF8(string(r.Stderr), "\uFFFD"),
		ErrorKind:       errorKinds[r.Kind],
		TimedOut:        r.Kind == executor.TimedOut,
		DurationMs:      r.Duration.Milliseconds(),
		StdoutTruncated: r.StdoutDropped > 0,
		StderrTruncated: r.StderrDropped > 0,
		StdoutDropped:   uint64(r.StdoutDropped),
		StderrDropped:   uint64(r.StderrDropped),
	}
	if r.Err != nil {
		res.Error = r.Err.Error()
	}
	return res
}

// Close leaves the cluster gracefully: it deregisters (the broker elects a
// successor at once), stops taking requests, and waits for the commands it
// is running to finish and be answered. If ctx ends first, the remaining
// commands are killed and answered as canceled. It is safe to call twice.
func (n *Node) Close(ctx context.Context) error {
	var errs []error
	n.once.Do(func() {
		if _, err := n.member.Leave(ctx, "node stopping"); err != nil {
			errs = append(errs, err)
		}
		close(n.stop)
		<-n.loopDone
		close(n.done)
	})
	n.acceptMu.Lock()
	wasClosing := n.closing
	n.closing = true
	n.acceptMu.Unlock()
	if wasClosing {
		return errors.Join(errs...)
	}
	idle := make(chan struct{})
	go func() {
		n.inflight.Wait()
		close(idle)
	}()
	select {
	case <-idle:
	case <-ctx.Done():
		n.cfg.Logger.Warn("stopping commands still running", keyErr, ctx.Err())
		n.execCancel()
		<-idle
	}
	n.execCancel()
	n.exe.Close()
	n.client.Close()
	n.member.Close()
	// Drain flushes the replies still buffered, then closes.
	closed := make(chan struct{})
	n.nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := n.nc.Drain(); err != nil {
		n.nc.Close()
		return errors.Join(append(errs, fmt.Errorf("flush replies: %w", err))...)
	}
	<-closed
	return errors.Join(errs...)
}
