package bench

import (
	"context"
	"errors"
	"slices"
	"time"
)

// OffOn is a cost measured by versus: a cluster without a feature (off)
// against one with it (on).
type OffOn struct {
	Samples      int     `json:"samples"`
	OffP50Ms     float64 `json:"off_p50_ms"`
	OnP50Ms      float64 `json:"on_p50_ms"`
	OffPerSecond float64 `json:"off_per_second"`
	OnPerSecond  float64 `json:"on_per_second"`
	// RoundTripCost and ThroughputCost are the fractions lost to the
	// feature: 0.05 is 5 % slower round trips, or 5 % fewer commands a
	// second.
	RoundTripCost  float64 `json:"round_trip_cost"`
	ThroughputCost float64 `json:"throughput_cost"`
}

// offOn is p, of n round trips each, with a the cluster without.
func offOn(n int, p pair) OffOn {
	return OffOn{Samples: n, OffP50Ms: p.aP50Ms, OnP50Ms: p.bP50Ms, OffPerSecond: p.aPerSec, OnPerSecond: p.bPerSec,
		RoundTripCost: p.roundTripCost, ThroughputCost: p.throughputCost}
}

// pair is the figures of two clusters measured together.
type pair struct {
	aP50Ms, bP50Ms   float64
	aPerSec, bPerSec float64
	roundTripCost    float64 // b's round trip over a's, less one
	throughputCost   float64 // one less b's rate over a's
}

// versus measures cluster b against cluster a at the same time: n round
// trips of `true` alternating between them (after a tenth more to warm
// up), then throughput with 8 workers in rounds alternating slices of d,
// so that both see the same machine, whatever it does meanwhile.
func versus(ctx context.Context, a, b *cluster, n int, d time.Duration, rounds int) (pair, error) {
	submit := func(c *cluster) error {
		res, err := c.client.Submit(ctx, "true")
		if err == nil && res.ExitCode != 0 {
			err = errors.New(res.Error)
		}
		return err
	}
	var at, bt []time.Duration
	for i := range n + n/10 {
		t0 := time.Now()
		if err := submit(a); err != nil {
			return pair{}, err
		}
		t1 := time.Now()
		if err := submit(b); err != nil {
			return pair{}, err
		}
		if i >= n/10 {
			at, bt = append(at, t1.Sub(t0)), append(bt, time.Since(t1))
		}
	}
	slices.Sort(at)
	slices.Sort(bt)
	p := pair{aP50Ms: percentile(at, 50), bP50Ms: percentile(bt, 50)}
	for range rounds {
		ar, err := rate(8, d/time.Duration(rounds), func() error { return submit(a) })
		if err != nil {
			return pair{}, err
		}
		br, err := rate(8, d/time.Duration(rounds), func() error { return submit(b) })
		if err != nil {
			return pair{}, err
		}
		p.aPerSec, p.bPerSec = p.aPerSec+ar/float64(rounds), p.bPerSec+br/float64(rounds)
	}
	p.roundTripCost = p.bP50Ms/p.aP50Ms - 1
	p.throughputCost = 1 - p.bPerSec/p.aPerSec
	return p, nil
}
