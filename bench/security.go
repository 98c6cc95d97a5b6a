package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Security compares the same cluster with credentials and TLS required and
// with neither, measured interleaved in one run.
type Security struct {
	Samples         int     `json:"samples"`
	PlainP50Ms      float64 `json:"plain_p50_ms"`
	SecureP50Ms     float64 `json:"secure_p50_ms"`
	PlainPerSecond  float64 `json:"plain_per_second"`
	SecurePerSecond float64 `json:"secure_per_second"`
	// RoundTripCost and ThroughputCost are the fractions lost to security:
	// 0.05 is 5 % slower round trips, or 5 % fewer commands a second.
	RoundTripCost  float64 `json:"round_trip_cost"`
	ThroughputCost float64 `json:"throughput_cost"`
}

// targetSecurityCost bounds what credentials and TLS may cost.
const targetSecurityCost = 0.10

func security(ctx context.Context, cfg Config, r *Report) error {
	n, d, _, _ := cfg.sizes()
	plain, err := servingCluster(ctx, cfg, "master")
	if err != nil {
		return err
	}
	defer plain.close()
	secure, err := servingClusterWith(ctx, cfg, "master", true)
	if err != nil {
		return fmt.Errorf("cluster with credentials and TLS: %w", err)
	}
	defer secure.close()
	submit := func(c *cluster) error {
		res, err := c.client.Submit(ctx, "true")
		if err == nil && res.ExitCode != 0 {
			err = errors.New(res.Error)
		}
		return err
	}
	var p, s []time.Duration
	// Interleaved, so that both see the same machine at the same time.
	for i := range n + n/10 {
		t0 := time.Now()
		if err := submit(plain); err != nil {
			return err
		}
		t1 := time.Now()
		if err := submit(secure); err != nil {
			return err
		}
		if i >= n/10 { // the first tenth warms up
			p, s = append(p, t1.Sub(t0)), append(s, time.Since(t1))
		}
	}
	slices.Sort(p)
	slices.Sort(s)
	// Throughput in alternating halves, for the same reason.
	var plainRate, secureRate float64
	for range 2 {
		pr, err := rate(8, d/2, func() error { return submit(plain) })
		if err != nil {
			return err
		}
		sr, err := rate(8, d/2, func() error { return submit(secure) })
		if err != nil {
			return err
		}
		plainRate, secureRate = plainRate+pr/2, secureRate+sr/2
	}
	r.Security = Security{
		Samples:    n,
		PlainP50Ms: percentile(p, 50), SecureP50Ms: percentile(s, 50),
		PlainPerSecond: plainRate, SecurePerSecond: secureRate,
	}
	r.Security.RoundTripCost = r.Security.SecureP50Ms/r.Security.PlainP50Ms - 1
	r.Security.ThroughputCost = 1 - secureRate/plainRate
	return nil
}
