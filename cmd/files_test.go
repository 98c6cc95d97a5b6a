package e2e

import (
	"archive/zip"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"baton/bus"
	"baton/messages"
)

// servingCluster starts a broker with brokerArgs and one node, master,
// and returns once it serves.
func servingCluster(t testing.TB, master string, brokerArgs ...string) *cluster {
	t.Helper()
	c := newCluster(t, brokerArgs...)
	c.node(master, 1, procOpts{}, "--serve")
	c.watch().waitMaster(master, time.Time{}, 10*time.Second)
	return c
}

// zipEntry is one entry of a zip a test makes.
type zipEntry struct {
	name string
	data string
	mode fs.FileMode // 0644 when 0; fs.ModeSymlink makes data the target
	// claim, when set, is the uncompressed size the zip's headers claim:
	// a zip bomb lies.
	claim uint64
}

// makeZip writes entries as a zip at path.
func makeZip(t testing.TB, path string, entries ...zipEntry) {
	t.Helper()
	var buf bytes.Buffer
	z := zip.NewWriter(&buf)
	for _, e := range entries {
		h := &zip.FileHeader{Name: e.name, Method: zip.Deflate}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		h.SetMode(mode)
		w, err := z.CreateHeader(h)
		if err == nil {
			_, err = io.WriteString(w, e.data)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := z.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	for _, e := range entries {
		if e.claim > 0 {
			data = lie(t, data, e.name, e.claim)
		}
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// lie rewrites the uncompressed size the central directory of zip data
// claims for name.
func lie(t testing.TB, data []byte, name string, claim uint64) []byte {
	t.Helper()
	sig := []byte{'P', 'K', 1, 2}
	for i := bytes.Index(data, sig); i >= 0; {
		nameLen := int(data[i+28]) | int(data[i+29])<<8
		if string(data[i+46:i+46+nameLen]) == name {
			size := uint32(claim)
			copy(data[i+24:i+28], []byte{byte(size), byte(size >> 8), byte(size >> 16), byte(size >> 24)})
			return data
		}
		next := bytes.Index(data[i+4:], sig)
		if next < 0 {
			break
		}
		i += 4 + next
	}
	t.Fatalf("no central directory entry for %s", name)
	return nil
}

// unzip reads the files of the zip at path.
func unzip(t testing.TB, path string) map[string]string {
	t.Helper()
	z, err := zip.OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	defer z.Close()
	out := make(map[string]string)
	for _, f := range z.File {
		r, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		out[f.Name] = string(b)
	}
	return out
}

// workDirs lists what is left under a node's work root: the job
// directories of every node's directory.
func workDirs(t testing.TB, root string) []string {
	t.Helper()
	var left []string
	nodes, _ := os.ReadDir(root)
	for _, n := range nodes {
		entries, _ := os.ReadDir(filepath.Join(root, n.Name()))
		for _, e := range entries {
			if e.Name() != ".lock" {
				left = append(left, filepath.Join(n.Name(), e.Name()))
			}
		}
	}
	return left
}

// execIn runs `node exec ARGS...` in dir and returns stdout, stderr and
// the exit code.
func (c *cluster) execIn(dir string, args ...string) (string, string, int) {
	c.t.Helper()
	p := start(c.t, "exec", bins.node, procOpts{dir: dir}, append([]string{"exec", "--broker-addr=" + c.addr}, args...)...)
	code := p.wait(60 * time.Second)
	return p.stdout.String(), p.stderr.String(), code
}

// The P2P peers' exchange: a zip holding main.py and input.csv goes with
// the command; a zip of what it made, stdout.txt and stderr.txt comes
// back, also later with node job --download, and for a JSON request on
// exec.request inline.
func TestFilesP2P(t *testing.T) {
	t.Parallel() // mostly waiting
	c := servingCluster(t, "peer")
	dir := t.TempDir()
	task := []zipEntry{
		{name: "main.py", data: `import csv, os, sys
rows = list(csv.DictReader(open(sys.argv[1])))
os.makedirs("out", exist_ok=True)
with open("out/summary.csv", "w") as f:
    f.write("rows,total\n%d,%d\n" % (len(rows), sum(int(r["value"]) for r in rows)))
print("summarised", len(rows), "rows")
print("a warning", file=sys.stderr)
`},
		{name: "input.csv", data: "name,value\na,1\nb,2\nc,39\n"},
	}
	makeZip(t, filepath.Join(dir, "task.zip"), task...)
	stdout, stderr, code := c.execIn(dir, "--bundle", "task.zip", "--collect", "out/*", "--out", "result.zip", "--", "python3", "main.py", "input.csv")
	if code != 0 || stdout != "summarised 3 rows\n" || !strings.Contains(stderr, "a warning") || !strings.Contains(stderr, "1 file brought back to ") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	want := map[string]string{"out/summary.csv": "rows,total\n3,42\n", "stdout.txt": "summarised 3 rows\n", "stderr.txt": "a warning\n"}
	if got := unzip(t, filepath.Join(dir, "result.zip")); !mapsEqual(got, want) {
		t.Fatalf("result.zip holds %q, want %q", got, want)
	}

	t.Run("download after the fact", func(t *testing.T) {
		p := start(t, "jobs", bins.node, procOpts{}, "jobs", "--json", "--broker-addr="+c.addr)
		if code := p.wait(15 * time.Second); code != 0 {
			t.Fatalf("node jobs: exit %d: %s", code, p.stderr.String())
		}
		var job messages.JobSummary
		if err := json.Unmarshal([]byte(strings.Split(p.stdout.String(), "\n")[0]), &job); err != nil {
			t.Fatal(err)
		}
		p = start(t, "job", bins.node, procOpts{dir: dir}, "job", job.ID, "--download", "later", "--broker-addr="+c.addr)
		if code := p.wait(15 * time.Second); code != 0 || !strings.Contains(p.stderr.String(), "inputs:    2 files") ||
			!strings.Contains(p.stderr.String(), "outputs:   1 file") {
			t.Fatalf("node job --download: exit %d, stderr %q", code, p.stderr.String())
		}
		if b, err := os.ReadFile(filepath.Join(dir, "later", "out", "summary.csv")); err != nil || string(b) != want["out/summary.csv"] {
			t.Fatalf("later/out/summary.csv: %q, %v", b, err)
		}
		p = start(t, "job", bins.node, procOpts{dir: dir}, "job", job.ID, "--download", "later", "--broker-addr="+c.addr)
		if code := p.wait(15 * time.Second); code != 1 || !strings.Contains(p.stderr.String(), "not empty; nothing is overwritten") {
			t.Fatalf("a second download into the same directory: exit %d, stderr %q", code, p.stderr.String())
		}
	})

	t.Run("JSON on exec.request", func(t *testing.T) {
		zipped, err := os.ReadFile(filepath.Join(dir, "task.zip"))
		if err != nil {
			t.Fatal(err)
		}
		req, _ := json.Marshal(map[string]any{"cmd": "python3 main.py input.csv", "bundle": base64.StdEncoding.EncodeToString(zipped), "collect": []string{"out/*"}})
		nc, err := bus.Connect(ctxTimeout(t, 10*time.Second), c.conn("p2p-peer"))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		msg, err := nc.Request(messages.SubjectExec, req, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var res messages.ResultJSON
		if err := json.Unmarshal(msg.Data, &res); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "r.zip")
		if err := os.WriteFile(path, res.ResultBundle, 0o600); err != nil {
			t.Fatal(err)
		}
		if got := unzip(t, path); res.ExitCode != 0 || !mapsEqual(got, want) {
			t.Fatalf("exit %d, error %q, result_bundle holds %q, want %q", res.ExitCode, res.Error, got, want)
		}
	})
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// --file sends files and directories with their modes, and the same
// input twice is stored once; --collect brings a directory back whole.
func TestFilesRoundTrip(t *testing.T) {
	t.Parallel() // mostly waiting
	c := servingCluster(t, "master")
	dir := t.TempDir()
	script := filepath.Join(dir, "run.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho ran $0\n"), 0o750); err != nil {
		t.Fatal(err)
	}
	tree := map[string]struct {
		data string
		mode fs.FileMode
	}{
		"data/a.txt":        {"alpha\n", 0o644},
		"data/sub/b.sh":     {"#!/bin/sh\n", 0o755},
		"data/sub/deep/c":   {"", 0o600},
		"data/sub/ro.conf":  {"x=1\n", 0o444},
		"data/sub/deep/d.b": {strings.Repeat("z", 300<<10), 0o640},
	}
	for name, f := range tree {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f.data), f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, f.mode); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("an executable keeps its execute bit", func(t *testing.T) {
		stdout, stderr, code := c.execIn(dir, "--file", "run.sh", "--", "./run.sh && stat -c %a run.sh")
		if code != 0 || stdout != "ran ./run.sh\n750\n" {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
		}
	})

	t.Run("a directory goes and comes back", func(t *testing.T) {
		stdout, stderr, code := c.execIn(dir, "--file", "data", "--collect", "data", "--out", "back", "--", "find data -type f | sort")
		if code != 0 || stdout != "data/a.txt\ndata/sub/b.sh\ndata/sub/deep/c\ndata/sub/deep/d.b\ndata/sub/ro.conf\n" {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
		}
		for name, f := range tree {
			p := filepath.Join(dir, "back", name)
			b, err := os.ReadFile(p)
			info, serr := os.Stat(p)
			if err != nil || serr != nil || string(b) != f.data || info.Mode().Perm() != f.mode {
				t.Errorf("%s came back as %d bytes, mode %v (%v, %v); want %d bytes, mode %v", name, len(b), info.Mode().Perm(), err, serr, len(f.data), f.mode)
			}
		}
	})

	t.Run("the same input is stored once", func(t *testing.T) {
		before := strings.Count(c.broker.stderr.String(), `msg="archive stored"`)
		for range 2 {
			if _, stderr, code := c.execIn(dir, "--file", "data", "--", "true"); code != 0 {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
		}
		if stored := strings.Count(c.broker.stderr.String(), `msg="archive stored"`) - before; stored != 0 {
			// The subtest before sent these very bytes.
			t.Fatalf("the broker stored the same input %d more times, want 0", stored)
		}
	})
}

// Archives that would write outside the work directory, link out of it or
// unpack past the limits are refused with a clear error, the command
// unrun, and leave nothing behind.
func TestFilesHostileArchives(t *testing.T) {
	t.Parallel() // mostly waiting
	c := newCluster(t, "--max-bundle-bytes=1MiB", "--max-bundle-files=20")
	nodeDir := t.TempDir()
	c.node("master", 1, procOpts{dir: nodeDir}, "--serve")
	c.watch().waitMaster("master", time.Time{}, 10*time.Second)
	dir := t.TempDir()
	outside := filepath.Join(dir, "outside")
	bomb := strings.Repeat("\x00", 8<<20)
	cases := []struct {
		name    string
		entries []zipEntry
		wantErr string
	}{
		{"a path up and out", []zipEntry{{name: "../../../outside", data: "x"}}, "../../../outside leads out of the work directory"},
		{"an absolute path", []zipEntry{{name: outside, data: "x"}}, outside + " is an absolute path"},
		{"a link out", []zipEntry{{name: "link", data: "../../..", mode: fs.ModeSymlink | 0o777}, {name: "link/outside", data: "x"}},
			"link links to ../../.., outside the work directory"},
		{"a zip bomb whose headers lie", []zipEntry{{name: "zeros", data: bomb, claim: 1000}}, "zeros holds other than the 1000 bytes its headers say (a zip bomb, or a damaged archive)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			makeZip(t, filepath.Join(dir, "evil.zip"), tc.entries...)
			stdout, stderr, code := c.execIn(dir, "--bundle", "evil.zip", "--", "echo ran")
			if code != 125 || stdout != "" || !strings.Contains(stderr, `rejected: input "evil.zip": bundle: unsafe archive: `+tc.wantErr) {
				t.Errorf("exit %d, stdout %q, stderr %q; want 125 and %q", code, stdout, stderr, tc.wantErr)
			}
			// Where the absolute path points, and where ../../../ and the
			// link lead from a job's directory (work/NODE/JOB).
			for _, p := range []string{outside, filepath.Join(nodeDir, "outside")} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("%s was written", p)
				}
			}
			if left := workDirs(t, filepath.Join(nodeDir, "work")); len(left) > 0 {
				t.Errorf("left in the work root: %v", left)
			}
		})
	}

	t.Run("an honest zip bomb is refused before it is sent", func(t *testing.T) {
		makeZip(t, filepath.Join(dir, "bomb.zip"), zipEntry{name: "zeros", data: bomb})
		_, stderr, code := c.execIn(dir, "--bundle", "bomb.zip", "--", "echo ran")
		if code != 125 || !strings.Contains(stderr, "8 MiB, over the broker's --max-bundle-bytes of 1 MiB; nothing was sent") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
}

// Inputs over the broker's limits are refused before anything is sent.
func TestFilesLimits(t *testing.T) {
	t.Parallel() // mostly waiting
	c := servingCluster(t, "master", "--max-bundle-bytes=1MiB", "--max-bundle-files=3")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "big"), bytes.Repeat([]byte("x"), 2<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b", "c", "d"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"too many bytes", []string{"--file", "big"}, "2 MiB, over the broker's --max-bundle-bytes of 1 MiB; nothing was sent"},
		{"too many files", []string{"--file", "a", "--file", "b", "--file", "c", "--file", "d"}, "more than 3 files, over the broker's --max-bundle-files of 3; nothing was sent"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := c.execIn(dir, append(tc.args, "--", "echo ran")...)
			if code != 125 || !strings.Contains(stderr, tc.wantErr) || !strings.Contains(stderr, "the command did not run") {
				t.Errorf("exit %d, stderr %q; want 125 and %q", code, stderr, tc.wantErr)
			}
		})
	}
	if n := strings.Count(c.broker.stderr.String(), `msg="archive stored"`); n != 0 {
		t.Errorf("the broker stored %d archives, want none", n)
	}

	t.Run("outputs over the limit", func(t *testing.T) {
		stdout, stderr, code := c.execIn(dir, "--collect", "*", "--", "touch 1 2 3 4; echo made")
		if code != 125 || stdout != "made\n" || !strings.Contains(stderr, "collect: bundle: the files are over a limit: more than 3 files to bring back, over the broker's --max-bundle-files of 3") {
			t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
		}
		// The job ran: the history has it ended, failed.
		eventually(t, 10*time.Second, "the job recorded failed", func() bool {
			p := start(t, "jobs", bins.node, procOpts{}, "jobs", "--state", "failed", "--broker-addr="+c.addr)
			p.wait(15 * time.Second)
			return strings.Contains(p.stdout.String(), "touch 1 2 3 4")
		})
	})

	t.Run("a bad pattern is refused before anything runs", func(t *testing.T) {
		for _, glob := range []string{"../*", "/etc/passwd", "["} {
			_, stderr, code := c.execIn(dir, "--collect", glob, "--", "touch ran")
			if code != 2 || !strings.Contains(stderr, "bad --collect pattern") {
				t.Errorf("--collect %q: exit %d, stderr %q; want a usage error", glob, code, stderr)
			}
		}
	})
}

// A work directory is gone however its command ends: a timeout, a cancel,
// and a kill -9 of its master (the node's next start removes it).
func TestFilesWorkDirectoriesRemoved(t *testing.T) {
	t.Parallel() // mostly waiting
	c := newCluster(t)
	nodeDir := t.TempDir()
	master := c.node("master", 1, procOpts{dir: nodeDir}, "--serve")
	w := c.watch()
	w.waitMaster("master", time.Time{}, 10*time.Second)
	root := filepath.Join(nodeDir, "work")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "in.txt"), []byte("input"), 0o644); err != nil {
		t.Fatal(err)
	}
	// running waits until the command has made its mark in its work
	// directory.
	running := func(t *testing.T) {
		t.Helper()
		eventually(t, 10*time.Second, "the command runs in its work directory", func() bool {
			m, _ := filepath.Glob(filepath.Join(root, "master.*", "*", "started"))
			return len(m) == 1
		})
	}
	const cmd = "touch started; chmod 500 .; sleep 30"

	t.Run("timeout", func(t *testing.T) {
		_, stderr, code := c.execIn(dir, "--file", "in.txt", "--timeout", "1s", "--", cmd)
		if code != 124 {
			t.Fatalf("exit %d, stderr %q", code, stderr)
		}
		if left := workDirs(t, root); len(left) > 0 {
			t.Fatalf("left: %v", left)
		}
	})

	t.Run("cancel", func(t *testing.T) {
		p := start(t, "exec", bins.node, procOpts{dir: dir}, "exec", "--broker-addr="+c.addr, "--file", "in.txt", "--", cmd)
		running(t)
		p.signal(syscall.SIGINT)
		if code := p.wait(15 * time.Second); code != 130 {
			t.Fatalf("exit %d, stderr %q", code, p.stderr.String())
		}
		if left := workDirs(t, root); len(left) > 0 {
			t.Fatalf("left: %v", left)
		}
	})

	t.Run("kill -9 of the master", func(t *testing.T) {
		start(t, "exec", bins.node, procOpts{dir: dir}, "exec", "--broker-addr="+c.addr, "--file", "in.txt", "--", cmd)
		running(t)
		master.signal(syscall.SIGKILL)
		master.wait(10 * time.Second)
		if left := workDirs(t, root); len(left) != 1 {
			t.Fatalf("left after the kill: %v, want the job's directory", left)
		}
		again := c.node("master", 1, procOpts{dir: nodeDir}, "--serve")
		eventually(t, 10*time.Second, "the restarted node removes what it left", func() bool { return len(workDirs(t, root)) == 0 })
		eventually(t, 5*time.Second, "the restarted node says so", func() bool {
			return strings.Contains(again.stderr.String(), "removed a work directory a killed node left")
		})
	})
}

// The archives of a job go when its record leaves the history.
func TestFilesExpireWithHistory(t *testing.T) {
	t.Parallel() // mostly waiting
	c := servingCluster(t, "master", "--history-max-age=2s")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "in.txt"), []byte("expiring input"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := c.execIn(dir, "--file", "in.txt", "--collect", "out.txt", "--", "cp in.txt out.txt"); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	logs := func() string { return c.broker.stderr.String() }
	if n := strings.Count(logs(), `msg="archive stored"`); n != 2 {
		t.Fatalf("the broker stored %d archives, want the input and the output", n)
	}
	eventually(t, 15*time.Second, "both archives deleted once the job expired", func() bool {
		return strings.Count(logs(), `msg="archive deleted: no job names it"`) == 2
	})
}

// Files need the history: a broker without one refuses them before
// anything runs.
func TestFilesNeedHistory(t *testing.T) {
	t.Parallel() // mostly waiting
	c := servingCluster(t, "master", "--no-history")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "in.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(dir, "ran")
	for _, args := range [][]string{{"--file", "in.txt"}, {"--collect", "out.txt"}} {
		_, stderr, code := c.execIn(dir, append(args, "--", "touch "+marker)...)
		if code != 125 || !strings.Contains(stderr, "the broker keeps no files") || !strings.Contains(stderr, "the command did not run") {
			t.Errorf("%v: exit %d, stderr %q", args, code, stderr)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Fatalf("%v: the command ran", args)
		}
	}
}
