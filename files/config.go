package files

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// ErrInvalidConfig is wrapped by every Config validation error.
var ErrInvalidConfig = errors.New("files: invalid config")

// Config tunes the file store.
type Config struct {
	// MaxBytes bounds one archive, and what a command's files unpack to
	// or are collected from, each way.
	MaxBytes int64
	// MaxFiles bounds the entries of one archive.
	MaxFiles int
	// StoreBytes bounds what the store holds in all; full, it refuses
	// new archives.
	StoreBytes int64
	// Key signs the tickets (at least 32 bytes).
	Key []byte
	// TicketTTL is how long a ticket grants reading. An archive is kept
	// at least this long after its last ticket, record or not.
	TicketTTL time.Duration
	// Referenced reports whether a job record names the archive; one that
	// none names, and no ticket holds, is deleted. Nil keeps everything.
	Referenced func(sha string) bool
	// Ready closes once Referenced knows every record (the history is
	// loaded); nothing is deleted before.
	Ready <-chan struct{}
	// SweepInterval is how often unreferenced archives are deleted.
	SweepInterval time.Duration
	Logger        *slog.Logger
}

// DefaultConfig returns the file store's defaults.
func DefaultConfig() Config {
	return Config{
		// Far above Nomad's 16 KiB dispatch payloads and Rundeck's 26 MB
		// failures, small enough that a broker holds many.
		MaxBytes: 64 << 20,
		// A source tree or a data set of small files, not a disk image.
		MaxFiles: 1000,
		// Room for the files of a good many jobs, the history's 1 GiB
		// aside, on any disk a broker runs on.
		StoreBytes: 8 << 30,
		// Longer than a command waits for its master, and than a
		// requester takes to fetch what it brought back; an archive no
		// record names is kept that long after its last ticket.
		TicketTTL:     15 * time.Minute,
		SweepInterval: time.Second,
		Logger:        slog.Default().With(keyComponent, "files"),
	}
}

func (c Config) validate() error {
	switch {
	case c.MaxBytes <= 0:
		return fmt.Errorf("%w: max bytes %d must be positive", ErrInvalidConfig, c.MaxBytes)
	case c.MaxFiles <= 0:
		return fmt.Errorf("%w: max files %d must be positive", ErrInvalidConfig, c.MaxFiles)
	case c.StoreBytes < c.MaxBytes:
		return fmt.Errorf("%w: a store of %d bytes cannot hold one archive of %d", ErrInvalidConfig, c.StoreBytes, c.MaxBytes)
	case len(c.Key) < 32:
		return fmt.Errorf("%w: a ticket key of %d bytes, want 32 or more", ErrInvalidConfig, len(c.Key))
	case c.TicketTTL <= 0 || c.SweepInterval <= 0:
		return fmt.Errorf("%w: ticket TTL %v and sweep interval %v must be positive", ErrInvalidConfig, c.TicketTTL, c.SweepInterval)
	}
	return nil
}
