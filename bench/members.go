package bench

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"

	"github.com/nats-io/nats.go"

	"baton/bus"
	"baton/election"
)

// Members is a crowd of simulated members: each a real election.Member on
// its own NATS connection, as a node process would have, without the
// node's executor or prompt.
type Members struct {
	mu      sync.Mutex
	members []*simMember
}

type simMember struct {
	name string
	nc   *nats.Conn
	m    *election.Member
}

// StartMembers connects as conn says and registers n members named
// prefix-0 … prefix-(n-1), with priorities 0 … n-1, at most 50 registering
// at once. It blocks until all are registered; on error the ones started
// are closed.
func StartMembers(ctx context.Context, conn bus.ConnConfig, prefix string, n int, logger *slog.Logger) (*Members, error) {
	ms := &Members{}
	errs := make(chan error, n)
	sem := make(chan struct{}, 50)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := ms.start(ctx, conn, prefix+"-"+strconv.Itoa(i), int32(i), logger); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	failed := 0
	var first error
	for err := range errs {
		if failed++; first == nil {
			first = err
		}
	}
	if failed > 0 {
		ms.Close()
		return nil, fmt.Errorf("%d of %d members failed to register; the first: %w", failed, n, first)
	}
	return ms, nil
}

func (ms *Members) start(ctx context.Context, conn bus.ConnConfig, name string, priority int32, logger *slog.Logger) error {
	conn.Name = name
	nc, err := bus.Connect(ctx, conn)
	if err != nil {
		return err
	}
	cfg := election.DefaultMemberConfig(name)
	cfg.Priority, cfg.Logger = priority, logger
	m, err := election.NewMember(nc, cfg)
	if err == nil {
		if err = m.Start(ctx); err != nil {
			_ = m.Close(ctx)
		}
	}
	if err != nil {
		nc.Close()
		return fmt.Errorf("member %s: %w", name, err)
	}
	nc.SetReconnectHandler(func(*nats.Conn) { m.Reconnected() })
	ms.mu.Lock()
	ms.members = append(ms.members, &simMember{name, nc, m})
	ms.mu.Unlock()
	return nil
}

// Kill closes the named member's connection without deregistering, as a
// crash would. It reports whether there was such a member.
func (ms *Members) Kill(name string) bool {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	for i, s := range ms.members {
		if s.name == name {
			s.nc.Close()
			_ = s.m.Close(context.Background())
			ms.members = append(ms.members[:i], ms.members[i+1:]...)
			return true
		}
	}
	return false
}

// AllSee reports whether every member's newest announcement names master.
func (ms *Members) AllSee(master string) bool {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	for _, s := range ms.members {
		if a := s.m.Current(); a == nil || a.Master != master {
			return false
		}
	}
	return true
}

// Close disconnects every member (without deregistering: as if they all
// crashed). It blocks until all have stopped and is safe to call twice.
func (ms *Members) Close() {
	ms.mu.Lock()
	all := ms.members
	ms.members = nil
	ms.mu.Unlock()
	for _, s := range all {
		// The connection first, so that nothing the member waits for blocks.
		s.nc.Close()
		_ = s.m.Close(context.Background())
	}
}
