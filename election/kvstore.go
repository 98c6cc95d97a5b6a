package election

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"baton/messages"
)

// ElectionBucket is the KV bucket of a cluster of brokers' election state.
const ElectionBucket = "BATON_ELECTION"

// stateKey is the one key of ElectionBucket.
const stateKey = "state"

// ErrFenced is returned by a change that lost its compare-and-set: another
// broker acted meanwhile. The broker that gets it is no longer the
// election's holder, and must stop announcing at once.
var ErrFenced = errors.New("election: another broker acts for the election now")

// KVStore is the election's state in a JetStream KV bucket replicated over
// a cluster of brokers. Every change is a compare-and-set on the revision
// this store last wrote or read, never decided on a read alone: reads may
// be stale, and a stale read only makes the next change fail.
type KVStore struct {
	kv    jetstream.KeyValue
	name  string
	state *messages.ElectionState
	rev   uint64
	// Timeout bounds each write; a write that timed out may still have
	// been applied, so the key is read again before any retry.
	Timeout time.Duration
}

// OpenKVStore opens, or makes, the election bucket with replicas
// replicas, for the broker named name.
func OpenKVStore(ctx context.Context, js jetstream.JetStream, name string, replicas int) (*KVStore, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: ElectionBucket, Description: "baton's election: epoch, master and the broker acting for it",
		History: 1, Replicas: replicas, Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("election store %s: %w", ElectionBucket, err)
	}
	return &KVStore{kv: kv, name: name, Timeout: 2 * time.Second}, nil
}

// Read reads the state as the bucket holds it (possibly stale), and
// remembers its revision for the next change. A bucket never written
// reads as epoch 0, no master, no holder.
func (s *KVStore) Read(ctx context.Context) (*messages.ElectionState, error) {
	e, err := s.kv.Get(ctx, stateKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		s.state, s.rev = &messages.ElectionState{}, 0
		return proto.CloneOf(s.state), nil
	}
	if err != nil {
		return nil, fmt.Errorf("election store: read: %w", err)
	}
	var st messages.ElectionState
	if err := proto.Unmarshal(e.Value(), &st); err != nil {
		return nil, fmt.Errorf("election store: revision %d is not an election state: %w", e.Revision(), err)
	}
	s.state, s.rev = &st, e.Revision()
	return proto.CloneOf(s.state), nil
}

// TakeOver makes this broker the election's holder, keeping the epoch and
// master: the next term. It fails with ErrFenced if the state changed
// since it was last read (another broker took over first).
func (s *KVStore) TakeOver(ctx context.Context) (*messages.ElectionState, error) {
	if s.state == nil {
		if _, err := s.Read(ctx); err != nil {
			return nil, err
		}
	}
	next := proto.CloneOf(s.state)
	next.Holder, next.Term = s.name, s.state.Term+1
	if err := s.write(ctx, next); err != nil {
		return nil, err
	}
	return proto.CloneOf(next), nil
}

// Change records a new master (empty: none) at the next epoch, as the
// holder, and returns that epoch. It fails with ErrFenced if this broker
// is not the holder of the state it last read or wrote, or if the state
// changed since. After a write that failed otherwise, it reads the state
// first: that write may have been applied.
func (s *KVStore) Change(ctx context.Context, master string) (uint64, error) {
	if s.state == nil {
		if _, err := s.Read(ctx); err != nil {
			return 0, err
		}
	}
	if s.state.Holder != s.name {
		return 0, ErrFenced
	}
	next := proto.CloneOf(s.state)
	next.Epoch, next.Master = s.state.Epoch+1, master
	if err := s.write(ctx, next); err != nil {
		return 0, err
	}
	return next.Epoch, nil
}

// write stores next in place of the state at s.rev.
func (s *KVStore) write(ctx context.Context, next *messages.ElectionState) error {
	b, err := proto.Marshal(next)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	var rev uint64
	if s.rev == 0 {
		rev, err = s.kv.Create(wctx, stateKey, b)
	} else {
		rev, err = s.kv.Update(wctx, stateKey, b, s.rev)
	}
	switch {
	case err == nil:
		s.state, s.rev = next, rev
		return nil
	case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		// Lost the compare-and-set: what is there now is someone else's.
		s.state = nil
		return ErrFenced
	default:
		// A write that timed out may have been applied after all: the next
		// change reads first.
		s.state = nil
		return fmt.Errorf("election store: write: %w", err)
	}
}
