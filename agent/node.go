package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"baton/bus"
	"baton/election"
	"baton/executor"
	"baton/internal/slots"
	"baton/messages"
)

// Node is a cluster member that runs commands while it is master and
// submits commands to whichever node is. Its work is split by concern:
// the master role (role.go), the connection a master serves on
// (serving.go), and the request protocol it answers (protocol.go).
type Node struct {
	cfg    Config
	exe    *executor.Executor
	ledger *ledger
	keys   *keyring // seals results (see seal.go)

	// Set by Start, before any handler that reads them can run.
	nc *nats.Conn
	// statusNC answers exec.status queries: anyone who may submit may send
	// them, as large as the broker allows, and a flood that gets this
	// connection cut off as a slow consumer must not cost the membership.
	statusNC *nats.Conn
	member   *election.Member
	client   *Client
	// outbox holds the job records the history has not stored yet.
	outbox     *outbox
	stopOutbox context.CancelFunc
	outboxDone chan struct{}

	// execCtx is the lifetime of commands; it ends only when Close gives up
	// waiting for them.
	execCtx    context.Context
	execCancel context.CancelCauseFunc
	inflight   sync.WaitGroup
	// closing, under acceptMu, turns away requests that a draining serving
	// connection delivers after Close began waiting for inflight.
	acceptMu sync.RWMutex
	closing  bool

	// lost is closed, and lostErr set, when the main connection closes
	// before Close.
	lost    chan struct{}
	lostErr error

	// stopRole ends the role loop, which closes loopDone when it returns.
	stopRole context.CancelFunc
	loopDone chan struct{}
	closed   sync.Once
	closeErr error

	// Owned by the role loop.
	serving   *servingConn
	announced string // the master last announced
	followed  bool   // an announcement was followed
	// workDir holds the node's work directories, under the lock workLock.
	workDir  string
	workLock *os.File
	// preparing holds a slot per command fetching and unpacking its
	// files: as many as may run.
	preparing *slots.Slots
	// execTimeout is the run time of a command that asks for none
	// (node ctl changes it).
	execTimeout atomic.Int64
	// leave is closed when node ctl asks the node to leave.
	leave     chan struct{}
	leaveOnce sync.Once
	// stdinHeld is the input of the requests taken and not yet done.
	stdinHeld atomic.Int64
	connLost  chan struct{}
}

// errStopping is why commands still running when Close gives up waiting
// end.
var errStopping = errors.New("the master stopped before the command finished")

// leaveTimeout bounds the wait for the broker's answer to a leave.
const leaveTimeout = 2 * time.Second

// releaseTimeout bounds what Close does after the commands are done.
const releaseTimeout = 5 * time.Second

// New prepares a node. It starts nothing; Close releases what it holds.
func New(cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = DefaultConfig(cfg.Name).Logger
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ecfg := executor.DefaultConfig()
	ecfg.Timeout, ecfg.MaxParallel, ecfg.MaxOutput, ecfg.Reaper = cfg.ExecTimeout, cfg.MaxParallel, cfg.MaxOutput, cfg.Reaper
	ecfg.MemoryLimit = cfg.ExecMemoryLimit
	ecfg.Logger = cfg.Logger.With(keyComponent, "executor")
	exe, err := executor.New(ecfg)
	if err != nil {
		return nil, err
	}
	keys, err := newKeyring()
	if err != nil {
		_ = exe.Close()
		return nil, fmt.Errorf("result key: %w", err)
	}
	execCtx, execCancel := context.WithCancelCause(context.Background())
	n := &Node{
		cfg: cfg, exe: exe, keys: keys,
		// Results stay answerable well past any requester's deadline.
		ledger:     newLedger(time.Minute, 64<<20),
		execCtx:    execCtx,
		execCancel: execCancel,
		loopDone:   make(chan struct{}),
		lost:       make(chan struct{}),
		connLost:   make(chan struct{}, 1),
		preparing:  slots.New(cfg.MaxParallel),
		leave:      make(chan struct{}),
	}
	n.execTimeout.Store(int64(cfg.ExecTimeout))
	return n, nil
}

// Start connects to the broker, joins the election and starts following
// it. It blocks until the broker admitted the node. After a failed Start,
// Close releases what it took.
func (n *Node) Start(ctx context.Context) error {
	if err := n.takeWorkDir(); err != nil {
		return err
	}
	nc, err := bus.Connect(ctx, n.connConfig(""), nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
		if !nc.IsClosed() {
			n.cfg.Logger.Warn("disconnected from broker; reconnecting", keyErr, err)
		}
	}), nats.ClosedHandler(func(nc *nats.Conn) {
		// Close replaces this handler: here the connection closed on its
		// own (the server refused it for good), and with it the node's
		// membership and every reply it sends.
		n.lostErr = nc.LastError()
		close(n.lost)
	}))
	if err != nil {
		return err // it names the address
	}
	n.nc = nc
	if err := n.join(ctx); err != nil {
		return fmt.Errorf("join cluster at %s as %q: %w", n.cfg.Conn.Where(), n.cfg.Name, err)
	}
	return nil
}

// connConfig is the configuration of one of the node's connections: the
// node's, named after it with suffix.
func (n *Node) connConfig(suffix string) bus.ConnConfig {
	c := n.cfg.Conn
	c.Name, c.Logger = n.cfg.Name+suffix, n.cfg.Logger
	return c
}

// join registers the node, starts its client and status service, and the
// role loop.
func (n *Node) join(ctx context.Context) error {
	nc := n.nc
	var err error
	mcfg := election.DefaultMemberConfig(n.cfg.Name)
	mcfg.Priority, mcfg.HeartbeatInterval, mcfg.Version = n.cfg.Priority, n.cfg.HeartbeatInterval, n.cfg.Version
	mcfg.JoinTimeout, mcfg.ExecKey = n.cfg.Conn.ConnectTimeout, n.keys.public()
	mcfg.Logger = n.cfg.Logger.With(keyComponent, "member")
	if n.member, err = election.NewMember(nc, mcfg); err != nil {
		return err
	}
	if err := n.member.Start(ctx); err != nil {
		return err
	}
	// The node's own submissions share the member's view of the master.
	if n.client, err = NewClient(nc, n.member.View(), n.cfg.client()); err != nil {
		return err
	}
	if err := n.client.Start(ctx); err != nil {
		return err
	}
	n.outbox = newOutbox(nc, func() bool { return n.member.Current().GetHistory() }, n.cfg.Logger)
	outboxCtx, stopOutbox := context.WithCancel(context.WithoutCancel(ctx))
	n.stopOutbox, n.outboxDone = stopOutbox, make(chan struct{})
	go func() {
		defer close(n.outboxDone)
		n.outbox.run(outboxCtx)
	}()
	if n.statusNC, err = bus.Connect(ctx, n.connConfig("/status")); err != nil {
		return err
	}
	if _, err := n.statusNC.Subscribe(messages.ExecStatusSubject(n.member.InstanceID()), n.handleStatus); err != nil {
		return fmt.Errorf("subscribe status: %w", err)
	}
	if n.member.Current().GetNodeControl() {
		// A broker of an older build grants no one this subject.
		if _, err := n.statusNC.Subscribe(messages.ControlSubject(n.member.InstanceID()), n.handleControl); err != nil {
			return fmt.Errorf("subscribe control: %w", err)
		}
	}
	nc.SetReconnectHandler(func(*nats.Conn) {
		n.member.Reconnected()
		n.client.Reconnected()
	})
	roleCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	n.stopRole = stop
	go n.roleLoop(roleCtx)
	return nil
}

// Submit sends cmd to the master; see Client.Submit.
func (n *Node) Submit(ctx context.Context, cmd string) (*messages.ExecResult, error) {
	return n.client.Submit(ctx, cmd)
}

// Lost is closed when the node's connection to the broker closed for
// good, not by Close; LostErr then says why. The node can do nothing more:
// its owner closes it.
func (n *Node) Lost() <-chan struct{} { return n.lost }

// LostErr is why the connection closed, once Lost is closed.
func (n *Node) LostErr() error { return n.lostErr }

// SubmitJob sends job to the master; see Client.SubmitJob.
func (n *Node) SubmitJob(ctx context.Context, job *Job) (*messages.ExecResult, error) {
	return n.client.SubmitJob(ctx, job)
}

// Master returns the newest announcement the node has seen (nil before the
// first).
func (n *Node) Master() *messages.Announcement { return n.member.Current() }

// Close leaves the cluster gracefully: it deregisters (the broker elects a
// successor at once), stops taking requests, and waits for the commands it
// is running to finish and be answered. If ctx ends first, the remaining
// commands are killed and answered as canceled. It is safe to call twice,
// and after a failed Start.
func (n *Node) Close(ctx context.Context) error {
	n.closed.Do(func() { n.closeErr = n.close(ctx) })
	return n.closeErr
}

func (n *Node) close(ctx context.Context) error {
	var errs []error
	if n.stopRole != nil {
		// A broker that does not answer soon is gone: it will count this
		// node lost instead.
		leaveCtx, cancel := context.WithTimeout(ctx, leaveTimeout)
		if _, err := n.member.Leave(leaveCtx, "node stopping"); err != nil {
			n.cfg.Logger.Warn("could not tell the broker this node leaves; it will count it lost", keyErr, err)
		}
		cancel()
		n.stopRole()
		<-n.loopDone
	}
	n.acceptMu.Lock()
	n.closing = true
	n.acceptMu.Unlock()
	idle := make(chan struct{})
	go func() {
		n.inflight.Wait()
		close(idle)
	}()
	select {
	case <-idle:
	case <-ctx.Done():
		n.cfg.Logger.Warn("stopping commands still running", keyErr, ctx.Err())
		n.execCancel(errStopping)
		<-idle
	}
	n.execCancel(errStopping)
	if err := n.exe.Close(); err != nil {
		errs = append(errs, err)
	}
	n.releaseWorkDir()
	if n.outbox != nil {
		// The records of the last commands, while the broker may still
		// be there to store them.
		flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), leaveTimeout)
		if err := n.outbox.flush(flushCtx); err != nil {
			n.cfg.Logger.Warn("job records not stored: the history will not have the last jobs", keyErr, err)
		}
		cancel()
		n.stopOutbox()
		<-n.outboxDone
	}
	// ctx may be spent on the commands; releasing the rest takes at most a
	// register timeout (the member's loop), so it gets its own bound.
	release, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	if n.client != nil {
		errs = append(errs, n.client.Close(release))
	}
	if n.member != nil {
		errs = append(errs, n.member.Close(release))
	}
	if n.statusNC != nil {
		n.statusNC.Close()
	}
	if n.nc == nil {
		return errors.Join(errs...)
	}
	// Drain flushes the replies still buffered, then closes.
	closed := make(chan struct{})
	n.nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := n.nc.Drain(); err != nil {
		// Reconnecting: what is buffered cannot reach anyone now.
		n.cfg.Logger.Warn("replies not flushed: no connection to the broker", keyErr, err)
		n.nc.Close()
		return errors.Join(errs...)
	}
	<-closed
	return errors.Join(errs...)
}
