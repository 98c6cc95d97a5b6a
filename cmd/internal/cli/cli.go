// Package cli holds the command-line plumbing the baton binaries share:
// logging flags and the version.
package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/alecthomas/kong"
)

// Version is set at build time: -ldflags "-X baton/cmd/internal/cli.Version=v1.2.3".
var Version = "dev"

// Logging are the flags that shape a binary's logs, which always go to
// stderr.
type Logging struct {
	LogLevel  string `default:"info" enum:"debug,info,warn,error" env:"BATON_LOG_LEVEL" help:"Least severe log level printed: debug, info, warn or error."`
	LogFormat string `default:"text" enum:"text,json" env:"BATON_LOG_FORMAT" help:"Log format: text (logfmt) or json (one object per line)."`
}

// Logger builds the logger the flags ask for, writing to w, and makes it
// the default, which packages without a logger of their own log to.
func (l Logging) Logger(w io.Writer) *slog.Logger {
	logger := l.build(w)
	slog.SetDefault(logger)
	return logger
}

func (l Logging) build(w io.Writer) *slog.Logger {
	var level slog.Level
	// The enum tag has already rejected anything UnmarshalText would.
	_ = level.UnmarshalText([]byte(l.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if l.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// Options are the kong options both binaries parse with: a --version flag
// and the version for it.
func Options(name, description string) []kong.Option {
	return []kong.Option{
		kong.Name(name),
		kong.Description(description),
		kong.Vars{"version": name + " " + Version},
	}
}

// VersionFlag is embedded in a CLI struct to provide --version.
type VersionFlag struct {
	Version kong.VersionFlag `help:"Print the version and exit."`
}

// ExitUsage is the exit status of a command line that could not be parsed,
// as the shells and most tools use it.
const ExitUsage = 2

// Parse parses the process's arguments into c. A usage error (an unknown
// flag, a bad value, one rejected by a Validate method) prints one line
// naming it, with a hint, and exits ExitUsage.
func Parse(c any, options ...kong.Option) *kong.Context {
	parser, err := kong.New(c, options...)
	if err != nil {
		panic(err) // the CLI's own definition is wrong
	}
	ctx, err := parser.Parse(os.Args[1:])
	if err != nil {
		// The hint names the command the error is about.
		help := os.Args[0]
		var pe *kong.ParseError
		if errors.As(err, &pe) && pe.Context != nil {
			for _, w := range strings.Fields(pe.Context.Command()) {
				if strings.HasPrefix(w, "<") {
					break
				}
				help += " " + w
			}
		}
		fmt.Fprintf(parser.Stderr, "%s: error: %v (see '%s --help')\n", parser.Model.Name, err, help)
		parser.Exit(ExitUsage)
	}
	return ctx
}

// DefaultCommandHelp prints kong's help, but for the plain binary, which
// runs the default command cmd: that command's flags, under title, then
// the list of commands.
func DefaultCommandHelp(cmd, title string) kong.HelpPrinter {
	return func(options kong.HelpOptions, ctx *kong.Context) error {
		if ctx.Selected() != nil {
			return kong.DefaultHelpPrinter(options, ctx)
		}
		out := ctx.Stdout
		defer func() { ctx.Stdout = out }()
		var root, sub bytes.Buffer
		ctx.Stdout = &root
		if err := kong.DefaultHelpPrinter(options, ctx); err != nil {
			return err
		}
		subCtx, err := kong.Trace(ctx.Kong, []string{cmd})
		if err != nil {
			return err
		}
		ctx.Stdout = &sub
		if err := kong.DefaultHelpPrinter(options, subCtx); err != nil {
			return err
		}
		head, _, _ := strings.Cut(root.String(), "Flags:")
		// The command's arguments, if it has any, come before its flags.
		body := sub.String()
		if i := strings.Index(body, "Arguments:"); i >= 0 {
			body = body[i:]
		} else {
			body = body[strings.Index(body, "Flags:"):]
		}
		body = strings.Replace(body, "Flags:", title, 1)
		_, commands, _ := strings.Cut(root.String(), "Commands:")
		_, err = fmt.Fprintf(out, "%s%s\nCommands:%s", head, body, commands)
		return err
	}
}
