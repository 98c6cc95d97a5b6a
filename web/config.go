package web

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"baton/auth"
)

// ErrInvalidConfig is wrapped by every Config validation error.
var ErrInvalidConfig = errors.New("web: invalid config")

// Config tunes the dashboard. Start from DefaultConfig.
type Config struct {
	// Tokens sign people in, each with its role. With none, there is no
	// sign-in: whoever reaches the port may do everything, so the
	// dashboard answers only requests addressed to this machine (see
	// hostAllowed).
	Tokens auth.Tokens
	// SessionTTL is how long a sign-in lasts.
	SessionTTL time.Duration
	// OutputView is the most of a job's output a page holds, stdout and
	// stderr together; the rest is hidden behind a banner and downloads.
	OutputView int
	// MaxStreams bounds the event streams open at once (each an open
	// dashboard tab).
	MaxStreams int
	// MaxRunning bounds the commands submitted through the dashboard that
	// wait for their result at once.
	MaxRunning int
	// StatusInterval is how often open dashboards get the cluster's
	// status even when nothing changed: the age of each member's last
	// heartbeat.
	StatusInterval time.Duration
	// JobEvents and ClusterEvents are how many job and cluster changes are
	// kept for a reconnecting dashboard to catch up on.
	JobEvents, ClusterEvents int
	// MaxUpload bounds the files a command run from the dashboard takes
	// with it (the broker's --max-bundle-bytes); 0 when the broker keeps
	// no files, and the Run page takes none.
	MaxUpload int64
	// MaxUploadFiles bounds their number (the broker's
	// --max-bundle-files).
	MaxUploadFiles int
	// Version is the build, shown in each page's footer.
	Version string
	Logger  *slog.Logger
}

// DefaultConfig returns the dashboard's defaults.
func DefaultConfig() Config {
	return Config{
		// A working day; signing in again costs a paste.
		SessionTTL: 12 * time.Hour,
		// What a browser shows without strain, and what the issue asks:
		// Nomad's log viewer keeps 50,000 characters, this a mebibyte.
		OutputView: 1 << 20,
		// Far above a team's tabs, far below what would strain a broker.
		MaxStreams: 1000,
		// A master runs 64 commands at once by default; a few times that
		// may queue behind it.
		MaxRunning: 256,
		// Often enough that heartbeat ages read true (a beat is every
		// 250 ms) and a silent node stands out within a second; one
		// encoding a second, whatever the tabs, costs nothing.
		StatusInterval: time.Second,
		// Seconds of a busy cluster's job changes, and every cluster
		// change of a long day.
		JobEvents:     16384,
		ClusterEvents: 1000,
		Logger:        slog.Default().With(keyComponent, "web"),
	}
}

func (c Config) validate() error {
	switch {
	case c.SessionTTL <= 0:
		return fmt.Errorf("%w: session TTL %v must be positive", ErrInvalidConfig, c.SessionTTL)
	case c.OutputView < 1024:
		return fmt.Errorf("%w: output view of %d bytes is below 1 KiB", ErrInvalidConfig, c.OutputView)
	case c.MaxStreams <= 0 || c.MaxRunning <= 0:
		return fmt.Errorf("%w: max streams %d and max running %d must be positive", ErrInvalidConfig, c.MaxStreams, c.MaxRunning)
	case c.StatusInterval <= 0:
		return fmt.Errorf("%w: status interval %v must be positive", ErrInvalidConfig, c.StatusInterval)
	case c.JobEvents <= 0 || c.ClusterEvents <= 0:
		return fmt.Errorf("%w: event buffers (%d jobs, %d cluster) must be positive", ErrInvalidConfig, c.JobEvents, c.ClusterEvents)
	}
	return nil
}
