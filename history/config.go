package history

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"baton/messages"
)

// ErrInvalidConfig is wrapped by every Config validation error.
var ErrInvalidConfig = errors.New("history: invalid config")

// Config tunes the history.
type Config struct {
	// MaxAge is how long a finished job is kept after it finished. A job
	// still running is kept however old it is.
	MaxAge time.Duration
	// MaxBytes bounds what the finished jobs' records take, about; the
	// oldest go first. Running jobs are never removed.
	MaxBytes int64
	// SweepInterval is how often the limits are enforced.
	SweepInterval time.Duration
	// Sender, when set, names the node whose connection has a server
	// client id (false for none): a batch of records is taken only from a
	// node, and only its own jobs' records.
	Sender func(clientID uint64) (name string, ok bool)
	// Changed, when set, hears of every job's new state once it is
	// stored, its command cut as the index keeps it. It is never called
	// concurrently, and must return quickly: writes wait for it.
	Changed func(*messages.JobSummary)
	// Ticket, when set, grants reading an archive of the file store: an
	// answer to jobs.get carries one for the job's outputs.
	Ticket func(sha string) string
	Logger *slog.Logger
}

// DefaultConfig returns the history's defaults.
func DefaultConfig() Config {
	return Config{
		// Between Salt's job cache (24 h) and AWX (120 days): a month of
		// "who ran what" answers most questions, and GitHub keeps 90 days.
		MaxAge: 30 * 24 * time.Hour,
		// A gibibyte holds a hundred thousand jobs with 10 KiB of output
		// each, and fits any disk a broker runs on.
		MaxBytes: 1 << 30,
		// Limits are held within a second, at the cost of one walk of the
		// in-memory index a second.
		SweepInterval: time.Second,
		Logger:        slog.Default().With(keyComponent, "history"),
	}
}

func (c Config) validate() error {
	switch {
	case c.MaxAge <= 0:
		return fmt.Errorf("%w: max age %v must be positive", ErrInvalidConfig, c.MaxAge)
	case c.MaxBytes <= 0:
		return fmt.Errorf("%w: max bytes %d must be positive", ErrInvalidConfig, c.MaxBytes)
	case c.SweepInterval <= 0:
		return fmt.Errorf("%w: sweep interval %v must be positive", ErrInvalidConfig, c.SweepInterval)
	}
	return nil
}
