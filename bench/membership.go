package bench

import (
	"context"
	"fmt"
	"slices"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"baton/bus"
	"baton/election"
	"baton/messages"
)

// Membership is what finding the broker and waiting for a slot take.
type Membership struct {
	// AddrMs is `node status --broker-addr`, process start to exit,
	// median of 5: the floor; DiscoverMs is `node status --discover`
	// (to the broker's address on loopback) likewise.
	AddrMs     float64 `json:"addr_ms"`
	DiscoverMs float64 `json:"discover_ms"`
	// SlotMs are, per trial, the time from SIGTERM of the one member of a
	// cluster capped at one (--max-members=1) to the admission of the node
	// waiting for its slot.
	SlotMs    []float64 `json:"slot_ms"`
	SlotMaxMs float64   `json:"slot_max_ms"`
}

// Targets of the membership figures (issue 15).
const (
	targetDiscoverMs = 2000 // the first answer within 2 s
	targetSlotMs     = 1000 // joins within 1 s of a slot freeing
)

// membership measures discovery against a given address, and how soon a
// node waiting for a slot joins once one frees.
func membership(ctx context.Context, cfg Config, r *Report) error {
	trials := 5
	if cfg.Quick {
		trials = 2
	}
	c, err := servingClusterWith(ctx, cfg, "a", false, "--max-members=1")
	if err != nil {
		return err
	}
	defer c.close()
	m := &r.Membership
	if m.AddrMs, err = c.timeNodeAs(ctx, "status", "--broker-addr="+c.addr); err != nil {
		return err
	}
	if m.DiscoverMs, err = c.timeNodeAs(ctx, "status", "--discover="+c.addr); err != nil {
		return err
	}
	nc, err := bus.Connect(ctx, c.conn("bench-membership"))
	if err != nil {
		return err
	}
	defer nc.Close()
	// a serves; b waits for its slot; a leaves; b is admitted. Then the
	// other way round.
	member, waiting := "a", "b"
	if err := c.startNode(waiting, 1); err != nil {
		return err
	}
	for range trials {
		if err := waitFor(ctx, nc, 15*time.Second, fmt.Sprintf("%s waiting for a slot", waiting), func(a *messages.Announcement) bool {
			return a.Refused > 0 && a.MemberCount == 1 && !isMember(a, waiting)
		}); err != nil {
			return err
		}
		// Its retries are 200 ms apart: start anywhere between two.
		time.Sleep(time.Duration(len(m.SlotMs)*37%200) * time.Millisecond)
		t0 := time.Now()
		c.nodes[member].signal(syscall.SIGTERM)
		if err := waitFor(ctx, nc, 15*time.Second, fmt.Sprintf("%s admitted", waiting), func(a *messages.Announcement) bool {
			return isMember(a, waiting)
		}); err != nil {
			return err
		}
		m.SlotMs = append(m.SlotMs, ms(time.Since(t0)))
		c.nodes[member].stop(15 * time.Second)
		if err := c.startNode(member, 1); err != nil {
			return err
		}
		member, waiting = waiting, member
	}
	m.SlotMaxMs = slices.Max(m.SlotMs)
	return nil
}

func isMember(a *messages.Announcement, name string) bool {
	return slices.ContainsFunc(a.Members, func(m *messages.Member) bool { return m.Name == name })
}

// waitFor asks the broker for its state every 5 ms until holds does.
func waitFor(ctx context.Context, nc *nats.Conn, timeout time.Duration, what string, holds func(*messages.Announcement) bool) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if a, err := election.Get(ctx, nc); err == nil && holds(a) {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("%s: not within %v", what, timeout)
}
