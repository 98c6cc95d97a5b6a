package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"baton/bundle"
	"baton/executor"
	"baton/messages"
)

// The request protocol a master answers on exec.request: decode, validate,
// de-duplicate, acknowledge, run, reply.

func (n *Node) handleExec(svc *execService, msg *nats.Msg) {
	received := time.Now()
	epoch := svc.epoch
	data, reply := msg.Data, msg.Reply
	if len(reply) > maxSubjectBytes {
		// Publishing there would cost this node its connection (the
		// server's control-line limit): nobody can be answered.
		n.cfg.Logger.Warn("dropped an exec request with an overlong reply subject", keyBytes, len(reply))
		svc.record(time.Since(received), "reply subject too long")
		return
	}
	n.acceptMu.RLock()
	defer n.acceptMu.RUnlock()
	if n.closing {
		// Refused as stale: the requester sends it to the next master,
		// and the history has no job of it.
		to := replyTo{subject: reply, json: messages.IsJSON(data)}
		if req, _, err := decodeRequest(data); err == nil {
			to.peer, to.id, to.cmd = req.RequesterKey, req.Id, req.Cmd
		}
		res := &messages.ExecResult{
			ExitCode: -1, ErrorKind: messages.ErrorKind_ERROR_KIND_STALE,
			Error: "master " + n.cfg.Name + " is stopping; the command did not run", Master: n.cfg.Name, Epoch: epoch,
		}
		n.reply(to, res)
		svc.record(time.Since(received), res.Error)
		return
	}
	n.inflight.Add(1)
	go n.serveRequest(svc, data, reply, received, epoch)
}

// serveRequest answers one request and records it in the service's stats.
// The request's bytes are a parameter, not captured: they are garbage once
// decoded, however long the command runs.
func (n *Node) serveRequest(svc *execService, data []byte, reply string, received time.Time, epoch uint64) {
	defer n.inflight.Done()
	res := n.execute(data, reply, received, epoch)
	failure := ""
	if res != nil && res.ErrorKind != messages.ErrorKind_ERROR_KIND_NONE {
		failure = res.Error
	}
	svc.record(time.Since(received), failure)
}

// decodeRequest parses a protobuf or JSON (the protobuf JSON mapping)
// ExecRequest. asJSON says how to answer: as asked, and in JSON when the
// body is neither, since a person typing at the nats CLI sent it.
func decodeRequest(data []byte) (req *messages.ExecRequest, asJSON bool, err error) {
	req = &messages.ExecRequest{}
	switch {
	case len(bytes.TrimSpace(data)) == 0:
		return nil, true, errors.New(`empty request; send a protobuf ExecRequest, or JSON such as {"cmd":"uname -a"}`)
	case messages.IsJSON(data):
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

// execute answers one request on the node's main connection (the serving
// connection may be gone by the time the command ends): decode, admit,
// de-duplicate, acknowledge, run, reply. It returns the result answered,
// nil when none was (yet).
func (n *Node) execute(data []byte, reply string, received time.Time, epoch uint64) *messages.ExecResult {
	if reply == "" {
		n.cfg.Logger.Warn("dropped an exec request without a reply subject", keyBytes, len(data))
		return nil
	}
	req, asJSON, err := decodeRequest(data)
	to := replyTo{subject: reply, json: asJSON}
	// Every request answered here is a job in the history, whatever
	// becomes of it; only a refusal for staleness is none (its requester
	// sends it again, to the right master).
	job := n.jobRecord(messages.NewJobID(received), req, reply, received, epoch)
	answer := func(res *messages.ExecResult) *messages.ExecResult {
		res.Master, res.Epoch = n.cfg.Name, epoch
		if _, ends := messages.StateOf(res); ends {
			res.Job = job.Id
			n.recordEnd(job, res)
		}
		n.reply(to, res)
		return res
	}
	if err != nil {
		return answer(rejected("", err.Error()))
	}
	to.peer, to.id, to.cmd = req.RequesterKey, req.Id, req.Cmd
	if refusal := n.admit(req, reply, epoch); refusal != nil {
		return answer(refusal)
	}
	if size := int64(len(req.Stdin) + len(req.Bundle)); size > 0 {
		// What a flood of requests with input holds is bounded too.
		if n.stdinHeld.Add(size) > maxStdinHeld {
			n.stdinHeld.Add(-size)
			return answer(&messages.ExecResult{Id: req.Id, ExitCode: -1, ErrorKind: messages.ErrorKind_ERROR_KIND_BUSY,
				Error: fmt.Sprintf("busy: the commands waiting and running here hold %d MiB of input already; retry later", maxStdinHeld>>20)})
		}
		defer n.stdinHeld.Add(-size)
	}
	if req.Id == "" {
		req.Id = rand.Text()
	}
	to.id = req.Id
	runCtx, cancel := context.WithCancelCause(n.execCtx)
	defer cancel(nil)
	switch admission, prior := n.ledger.begin(req.Id, req.ClaimHash, to, cancel); admission {
	case taken:
		return answer(rejected(req.Id, "request id "+req.Id+" was used before by another request; the command did not run"))
	case resent:
		// A request seen before is never run again: its requester gets
		// the first run's result (and job), now or when the run ends.
		if prior != nil {
			n.reply(to, prior)
		}
		return prior
	}
	defer n.recordRunning(job, time.Now())()
	timeout, queue := n.limits(req)
	defer n.acknowledge(req, job.Id, epoch, timeout, queue)()
	var res *messages.ExecResult
	if wantsWork(req) {
		res = n.runInWork(runCtx, req, job, asJSON, received, timeout, queue, epoch)
	} else {
		res = n.run(runCtx, req, received, timeout, queue, epoch, "")
	}
	res.Master, res.Epoch, res.Job = n.cfg.Name, epoch, job.Id
	n.recordEnd(job, res)
	for _, r := range n.ledger.finish(req.Id, res) {
		n.reply(r, res)
	}
	return res
}

// limits are the run time and the slot wait n gives req: what it asks
// for (admit checked it against the cap), or the master's defaults. A
// request waits for a slot at most as long as a command may run here by
// default: what it asks beyond that would only hold memory.
func (n *Node) limits(req *messages.ExecRequest) (timeout, queue time.Duration) {
	base := n.execTimeoutNow()
	timeout = base
	if t := time.Duration(req.TimeoutMs) * time.Millisecond; t > 0 {
		timeout = t
	}
	queue = min(n.cfg.QueueTimeout, base)
	if q := time.Duration(req.QueueTimeoutMs) * time.Millisecond; q > 0 {
		queue = min(q, base)
	}
	return timeout, queue
}

// maxStdinHeld bounds the input the requests a master holds may carry
// together: 64 full-size inputs.
const maxStdinHeld = 64 * messages.MaxStdinBytes

// maxIDLen bounds request ids: 128 random bits take 26 characters.
const maxIDLen = 128

// admit returns why req, answered on reply, is refused unrun, nil when it
// may run.
func (n *Node) admit(req *messages.ExecRequest, reply string, epoch uint64) *messages.ExecResult {
	stale := func(why string) *messages.ExecResult {
		return &messages.ExecResult{Id: req.Id, ExitCode: -1, ErrorKind: messages.ErrorKind_ERROR_KIND_STALE, Error: why}
	}
	switch {
	// What the ledger keeps is bounded before anything is kept.
	case len(req.Id) > maxIDLen:
		return rejected("", fmt.Sprintf("request id of %d bytes is longer than the %d allowed", len(req.Id), maxIDLen))
	case req.ClaimHash != "" && len(req.ClaimHash) != sha256.Size*2:
		return rejected(req.Id, fmt.Sprintf("claim hash of %d characters, want a hex SHA-256 (%d)", len(req.ClaimHash), sha256.Size*2))
	case len(req.RequesterKey) != 0 && len(req.RequesterKey) != 32:
		return rejected(req.Id, fmt.Sprintf("requester key of %d bytes, want an X25519 public key (32)", len(req.RequesterKey)))
	case strings.TrimSpace(req.Cmd) == "":
		return rejected(req.Id, "empty command")
	case len(req.Cmd) > messages.MaxCommandBytes:
		return rejected(req.Id, fmt.Sprintf("command of %d bytes is longer than the %d allowed", len(req.Cmd), messages.MaxCommandBytes))
	case len(req.Stdin) > messages.MaxStdinBytes:
		return rejected(req.Id, fmt.Sprintf("input of %d bytes is longer than the %d allowed", len(req.Stdin), messages.MaxStdinBytes))
	case len(req.Inputs) > maxInputs:
		return rejected(req.Id, fmt.Sprintf("%d input bundles, more than the %d allowed", len(req.Inputs), maxInputs))
	case len(req.Collect) > maxInputs:
		return rejected(req.Id, fmt.Sprintf("%d collect patterns, more than the %d allowed", len(req.Collect), maxInputs))
	case bundle.CheckGlobs(req.Collect) != nil:
		return rejected(req.Id, bundle.CheckGlobs(req.Collect).Error())
	case time.Duration(req.TimeoutMs)*time.Millisecond > n.cfg.MaxExecTimeout:
		return rejected(req.Id, fmt.Sprintf("timeout %v is longer than this master's --max-exec-timeout of %v",
			time.Duration(req.TimeoutMs)*time.Millisecond, n.cfg.MaxExecTimeout))
	case !sameInbox(reply, req.AckSubject) || !sameInbox(reply, req.OutputSubject):
		return rejected(req.Id, fmt.Sprintf("ack and output subjects must be in the reply subject's inbox, without wildcards, and at most %d bytes", maxSubjectBytes))
	case n.silent():
		// Requests read after a hang or partition may already be served by
		// a successor: refuse unrun.
		return stale(fmt.Sprintf("master %s has not heard from the broker for %v; the command did not run",
			n.cfg.Name, n.member.SinceHeard().Round(time.Millisecond)))
	case req.Epoch > epoch:
		// The requester has seen a newer epoch: this node is no longer
		// master there. Refuse unrun; the requester sends it again.
		return stale(fmt.Sprintf("master %s serves epoch %d, older than the request's %d; the command did not run", n.cfg.Name, epoch, req.Epoch))
	}
	return nil
}

// maxInputs bounds a request's input bundles and its collect patterns
// (as the history does a record's).
const maxInputs = 256

// maxSubjectBytes bounds the subjects a request names for its answers:
// far more than an inbox takes, far less than the server's control-line
// limit (4 KiB), past which a publication costs the publisher its
// connection.
const maxSubjectBytes = 256

// sameInbox reports whether s is empty or a subject a master may answer on
// besides reply: one in the same inbox (reply's first two tokens, such as
// _INBOX_submit.Xyz), so that a request can only be answered where its
// sender reads.
func sameInbox(reply, s string) bool {
	if s == "" {
		return true
	}
	first, rest, ok := strings.Cut(reply, ".")
	second, _, ok2 := strings.Cut(rest, ".")
	inbox := first + "." + second + "."
	return ok && ok2 && strings.HasPrefix(first, "_INBOX") && second != "" &&
		len(s) <= maxSubjectBytes && len(s) > len(inbox) && strings.HasPrefix(s, inbox) &&
		!strings.ContainsAny(s, "*> \t\r\n") && !strings.Contains(s, "..") && !strings.HasSuffix(s, ".")
}

// acknowledge tells the requester, if it asked, which master took req and
// for how long, once the command has run for ackDelay; the returned
// function cancels a pending ack. A command done within ackDelay needs no ack: its result
// comes first, and a master lost before acking is caught by the requester
// anyway (it watches every master that could hold the request). So the
// common short command costs one message less.
func (n *Node) acknowledge(req *messages.ExecRequest, job string, epoch uint64, timeout, queue time.Duration) (cancel func()) {
	if req.AckSubject == "" {
		return func() {}
	}
	ack := &messages.ExecAck{Id: req.Id, Master: n.cfg.Name, Epoch: epoch, InstanceId: n.member.InstanceID(),
		TimeoutMs: uint32(timeout.Milliseconds()), QueueTimeoutMs: uint32(queue.Milliseconds()), Job: job}
	t := time.AfterFunc(ackDelay, func() { n.publish(req.AckSubject, ack) })
	return func() { t.Stop() }
}

// ackDelay is how long a command runs before its requester is told which
// master took it.
const ackDelay = 20 * time.Millisecond

// seal returns res with its output boxed and a mac, for the peer (a
// requester's public key) alone to open and check, or res as it is for a
// requester that gave no key. res itself
// is never changed: the ledger may hand it to others.
func (n *Node) seal(res *messages.ExecResult, peer []byte) *messages.ExecResult {
	if len(peer) == 0 {
		return res
	}
	keys, err := n.keys.shared(peer)
	var out *messages.ExecResult
	if err == nil {
		out, err = sealResult(keys, res)
	}
	if err != nil {
		n.cfg.Logger.Warn("cannot seal a result: bad requester key", keyID, res.Id, keyErr, err)
		return res
	}
	return out
}

// handleStatus answers an ExecStatusQuery from the ledger, on the status
// connection.
func (n *Node) handleStatus(msg *nats.Msg) {
	var q messages.ExecStatusQuery
	if err := proto.Unmarshal(msg.Data, &q); err != nil {
		n.cfg.Logger.Warn("malformed status query", keyErr, err)
		return
	}
	if msg.Reply == "" {
		return
	}
	st, peer := n.ledger.status(q.Id, q.Claim, q.Cancel)
	if st.Result != nil {
		st.Result = n.seal(st.Result, peer)
	}
	b, err := proto.Marshal(st)
	if err == nil {
		err = n.statusNC.Publish(msg.Reply, b)
	}
	if err != nil {
		n.cfg.Logger.Error("status reply lost", keySubject, msg.Reply, keyErr, err)
	}
}

func (n *Node) reply(to replyTo, res *messages.ExecResult) {
	if !to.json {
		if res.ResultZip != nil {
			// For JSON requesters only.
			res = proto.CloneOf(res)
			res.ResultZip = nil
		}
		n.publish(to.subject, n.seal(res, to.peer))
		return
	}
	id := res.Id
	if id == "" {
		id = to.id
	}
	b, err := json.Marshal(messages.NewResultJSON(id, to.cmd, res))
	if err == nil {
		err = n.nc.Publish(to.subject, b)
	}
	if err != nil {
		n.cfg.Logger.Error("reply lost", keySubject, to.subject, keyErr, err)
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
		n.cfg.Logger.Error("reply lost", keySubject, subject, keyErr, err)
	}
}

// run runs req until it ends, times out or ctx ends (its requester or
// the node's Close cancelled it), streaming its output to the requester if
// it asked; the stream is flushed before run returns, so that the result
// follows the last chunk.
func (n *Node) run(ctx context.Context, req *messages.ExecRequest, received time.Time, timeout, queue time.Duration, epoch uint64, dir string) *messages.ExecResult {
	n.cfg.Logger.Debug("running", keyID, req.Id, keyCmd, req.Cmd, keyRequester, req.Requester)
	c := executor.Command{Line: req.Cmd, Timeout: timeout, StartBy: received.Add(queue), Dir: dir}
	if req.Stdin != nil {
		c.Stdin = bytes.NewReader(req.Stdin)
	}
	if req.OutputSubject != "" {
		live := &liveOutput{n: n, subject: req.OutputSubject, peer: req.RequesterKey,
			chunk: messages.OutputChunk{Id: req.Id, Master: n.cfg.Name, Epoch: epoch}}
		defer live.close()
		c.Output = live.write
	}
	r := n.exe.Run(ctx, c)
	res := resultMessage(req.Id, r)
	if r.OutOfMemory {
		res.ErrorKind = messages.ErrorKind_ERROR_KIND_MEMORY_LIMIT
		res.Error = fmt.Sprintf("ran out of memory under master %s's --exec-memory-limit of %s (exit %d)",
			n.cfg.Name, bundle.Size(n.cfg.ExecMemoryLimit), r.ExitCode)
	}
	return res
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
