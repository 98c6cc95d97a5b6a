package election

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ErrDataDirInUse is returned when another broker holds the data directory.
var ErrDataDirInUse = errors.New("election: data directory in use by another broker")

// epochStore persists the epoch so that it never goes backwards across a
// broker restart. It holds an exclusive lock on the data directory, since
// two brokers advancing one epoch file would break that promise.
type epochStore struct {
	dir  string
	lock *os.File
}

func openEpochStore(dir string) (*epochStore, error) {
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
	return &epochStore{dir: dir, lock: lock}, nil
}

func (s *epochStore) path() string { return filepath.Join(s.dir, "epoch") }

// load returns the stored epoch, 0 if none was stored yet.
func (s *epochStore) load() (uint64, error) {
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

// save durably replaces the stored epoch: write a temporary file, sync it,
// rename it over the old one, sync the directory.
func (s *epochStore) save(epoch uint64) error {
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

func (s *epochStore) close() error { return s.lock.Close() }
