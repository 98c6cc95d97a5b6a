package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"baton/bus"
	"baton/election"
)

// ErrInvalidConfig is wrapped by every Config validation error.
var ErrInvalidConfig = errors.New("agent: invalid config")

// Config describes a node.
type Config struct {
	// BrokerAddr is the broker's host:port.
	BrokerAddr string
	// Name must be unique among live nodes.
	Name string
	// Priority ranks the node for master: higher wins.
	Priority int32
	// ExecTimeout bounds each command's run time, both the commands this
	// node runs as master and the ones it submits.
	ExecTimeout time.Duration
	// QueueTimeout bounds how long a submitted command may wait for a free
	// execution slot on the master before it is answered "busy".
	QueueTimeout time.Duration
	// MaxParallel bounds the commands this node runs at once as master.
	MaxParallel int
	// MaxOutput caps each of stdout and stderr of a command.
	MaxOutput int
	// HeartbeatInterval is the time between the node's heartbeats.
	HeartbeatInterval time.Duration
	// SubmitRetry is how long a submission that finds no master (mid
	// election) keeps retrying before it reports "no master available".
	SubmitRetry time.Duration
	// ConnectTimeout bounds the first connection to the broker.
	ConnectTimeout time.Duration
	// Version is reported to the broker.
	Version string
	Logger  *slog.Logger
}

// DefaultConfig returns a node's defaults, named name.
func DefaultConfig(name string) Config {
	return Config{
		// The stock nats CLI's default, which the broker also defaults to.
		BrokerAddr: "127.0.0.1:4222",
		Name:       name,
		// The product promise: a command running longer than 5 s is killed.
		ExecTimeout: 5 * time.Second,
		// As long as a command may run: a request waits at most one
		// command's length for a slot before it is told the master is busy.
		QueueTimeout: 5 * time.Second,
		// See executor.DefaultConfig.
		MaxParallel: 64,
		MaxOutput:   bus.MaxOutput,
		// Four beats per default heartbeat timeout (1 s).
		HeartbeatInterval: 250 * time.Millisecond,
		// Elections settle in milliseconds; a broker restart in about 2 s.
		SubmitRetry:    5 * time.Second,
		ConnectTimeout: bus.DefaultConnectTimeout,
		Logger:         slog.Default().With("component", "node"),
	}
}

func (c Config) validate() error {
	switch {
	case c.BrokerAddr == "":
		return fmt.Errorf("%w: empty broker address", ErrInvalidConfig)
	case c.Name == "":
		return fmt.Errorf("%w: empty name", ErrInvalidConfig)
	case c.Priority < election.MinPriority:
		return fmt.Errorf("%w: priority %d is outside the range %d to %d", ErrInvalidConfig, c.Priority, election.MinPriority, election.MaxPriority)
	case c.ExecTimeout <= 0:
		return fmt.Errorf("%w: exec timeout %v must be positive", ErrInvalidConfig, c.ExecTimeout)
	case c.ExecTimeout > time.Duration(1<<32-1)*time.Millisecond:
		return fmt.Errorf("%w: exec timeout %v is too long", ErrInvalidConfig, c.ExecTimeout)
	case c.QueueTimeout <= 0 || c.QueueTimeout > time.Duration(1<<32-1)*time.Millisecond:
		return fmt.Errorf("%w: queue timeout %v out of range", ErrInvalidConfig, c.QueueTimeout)
	case c.MaxParallel <= 0:
		return fmt.Errorf("%w: max parallel %d must be positive", ErrInvalidConfig, c.MaxParallel)
	case c.MaxOutput <= 0 || bus.ResultBytesBound(c.MaxOutput) > bus.MaxPayload:
		return fmt.Errorf("%w: max output %d must be from 1 to %d bytes to fit the broker's payload limit", ErrInvalidConfig, c.MaxOutput, bus.MaxOutput)
	case c.HeartbeatInterval <= 0:
		return fmt.Errorf("%w: heartbeat interval %v must be positive", ErrInvalidConfig, c.HeartbeatInterval)
	case c.SubmitRetry < 0:
		return fmt.Errorf("%w: submit retry %v must not be negative", ErrInvalidConfig, c.SubmitRetry)
	case c.ConnectTimeout <= 0:
		return fmt.Errorf("%w: connect timeout %v must be positive", ErrInvalidConfig, c.ConnectTimeout)
	}
	return nil
}
