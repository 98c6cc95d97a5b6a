package agent

import (
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"baton/executor"
	"baton/messages"
)

// Live output: a master hands a running command's output to its requester
// as it comes, in OutputChunks on the request's output subject. Output
// that follows a quiet spell goes at once; output that follows a message
// by less than liveDelay is gathered until then (or up to liveChunk
// bytes), so that a command writing a byte at a time costs tens of
// messages a second, not thousands, and a line still arrives well within
// 100 ms.
const (
	liveDelay = 20 * time.Millisecond
	liveChunk = 64 << 10
)

// liveOutput streams one command's output.
type liveOutput struct {
	n       *Node
	subject string
	peer    []byte // the requester's key: chunks are sealed for it
	chunk   messages.OutputChunk

	mu      sync.Mutex
	pending [3][]byte // by executor.Stream
	offset  [3]uint64 // where pending starts in its stream
	timer   *time.Timer
	sentAt  time.Time // when the last message went
	// sendMu keeps chunks in the order their bytes were taken.
	sendMu sync.Mutex
}

// write is the command's executor.Command.Output.
func (l *liveOutput) write(s executor.Stream, p []byte) {
	l.mu.Lock()
	l.pending[s] = append(l.pending[s], p...)
	wait := liveDelay - time.Since(l.sentAt)
	now := len(l.pending[s]) >= liveChunk || l.timer == nil && wait <= 0
	if !now && l.timer == nil {
		l.timer = time.AfterFunc(wait, l.flush)
	}
	l.mu.Unlock()
	if now {
		l.flush()
	}
}

// close sends what is pending; the command has ended.
func (l *liveOutput) close() {
	l.mu.Lock()
	if l.timer != nil {
		l.timer.Stop()
	}
	l.mu.Unlock()
	l.flush()
}

// flush sends what is pending, one chunk per stream.
func (l *liveOutput) flush() {
	l.sendMu.Lock()
	defer l.sendMu.Unlock()
	l.mu.Lock()
	var chunks []*messages.OutputChunk
	for _, s := range []executor.Stream{executor.Stdout, executor.Stderr} {
		if len(l.pending[s]) == 0 {
			continue
		}
		c := proto.CloneOf(&l.chunk)
		c.Stream, c.Offset, c.Data = uint32(s), l.offset[s], l.pending[s]
		l.offset[s] += uint64(len(l.pending[s]))
		l.pending[s] = nil
		chunks = append(chunks, c)
	}
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	if len(chunks) > 0 {
		l.sentAt = time.Now()
	}
	l.mu.Unlock()
	for _, c := range chunks {
		if len(l.peer) > 0 {
			keys, err := l.n.keys.shared(l.peer)
			if err == nil {
				err = sealChunk(keys, c)
			}
			if err != nil {
				l.n.cfg.Logger.Warn("live output not sent: bad requester key", keyID, c.Id, keyErr, err)
				return
			}
		}
		l.n.publish(l.subject, c)
	}
}
