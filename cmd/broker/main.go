// Command broker runs baton's message broker: an embedded NATS server and
// the election service that picks the master among the nodes.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/alecthomas/kong"

	"baton/auth"
	"baton/broker"
	"baton/bus"
	"baton/cmd/internal/cli"
	"baton/messages"
)

// CLI is the broker's command line: its flags, and two commands.
type CLI struct {
	cli.VersionFlag
	cli.Logging
	DataDir          string        `default:"${data_dir}" env:"BATON_DATA_DIR" help:"Directory where the broker keeps the election epoch (so that it never goes backwards across restarts), the job history and its credentials."`
	MaxMembers       int           `default:"0" env:"BATON_MAX_MEMBERS" help:"Most live members admitted, the master included (0: no limit). A node that registers into a full cluster is told 'cluster full: N of N members' and keeps asking; it joins within a second of a slot freeing."`
	HeartbeatTimeout time.Duration `default:"${heartbeat_timeout}" env:"BATON_HEARTBEAT_TIMEOUT" help:"Silence after which a node is declared dead (and its connections cut). A started broker also waits this long to hear from every node before it elects."`
	HTTP             string        `name:"http" env:"BATON_HTTP" placeholder:"ADDR" help:"Serve the dashboard and monitoring over HTTP on ADDR (host:port, such as 127.0.0.1:8222): the dashboard at / (with credentials required, sign in with a token from DATA-DIR/credentials), its JSON API under /api/, the NATS endpoints /varz, /connz, /subsz, /healthz and baton's /status. Off by default."`
	Auth             string        `default:"${auth}" enum:"auto,required,none" env:"BATON_AUTH" help:"Who may connect: 'required' lets in only clients with one of the broker's credentials (admin, node, submit, watch; made under DATA-DIR/credentials on first start, mode 0600), each with its role's rights; 'none' lets anyone who reaches the port run commands; 'auto' is required unless every listen address is on loopback."`

	History         bool          `default:"true" negatable:"" env:"BATON_HISTORY" help:"Keep a history of every job (JetStream stream ${job_stream} under DATA-DIR; read it with 'node jobs'). --no-history keeps none."`
	HistoryMaxAge   time.Duration `default:"${history_max_age}" env:"BATON_HISTORY_MAX_AGE" help:"How long a finished job stays in the history after it finished (720h: 30 days). Running jobs stay however old."`
	HistoryMaxBytes cli.ByteSize  `default:"${history_max_bytes}" env:"BATON_HISTORY_MAX_BYTES" help:"About how much the finished jobs' records may take (such as 1GiB or 500MB); the oldest go first. Running jobs stay."`
	MaxBundleBytes  cli.ByteSize  `default:"${max_bundle_bytes}" env:"BATON_MAX_BUNDLE_BYTES" help:"Largest archive of files a command may be sent or bring back (node exec --file, --bundle, --collect), and most its files may unpack to, each way. Kept with the history (JetStream object store ${file_bucket}) as long as a job names them."`
	MaxBundleFiles  int           `default:"${max_bundle_files}" env:"BATON_MAX_BUNDLE_FILES" help:"Most files (directories and links included) a command may be sent or bring back."`
	FilesMaxBytes   cli.ByteSize  `default:"${files_max_bytes}" env:"BATON_FILES_MAX_BYTES" help:"Most the stored archives of files may take together; when full, new ones are refused until jobs expire from the history."`

	Discovery bool `default:"true" negatable:"" env:"BATON_DISCOVERY" help:"Answer nodes that look for a broker on the LAN (node --discover) on the UDP port of ADDR: where they reach it, and whether it requires credentials and TLS (never a secret). Only a broker listening on all addresses (0.0.0.0) hears broadcasts. --discovery=false turns it off."`

	TLSCert string `name:"tls-cert" env:"BATON_TLS_CERT" placeholder:"FILE" help:"PEM certificate of the broker: with --tls-key, every client must connect over TLS (and trust the certificate's authority: node --tls-ca). 'broker certificate' makes one."`
	TLSKey  string `name:"tls-key" env:"BATON_TLS_KEY" placeholder:"FILE" help:"PEM private key of --tls-cert."`

	Run         RunCmd         `cmd:"" default:"withargs" help:"Run the broker (the default: plain 'broker [ADDR]' does this)."`
	Certificate CertificateCmd `cmd:"" help:"Make a private certificate authority and a broker certificate for --hosts under DATA-DIR/tls (ca.pem, broker.pem, broker-key.pem; keys mode 0600), unless they are there, and print how to use them."`
	Credentials CredentialsCmd `cmd:"" help:"Make the credentials of every role (admin, node, submit, watch) and the dashboard's tokens (admin, submit, watch) that are missing under DATA-DIR/credentials, mode 0600, and list them; a broker started with that data directory uses them. Copy the credentials to where clients run."`
}

// Validate rejects flag values no broker can run with, as usage errors.
func (c *CLI) Validate() error {
	switch {
	case c.MaxMembers < 0:
		return fmt.Errorf("--max-members=%d: must be 0 (no limit) or more", c.MaxMembers)
	case c.HeartbeatTimeout <= 0:
		return fmt.Errorf("--heartbeat-timeout=%v: heartbeat timeout %v must be positive", c.HeartbeatTimeout, c.HeartbeatTimeout)
	case c.HistoryMaxAge <= 0:
		return fmt.Errorf("--history-max-age=%v: must be positive", c.HistoryMaxAge)
	case c.HistoryMaxBytes <= 0:
		return fmt.Errorf("--history-max-bytes=%v: must be positive", c.HistoryMaxBytes)
	case c.MaxBundleBytes <= 0:
		return fmt.Errorf("--max-bundle-bytes=%v: must be positive", c.MaxBundleBytes)
	case c.MaxBundleFiles <= 0:
		return fmt.Errorf("--max-bundle-files=%d: must be positive", c.MaxBundleFiles)
	case c.FilesMaxBytes < c.MaxBundleBytes:
		return fmt.Errorf("--files-max-bytes=%v: must hold at least one archive of --max-bundle-bytes (%v)", c.FilesMaxBytes, c.MaxBundleBytes)
	}
	return nil
}

// RunCmd is `broker [ADDR]`.
type RunCmd struct {
	Addr string `arg:"" optional:"" default:"${addr}" env:"BATON_ADDR" help:"Address (host:port) NATS clients connect to (default ${addr}: the stock nats CLI's, so that it needs no flags)."`
}

// Validate rejects an address no server can listen on, as a usage error,
// before anything is made.
func (r *RunCmd) Validate() error {
	if err := bus.CheckAddr(r.Addr); err != nil {
		return fmt.Errorf("ADDR: %w", err)
	}
	return nil
}

// closeTimeout bounds the broker's shutdown.
const closeTimeout = 10 * time.Second

// Run starts the broker and blocks until SIGINT or SIGTERM.
func (r *RunCmd) Run(c *CLI) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := c.Logger(os.Stderr)
	cfg := broker.DefaultConfig()
	cfg.Server.Addr, cfg.DataDir, cfg.HTTP, cfg.Auth = r.Addr, c.DataDir, c.HTTP, c.Auth
	cfg.Server.TLSCert, cfg.Server.TLSKey = c.TLSCert, c.TLSKey
	cfg.Election.HeartbeatTimeout, cfg.Election.MaxMembers = c.HeartbeatTimeout, c.MaxMembers
	cfg.KeepHistory, cfg.History.MaxAge, cfg.History.MaxBytes = c.History, c.HistoryMaxAge, int64(c.HistoryMaxBytes)
	cfg.Files.MaxBytes, cfg.Files.MaxFiles, cfg.Files.StoreBytes = int64(c.MaxBundleBytes), c.MaxBundleFiles, int64(c.FilesMaxBytes)
	cfg.Web.Version, cfg.Election.Version = cli.Version, cli.Version
	cfg.TuneMemory, cfg.Logger, cfg.Discovery = true, logger, c.Discovery
	b, err := broker.New(cfg)
	if err != nil {
		return err
	}
	err = b.Start(ctx)
	if err == nil {
		<-ctx.Done()
		logger.Info("broker stopping")
	}
	closeCtx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	return errors.Join(err, b.Close(closeCtx))
}

// CertificateCmd is `broker certificate`.
type CertificateCmd struct {
	Hosts []string `required:"" help:"Names and addresses clients reach the broker by (comma-separated), such as broker,localhost,127.0.0.1."`
}

// Run makes the certificates unless they are there.
func (cc *CertificateCmd) Run(c *CLI) error {
	certs, made, err := auth.EnsureCertificates(auth.TLSDir(c.DataDir), cc.Hosts)
	if err != nil {
		return err
	}
	state := "kept (remove them to make new ones)"
	if made {
		state = "made"
	}
	fmt.Printf("%s:\n  broker --tls-cert %s --tls-key %s ...\n  node --tls-ca %s ...\n  nats --tlsca %s ...\n", state, certs.Cert, certs.Key, certs.CA, certs.CA)
	return nil
}

// CredentialsCmd is `broker credentials`.
type CredentialsCmd struct{}

// Run makes the missing credentials and lists them all.
func (*CredentialsCmd) Run(c *CLI) error {
	creds, made, err := auth.Ensure(auth.Dir(c.DataDir))
	if err != nil {
		return err
	}
	for _, cr := range creds {
		state := "kept"
		if slices.Contains(made, cr.Path) {
			state = "made"
		}
		fmt.Printf("%-6s %s (%s; nats CLI: --nkey %s --inbox-prefix %s)\n", cr.Role, cr.Path, state, cr.Path, cr.Role.InboxPrefix())
	}
	_, madeTokens, err := auth.EnsureTokens(auth.Dir(c.DataDir))
	if err != nil {
		return err
	}
	for _, r := range auth.TokenRoles() {
		path := filepath.Join(auth.Dir(c.DataDir), auth.TokenFileName(r))
		state := "kept"
		if slices.Contains(madeTokens, path) {
			state = "made"
		}
		fmt.Printf("%-6s %s (%s; the dashboard's sign-in, or curl -H \"Authorization: Bearer $(cat %s)\")\n", r, path, state, path)
	}
	return nil
}

func main() {
	var c CLI
	d := broker.DefaultConfig()
	ctx := cli.Parse(&c, append(cli.Options("broker",
		"Run baton's broker: an embedded NATS server plus the election service that elects the master among the nodes."),
		kong.Help(cli.DefaultCommandHelp("run", "Flags (of plain 'broker [ADDR]', which is 'broker run [ADDR]'):")),
		kong.Vars{
			"addr":              d.Server.Addr,
			"auth":              d.Auth,
			"data_dir":          d.DataDir,
			"heartbeat_timeout": d.Election.HeartbeatTimeout.String(),
			"history_max_age":   d.History.MaxAge.String(),
			"history_max_bytes": cli.ByteSize(d.History.MaxBytes).String(),
			"job_stream":        messages.JobStream,
			"max_bundle_bytes":  cli.ByteSize(d.Files.MaxBytes).String(),
			"max_bundle_files":  strconv.Itoa(d.Files.MaxFiles),
			"files_max_bytes":   cli.ByteSize(d.Files.StoreBytes).String(),
			"file_bucket":       messages.FileBucket,
		})...)
	ctx.FatalIfErrorf(ctx.Run(&c))
}
