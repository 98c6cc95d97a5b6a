package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"baton/internal/testlog"
)

// terminal is a process running on a pseudo-terminal, as a person at a
// terminal runs it: what it prints is read from the terminal's master side
// and what the test types is written there.
type terminal struct {
	t      testing.TB
	master *os.File
	out    *testlog.Buffer
	cmd    *exec.Cmd
	done   chan struct{}
}

// openPTY opens a pseudo-terminal pair, 80 columns by 24 rows.
func openPTY(t testing.TB) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pty slave: %v", err)
	}
	if err := unix.IoctlSetWinsize(int(s.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: 80}); err != nil {
		t.Fatalf("pty size: %v", err)
	}
	return m, s
}

// startTerminal runs bin with args on a new pseudo-terminal, as the
// controlling terminal of a session of its own; it is killed when the test
// ends unless it exited.
func startTerminal(t testing.TB, bin string, env []string, args ...string) *terminal {
	t.Helper()
	m, s := openPTY(t)
	term := &terminal{t: t, master: m, out: &testlog.Buffer{}, done: make(chan struct{})}
	term.cmd = exec.Command(bin, args...)
	term.cmd.Env = append(append(os.Environ(), "TERM=xterm"), env...)
	term.cmd.Stdin, term.cmd.Stdout, term.cmd.Stderr = s, s, s
	term.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := term.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := m.Read(buf)
			term.out.Write(buf[:n])
			// As a terminal does, answer where the cursor is when asked
			// (a line editor asks before it draws its prompt).
			for range strings.Count(string(buf[:n]), "\x1b[6n") {
				_, _ = m.WriteString("\x1b[24;1R")
			}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		_ = term.cmd.Wait()
		close(term.done)
	}()
	t.Cleanup(func() {
		select {
		case <-term.done:
		default:
			_ = term.cmd.Process.Kill()
			<-term.done
		}
		m.Close()
		if t.Failed() {
			t.Logf("terminal screen: %q", term.out.String())
		}
	})
	return term
}

// typeKeys writes what a person types: text, control keys, escape
// sequences.
func (term *terminal) typeKeys(keys string) {
	term.t.Helper()
	// A terminal delivers a long paste in pieces: so does this.
	for len(keys) > 0 {
		n := min(len(keys), 1024)
		if _, err := term.master.WriteString(keys[:n]); err != nil {
			term.t.Fatalf("type: %v", err)
		}
		keys = keys[n:]
	}
}

// waitFor waits until the screen has shown s (count times, at least).
func (term *terminal) waitFor(s string, count int, timeout time.Duration) time.Time {
	term.t.Helper()
	deadline := time.Now().Add(timeout)
	for strings.Count(term.out.String(), s) < count {
		if time.Now().After(deadline) {
			term.t.Fatalf("the terminal did not show %q (%d times) within %v", s, count, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Now()
}

// wait waits for the process to exit and returns its exit code.
func (term *terminal) wait(timeout time.Duration) int {
	term.t.Helper()
	select {
	case <-term.done:
		return term.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		term.t.Fatalf("still running after %v", timeout)
		return -1
	}
}

// The prompt on a terminal: a banner naming the broker and the master,
// history recalled with the up arrow (and kept, for the user alone), a
// 10,000-byte line sent whole, Ctrl-C cancelling a command running on the
// master, and Ctrl-D leaving.
func TestPrompt(t *testing.T) {
	c := newCluster(t)
	w := c.watch()
	c.node("alpha", 100, procOpts{}, "--serve")
	_, epoch := w.waitMaster("alpha", time.Time{}, 10*time.Second)
	state := t.TempDir()
	term := startTerminal(t, bins.node, []string{"XDG_STATE_HOME=" + state},
		"--broker-addr="+c.addr, "--name=typist", "--priority=1")
	term.waitFor(fmt.Sprintf("baton: joined the broker at %s as typist, priority 1; master: alpha (epoch %d)", c.addr, epoch), 1, 10*time.Second)
	term.waitFor("> ", 1, 5*time.Second)

	term.typeKeys("echo one\r")
	term.waitFor(fmt.Sprintf("[1] echo one on alpha (epoch %d, job ", epoch), 1, 10*time.Second)
	term.waitFor("): exit 0", 1, 5*time.Second)
	term.typeKeys("\x1b[A\r") // up arrow, enter: the same command again
	term.waitFor(fmt.Sprintf("[2] echo one on alpha (epoch %d, job ", epoch), 1, 10*time.Second)
	term.waitFor("): exit 0", 2, 5*time.Second)

	long := "echo " + strings.Repeat("a", 9990) + " | wc -c"
	term.typeKeys(long + "\r")
	// The line editor redraws the line at each key: with the race
	// detector, a 10 KB paste takes 25 s on a 2-core machine (3 s without).
	t0 := time.Now()
	term.waitFor("[3] echo aaa", 1, 60*time.Second)
	t.Logf("a 10 KB line took %v", time.Since(t0))
	term.waitFor("9991", 1, 5*time.Second)

	term.typeKeys("sleep 4; echo finished\r")
	time.Sleep(time.Second) // running on alpha now
	term.typeKeys("\x03")   // Ctrl-C
	term.waitFor("baton: cancelling 1 running command(s)", 1, 5*time.Second)
	term.waitFor("[4] sleep 4; echo finished on alpha", 1, 2*time.Second)
	term.waitFor("error: cancelled after", 1, time.Second)

	// Ctrl-C on a draft only clears it.
	term.typeKeys("echo draft")
	term.waitFor("echo draft", 1, 2*time.Second)
	term.typeKeys("\x03")
	term.typeKeys("echo after\r")
	term.waitFor("[5] echo after on alpha", 1, 10*time.Second)
	if strings.Contains(term.out.String(), "draftecho") || strings.Count(term.out.String(), "baton: cancelling") != 1 {
		t.Errorf("Ctrl-C on a draft did more than clear it:\n%s", term.out.String())
	}

	// Ctrl-D leaves once the outstanding results are in; Ctrl-C meanwhile
	// cancels them.
	term.typeKeys("sleep 4; echo late\r")
	time.Sleep(500 * time.Millisecond)
	term.typeKeys("\x04") // Ctrl-D
	term.waitFor("baton: waiting for 1 running command(s); Ctrl-C cancels them", 1, 5*time.Second)
	term.typeKeys("\x03")
	term.waitFor("[6] sleep 4; echo late on alpha", 1, 3*time.Second)
	if code := term.wait(10 * time.Second); code != 0 {
		t.Errorf("exit %d after Ctrl-D, want 0", code)
	}
	if strings.Contains(term.out.String(), "\r\nfinished\r\n") {
		t.Errorf("the cancelled command finished:\n%s", term.out.String())
	}
	hist := state + "/baton/history"
	st, err := os.Stat(hist)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("history file mode %v, want 0600", st.Mode().Perm())
	}
	b, _ := os.ReadFile(hist)
	if !strings.HasPrefix(string(b), "echo one\necho one\n"+long+"\nsleep 4; echo finished\necho after\n") {
		t.Errorf("history file holds %q", b)
	}
}

// node ctl NAME leave, asked of a node at its prompt: the commands typed
// there finish, the prompt says why it takes no more, and the node exits
// 0.
func TestPromptLeave(t *testing.T) {
	t.Parallel() // mostly waiting
	c := newCluster(t)
	w := c.watch()
	c.node("alpha", 100, procOpts{}, "--serve")
	w.waitMaster("alpha", time.Time{}, 10*time.Second)
	term := startTerminal(t, bins.node, []string{"XDG_STATE_HOME=" + t.TempDir()},
		"--broker-addr="+c.addr, "--name=typist", "--priority=1")
	term.waitFor("> ", 1, 10*time.Second)
	c.waitMembers(2)
	term.typeKeys("sleep 2; echo fin\r")
	time.Sleep(500 * time.Millisecond) // running on alpha now
	p := start(t, "ctl", bins.node, procOpts{}, "ctl", "--broker-addr="+c.addr, "typist", "leave")
	if code := p.wait(15 * time.Second); code != 0 || p.stdout.String() != "typist: leaving the cluster, as on SIGTERM\n" {
		t.Errorf("ctl typist leave: exit %d, %q %q", code, p.stdout.String(), p.stderr.String())
	}
	term.waitFor("baton: node ctl asked this node to leave: taking no more commands; waiting for 1 running", 1, 5*time.Second)
	term.waitFor("[1] sleep 2; echo fin on alpha", 1, 10*time.Second)
	if code := term.wait(10 * time.Second); code != 0 {
		t.Errorf("exit %d after leaving, want 0", code)
	}
	if out := term.out.String(); !strings.Contains(out, "\r\nfin\r\n") || strings.Contains(out, "baton: cancelling") {
		t.Errorf("the command typed did not finish:\n%q", out)
	}
}
