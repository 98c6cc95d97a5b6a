package slots

import (
	"context"
	"sync"
	"testing"
	"time"
)

// Waiters take freed slots in the order they came.
func TestSlots_InOrder(t *testing.T) {
	s := New(1)
	if !s.TryAcquire() || s.TryAcquire() {
		t.Fatal("one slot: the first TryAcquire takes it, the second does not")
	}
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Go(func() {
			if !s.Acquire(context.Background(), time.Time{}) {
				t.Error("gave up without a deadline")
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			s.Release()
		})
		// In line one after the other.
		for _, w := waiting(s); w != i+1; _, w = waiting(s) {
			time.Sleep(time.Millisecond)
		}
	}
	s.Release()
	wg.Wait()
	for i, v := range order {
		if v != i {
			t.Fatalf("order %v, want 0 1 2 3 4", order)
		}
	}
}

func waiting(s *Slots) (int, int) { return s.Taken() }

// Raising the limit lets waiters in at once; lowering it ends nothing and
// holds new takers until enough are freed.
func TestSlots_SetLimit(t *testing.T) {
	s := New(1)
	s.TryAcquire()
	got := make(chan bool, 2)
	for range 2 {
		go func() { got <- s.Acquire(context.Background(), time.Time{}) }()
	}
	for _, w := waiting(s); w != 2; _, w = waiting(s) {
		time.Sleep(time.Millisecond)
	}
	s.SetLimit(3)
	for range 2 {
		if !<-got {
			t.Fatal("a waiter gave up")
		}
	}
	s.SetLimit(1)
	if taken, _ := s.Taken(); taken != 3 || s.TryAcquire() {
		t.Fatalf("after lowering to 1: %d taken (want 3 still running) and a new one let in", taken)
	}
	s.Release()
	s.Release()
	if s.TryAcquire() {
		t.Fatal("1 of 1 taken, and another let in")
	}
	s.Release()
	if !s.TryAcquire() {
		t.Fatal("0 of 1 taken, and none let in")
	}
}

// A waiter past its deadline, or whose context ends, leaves the line; a
// slot granted as it leaves goes to the next.
func TestSlots_GiveUp(t *testing.T) {
	s := New(1)
	s.TryAcquire()
	if s.Acquire(context.Background(), time.Now().Add(20*time.Millisecond)) {
		t.Fatal("took a slot none freed")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if s.Acquire(ctx, time.Time{}) {
		t.Fatal("took a slot with its context ended")
	}
	if _, w := s.Taken(); w != 0 {
		t.Fatalf("%d still in line", w)
	}
	for range 200 {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan bool)
		go func() { done <- s.Acquire(ctx, time.Time{}) }()
		for _, w := waiting(s); w != 1; _, w = waiting(s) {
			time.Sleep(10 * time.Microsecond)
		}
		go cancel()
		s.Release()
		if <-done {
			s.Release()
		}
		if taken, w := s.Taken(); taken != 0 || w != 0 {
			t.Fatalf("%d taken, %d waiting after the race; want none", taken, w)
		}
		s.TryAcquire()
	}
}
