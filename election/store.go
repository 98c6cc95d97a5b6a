package election

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// ErrDataDirInUse is returned when another broker holds the data directory.
var ErrDataDirInUse = errors.New("election: data directory in use by another broker")

// Store keeps the election's durable state, the epoch, so that it never
// goes backwards across a restart. The Service calls it from one goroutine
// at a time, never while holding the lock its heartbeat handlers need.
type Store interface {
	// Load returns the stored epoch, 0 if none was stored yet.
	Load(ctx context.Context) (uint64, error)
	// Save durably replaces the stored epoch; it returns once the epoch
	// would survive a crash.
	Save(ctx context.Context, epoch uint64) error
	// Close releases the store. It is safe to call twice.
	Close() error
}

// FileStore is a Store in a directory: the epoch in a file, replaced
// atomically. It holds an exclusive lock on the directory, since two
// brokers advancing one epoch file would break the store's promise.
type FileStore struct {
	dir       string
	lock      *os.File
	closeOnce sync.Once
	closeErr  error
}

// OpenFileStore creates dir if needed and locks it. It fails with
// ErrDataDirInUse when another process holds the lock.
func OpenFileStore(dir string) (*FileStore, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create data directory %s: %w", dir, err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock in data directory %s: %w", dir, err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock %s: %w; stop that broker or give this one another --data-dir", dir, ErrDataDirInUse)
		}
		return nil, fmt.Errorf("lock data directory %s: %w", dir, err)
	}
	return &FileStore{dir: dir, lock: lock}, nil
}

func (s *FileStore) path() string { return filepath.Join(s.dir, "epoch") }

// Load returns the stored epoch, 0 if none was stored yet.
func (s *FileStore) Load(context.Context) (uint64, error) {
	b, err := os.ReadFile(s.path())
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read epoch: %w", err)
	}
	e, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("epoch file %s is corrupt (%q): %w", s.path(), b, err)
	}
	return e, nil
}

// Save durably replaces the stored epoch: write a temporary file, sync it,
// rename it over the old one, sync the directory.
func (s *FileStore) Save(_ context.Context, epoch uint64) error {
	tmp := s.path() + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("save epoch %d: %w", epoch, err)
	}
	_, err = f.WriteString(strconv.FormatUint(epoch, 10) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, s.path())
	}
	if err == nil {
		err = syncDir(s.dir)
	}
	if err != nil {
		return fmt.Errorf("save epoch %d: %w", epoch, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Close releases the directory's lock. It is safe to call twice.
func (s *FileStore) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.lock.Close() })
	return s.closeErr
}
