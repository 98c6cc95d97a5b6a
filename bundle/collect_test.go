package bundle_test

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"baton/bundle"
)

// write makes files under dir: name to content, modes as given.
func write(t testing.TB, dir string, files map[string]string, modes map[string]os.FileMode) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := modes[name]
		if mode == 0 {
			mode = 0o644
		}
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
}

// What a command made comes back as the globs say, modes and contents
// kept, in a zip beside stdout.txt and stderr.txt: the P2P peers'
// result, which unpacks again to the same files.
func TestCollect_RoundTrip(t *testing.T) {
	work := t.TempDir()
	write(t, work, map[string]string{
		"out/summary.csv":  "total,3\n",
		"out/deep/run.sh":  "#!/bin/sh\n",
		"input.csv":        "a\n",
		"notes/readme.txt": "hi\n",
	}, map[string]os.FileMode{"out/deep/run.sh": 0o755})
	if err := os.Symlink("/etc/passwd", filepath.Join(work, "out", "passwd")); err != nil {
		t.Fatal(err)
	}
	files, err := bundle.Collect(work, []string{"out/*", "notes/readme.txt", "out/summary.csv"}, limits)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, f.Name)
	}
	if got := strings.Join(names, " "); got != "notes/readme.txt out/deep/run.sh out/summary.csv" {
		t.Fatalf("collected %s, want the two out/ files (no link) and notes/readme.txt, once each", got)
	}
	var zipped bytes.Buffer
	packed, err := bundle.WriteZip(&zipped, work, files, bundle.Extra{Name: "stdout.txt", Data: []byte("done\n")}, bundle.Extra{Name: "stderr.txt"})
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256([]byte("total,3\n"))
	if packed[2].Name != "out/summary.csv" || packed[2].SHA256 != hex.EncodeToString(want[:]) || packed[2].Size != 8 {
		t.Errorf("packed %+v, want out/summary.csv's size and SHA-256", packed[2])
	}
	z, err := zip.NewReader(bytes.NewReader(zipped.Bytes()), int64(zipped.Len()))
	if err != nil {
		t.Fatal(err)
	}
	var inZip []string
	for _, f := range z.File {
		inZip = append(inZip, f.Name)
		if f.Name == "stdout.txt" {
			r, _ := f.Open()
			b, _ := io.ReadAll(r)
			if string(b) != "done\n" {
				t.Errorf("stdout.txt holds %q", b)
			}
		}
	}
	if got := strings.Join(inZip, " "); got != "notes/readme.txt out/deep/run.sh out/summary.csv stdout.txt stderr.txt" {
		t.Errorf("the zip holds %s", got)
	}
	// Unpacked again, the script is still executable.
	archive := filepath.Join(t.TempDir(), "result.zip")
	if err := os.WriteFile(archive, zipped.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	_, again := workDir(t)
	if _, err := bundle.Unpack(archive, bundle.Zip, again, limits); err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(filepath.Join(again, "out/deep/run.sh")); err != nil || info.Mode().Perm() != 0o755 {
		t.Errorf("run.sh after the round trip: %v %v, want mode 0755", info, err)
	}
}

// Collecting is refused before anything is read when the globs climb out
// or match more than the limits allow.
func TestCollect_Refused(t *testing.T) {
	work := t.TempDir()
	write(t, work, map[string]string{"a": strings.Repeat("x", 600_000), "b": strings.Repeat("y", 600_000)}, nil)
	for _, c := range []struct {
		globs []string
		says  string
	}{
		{[]string{"../*"}, "leads out of the work directory"},
		{[]string{"/etc/*"}, "is absolute"},
		{[]string{"*"}, "more than 1 MiB to bring back (at b), over the broker's --max-bundle-bytes of 1 MiB"},
		{[]string{"["}, "syntax error"},
	} {
		_, err := bundle.Collect(work, c.globs, limits)
		if err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("Collect(%q): %v, want %q", c.globs, err, c.says)
		}
	}
	if _, err := bundle.Collect(work, []string{"a", "b"}, bundle.Limits{MaxBytes: 1 << 30, MaxFiles: 1}); !errors.Is(err, bundle.ErrTooMuch) {
		t.Errorf("Collect of 2 files with room for 1: %v, want ErrTooMuch", err)
	}
}
