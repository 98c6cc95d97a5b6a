// Command node joins a baton cluster and runs shell commands on its master.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"golang.org/x/sys/unix"

	"baton/agent"
	"baton/auth"
	"baton/bus"
	"baton/cmd/internal/cli"
	"baton/cmd/internal/console"
	"baton/election"
)

// Globals are the flags every subcommand takes.
type Globals struct {
	cli.VersionFlag
	cli.Logging
	BrokerAddr  string `default:"${broker_addr}" env:"BATON_BROKER_ADDR" help:"Broker address (host:port)."`
	Credentials string `env:"BATON_CREDENTIALS" placeholder:"FILE" help:"Credential file to connect with, when the broker requires them: one of those it made under its DATA-DIR/credentials (node.creds to join, submit.creds for exec, watch.creds for status and watch)."`
	TLSCA       string `name:"tls-ca" env:"BATON_TLS_CA" placeholder:"FILE" help:"PEM certificate of the authority that signed the broker's TLS certificate (its DATA-DIR/tls/ca.pem), when the broker uses TLS."`
}

// conn is the connection config the flags describe, named name.
func (g *Globals) conn(name string) (bus.ConnConfig, error) {
	cfg := bus.DefaultConnConfig()
	cfg.Addrs, cfg.Name, cfg.TLSCA = []string{g.BrokerAddr}, name, g.TLSCA
	if g.Credentials != "" {
		c, err := auth.Load(g.Credentials)
		if err != nil {
			return cfg, err
		}
		cfg.Credentials, cfg.InboxPrefix = c.Path, c.Role.InboxPrefix()
	}
	return cfg, nil
}

// CLI is the node's command line.
type CLI struct {
	Globals
	Join   JoinCmd   `cmd:"" default:"withargs" help:"Join the cluster and run the commands read from standard input, one per line (the default: plain 'node' does this)."`
	Exec   ExecCmd   `cmd:"" help:"Run one command on the master without joining the cluster; exits with the command's status (124 on timeout, 125 when baton failed)."`
	Status StatusCmd `cmd:"" help:"Show the cluster's members, their ranks, the master and the epoch."`
	Watch  WatchCmd  `cmd:"" help:"Follow the cluster live: joins, leaves, losses with their cause, and each change of master with its epoch; one line per event."`
	Decode DecodeCmd `cmd:"" help:"Print a baton message body read from stdin as JSON (for: nats sub 'node.>' --translate 'node decode --subject {{Subject}}')."`
}

// JoinCmd is `node` / `node join`.
type JoinCmd struct {
	Priority          int32         `default:"${priority}" env:"BATON_PRIORITY" help:"Election priority, an integer from 0 to 2147483647; the highest live one is master, and a node joining with a higher one takes over."`
	Name              string        `env:"BATON_NAME" help:"Node name, unique among live nodes (default: the host name and the process ID, such as web1-4242, so that several nodes may run on one host)."`
	ExecTimeout       time.Duration `default:"${exec_timeout}" env:"BATON_EXEC_TIMEOUT" help:"Commands running longer are killed with their whole process group and reported as an error."`
	MaxParallel       int           `default:"${max_parallel}" env:"BATON_MAX_PARALLEL" help:"Commands this node runs at once as master; more wait for a slot, and one still waiting at its deadline is answered 'busy'."`
	HeartbeatInterval time.Duration `default:"${heartbeat_interval}" env:"BATON_HEARTBEAT_INTERVAL" help:"Time between heartbeats to the broker (keep it well under the broker's --heartbeat-timeout)."`
	JSON              bool          `name:"json" env:"BATON_JSON" help:"Print each result as one JSON object per line on stdout (keys: id, cmd, exit_code, stdout, stderr, error, timed_out, master, epoch, duration_ms); logs go to stderr."`
	Serve             bool          `env:"BATON_SERVE" help:"Read no commands: stay a member (and master candidate) until SIGINT or SIGTERM."`
}

// Run joins the cluster and serves or reads commands until end of input or
// a signal; then it leaves the cluster gracefully.
func (j *JoinCmd) Run(g *Globals) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGALRM)
	defer stop()
	name := j.Name
	if name == "" {
		host, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("no --name given and no host name: %w", err)
		}
		name = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	cfg := agent.DefaultConfig(name)
	conn, err := g.conn(name)
	if err != nil {
		return err
	}
	cfg.Conn = conn
	cfg.Priority = j.Priority
	cfg.ExecTimeout, cfg.MaxParallel, cfg.HeartbeatInterval = j.ExecTimeout, j.MaxParallel, j.HeartbeatInterval
	cfg.Version = cli.Version
	cfg.Logger = g.Logger(os.Stderr).With(keyNode, name)
	n, err := agent.New(cfg)
	if err != nil {
		return err
	}
	// Leave, then finish what this node is running as master.
	closeCtx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), cfg.ExecTimeout+cfg.QueueTimeout+2*time.Second)
	}
	if err := n.Start(ctx); err != nil {
		cctx, cancel := closeCtx()
		defer cancel()
		return errors.Join(err, n.Close(cctx))
	}
	sessionDone := make(chan error, 1)
	if !j.Serve {
		s := &console.Session{In: os.Stdin, Out: os.Stdout, Err: os.Stderr, JSON: j.JSON,
			Interactive: !j.JSON && isTerminal(os.Stdin)}
		go func() { sessionDone <- s.Run(ctx, n) }()
	}
	var runErr error
	select {
	case <-ctx.Done():
		// A session still delivers the results of what it submitted.
		if !j.Serve {
			runErr = <-sessionDone
		}
	case runErr = <-sessionDone:
	}
	cctx, cancel := closeCtx()
	defer cancel()
	return errors.Join(runErr, n.Close(cctx))
}

// ExecCmd is `node exec -- CMD [ARGS...]`.
type ExecCmd struct {
	Cmd []string `arg:"" passthrough:"" name:"cmd" help:"The command. One argument is a shell command line as typed ('ls | wc -l'); several are quoted so the remote shell sees exactly those arguments."`
}

// Run submits the command and mirrors its output and exit status.
func (e *ExecCmd) Run(g *Globals) error {
	args := e.Cmd
	if len(args) > 0 && args[0] == "--" {
		// kong passes the separator through with the arguments after it.
		args = args[1:]
	}
	if len(args) == 0 {
		return &console.ExitError{Code: console.ExitFailed, Err: errors.New("exec: no command given; usage: node exec -- CMD [ARGS...]")}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	host, _ := os.Hostname()
	name := fmt.Sprintf("exec@%s/%d", host, os.Getpid())
	cfg := agent.DefaultClientConfig(name)
	cfg.Logger = g.Logger(os.Stderr)
	conn, err := g.conn(name)
	if err != nil {
		return &console.ExitError{Code: console.ExitFailed, Err: err}
	}
	client, err := agent.Dial(ctx, conn, cfg)
	if err != nil {
		return &console.ExitError{Code: console.ExitFailed, Err: err}
	}
	defer client.Close(context.WithoutCancel(ctx))
	return console.Exec(ctx, client, console.ShellJoin(args), os.Stdout, os.Stderr)
}

// StatusCmd is `node status`.
type StatusCmd struct {
	JSON bool `name:"json" env:"BATON_JSON" help:"Print {\"epoch\":N,\"master\":NAME,\"members\":[{name,priority,rank,master}]} instead of a table."`
}

// Run prints the cluster's state.
func (s *StatusCmd) Run(g *Globals) error {
	conn, err := g.conn("status")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), conn.ConnectTimeout+2*time.Second)
	defer cancel()
	nc, err := bus.Connect(ctx, conn)
	if err != nil {
		return err
	}
	defer nc.Close()
	a, err := election.Get(ctx, nc)
	if err != nil {
		return err
	}
	return console.WriteStatus(os.Stdout, a, s.JSON)
}

// WatchCmd is `node watch`.
type WatchCmd struct {
	JSON bool `name:"json" env:"BATON_JSON" help:"Print each event as a JSON object: {time, event (join|master|left|lost), node, priority, master, epoch, cause}."`
}

// Run prints events until SIGINT or SIGTERM.
func (w *WatchCmd) Run(g *Globals) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	conn, err := g.conn("watch")
	if err != nil {
		return err
	}
	nc, err := bus.Connect(ctx, conn)
	if err != nil {
		return err
	}
	defer nc.Close()
	return console.Watch(ctx, nc, os.Stdout, w.JSON)
}

// DecodeCmd is `node decode`.
type DecodeCmd struct {
	Subject string `required:"" help:"The subject the message travelled on, which says its type (node.register, node.heartbeat, node.deregister, master.current, exec.request, exec.status.*)."`
}

// Run decodes stdin.
func (d *DecodeCmd) Run() error {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		return fmt.Errorf("decode: read stdin: %w", err)
	}
	out, err := console.Decode(d.Subject, data)
	if err != nil {
		return err
	}
	_, err = fmt.Println(string(out))
	return err
}

// Log keys.
const keyNode = "node"

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func main() {
	var c CLI
	d := agent.DefaultConfig("")
	ctx := kong.Parse(&c, append(cli.Options("node",
		"Join a baton cluster and run shell commands on its elected master. Plain 'node' joins and reads commands from standard input."),
		kong.Vars{
			"broker_addr":        d.Conn.Where(),
			"priority":           strconv.Itoa(int(d.Priority)),
			"exec_timeout":       d.ExecTimeout.String(),
			"max_parallel":       strconv.Itoa(d.MaxParallel),
			"heartbeat_interval": d.HeartbeatInterval.String(),
		})...)
	err := ctx.Run(&c.Globals)
	if code, ok := console.IsQuietExit(err); ok {
		os.Exit(code)
	}
	ctx.FatalIfErrorf(err)
}
