package broker

import (
	"context"
	"math"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Memory tuning: a broker holds two goroutines and some buffers per client,
// and Go keeps freed heap until its scavenger returns it, so with the
// runtime's defaults the broker's resident size sits well above what it
// uses. A soft memory limit makes the runtime return the idle part. A fixed
// limit would be wrong for some cluster size (too high to help, or below
// the working set, which makes the GC run constantly), so the broker keeps
// the limit at a margin above what it really uses. The margin is the one
// GOGC=100 paces the collector by (the heap may double): at 1.25 the
// collector ran at every quarter of growth, and reading the job history
// (a broker restart's index load, a --grep through every record) took
// three times as long.
const (
	memoryFloor    = 64 << 20
	memoryMargin   = 2
	memoryInterval = time.Second
)

// tuneMemory adjusts the soft memory limit until ctx ends. It leaves the
// limit alone when the operator set GOMEMLIMIT.
func tuneMemory(ctx context.Context) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	samples := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/stacks:bytes"},
	}
	t := time.NewTicker(memoryInterval)
	defer t.Stop()
	for {
		metrics.Read(samples)
		used := samples[0].Value.Uint64() + samples[1].Value.Uint64()
		debug.SetMemoryLimit(max(memoryFloor, int64(float64(used)*memoryMargin)))
		select {
		case <-ctx.Done():
			debug.SetMemoryLimit(math.MaxInt64) // the runtime's default: none
			return
		case <-t.C:
		}
	}
}
