package console

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"

	"baton/messages"
)

// Submitter runs one command on the master.
type Submitter interface {
	Submit(ctx context.Context, cmd string) (*messages.ExecResult, error)
}

// Banner is printed when a session starts on a terminal.
const Banner = `#####
# enter command which needs to be executed #
#####
`

// prompt is printed before each command on a terminal.
const prompt = "> "

// Session reads commands, one per line, submits each as soon as it is read
// (they run in parallel) and prints each result as it completes.
type Session struct {
	In       io.Reader
	Out, Err io.Writer
	// Interactive prints the banner and a prompt (stdin is a terminal).
	Interactive bool
	// JSON prints one JSON object per result on Out and nothing else.
	JSON bool

	mu sync.Mutex // serialises writes to Out and Err
}

// JSONResult is one line of `node --json` output.
type JSONResult struct {
	ID         int    `json:"id"`
	Cmd        string `json:"cmd"`
	ExitCode   int32  `json:"exit_code"`
	Stdout     string `json:"stdout"`
	Stderr     string `json:"stderr"`
	Error      string `json:"error"`
	TimedOut   bool   `json:"timed_out"`
	Master     string `json:"master"`
	Epoch      uint64 `json:"epoch"`
	DurationMs int64  `json:"duration_ms"`
}

// Run reads commands until end of input or ctx ends, then waits for every
// outstanding result to be printed. It blocks; a read still blocked when
// ctx ends is abandoned (its goroutine ends with the process).
func (s *Session) Run(ctx context.Context, sub Submitter) error {
	if s.Interactive {
		s.write(s.Out, Banner+prompt)
	}
	lines := make(chan string)
	readErr := make(chan error, 1)
	go func() {
		defer close(lines)
		r := bufio.NewReader(s.In)
		for {
			line, err := r.ReadString('\n')
			if line != "" {
				select {
				case lines <- line:
				case <-ctx.Done():
					return
				}
			}
			if err != nil {
				if err != io.EOF {
					readErr <- fmt.Errorf("read commands: %w", err)
				}
				return
			}
		}
	}()

	var outstanding sync.WaitGroup
	id := 0
	// Results keep arriving after ctx ends: a command already submitted is
	// reported, never abandoned.
	subCtx := context.WithoutCancel(ctx)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case line, ok := <-lines:
			if !ok {
				break loop
			}
			cmd := strings.TrimRight(line, "\r\n")
			if strings.TrimSpace(cmd) == "" {
				if s.Interactive {
					s.write(s.Out, prompt)
				}
				continue
			}
			id++
			id := id
			outstanding.Go(func() {
				res, err := sub.Submit(subCtx, cmd)
				s.print(id, cmd, res, err)
			})
		}
	}
	outstanding.Wait()
	select {
	case err := <-readErr:
		return err
	default:
		return nil
	}
}

func (s *Session) write(w io.Writer, text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, _ = io.WriteString(w, text)
}

func (s *Session) print(id int, cmd string, res *messages.ExecResult, err error) {
	if res == nil {
		res = &messages.ExecResult{ExitCode: -1}
	}
	if err != nil {
		res.Error = err.Error()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.JSON {
		enc := json.NewEncoder(s.Out)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(JSONResult{
			ID: id, Cmd: cmd, ExitCode: res.ExitCode, Stdout: res.Stdout, Stderr: res.Stderr,
			Error: res.Error, TimedOut: res.TimedOut, Master: res.Master, Epoch: res.Epoch, DurationMs: res.DurationMs,
		})
		return
	}
	fmt.Fprintf(s.Out, "%s[%d] %s\n", clearLine(s.Interactive), id, Summary(cmd, res))
	_, _ = io.WriteString(s.Out, res.Stdout)
	_, _ = io.WriteString(s.Err, res.Stderr)
	if n := res.StdoutDropped; n > 0 {
		fmt.Fprintf(s.Err, "[%d] stdout truncated: %d bytes dropped\n", id, n)
	}
	if n := res.StderrDropped; n > 0 {
		fmt.Fprintf(s.Err, "[%d] stderr truncated: %d bytes dropped\n", id, n)
	}
	if s.Interactive {
		_, _ = io.WriteString(s.Out, prompt)
	}
}

// clearLine returns the terminal sequence that erases a pending prompt, so
// that a result does not print after "> ".
func clearLine(interactive bool) string {
	if interactive {
		return "\r\033[K"
	}
	return ""
}

// Summary is the one-line headline of a result: what ran, where, and how
// it ended.
func Summary(cmd string, res *messages.ExecResult) string {
	where := ""
	if res.Master != "" {
		where = fmt.Sprintf(" on %s (epoch %d)", res.Master, res.Epoch)
	}
	if res.Error != "" {
		return fmt.Sprintf("%s%s: error: %s", cmd, where, res.Error)
	}
	return fmt.Sprintf("%s%s: exit %d in %dms", cmd, where, res.ExitCode, res.DurationMs)
}
