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
		// Longer than any command waits and runs by default, so that a
		// requester's inputs are there when its master asks, and its
		// outputs when it asks.
		TicketTTL:     time.Hour,
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
	case len(c.Key) < 32:
		return fmt.Errorf("%w: a ticket key of %d bytes, want 32 or more", ErrInvalidConfig, len(c.Key))
	case c.TicketTTL <= 0 || c.SweepInterval <= 0:
		return fmt.Errorf("%w: ticket TTL %v and sweep interval %v must be positive", ErrInvalidConfig, c.TicketTTL, c.SweepInterval)
	}
	return nil
}
