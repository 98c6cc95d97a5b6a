package console

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"baton/agent"
	"baton/messages"
)

// Submitter runs one job on the master.
type Submitter interface {
	SubmitJob(ctx context.Context, job *agent.Job) (*messages.ExecResult, error)
}

// prompt is printed before each command on a terminal.
const prompt = "> "

// Session reads commands, one per line, submits each as soon as it is read
// (they run in parallel) and prints each result as it completes.
type Session struct {
	// In is read when there is no Prompt: a script or a pipe.
	In       io.Reader
	Out, Err io.Writer
	// Prompt, when set, reads commands from the terminal with line editing
	// and history; Ctrl-C cancels this session's running commands.
	Prompt *Prompt
	// Banner is printed first on a terminal.
	Banner string
	// JSON prints one JSON object per result on Out and nothing else.
	JSON bool
	// Timeout is the run time each command asks for; 0 asks for the
	// master's default.
	Timeout time.Duration

	mu sync.Mutex // serialises writes to Out and Err
	// cancel is closed by Ctrl-C: it cancels the jobs submitted with it;
	// running counts them.
	cancel  chan struct{}
	running int
}

// input is a line read, or Ctrl-C.
type input struct {
	line      string
	interrupt bool
}

// Run reads commands until end of input or ctx ends, then waits for every
// outstanding result to be printed. It blocks; a read still blocked when
// ctx ends is abandoned (its goroutine ends with the process).
func (s *Session) Run(ctx context.Context, sub Submitter) error {
	if s.Prompt != nil {
		s.Out, s.Err = s.Prompt.Stdout(), s.Prompt.Stderr()
		s.write(s.Out, s.Banner)
	}
	s.cancel = make(chan struct{})
	inputs := make(chan input)
	readErr := make(chan error, 1)
	go func() {
		defer close(inputs)
		if err := s.read(ctx, inputs); err != nil {
			readErr <- err
		}
	}()

	var outstanding sync.WaitGroup
	seq := 0
	// Results keep arriving after ctx ends: a command already submitted is
	// reported, never abandoned.
	subCtx := context.WithoutCancel(ctx)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case in, ok := <-inputs:
			if !ok {
				break loop
			}
			if in.interrupt {
				s.interrupt()
				continue
			}
			cmd := strings.TrimRight(in.line, "\r\n")
			switch {
			case strings.TrimSpace(cmd) == "":
				continue
			}
			seq++
			n := seq
			if len(cmd) > MaxLineBytes {
				// Refused here: it would be refused by the master.
				err := fmt.Errorf("command of %d bytes not sent: the limit is %d", len(cmd), MaxLineBytes)
				s.print(n, &agent.Job{Cmd: cmd}, nil, err)
				continue
			}
			job := &agent.Job{Cmd: cmd, Timeout: s.Timeout, Cancel: s.started(), Via: messages.ViaPrompt}
			outstanding.Go(func() {
				res, err := sub.SubmitJob(subCtx, job)
				s.finished()
				s.print(n, job, res, err)
			})
		}
	}
	// Outstanding results are delivered. At a prompt, a signal (Ctrl-C,
	// now that the line editor is done) cancels their commands first; a
	// script's commands are left to finish.
	done := make(chan struct{})
	go func() {
		outstanding.Wait()
		close(done)
	}()
	leaving := errors.Is(context.Cause(ctx), ErrLeaving)
	switch n := s.count(); {
	case s.Prompt != nil && leaving && n > 0:
		s.write(s.Err, fmt.Sprintf("\nbaton: %v: taking no more commands; waiting for %d running\n", ErrLeaving, n))
	case s.Prompt != nil && leaving:
		s.write(s.Err, fmt.Sprintf("\nbaton: %v: taking no more commands\n", ErrLeaving))
	case s.Prompt != nil:
		if n > 0 && ctx.Err() == nil {
			s.write(s.Err, fmt.Sprintf("baton: waiting for %d running command(s); Ctrl-C cancels them\n", n))
		}
		select {
		case <-done:
		case <-ctx.Done():
			s.write(s.Err, "\n") // after the terminal's ^C
			s.interrupt()
		}
	}
	<-done
	select {
	case err := <-readErr:
		return err
	default:
		return nil
	}
}

// ErrLeaving is the cause of a session's end when node ctl asked its node
// to leave: its commands are left to finish, as a script's are.
var ErrLeaving = errors.New("node ctl asked this node to leave")

// count is how many submitted jobs have no result yet.
func (s *Session) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running
}

// read sends what the prompt or In gives, until end of input.
func (s *Session) read(ctx context.Context, inputs chan<- input) error {
	send := func(in input) bool {
		select {
		case inputs <- in:
			return true
		case <-ctx.Done():
			return false
		}
	}
	if s.Prompt != nil {
		for {
			line, err := s.Prompt.ReadLine()
			switch {
			case errors.Is(err, ErrInterrupt):
				if !send(input{interrupt: true}) {
					return nil
				}
			case errors.Is(err, io.EOF):
				return nil
			case err != nil:
				return fmt.Errorf("read commands: %w", err)
			case !send(input{line: line}):
				return nil
			}
		}
	}
	r := bufio.NewReader(s.In)
	for {
		line, err := r.ReadString('\n')
		if line != "" && !send(input{line: line}) {
			return nil
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read commands: %w", err)
		}
	}
}

// started counts a job in and returns the channel that cancels it.
func (s *Session) started() chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running++
	return s.cancel
}

// finished counts a job out.
func (s *Session) finished() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.running--
}

// interrupt cancels the running jobs (Ctrl-C); the line being typed is
// already cleared.
func (s *Session) interrupt() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running == 0 {
		if s.Prompt != nil {
			fmt.Fprintln(s.Err, "baton: nothing is running (Ctrl-D leaves)")
		}
		return
	}
	close(s.cancel)
	s.cancel = make(chan struct{})
	fmt.Fprintf(s.Err, "baton: cancelling %d running command(s)\n", s.running)
}

func (s *Session) write(w io.Writer, text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, _ = io.WriteString(w, text)
}

func (s *Session) print(n int, job *agent.Job, res *messages.ExecResult, err error) {
	if res == nil {
		res = &messages.ExecResult{Id: job.ID, ExitCode: -1}
	}
	if err != nil {
		res.Error = err.Error()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.JSON {
		enc := json.NewEncoder(s.Out)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(messages.NewResultJSON(job.ID, job.Cmd, res))
		return
	}
	// Each write goes whole to the prompt's writers, which redraw it.
	var out, errOut strings.Builder
	fmt.Fprintf(&out, "[%d] %s\n%s", n, Summary(job.Cmd, res), res.Stdout)
	errOut.WriteString(res.Stderr)
	errOut.WriteString(truncationNotes(fmt.Sprintf("[%d] ", n), res))
	for _, w := range []struct {
		to   io.Writer
		text string
	}{{s.Out, out.String()}, {s.Err, errOut.String()}} {
		if s.Prompt != nil && w.text != "" && !strings.HasSuffix(w.text, "\n") {
			// The prompt is redrawn on a line of its own.
			w.text += "\n"
		}
		if w.text != "" {
			_, _ = io.WriteString(w.to, w.text)
		}
	}
}

// summaryCmdRunes bounds the command a headline repeats: a pasted script
// is shown by its start.
const summaryCmdRunes = 100

// Summary is the one-line headline of a result: what ran, where, and how
// it ended.
func Summary(cmd string, res *messages.ExecResult) string {
	if r := []rune(cmd); len(r) > summaryCmdRunes {
		cmd = string(r[:summaryCmdRunes-1]) + "…"
	}
	where := ""
	switch {
	case res.Master != "" && res.Job != "":
		where = fmt.Sprintf(" on %s (epoch %d, job %s)", res.Master, res.Epoch, res.Job)
	case res.Master != "":
		where = fmt.Sprintf(" on %s (epoch %d)", res.Master, res.Epoch)
	}
	if res.Error != "" {
		return fmt.Sprintf("%s%s: error: %s", cmd, where, res.Error)
	}
	return fmt.Sprintf("%s%s: exit %d in %dms", cmd, where, res.ExitCode, res.DurationMs)
}
