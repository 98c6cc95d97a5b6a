package executor

// cappedBuffer keeps the first limit bytes written to it and counts the
// rest, so a writer is never blocked or failed by the cap. It hands what it
// keeps to onKept, if set, as it keeps it.
type cappedBuffer struct {
	limit   int
	buf     []byte
	dropped int64
	onKept  func([]byte)
	// tail holds the last tailBytes written, dropped or not: where a
	// program says why it died.
	tail []byte
}

// tailBytes is how much of the end of a stream is kept beside the cap.
const tailBytes = 4096

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if len(p) >= tailBytes {
		b.tail = append(b.tail[:0], p[len(p)-tailBytes:]...)
	} else {
		b.tail = append(b.tail, p...)
		if over := len(b.tail) - tailBytes; over > 0 {
			b.tail = append(b.tail[:0], b.tail[over:]...)
		}
	}
	room := max(b.limit-len(b.buf), 0)
	kept := p[:min(room, len(p))]
	b.buf = append(b.buf, kept...)
	b.dropped += int64(len(p) - len(kept))
	if len(kept) > 0 && b.onKept != nil {
		b.onKept(kept)
	}
	return len(p), nil
}
