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
	// ExecTimeout bounds the run time of each command this node runs as
	// master that asks for none.
	ExecTimeout time.Duration
	// MaxExecTimeout is the longest run time a request may ask this node
	// for as master; a request asking for more is rejected unrun.
	MaxExecTimeout time.Duration
	// SubmitTimeout is the run time the commands this node submits ask
	// for; 0 asks for the master's ExecTimeout.
	SubmitTimeout time.Duration
	// QueueTimeout bounds how long a command may wait for a free execution
	// slot on the master before it is answered "busy": the commands this
	// node submits, and those it runs as master that ask for no limit.
	QueueTimeout time.Duration
	// MaxParallel bounds the commands this node runs at once as master.
	MaxParallel int
	// MaxOutput caps each of stdout and stderr of a command.
	MaxOutput int
	// ExecMemoryLimit, when positive, bounds each command's memory (its
	// address space, see executor.Config.MemoryLimit).
	ExecMemoryLimit int64
	// HeartbeatInterval is the time between the node's heartbeats.
	HeartbeatInterval time.Duration
	// SubmitRetry is how long a submission that finds no master (mid
	// election) keeps retrying before it reports "no master available".
	SubmitRetry time.Duration
	// WorkRoot holds the work directories of the commands nodes run as
	// master with files, a directory per node (see DefaultWorkRoot); what
	// killed nodes left there is removed when a node starts.
	WorkRoot string
	// Reaper makes the commands this node runs as master die with it,
	// even when it is killed (see executor.Config.Reaper).
	Reaper bool
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
		MaxExecTimeout:    DefaultMaxExecTimeout,
		QueueTimeout:      client.QueueTimeout,
		MaxParallel:       exe.MaxParallel,
		MaxOutput:         exe.MaxOutput,
		HeartbeatInterval: member.HeartbeatInterval,
		SubmitRetry:       client.SubmitRetry,
		WorkRoot:          DefaultWorkRoot(),
		Logger:            slog.Default().With(keyComponent, "node"),
	}
}

func (c Config) validate() error {
	switch {
	case c.Name == "":
		return fmt.Errorf("%w: empty name", ErrInvalidConfig)
	case c.WorkRoot == "":
		return fmt.Errorf("%w: empty work directory root", ErrInvalidConfig)
	case c.Priority < election.MinPriority:
		return fmt.Errorf("%w: priority %d is outside the range %d to %d", ErrInvalidConfig, c.Priority, election.MinPriority, election.MaxPriority)
	case c.MaxParallel <= 0:
		return fmt.Errorf("%w: max parallel %d must be positive", ErrInvalidConfig, c.MaxParallel)
	case c.ExecMemoryLimit < 0:
		return fmt.Errorf("%w: exec memory limit %d must not be negative", ErrInvalidConfig, c.ExecMemoryLimit)
	case c.MaxOutput <= 0 || c.MaxOutput > messages.MaxOutputCap:
		return fmt.Errorf("%w: max output %d must be from 1 to %d bytes to fit the broker's payload limit", ErrInvalidConfig, c.MaxOutput, messages.MaxOutputCap)
	case c.HeartbeatInterval <= 0:
		return fmt.Errorf("%w: heartbeat interval %v must be positive", ErrInvalidConfig, c.HeartbeatInterval)
	case c.MaxExecTimeout <= 0 || c.MaxExecTimeout > maxRequestDuration:
		return fmt.Errorf("%w: max exec timeout %v must be positive and at most %v", ErrInvalidConfig, c.MaxExecTimeout, maxRequestDuration)
	case c.ExecTimeout <= 0 || c.ExecTimeout > c.MaxExecTimeout:
		return fmt.Errorf("%w: exec timeout %v must be positive and at most the max exec timeout (%v)", ErrInvalidConfig, c.ExecTimeout, c.MaxExecTimeout)
	}
	return c.client().validate()
}

// DefaultMaxExecTimeout is the longest run time a request may ask a master
// for by default: operations work (a backup, a package upgrade) needs
// minutes, and a forgotten command still ends.
const DefaultMaxExecTimeout = 5 * time.Minute

// client is the configuration of the node's own submissions.
func (c Config) client() ClientConfig {
	return ClientConfig{
		Name: c.Name, Timeout: c.SubmitTimeout, QueueTimeout: c.QueueTimeout, SubmitRetry: c.SubmitRetry,
		Logger: c.Logger,
	}
}

// ClientConfig describes a requester. Start from DefaultClientConfig.
type ClientConfig struct {
	// Name tells masters who sent a request.
	Name string
	// Timeout is the run time a request asks for; 0 asks for the master's
	// default (its --exec-timeout). A master rejects more than its
	// --max-exec-timeout.
	Timeout time.Duration
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
	case c.Timeout < 0 || c.Timeout > maxRequestDuration:
		return fmt.Errorf("%w: timeout %v must be positive and at most %v", ErrInvalidConfig, c.Timeout, maxRequestDuration)
	case c.QueueTimeout <= 0 || c.QueueTimeout > maxRequestDuration:
		return fmt.Errorf("%w: queue timeout %v must be positive and at most %v", ErrInvalidConfig, c.QueueTimeout, maxRequestDuration)
	case c.SubmitRetry < 0:
		return fmt.Errorf("%w: submit retry %v must not be negative", ErrInvalidConfig, c.SubmitRetry)
	}
	return nil
}
