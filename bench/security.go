package bench

import (
	"context"
	"fmt"
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
	p, err := versus(ctx, plain, secure, n, d, 2)
	if err != nil {
		return err
	}
	r.Security = Security{
		Samples:    n,
		PlainP50Ms: p.aP50Ms, SecureP50Ms: p.bP50Ms,
		PlainPerSecond: p.aPerSec, SecurePerSecond: p.bPerSec,
		RoundTripCost: p.roundTripCost, ThroughputCost: p.throughputCost,
	}
	return nil
}
