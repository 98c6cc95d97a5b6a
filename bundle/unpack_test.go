package bundle_test

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"baton/bundle"
)

// entry is one entry of a test archive.
type entry struct {
	name   string
	body   string
	mode   fs.FileMode // with fs.ModeDir, fs.ModeSymlink, fs.ModeDevice for those
	link   string      // a symlink's target, or a hard link's (mode 0)
	big    int64       // zeros, instead of body: a bomb's content
	isHard bool
}

// writeZip makes a zip of entries in dir.
func writeZip(t testing.TB, dir string, entries ...entry) string {
	t.Helper()
	var b bytes.Buffer
	z := zip.NewWriter(&b)
	for _, e := range entries {
		h := &zip.FileHeader{Name: e.name, Method: zip.Deflate}
		h.SetMode(e.mode)
		w, err := z.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case e.mode&fs.ModeSymlink != 0:
			_, err = w.Write([]byte(e.link))
		case e.big > 0:
			chunk := make([]byte, 1<<20)
			for n := e.big; n > 0 && err == nil; n -= int64(len(chunk)) {
				_, err = w.Write(chunk[:min(n, int64(len(chunk)))])
			}
		default:
			_, err = w.Write([]byte(e.body))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := z.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "bundle.zip")
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeTarGz makes a .tar.gz of entries in dir.
func writeTarGz(t testing.TB, dir string, entries ...entry) string {
	t.Helper()
	var b bytes.Buffer
	gz := gzip.NewWriter(&b)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: int64(e.mode.Perm()), Size: int64(len(e.body))}
		switch {
		case e.isHard:
			h.Typeflag, h.Linkname, h.Size = tar.TypeLink, e.link, 0
		case e.mode&fs.ModeSymlink != 0:
			h.Typeflag, h.Linkname, h.Size = tar.TypeSymlink, e.link, 0
		case e.mode.IsDir():
			h.Typeflag, h.Size = tar.TypeDir, 0
		case e.mode&fs.ModeDevice != 0:
			h.Typeflag, h.Size = tar.TypeChar, 0
		default:
			h.Typeflag = tar.TypeReg
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "bundle.tar.gz")
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

var limits = bundle.Limits{MaxBytes: 1 << 20, MaxFiles: 100}

// A work directory inside a directory of its own, so that a test can see
// that nothing landed beside it.
func workDir(t testing.TB) (parent, work string) {
	parent = t.TempDir()
	work = filepath.Join(parent, "work")
	if err := os.Mkdir(work, 0o700); err != nil {
		t.Fatal(err)
	}
	return parent, work
}

// An archive unpacks to exactly its files, with their modes: a script
// stays executable.
func TestUnpack_FilesAndModes(t *testing.T) {
	entries := []entry{
		{name: "main.py", body: "print('hi')\n", mode: 0o644},
		{name: "run.sh", body: "#!/bin/sh\necho run\n", mode: 0o755},
		{name: "data/", mode: fs.ModeDir | 0o755},
		{name: "data/input.csv", body: "a,b\n1,2\n", mode: 0o600},
		{name: "data/latest", mode: fs.ModeSymlink | 0o777, link: "input.csv"},
	}
	for name, write := range map[string]func(testing.TB, string, ...entry) string{"zip": writeZip, "tar.gz": writeTarGz} {
		t.Run(name, func(t *testing.T) {
			archive := write(t, t.TempDir(), entries...)
			f, err := bundle.FormatOf(archive)
			if err != nil {
				t.Fatal(err)
			}
			_, work := workDir(t)
			files, err := bundle.Unpack(archive, f, work, limits)
			if err != nil {
				t.Fatal(err)
			}
			if len(files) != len(entries) {
				t.Errorf("unpacked %v, want %d entries", files, len(entries))
			}
			for _, c := range []struct {
				path string
				mode fs.FileMode
			}{{"main.py", 0o644}, {"run.sh", 0o755}, {"data/input.csv", 0o600}} {
				info, err := os.Stat(filepath.Join(work, c.path))
				if err != nil || info.Mode().Perm() != c.mode {
					t.Errorf("%s: %v %v, want mode %v", c.path, info, err, c.mode)
				}
			}
			if b, err := os.ReadFile(filepath.Join(work, "data/latest")); err != nil || string(b) != "a,b\n1,2\n" {
				t.Errorf("data/latest reads %q %v, want input.csv's content", b, err)
			}
		})
	}
}

// Hostile archives are refused with a clear error, and nothing lands
// outside the work directory.
func TestUnpack_Hostile(t *testing.T) {
	for _, c := range []struct {
		name    string
		entries []entry
		says    string
	}{
		{"climbs out", []entry{{name: "../evil", body: "x", mode: 0o644}}, "leads out of the work directory"},
		{"climbs out deeper", []entry{{name: "a/../../evil", body: "x", mode: 0o644}}, "leads out of the work directory"},
		{"absolute path", []entry{{name: "/tmp/evil", body: "x", mode: 0o644}}, "absolute path"},
		{"link to an absolute path", []entry{{name: "etc", mode: fs.ModeSymlink | 0o777, link: "/etc"}}, "absolute path"},
		{"link out", []entry{{name: "up", mode: fs.ModeSymlink | 0o777, link: "../evil"}}, "outside the work directory"},
		{"link out through a link", []entry{
			{name: "a", mode: fs.ModeSymlink | 0o777, link: "."},
			{name: "e", mode: fs.ModeSymlink | 0o777, link: "a/.."},
		}, "through another link"},
		{"write through a link", []entry{
			{name: "sub", mode: fs.ModeSymlink | 0o777, link: "."},
			{name: "sub", body: "replaces the link?", mode: 0o644},
		}, "in the archive twice"},
		{"too many files", func() []entry {
			var es []entry
			for i := range 150 {
				es = append(es, entry{name: "f" + strings.Repeat("x", i), body: "x", mode: 0o644})
			}
			return es
		}(), "more than 100 files"},
		{"backslash", []entry{{name: `..\evil`, body: "x", mode: 0o644}}, "backslash"},
	} {
		for format, write := range map[string]func(testing.TB, string, ...entry) string{"zip": writeZip, "tar.gz": writeTarGz} {
			t.Run(c.name+" "+format, func(t *testing.T) {
				archive := write(t, t.TempDir(), c.entries...)
				f, _ := bundle.FormatOf(archive)
				parent, work := workDir(t)
				_, err := bundle.Unpack(archive, f, work, limits)
				if err == nil || !strings.Contains(err.Error(), c.says) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("Unpack: %v, want one line saying %q", err, c.says)
				}
				if !errors.Is(err, bundle.ErrUnsafe) {
					t.Errorf("Unpack: %v, want ErrUnsafe", err)
				}
				entries, _ := os.ReadDir(parent)
				if len(entries) != 1 {
					t.Errorf("beside the work directory: %v, want nothing", entries)
				}
			})
		}
	}
}

// A zip bomb (64 MiB of zeros in a few hundred KiB) is stopped at the
// byte limit while it unpacks, whatever its headers say.
func TestUnpack_Bomb(t *testing.T) {
	archive := writeZip(t, t.TempDir(), entry{name: "zeros", mode: 0o644, big: 64 << 20})
	if info, _ := os.Stat(archive); info.Size() > 1<<20 {
		t.Fatalf("the bomb is %d bytes packed: not a bomb", info.Size())
	}
	_, work := workDir(t)
	_, err := bundle.Unpack(archive, bundle.Zip, work, limits)
	if !errors.Is(err, bundle.ErrUnsafe) || !strings.Contains(err.Error(), "more than 1 MiB unpacked (at zeros), over the broker's --max-bundle-bytes of 1 MiB") {
		t.Fatalf("Unpack: %v, want refused past 1 MiB", err)
	}
	if info, err := os.Stat(filepath.Join(work, "zeros")); err == nil && info.Size() > limits.MaxBytes+1 {
		t.Errorf("unpacked %d bytes before stopping, want at most %d", info.Size(), limits.MaxBytes+1)
	}
}

// A tar's hard links stay inside, and devices are refused.
func TestUnpack_TarLinksAndDevices(t *testing.T) {
	archive := writeTarGz(t, t.TempDir(),
		entry{name: "a.txt", body: "same", mode: 0o644},
		entry{name: "b.txt", isHard: true, link: "a.txt"})
	_, work := workDir(t)
	if _, err := bundle.Unpack(archive, bundle.TarGz, work, limits); err != nil {
		t.Fatalf("a hard link inside: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(work, "b.txt")); string(b) != "same" {
		t.Errorf("b.txt holds %q, want a.txt's content", b)
	}
	for name, e := range map[string]entry{
		"hard link out": {name: "x", isHard: true, link: "../../etc/passwd"},
		"device":        {name: "dev", mode: fs.ModeDevice | 0o600},
	} {
		archive := writeTarGz(t, t.TempDir(), e)
		_, work := workDir(t)
		if _, err := bundle.Unpack(archive, bundle.TarGz, work, limits); !errors.Is(err, bundle.ErrUnsafe) {
			t.Errorf("%s: %v, want ErrUnsafe", name, err)
		}
	}
}
