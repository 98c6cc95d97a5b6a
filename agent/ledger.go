package agent

import (
	"sync"
	"time"

	"baton/messages"
)

// ledger remembers the requests a node has received: those running and,
// for a while, the results of those done. It makes the master idempotent
// (a request id seen before is never run again) and lets a requester that
// lost a reply ask for it (exec.status).
type ledger struct {
	ttl      time.Duration
	maxBytes int

	mu      sync.Mutex
	running map[string][]replyTo // id → requesters waiting for the result
	done    map[string]*messages.ExecResult
	order   []doneEntry // done ids, oldest first
	bytes   int
}

type doneEntry struct {
	id   string
	at   time.Time
	size int
}

func newLedger(ttl time.Duration, maxBytes int) *ledger {
	return &ledger{
		ttl: ttl, maxBytes: maxBytes,
		running: make(map[string][]replyTo),
		done:    make(map[string]*messages.ExecResult),
	}
}

// replyTo is where, and in which encoding, a requester wants its result.
type replyTo struct {
	subject string
	json    bool
}

// begin records that request id arrived from r. It returns fresh when the
// caller must run it; otherwise the request is a duplicate: res is its
// result if done, or nil if still running (r will get the result when it
// finishes).
func (l *ledger) begin(id string, r replyTo) (fresh bool, res *messages.ExecResult) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r, ok := l.done[id]; ok {
		return false, r
	}
	if waiters, ok := l.running[id]; ok {
		l.running[id] = append(waiters, r)
		return false, nil
	}
	l.running[id] = []replyTo{r}
	return true, nil
}

// finish records the result of id and returns every requester waiting for
// it.
func (l *ledger) finish(id string, res *messages.ExecResult) []replyTo {
	l.mu.Lock()
	defer l.mu.Unlock()
	waiters := l.running[id]
	delete(l.running, id)
	now := time.Now()
	size := len(res.Stdout) + len(res.Stderr) + 256
	l.done[id] = res
	l.order = append(l.order, doneEntry{id, now, size})
	l.bytes += size
	for len(l.order) > 0 && (now.Sub(l.order[0].at) > l.ttl || l.bytes > l.maxBytes) {
		old := l.order[0]
		l.order = l.order[1:]
		delete(l.done, old.id)
		l.bytes -= old.size
	}
	return waiters
}

// status says what the node knows of id.
func (l *ledger) status(id string) *messages.ExecStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r, ok := l.done[id]; ok {
		return &messages.ExecStatus{Known: true, Result: r}
	}
	if _, ok := l.running[id]; ok {
		return &messages.ExecStatus{Known: true, Running: true}
	}
	return &messages.ExecStatus{}
}
