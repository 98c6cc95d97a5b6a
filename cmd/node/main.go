// Command node joins a baton cluster and runs shell commands on its master.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"github.com/nats-io/nats.go"
	"golang.org/x/sys/unix"

	"baton/agent"
	"baton/auth"
	"baton/bundle"
	"baton/bus"
	"baton/cmd/internal/cli"
	"baton/cmd/internal/console"
	"baton/discovery"
	"baton/election"
	"baton/executor"
	"baton/files"
	"baton/history"
	"baton/messages"
)

// Globals are the flags every subcommand takes.
type Globals struct {
	cli.VersionFlag
	cli.Logging
	BrokerAddr  string       `env:"BATON_BROKER_ADDR" placeholder:"HOST:PORT[,…]" help:"Broker address, or the addresses of several brokers of a cluster, comma-separated: the node connects to any that answers, and moves to another when it goes (default ${broker_addr})."`
	Discover    cli.Discover `env:"BATON_DISCOVER" help:"Find the broker on the LAN instead of giving --broker-addr: alone, it broadcasts a UDP request to ${discover} (the broker's port); --discover=HOST[:PORT] (with the '=') asks there instead: a subnet's broadcast address, or one host. The first answer within ${discover_timeout} is taken. It tells where the broker is and whether it requires credentials and TLS, never a secret: --tls-ca and --credentials still decide whom to trust, and with --credentials, --discover needs --tls-ca."`
	Credentials string       `env:"BATON_CREDENTIALS" placeholder:"FILE" help:"Credential file to connect with, when the broker requires them: one of those it made under its DATA-DIR/credentials (node.creds to join, submit.creds for exec, watch.creds for status and watch, admin.creds for jobs, job and ctl)."`
	TLSCA       string       `name:"tls-ca" env:"BATON_TLS_CA" placeholder:"FILE" help:"PEM certificate of the authority that signed the broker's TLS certificate (its DATA-DIR/tls/ca.pem), when the broker uses TLS."`

	// found is what --discover found.
	found *discovery.Found
}

// Validate rejects a broker address no connection can use, and a
// discovery that could hand a credential to an impostor, as usage errors.
// Of --broker-addr and --discover, one on the command line beats the
// other's environment variable.
func (g *Globals) Validate() error {
	if g.Discover.Set() && g.BrokerAddr != "" {
		addrFlag, discoverFlag := onCommandLine("--broker-addr"), onCommandLine("--discover")
		switch {
		case addrFlag && !discoverFlag:
			g.Discover = cli.Discover{}
		case discoverFlag && !addrFlag:
			g.BrokerAddr = ""
		default:
			return fmt.Errorf("--discover and --broker-addr (or BATON_DISCOVER and BATON_BROKER_ADDR) both given: the broker is found one way; give one")
		}
	}
	if g.Discover.Set() && g.Credentials != "" && g.TLSCA == "" {
		return fmt.Errorf("--discover with --credentials needs --tls-ca: anyone on the LAN can answer a discovery request, and only the broker's certificate, checked against your authority, tells the broker from an impostor that would take the credential; give --tls-ca, or --broker-addr")
	}
	if g.BrokerAddr == "" {
		return nil
	}
	for _, a := range strings.Split(g.BrokerAddr, ",") {
		if err := bus.CheckAddr(strings.TrimSpace(a)); err != nil {
			return fmt.Errorf("--broker-addr: %w", err)
		}
	}
	return nil
}

// brokerAddrs are the addresses --broker-addr lists.
func (g *Globals) brokerAddrs() []string {
	addrs := strings.Split(g.BrokerAddr, ",")
	for i, a := range addrs {
		addrs[i] = strings.TrimSpace(a)
	}
	return addrs
}

// checkDiscover refuses `--discover ADDR`: the flag takes its value only
// after '=', and ADDR would be read as an argument (a command, even).
func checkDiscover(args []string) error {
	if end := slices.Index(args, "--"); end >= 0 {
		args = args[:end]
	}
	if i := slices.Index(args, "--discover"); i >= 0 && i+1 < len(args) && looksLikeAddr(args[i+1]) {
		return fmt.Errorf("--discover takes its address after '=': --discover=%s (alone, it broadcasts, and %s would be read as what follows)", args[i+1], args[i+1])
	}
	return nil
}

// looksLikeAddr reports whether s reads as an IP address or a host:port,
// as no command or subcommand does.
func looksLikeAddr(s string) bool {
	if _, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return true
	}
	_, port, err := net.SplitHostPort(s)
	_, perr := strconv.Atoi(port)
	return err == nil && perr == nil
}

// onCommandLine reports whether flag was given on the command line (not
// by its environment variable), before any "--".
func onCommandLine(flag string) bool {
	for _, a := range os.Args[1:] {
		if a == "--" {
			return false
		}
		if a == flag || strings.HasPrefix(a, flag+"=") {
			return true
		}
	}
	return false
}

// conn is the connection config the flags describe, named name. With
// --discover it first finds the broker (in at most discovery.Timeout).
func (g *Globals) conn(name string) (bus.ConnConfig, error) {
	cfg := bus.DefaultConnConfig()
	cfg.Name, cfg.TLSCA = name, g.TLSCA
	switch {
	case g.Discover.Set():
		if err := g.discover(); err != nil {
			return cfg, err
		}
		// Best first, as discovery ordered them.
		cfg.Addrs, cfg.InOrder = g.found.Addrs, true
	case g.BrokerAddr != "":
		cfg.Addrs = g.brokerAddrs()
	}
	if g.Credentials != "" {
		c, err := auth.Load(g.Credentials)
		if err != nil {
			return cfg, err
		}
		cfg.Credentials, cfg.InboxPrefix = c.Path, c.Role.InboxPrefix()
	}
	return cfg, nil
}

// discover finds the broker as --discover says, once.
func (g *Globals) discover() error {
	if g.found != nil {
		return nil
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	f, err := discovery.Find(ctx, g.Discover.Target, discovery.Timeout)
	if err != nil {
		return err
	}
	where := strings.Join(f.Addrs, ",")
	if f.CredentialsRequired && g.Credentials == "" {
		tls := ""
		if f.TLSRequired && g.TLSCA == "" {
			tls = ", and TLS: with them, give the authority of its certificate (--tls-ca FILE, its <data-dir>/tls/ca.pem)"
		}
		return fmt.Errorf("the broker found at %s requires credentials and none were given; give one of the files it made under <data-dir>/credentials (--credentials FILE)%s", where, tls)
	}
	g.found = f
	g.Logger(os.Stderr).Debug("found the broker", "addrs", where, "from", f.From.String(), "version", f.Version,
		"credentials_required", f.CredentialsRequired, "tls_required", f.TLSRequired)
	return nil
}

// CLI is the node's command line.
type CLI struct {
	Globals
	Join   JoinCmd   `cmd:"" default:"withargs" help:"Join the cluster and run the commands read from standard input, one per line (the default: plain 'node' does this)."`
	Exec   ExecCmd   `cmd:"" help:"Run one command on the master without joining the cluster, its output shown as it comes; exits with the command's status (124 on timeout, 125 when baton failed, 130 when cancelled by SIGINT or SIGTERM)."`
	Status StatusCmd `cmd:"" help:"Show the cluster's members, their ranks, the master and the epoch."`
	Watch  WatchCmd  `cmd:"" help:"Follow the cluster live: joins, leaves, losses with their cause, and each change of master with its epoch; one line per event."`
	Jobs   JobsCmd   `cmd:"" help:"List the jobs in the broker's history, newest first: ID, state, exit code, when, duration, master, submitter and command. Needs admin.creds when the broker requires credentials."`
	Job    JobCmd    `cmd:"" help:"Show one job of the history: its record as a header on stderr, then its stdout on stdout and its stderr on stderr."`
	Ctl    CtlCmd    `cmd:"" help:"Show a running node's settings, change one without a restart, or make it leave (the admin role's: admin.creds when the broker requires credentials)."`
	Decode DecodeCmd `cmd:"" help:"Print a baton message body read from stdin as JSON (for: nats sub 'node.>' --translate 'node decode --subject {{Subject}}')."`
}

// JoinCmd is `node` / `node join`.
type JoinCmd struct {
	Priority          int32         `default:"${priority}" env:"BATON_PRIORITY" help:"Election priority, an integer from 0 to 2147483647; the highest live one is master, and a node joining with a higher one takes over."`
	Name              string        `env:"BATON_NAME" help:"Node name, unique among live nodes (default: the host name and the process ID, such as web1-4242, so that several nodes may run on one host)."`
	Timeout           time.Duration `env:"BATON_TIMEOUT" help:"Run time each command typed here asks the master for, such as 2m (default: the master's --exec-timeout; at most its --max-exec-timeout)."`
	ExecTimeout       time.Duration `default:"${exec_timeout}" env:"BATON_EXEC_TIMEOUT" help:"As master: run time of a command that asks for none; a command running longer is killed with its whole process group and reported as timed out."`
	MaxExecTimeout    time.Duration `default:"${max_exec_timeout}" env:"BATON_MAX_EXEC_TIMEOUT" help:"As master: the longest run time a command may ask for (--timeout); a request asking for more is rejected unrun."`
	MaxOutput         int           `default:"${max_output}" env:"BATON_MAX_OUTPUT" help:"As master: bytes of stdout, and of stderr, kept per command (1 MiB by default); the rest is dropped and counted, and the requester told."`
	ExecMemoryLimit   cli.ByteSize  `name:"exec-memory-limit" default:"0" env:"BATON_EXEC_MEMORY_LIMIT" help:"As master: the most memory (address space) each command may take, such as 512MiB (0: no limit). An allocation past it fails; a command that dies of it is reported so."`
	MaxParallel       int           `default:"${max_parallel}" env:"BATON_MAX_PARALLEL" help:"As master: commands run at once; more wait for a slot, and one still waiting at its deadline is answered 'busy'."`
	HeartbeatInterval time.Duration `default:"${heartbeat_interval}" env:"BATON_HEARTBEAT_INTERVAL" help:"Time between heartbeats to the broker (keep it well under the broker's --heartbeat-timeout)."`
	JSON              bool          `name:"json" env:"BATON_JSON" help:"Print each result as one JSON object per line on stdout (keys: id, cmd, exit_code, stdout, stderr, stdout_dropped, stderr_dropped, error, timed_out, master, epoch, duration_ms, job; and outputs when files came back); logs go to stderr."`
	Serve             bool          `env:"BATON_SERVE" help:"Read no commands: stay a member (and master candidate) until SIGINT or SIGTERM."`
	WorkDir           string        `name:"work-dir" type:"path" default:"${work_dir}" env:"BATON_WORK_DIR" placeholder:"DIR" help:"As master: where commands sent with files run, each in a fresh directory under DIR removed when it ends; a node that starts removes what killed nodes left there (default ${work_dir})."`
}

// Validate rejects flag values no node can run with, as usage errors.
func (j *JoinCmd) Validate() error {
	switch {
	case j.Priority < election.MinPriority:
		return fmt.Errorf("--priority=%d: priority %d is outside the range %d to %d", j.Priority, j.Priority, election.MinPriority, election.MaxPriority)
	case j.Timeout < 0:
		return fmt.Errorf("--timeout=%v: must not be negative", j.Timeout)
	case j.ExecTimeout <= 0:
		return fmt.Errorf("--exec-timeout=%v: must be positive", j.ExecTimeout)
	case j.ExecTimeout > j.MaxExecTimeout:
		return fmt.Errorf("--exec-timeout=%v is longer than --max-exec-timeout=%v", j.ExecTimeout, j.MaxExecTimeout)
	case j.MaxOutput <= 0 || j.MaxOutput > messages.MaxOutputCap:
		return fmt.Errorf("--max-output=%d: must be from 1 to %d bytes", j.MaxOutput, messages.MaxOutputCap)
	case j.MaxParallel <= 0:
		return fmt.Errorf("--max-parallel=%d: max parallel %d must be positive", j.MaxParallel, j.MaxParallel)
	case j.HeartbeatInterval <= 0:
		return fmt.Errorf("--heartbeat-interval=%v: must be positive", j.HeartbeatInterval)
	case j.ExecMemoryLimit != 0 && j.ExecMemoryLimit < executor.MinMemoryLimit:
		return fmt.Errorf("--exec-memory-limit=%v: at least %dMiB (0: no limit); a shell and its libraries need a few to start", j.ExecMemoryLimit, executor.MinMemoryLimit>>20)
	}
	return nil
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
	cfg.ExecTimeout, cfg.MaxExecTimeout, cfg.SubmitTimeout = j.ExecTimeout, j.MaxExecTimeout, j.Timeout
	cfg.MaxOutput, cfg.MaxParallel, cfg.HeartbeatInterval = j.MaxOutput, j.MaxParallel, j.HeartbeatInterval
	cfg.ExecMemoryLimit = int64(j.ExecMemoryLimit)
	cfg.Version, cfg.Reaper, cfg.WorkRoot = cli.Version, true, j.WorkDir
	// On a terminal, the line editor prints logs above the prompt.
	var p *console.Prompt
	logs := io.Writer(os.Stderr)
	if !j.Serve && !j.JSON && isTerminal(os.Stdin) && isTerminal(os.Stdout) {
		if p, err = console.NewPrompt(console.HistoryPath(), os.Stderr); err != nil {
			return err
		}
		defer p.Close()
		logs = p.Stderr()
	}
	cfg.Logger = g.Logger(logs).With(keyNode, name)
	if g.found != nil {
		cfg.Logger.Info("found the broker", "addrs", conn.Where(), "from", g.found.From.String(), "version", g.found.Version)
	}
	n, err := agent.New(cfg)
	if err != nil {
		return err
	}
	// Leave, then finish what this node is running as master.
	closeCtx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), cfg.MaxExecTimeout+cfg.QueueTimeout+2*time.Second)
	}
	if err := n.Start(ctx); err != nil {
		cctx, cancel := closeCtx()
		defer cancel()
		if ctx.Err() != nil {
			// Stopped before it joined (waiting for a slot, say): as asked.
			cfg.Logger.Info("stopped before joining")
			return n.Close(cctx)
		}
		return errors.Join(err, n.Close(cctx))
	}
	// node ctl NAME leave ends the node as SIGTERM does, but for the
	// prompt's own commands, which finish.
	ctx, leave := context.WithCancelCause(ctx)
	defer leave(nil)
	go func() {
		select {
		case <-n.LeaveRequested():
			leave(console.ErrLeaving)
		case <-ctx.Done():
		}
	}()
	sessionDone := make(chan error, 1)
	if !j.Serve {
		s := &console.Session{In: os.Stdin, Out: os.Stdout, Err: os.Stderr, JSON: j.JSON, Prompt: p, Timeout: j.Timeout}
		if p != nil {
			s.Banner = banner(conn.Where(), name, j.Priority, n.Master())
		}
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
	case <-n.Lost():
		runErr = fmt.Errorf("the broker at %s closed this node's connection for good: %v", conn.Where(), n.LostErr())
	}
	cctx, cancel := closeCtx()
	defer cancel()
	return errors.Join(runErr, n.Close(cctx))
}

// banner greets a person at the prompt: where they are and what keys do.
func banner(broker, name string, priority int32, a *messages.Announcement) string {
	master := "none yet"
	if a != nil && a.Master != "" {
		master = fmt.Sprintf("%s (epoch %d)", a.Master, a.Epoch)
	}
	return fmt.Sprintf("baton: joined the broker at %s as %s, priority %d; master: %s\n"+
		"Commands typed here run on the master. Up/down: history; Ctrl-C: cancel running commands; Ctrl-D: leave.\n",
		broker, name, priority, master)
}

// ExecCmd is `node exec -- CMD [ARGS...]`.
type ExecCmd struct {
	Timeout time.Duration `env:"BATON_TIMEOUT" help:"Run time to ask the master for, such as 2m (0 or unset: the master's --exec-timeout; at most its --max-exec-timeout)."`
	Stdin   bool          `name:"stdin" help:"Give the command this process's standard input (at most 1 MiB, read before anything is sent); without it the command's reads wait until its timeout."`
	JSON    bool          `name:"json" env:"BATON_JSON" help:"Print the result as one JSON object (keys as 'node --json') instead of the command's output as it comes."`
	File    []string      `name:"file" sep:"none" type:"path" placeholder:"PATH" help:"Send a file or a directory with the command (repeatable): the command then runs in a fresh work directory on the master that holds exactly its inputs, each under its base name, modes kept."`
	Bundle  []string      `name:"bundle" sep:"none" type:"existingfile" placeholder:"ARCHIVE" help:"Send a .zip or .tar.gz, unpacked into the work directory (repeatable). Paths out of it, links out of it and going over the broker's --max-bundle-bytes or --max-bundle-files are refused."`
	Collect []string      `name:"collect" sep:"none" placeholder:"GLOB" help:"Bring back the files the glob matches, relative to the work directory, when the command ends (repeatable; a directory brings all its files), such as 'out/*'."`
	Out     string        `name:"out" type:"path" placeholder:"PATH" help:"Where the files --collect brings back go: a directory (default ./JOB-ID/), or a .zip file that also holds stdout.txt and stderr.txt. Nothing is overwritten."`
	Cmd     []string      `arg:"" passthrough:"partial" name:"cmd" help:"The command, after the flags (and after --, when it starts with a dash). One argument is a shell command line as typed ('ls | wc -l'); several are quoted so the remote shell sees exactly those arguments."`
}

// isArchiveName reports whether name reads as an archive other than a
// zip, which --out does not make.
func isArchiveName(name string) bool {
	for _, ext := range []string{".tar", ".tar.gz", ".tgz", ".gz", ".tar.xz", ".7z", ".rar"} {
		if strings.HasSuffix(strings.ToLower(name), ext) {
			return true
		}
	}
	return false
}

// command is the shell command line the arguments make.
func (e *ExecCmd) command() string {
	args := e.Cmd
	if len(args) > 0 && args[0] == "--" {
		// kong passes the separator through with the arguments after it.
		args = args[1:]
	}
	return console.ShellJoin(args)
}

// Validate rejects what cannot be sent, as usage errors.
func (e *ExecCmd) Validate() error {
	switch cmd := e.command(); {
	case strings.TrimSpace(cmd) == "":
		return errors.New("no command given; usage: node exec [--timeout D] [--stdin] [--json] [--file PATH] [--bundle ARCHIVE] [--collect GLOB [--out PATH]] [--] CMD [ARGS...]")
	case len(cmd) > messages.MaxCommandBytes:
		return fmt.Errorf("command of %d bytes is longer than the %d allowed", len(cmd), messages.MaxCommandBytes)
	case e.Timeout < 0:
		return fmt.Errorf("--timeout=%v must not be negative (0 asks for the master's default)", e.Timeout)
	case e.Out != "" && len(e.Collect) == 0:
		return errors.New("--out says where the files --collect brings back go; name them with --collect GLOB")
	case e.Out != "" && !strings.HasSuffix(strings.ToLower(e.Out), ".zip") && isArchiveName(e.Out):
		return fmt.Errorf("--out %s: files come back as a directory or a .zip; name one of those", e.Out)
	}
	for _, b := range e.Bundle {
		if _, err := bundle.FormatOf(b); err != nil {
			return fmt.Errorf("--bundle %s: neither a .zip nor a .tar.gz", b)
		}
	}
	for _, f := range e.File {
		if _, err := os.Lstat(f); err != nil {
			return fmt.Errorf("--file %s: %w", f, errors.Unwrap(err))
		}
	}
	return bundle.CheckGlobs(e.Collect)
}

// Run submits the command and mirrors its output and exit status. SIGINT
// or SIGTERM cancels the command on the master; a second one stops
// waiting for its result.
func (e *ExecCmd) Run(g *Globals) error {
	cmd := e.command()
	opts := console.ExecOptions{Timeout: e.Timeout, JSON: e.JSON, Files: e.File, Bundles: e.Bundle, Collect: e.Collect, Out: e.Out}
	if e.Stdin {
		in, err := io.ReadAll(io.LimitReader(os.Stdin, messages.MaxStdinBytes+1))
		switch {
		case err != nil:
			return &console.ExitError{Code: console.ExitFailed, Err: fmt.Errorf("exec: read stdin: %w", err)}
		case len(in) > messages.MaxStdinBytes:
			return &console.ExitError{Code: console.ExitFailed, Err: fmt.Errorf("exec: standard input is longer than the %d bytes --stdin allows; nothing was sent", messages.MaxStdinBytes)}
		}
		opts.Stdin = in
	}
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(signals)
	cancel := make(chan struct{})
	ctx, giveUp := context.WithCancel(context.Background())
	defer giveUp()
	opts.Cancel = cancel
	go func() {
		select {
		case <-signals:
			if isTerminal(os.Stderr) {
				// After the terminal's ^C, not on its line.
				fmt.Fprintln(os.Stderr)
			}
			close(cancel)
		case <-ctx.Done():
			return
		}
		select {
		case <-signals:
			giveUp()
		case <-ctx.Done():
		}
	}()
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
	err = console.Exec(ctx, client, cmd, opts, os.Stdout, os.Stderr)
	if ctx.Err() != nil {
		return &console.ExitError{Code: console.ExitCancelled, Err: errors.New("exec: stopped waiting for the cancelled command's result")}
	}
	return err
}

// StatusCmd is `node status`.
type StatusCmd struct {
	JSON bool `name:"json" env:"BATON_JSON" help:"Print {\"epoch\":N,\"master\":NAME,\"members\":[{name,priority,rank,master,version,heartbeat_age_ms}],\"last_change\":…,\"last_change_at\":…,\"at\":…,\"max_members\":N,\"refused\":N} instead of a table (max_members 0: no limit)."`
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

// JobsCmd is `node jobs`.
type JobsCmd struct {
	State string        `placeholder:"STATE" help:"Only jobs in this state: ${job_states}."`
	Node  string        `placeholder:"NAME" help:"Only jobs that NAME ran (as master) or submitted."`
	Since time.Duration `placeholder:"D" help:"Only jobs submitted within D before now, such as 1h or 30m."`
	Grep  string        `placeholder:"TEXT" help:"Only jobs whose command, stdout or stderr contains TEXT (case-sensitive)."`
	Limit int           `default:"${job_limit}" help:"Show at most this many jobs (1 to ${max_job_limit})."`
	JSON  bool          `name:"json" env:"BATON_JSON" help:"Print one JSON object per job and line: the record's fields but stdout and stderr."`
}

// Validate rejects bounds the history would refuse, as usage errors.
func (j *JobsCmd) Validate() error {
	switch {
	case j.State != "" && !slices.Contains(messages.JobStates(), j.State):
		return fmt.Errorf("--state=%s: not a state; want one of %s", j.State, strings.Join(messages.JobStates(), ", "))
	case j.Limit < 1 || j.Limit > messages.MaxJobLimit:
		return fmt.Errorf("--limit=%d: must be from 1 to %d", j.Limit, messages.MaxJobLimit)
	case j.Since < 0:
		return fmt.Errorf("--since=%v: must be positive", j.Since)
	}
	return nil
}

// Run lists the jobs.
func (j *JobsCmd) Run(g *Globals) error {
	q := messages.JobQuery{State: j.State, Node: j.Node, Grep: j.Grep, Limit: j.Limit}
	if j.Since > 0 {
		since := time.Now().Add(-j.Since)
		q.Since = &since
	}
	var jobs []messages.JobSummary
	err := g.askHistory("jobs", func(ctx context.Context, nc *nats.Conn) (err error) {
		jobs, err = history.List(ctx, nc, q)
		return err
	})
	if err != nil {
		return err
	}
	return console.WriteJobs(os.Stdout, jobs, j.JSON, terminalWidth(os.Stdout), time.Now())
}

// JobCmd is `node job ID`.
type JobCmd struct {
	ID       string `arg:"" help:"The job's ID, as 'node jobs' and every result show it."`
	JSON     bool   `name:"json" env:"BATON_JSON" help:"Print the whole record, stdout and stderr included, as one JSON object."`
	Download string `name:"download" type:"path" placeholder:"PATH" help:"Also fetch the files the job brought back (node exec --collect) to PATH: a directory, or a .zip that also holds stdout.txt and stderr.txt. Nothing is overwritten."`
}

// Validate refuses what cannot be a job ID, as a usage error; IDs are
// read in either case.
func (j *JobCmd) Validate() error {
	j.ID = strings.ToLower(j.ID)
	if !messages.ValidJobID(j.ID) {
		return fmt.Errorf("ID %q: not a job ID (%d characters of 0-9 and a-z, as 'node jobs' shows them)", j.ID, messages.JobIDLen)
	}
	return nil
}

// Run shows the job.
func (j *JobCmd) Run(g *Globals) error {
	if j.Download != "" {
		if err := files.CheckOut(j.Download); err != nil {
			return fmt.Errorf("--download %w", err)
		}
	}
	var job *messages.Job
	saved := -1
	err := g.askHistory("job", func(ctx context.Context, nc *nats.Conn) (err error) {
		if job, err = history.Get(ctx, nc, j.ID); err != nil || j.Download == "" {
			return err
		}
		if job.OutputTicket == "" {
			return fmt.Errorf("job %s brought back no files (it ran without --collect, or found none)", j.ID)
		}
		// Within the broker's limits: unpacking is as careful as on a
		// master.
		a, err := election.Get(ctx, nc)
		if err != nil {
			return err
		}
		lim := bundle.Limits{MaxBytes: int64(a.MaxBundleBytes), MaxFiles: int(a.MaxBundleFiles)}
		if saved, err = files.Save(ctx, nc, job.OutputTicket, j.Download, lim, job.Stdout, job.Stderr); err != nil {
			return fmt.Errorf("--download %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := console.WriteJob(os.Stdout, os.Stderr, job, j.JSON); err != nil {
		return err
	}
	if saved >= 0 {
		console.WriteSaved(os.Stderr, saved, j.Download)
	}
	return nil
}

// historyTimeout bounds a question to the history: a --grep through a
// hundred thousand jobs takes a second or two.
const historyTimeout = 15 * time.Second

// askHistory connects as name and calls ask, failing at once with a
// one-line error if the credential may not read the history.
func (g *Globals) askHistory(name string, ask func(context.Context, *nats.Conn) error) error {
	return g.askAs(name, "this credential may not read the job history (it needs the admin role: admin.creds)",
		fmt.Sprintf("the broker's history did not answer within %v", historyTimeout), historyTimeout, ask)
}

// askAs connects as name and calls ask within timeout, failing at once
// with denied, a one-line error, if the credential may not publish what
// ask does, and with silent if the answer does not come in time.
func (g *Globals) askAs(name, denied, silent string, timeout time.Duration, ask func(context.Context, *nats.Conn) error) error {
	conn, err := g.conn(name)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeoutCause(context.Background(), conn.ConnectTimeout+timeout, errors.New(silent))
	defer cancel()
	ctx, deny := context.WithCancelCause(ctx)
	conn.OnError = func(err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			deny(errors.New(denied))
		}
	}
	nc, err := bus.Connect(ctx, conn)
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := ask(ctx, nc); err != nil {
		if cause := context.Cause(ctx); cause != nil {
			return cause
		}
		return err
	}
	return nil
}

// terminalWidth is f's width in columns when it is a terminal, else 0:
// no limit.
func terminalWidth(f *os.File) int {
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return 0
	}
	return int(ws.Col)
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
	// This binary is also the reaper of the commands a node runs.
	executor.ReaperMain()
	if err := checkDiscover(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "node: error: %v\n", err)
		os.Exit(cli.ExitUsage)
	}
	var c CLI
	d := agent.DefaultConfig("")
	ctx := cli.Parse(&c, append(cli.Options("node",
		"Join a baton cluster and run shell commands on its elected master. Plain 'node' joins and reads commands from standard input."),
		kong.Help(cli.DefaultCommandHelp("join", "Flags (of plain 'node', which is 'node join'):")),
		kong.Vars{
			"broker_addr":        d.Conn.Where(),
			"discover":           discovery.Broadcast,
			"discover_timeout":   discovery.Timeout.String(),
			"priority":           strconv.Itoa(int(d.Priority)),
			"exec_timeout":       d.ExecTimeout.String(),
			"max_exec_timeout":   d.MaxExecTimeout.String(),
			"max_output":         strconv.Itoa(d.MaxOutput),
			"max_parallel":       strconv.Itoa(d.MaxParallel),
			"heartbeat_interval": d.HeartbeatInterval.String(),
			"job_states":         strings.Join(messages.JobStates(), ","),
			"job_limit":          strconv.Itoa(messages.DefaultJobLimit),
			"max_job_limit":      strconv.Itoa(messages.MaxJobLimit),
			"work_dir":           d.WorkRoot,
			"ctl_settings":       strings.Join(agent.Settings(), ","),
			"min_memory_limit":   bundle.Size(agent.MinMemoryLimit),
			"max_max_procs":      strconv.Itoa(agent.MaxMaxProcs),
			"max_max_parallel":   strconv.Itoa(agent.MaxMaxParallel),
			"min_exec_timeout":   agent.MinExecTimeout.String(),
		})...)
	err := ctx.Run(&c.Globals)
	if code, ok := console.IsQuietExit(err); ok {
		os.Exit(code)
	}
	ctx.FatalIfErrorf(err)
}
