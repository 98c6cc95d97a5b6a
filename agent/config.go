package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"baton/bus"
	"baton/election"
	"baton/executor"
	"baton/messages"
)

// ErrInvalidConfig is wrapped by every Config and ClientConfig validation
// error.
var ErrInvalidConfig = errors.New("agent: invalid config")

// maxRequestDuration is the longest duration a request's uint32
// millisecond fields carry.
const maxRequestDuration = time.Duration(1<<32-1) * time.Millisecond

// Config describes a node. Start from DefaultConfig: it is built from the
// defaults of the parts a node is made of.
type Config struct {
	// Conn says how to reach the broker; its Name is set from Name.
	Conn bus.ConnConfig
	// Name must be unique among live nodes.
	Name string
	// Priority ranks the node for master: higher wins.
	Priority int32
	// ExecTimeout bounds each command's run time, both the commands this
	// node runs as master and the ones it submits.
	ExecTimeout time.Duration
	// QueueTimeout bounds how long a command may wait for a free execution
	// slot on the master before it is answered "busy": the commands this
	// node submits, and those it runs as master that ask for no limit.
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
	// Version is reported to the broker.
	Version string
	Logger  *slog.Logger
}

// DefaultConfig returns a node's defaults, named name.
func DefaultConfig(name string) Config {
	member := election.DefaultMemberConfig(name)
	exe := executor.DefaultConfig()
	client := DefaultClientConfig(name)
	conn := bus.DefaultConnConfig()
	// A master replies on this connection with results of up to
	// messages.MaxPayload bytes: hold a few while reconnecting.
	conn.ReconnectBufSize = 4 * messages.MaxPayload
	return Config{
		Conn:              conn,
		Name:              name,
		Priority:          member.Priority,
		ExecTimeout:       exe.Timeout,
		QueueTimeout:      client.QueueTimeout,
		MaxParallel:       exe.MaxParallel,
		MaxOutput:         exe.MaxOutput,
		HeartbeatInterval: member.HeartbeatInterval,
		SubmitRetry:       client.SubmitRetry,
		Logger:            slog.Default().With(keyComponent, "node"),
	}
}

func (c Config) validate() error {
	switch {
	case c.Name == "":
		return fmt.Errorf("%w: empty name", ErrInvalidConfig)
	case c.Priority < election.MinPriority:
		return fmt.Errorf("%w: priority %d is outside the range %d to %d", ErrInvalidConfig, c.Priority, election.MinPriority, election.MaxPriority)
	case c.MaxParallel <= 0:
		return fmt.Errorf("%w: max parallel %d must be positive", ErrInvalidConfig, c.MaxParallel)
	case c.MaxOutput <= 0 || c.MaxOutput > messages.MaxOutputCap:
		return fmt.Errorf("%w: max output %d must be from 1 to %d bytes to fit the broker's payload limit", ErrInvalidConfig, c.MaxOutput, messages.MaxOutputCap)
	case c.HeartbeatInterval <= 0:
		return fmt.Errorf("%w: heartbeat interval %v must be positive", ErrInvalidConfig, c.HeartbeatInterval)
	}
	return c.client().validate()
}

// client is the configuration of the node's own submissions.
func (c Config) client() ClientConfig {
	return ClientConfig{
		Name: c.Name, ExecTimeout: c.ExecTimeout, QueueTimeout: c.QueueTimeout, SubmitRetry: c.SubmitRetry,
		Logger: c.Logger,
	}
}

// ClientConfig describes a requester. Start from DefaultClientConfig.
type ClientConfig struct {
	// Name tells masters who sent a request.
	Name string
	// ExecTimeout is the run time a request asks for; a master caps it at
	// its own. The requester waits this long plus QueueTimeout for a result.
	ExecTimeout time.Duration
	// QueueTimeout bounds how long a request may wait for a free execution
	// slot on the master before it is answered "busy".
	QueueTimeout time.Duration
	// SubmitRetry is how long a submission that finds no master (mid
	// election) keeps retrying before it reports "no master available".
	SubmitRetry time.Duration
	Logger      *slog.Logger
}

// DefaultClientConfig returns a requester's defaults, named name.
func DefaultClientConfig(name string) ClientConfig {
	exe := executor.DefaultConfig()
	return ClientConfig{
		Name: name,
		// What a master runs a command for by default.
		ExecTimeout: exe.Timeout,
		// As long as a command may run: a request waits at most one
		// command's length for a slot before it is told the master is busy.
		QueueTimeout: exe.Timeout,
		// Elections settle in milliseconds; a broker restart in about 2 s.
		SubmitRetry: 5 * time.Second,
		Logger:      slog.Default().With(keyComponent, "client"),
	}
}

func (c ClientConfig) validate() error {
	switch {
	case c.ExecTimeout <= 0 || c.ExecTimeout > maxRequestDuration:
		return fmt.Errorf("%w: exec timeout %v must be positive and at most %v", ErrInvalidConfig, c.ExecTimeout, maxRequestDuration)
	case c.QueueTimeout <= 0 || c.QueueTimeout > maxRequestDuration:
		return fmt.Errorf("%w: queue timeout %v must be positive and at most %v", ErrInvalidConfig, c.QueueTimeout, maxRequestDuration)
	case c.SubmitRetry < 0:
		return fmt.Errorf("%w: submit retry %v must not be negative", ErrInvalidConfig, c.SubmitRetry)
	}
	return nil
}
