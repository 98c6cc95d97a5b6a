package slots

import (
	"context"
	"testing"
	"time"
)

// BenchmarkSlots compares a slot's take and release with a buffered
// channel's send and receive, the fixed-size semaphore it replaced, with
// as many goroutines as processors competing for 64 slots.
func BenchmarkSlots(b *testing.B) {
	b.Run("channel", func(b *testing.B) {
		ch := make(chan struct{}, 64)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				ch <- struct{}{}
				<-ch
			}
		})
	})
	b.Run("slots", func(b *testing.B) {
		s := New(64)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if !s.TryAcquire() && !s.Acquire(context.Background(), time.Time{}) {
					b.Fatal("no slot")
				}
				s.Release()
			}
		})
	})
}
