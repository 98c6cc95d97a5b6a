package executor

// cappedBuffer keeps the first limit bytes written to it and counts the
// rest, so a writer is never blocked or failed by the cap. It hands what it
// keeps to onKept, if set, as it keeps it.
type cappedBuffer struct {
	limit   int
	buf     []byte
	dropped int64
	onKept  func([]byte)
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	room := max(b.limit-len(b.buf), 0)
	kept := p[:min(room, len(p))]
	b.buf = append(b.buf, kept...)
	b.dropped += int64(len(p) - len(kept))
	if len(kept) > 0 && b.onKept != nil {
		b.onKept(kept)
	}
	return len(p), nil
}
