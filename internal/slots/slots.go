// Package slots is a counting semaphore whose size may change while it is
// in use, which waiters leave in the order they came.
package slots

import (
	"container/list"
	"context"
	"sync"
	"time"
)

// Slots hands out up to a limit of slots. The zero value holds none.
type Slots struct {
	mu      sync.Mutex
	limit   int
	taken   int
	waiters list.List // of chan struct{}, closed when granted a slot
}

// New returns n slots.
func New(n int) *Slots { return &Slots{limit: n} }

// TryAcquire takes a slot if one is free and nobody waits for it.
func (s *Slots) TryAcquire() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.taken < s.limit && s.waiters.Len() == 0 {
		s.taken++
		return true
	}
	return false
}

// Acquire takes a slot, waiting in line for one until ctx ends or, when
// deadline is not zero, until deadline. It reports whether it took one.
func (s *Slots) Acquire(ctx context.Context, deadline time.Time) bool {
	s.mu.Lock()
	if s.taken < s.limit && s.waiters.Len() == 0 {
		s.taken++
		s.mu.Unlock()
		return true
	}
	ready := make(chan struct{})
	elem := s.waiters.PushBack(ready)
	s.mu.Unlock()
	var expired <-chan time.Time
	if !deadline.IsZero() {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		expired = t.C
	}
	select {
	case <-ready:
		return true
	case <-expired:
	case <-ctx.Done():
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-ready:
		// Granted as it gave up: the slot goes to the next in line.
		s.taken--
		s.grant()
	default:
		s.waiters.Remove(elem)
	}
	return false
}

// Release frees a slot taken by Acquire or TryAcquire.
func (s *Slots) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.taken--
	s.grant()
}

// SetLimit makes n slots (n > 0). Fewer than are taken ends nothing: new
// takers wait until enough are freed.
func (s *Slots) SetLimit(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limit = n
	s.grant()
}

// Limit is the number of slots.
func (s *Slots) Limit() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limit
}

// Taken counts the slots taken and the takers waiting in line.
func (s *Slots) Taken() (taken, waiting int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.taken, s.waiters.Len()
}

// grant hands free slots to the first in line.
func (s *Slots) grant() {
	for s.taken < s.limit && s.waiters.Len() > 0 {
		ready := s.waiters.Remove(s.waiters.Front()).(chan struct{})
		s.taken++
		close(ready)
	}
}
