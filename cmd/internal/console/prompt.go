package console

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"unicode"

	"github.com/ergochat/readline"
)

// Prompt is the line editor of a session on a terminal: cursor editing,
// history (kept across sessions in a file of the user's own, mode 0600),
// and writers that redraw the prompt after what they print.
type Prompt struct {
	rl      *readline.Instance
	history *os.File // appended to; nil when history is not kept
	// drafted is whether the line being edited holds anything.
	drafted atomic.Bool
}

// ErrInterrupt is what ReadLine returns for Ctrl-C.
var ErrInterrupt = readline.ErrInterrupt

// historyLimit bounds the lines kept in the history file.
const historyLimit = 1000

// NewPrompt starts a line editor on the process's terminal, keeping its
// history in historyPath (none when empty). A history that cannot be read
// or written is reported and the prompt works without it.
func NewPrompt(historyPath string, warn io.Writer) (*Prompt, error) {
	p := &Prompt{}
	rl, err := readline.NewFromConfig(&readline.Config{
		Prompt: prompt,
		// History is kept by Prompt itself, for the file's mode; the
		// editor holds it in memory.
		HistoryLimit: historyLimit,
		// Called after each key the editor took: Ctrl-C, which ends the
		// read, is not, so drafted tells whether it found a draft.
		Listener: func(line []rune, _ int, _ rune) ([]rune, int, bool) {
			p.drafted.Store(len(line) > 0)
			return nil, 0, false
		},
	})
	if err != nil {
		return nil, fmt.Errorf("line editor: %w", err)
	}
	p.rl = rl
	if historyPath != "" {
		if p.history, err = openHistory(historyPath, rl); err != nil {
			fmt.Fprintf(warn, "baton: command history not kept: %v\n", err)
		}
	}
	return p, nil
}

// openHistory loads the newest historyLimit lines of path into rl and
// opens path for appending, creating it (and its directory) for the user
// alone.
func openHistory(path string, rl *readline.Instance) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	var lines []string
	if f, err := os.Open(path); err == nil {
		s := bufio.NewScanner(f)
		s.Buffer(nil, 2*MaxLineBytes)
		for s.Scan() {
			lines = append(lines, s.Text())
		}
		f.Close()
	}
	if len(lines) > historyLimit {
		// Trim it, atomically, before appending more.
		lines = lines[len(lines)-historyLimit:]
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			return nil, err
		}
		if err := os.Rename(tmp, path); err != nil {
			return nil, err
		}
	}
	for _, l := range lines {
		_ = rl.SaveToHistory(l)
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	// A file another program made keeps its mode: make it the user's alone.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// HistoryPath is where the prompt keeps its history: the user's state
// directory ($XDG_STATE_HOME, or ~/.local/state), under baton/.
func HistoryPath() string {
	dir := os.Getenv("XDG_STATE_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return ""
		}
		dir = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(dir, "baton", "history")
}

// MaxLineBytes is the longest command the prompt sends: a request's limit.
const MaxLineBytes = 64 << 10

// ReadLine reads one line. It returns ErrInterrupt for Ctrl-C on an empty
// line (on a draft, Ctrl-C only clears it) and io.EOF for Ctrl-D on an
// empty line. Control characters that the editor did not take as keys are
// removed: they never reach a command.
func (p *Prompt) ReadLine() (string, error) {
	var line string
	var err error
	for {
		p.drafted.Store(false)
		line, err = p.rl.ReadLine()
		if !errors.Is(err, ErrInterrupt) || !p.drafted.Load() {
			break
		}
	}
	if err != nil {
		return "", err
	}
	line = strings.Map(func(r rune) rune {
		if r != '\t' && unicode.IsControl(r) {
			return -1
		}
		return r
	}, line)
	if p.history != nil && strings.TrimSpace(line) != "" && len(line) <= MaxLineBytes {
		if _, err := io.WriteString(p.history, line+"\n"); err != nil {
			p.history.Close()
			p.history = nil
		}
	}
	return line, nil
}

// Stdout and Stderr write above the prompt, which they redraw.
func (p *Prompt) Stdout() io.Writer { return p.rl.Stdout() }

// Stderr: see Stdout.
func (p *Prompt) Stderr() io.Writer { return p.rl.Stderr() }

// Close gives the terminal back as it was.
func (p *Prompt) Close() error {
	var err error
	if p.history != nil {
		err = p.history.Close()
	}
	return errors.Join(err, p.rl.Close())
}
