package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"sync"
	"time"

	"baton/messages"
)

// ledger remembers the requests a node has received: those running and,
// for a while, the results of those done. It makes the master idempotent
// (a request id seen before is never run again) and lets a requester that
// lost a reply ask for it (exec.status). A result goes back only to whoever
// shows the request's claim (see messages.ExecRequest.claim_hash).
type ledger struct {
	ttl      time.Duration
	maxBytes int

	mu      sync.Mutex
	entries map[string]*entry
	order   []doneEntry // done ids, oldest first
	bytes   int
}

// entry is one request the ledger remembers.
type entry struct {
	claimHash string
	json      bool                 // how the first request came
	peer      []byte               // the requester's public key
	waiters   []replyTo            // while it runs: who waits for the result
	result    *messages.ExecResult // once done
	cancel    context.CancelCauseFunc
}

// errCancelled is why a command its requester cancelled ended.
var errCancelled = errors.New("cancelled by its requester")

type doneEntry struct {
	id   string
	at   time.Time
	size int
}

func newLedger(ttl time.Duration, maxBytes int) *ledger {
	return &ledger{ttl: ttl, maxBytes: maxBytes, entries: make(map[string]*entry)}
}

// replyTo is where, and in which encoding, a requester wants its result,
// and its public key for sealing it (none for JSON or an anonymous one).
type replyTo struct {
	subject string
	json    bool
	peer    []byte
	// id and cmd are the request's, for a JSON answer.
	id, cmd string
}

// admission is what begin says to do with a request.
type admission int

const (
	// runIt: a new request; run it and call finish.
	runIt admission = iota
	// resent: the same requester sent it again; its result is the one
	// given, or, if that is nil, it goes to r when the run ends.
	resent
	// taken: another requester (or one that can prove nothing) used the
	// id before; refuse it unrun.
	taken
)

// begin records that request id, claimed by claimHash, arrived from r; a
// run it admits ends early when cancel is called.
func (l *ledger) begin(id, claimHash string, r replyTo, cancel context.CancelCauseFunc) (admission, *messages.ExecResult) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.entries[id]
	switch {
	case !ok:
		l.entries[id] = &entry{claimHash: claimHash, json: r.json, peer: r.peer, waiters: []replyTo{r}, cancel: cancel}
		return runIt, nil
	case !sameClaim(e.claimHash, claimHash) || r.json != e.json || !bytes.Equal(r.peer, e.peer):
		// The claim hash travels in the clear: a resend must also come in
		// the first one's form, for the first one's key, so that whoever
		// copies it gets nothing they can read.
		return taken, nil
	case e.result != nil:
		return resent, e.result
	}
	e.waiters = append(e.waiters, r)
	return resent, nil
}

// sameClaim reports whether a request's claim hash is the one recorded; a
// request without one proves nothing.
func sameClaim(recorded, got string) bool {
	return recorded != "" && subtle.ConstantTimeCompare([]byte(recorded), []byte(got)) == 1
}

// finish records the result of id and returns every requester waiting for
// it.
func (l *ledger) finish(id string, res *messages.ExecResult) []replyTo {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.entries[id]
	waiters := e.waiters
	e.waiters, e.result, e.cancel = nil, res, nil
	now := time.Now()
	size := len(res.Stdout) + len(res.Stderr) + len(res.ResultZip) + 256
	l.order = append(l.order, doneEntry{id, now, size})
	l.bytes += size
	for len(l.order) > 0 && (now.Sub(l.order[0].at) > l.ttl || l.bytes > l.maxBytes) {
		old := l.order[0]
		l.order = l.order[1:]
		delete(l.entries, old.id)
		l.bytes -= old.size
	}
	return waiters
}

// status says what the node knows of id to whoever shows claim (and gives
// the requester's public key, to seal the result with): to anyone else,
// nothing, not even that the id exists. With cancel, a command still
// waiting or running is cancelled first.
func (l *ledger) status(id, claim string, cancel bool) (*messages.ExecStatus, []byte) {
	sum := sha256.Sum256([]byte(claim))
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.entries[id]
	switch {
	case !ok || claim == "" || !sameClaim(e.claimHash, hex.EncodeToString(sum[:])):
		return &messages.ExecStatus{}, nil
	case e.result != nil:
		return &messages.ExecStatus{Known: true, Result: e.result}, e.peer
	}
	if cancel && e.cancel != nil {
		e.cancel(errCancelled)
	}
	return &messages.ExecStatus{Known: true, Running: true}, nil
}
