package election_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"baton/bus"
	"baton/bus/bustest"
	"baton/election"
)

// kvStores starts a cluster of three servers and opens the election store
// through each, as brokers b1, b2 and b3 would.
func kvStores(t *testing.T) []*election.KVStore {
	t.Helper()
	servers := bustest.StartCluster(t, 3, nil)
	for _, s := range servers {
		if err := s.EnableJetStream(); err != nil {
			t.Fatal(err)
		}
	}
	bustest.WaitRouted(t, servers)
	stores := make([]*election.KVStore, len(servers))
	for i, s := range servers {
		stores[i] = openKVStore(t, s, []string{"b1", "b2", "b3"}[i])
	}
	return stores
}

func openKVStore(t *testing.T, s *bus.Server, name string) *election.KVStore {
	t.Helper()
	nc, err := s.ServiceConn(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// A new cluster elects its JetStream leader first, and a request sent
	// before may go unanswered: each try has its own deadline.
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := election.OpenKVStore(ctx, js, name, 3)
		cancel()
		if err == nil {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("open the election store through %s: %v", name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// One broker takes over and changes the master; another takes over after
// it; the first, now behind, fails its next change and a read shows it
// the new holder. Epochs only go up.
func TestKVStore_Fencing(t *testing.T) {
	stores := kvStores(t)
	ctx := context.Background()
	b1, b2 := stores[0], stores[1]
	st, err := b1.TakeOver(ctx)
	if err != nil || st.Holder != "b1" || st.Term != 1 || st.Epoch != 0 {
		t.Fatalf("b1 takes over: %+v, %v", st, err)
	}
	t0 := time.Now()
	epoch, err := b1.Change(ctx, "alpha")
	if err != nil || epoch != 1 {
		t.Fatalf("b1 elects alpha: epoch %d, %v", epoch, err)
	}
	t.Logf("a change (R3 compare-and-set) took %v", time.Since(t0))
	if _, err := b2.Change(ctx, "beta"); !errors.Is(err, election.ErrFenced) {
		t.Fatalf("b2, not the holder, changed the master: %v", err)
	}
	if _, err := b2.Read(ctx); err != nil {
		t.Fatal(err)
	}
	st, err = b2.TakeOver(ctx)
	if err != nil || st.Holder != "b2" || st.Term != 2 || st.Epoch != 1 || st.Master != "alpha" {
		t.Fatalf("b2 takes over: %+v, %v", st, err)
	}
	if _, err := b1.Change(ctx, "gamma"); !errors.Is(err, election.ErrFenced) {
		t.Fatalf("b1, behind, changed the master: %v", err)
	}
	if _, err := b1.Change(ctx, "gamma"); !errors.Is(err, election.ErrFenced) {
		t.Fatalf("b1, having read that b2 holds it, changed the master: %v", err)
	}
	if epoch, err := b2.Change(ctx, "beta"); err != nil || epoch != 2 {
		t.Fatalf("b2 elects beta: epoch %d, %v", epoch, err)
	}
	st, err = stores[2].Read(ctx)
	if err != nil || st.Epoch != 2 || st.Master != "beta" || st.Holder != "b2" {
		t.Fatalf("b3 reads %+v, %v", st, err)
	}
}

// Three brokers that read the same state and take over at once: exactly
// one wins.
func TestKVStore_RacingTakeOvers(t *testing.T) {
	stores := kvStores(t)
	ctx := context.Background()
	for _, s := range stores {
		if _, err := s.Read(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, len(stores))
	for i, s := range stores {
		wg.Go(func() { _, errs[i] = s.TakeOver(ctx) })
	}
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, election.ErrFenced):
			t.Errorf("b%d: %v", i+1, err)
		}
	}
	if won != 1 {
		t.Fatalf("%d brokers took over at once, want 1 (%v)", won, errs)
	}
}
