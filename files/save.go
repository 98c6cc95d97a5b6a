package files

import (
	"context"
	"errors"
	"fmt"

	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go"

	"baton/bundle"
)

// CheckOut refuses, before anything runs, a path that files brought back
// could not go to, or would overwrite: one whose parent directory is
// missing, an existing .zip file, or a directory that is not empty. Its
// errors, and Save's, start with the path: callers name their flag.
func CheckOut(out string) error {
	if parent, err := os.Stat(filepath.Dir(out)); err != nil || !parent.IsDir() {
		return fmt.Errorf("%s: its directory %s is missing; make it first", out, filepath.Dir(out))
	}
	info, err := os.Lstat(out)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("%s: %w", out, err)
	case isZip(out):
		return fmt.Errorf("%s: the file exists; nothing is overwritten", out)
	case !info.IsDir():
		return fmt.Errorf("%s: exists and is not a directory (a .zip name makes a zip)", out)
	}
	entries, err := os.ReadDir(out)
	if err != nil {
		return fmt.Errorf("%s: %w", out, err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("%s: the directory is not empty; nothing is overwritten", out)
	}
	return nil
}

func isZip(name string) bool { return strings.HasSuffix(strings.ToLower(name), ".zip") }

// Save fetches the archive of files brought back that ticket grants, and
// puts it at out: a .zip name gets a zip of the files plus stdout.txt and
// stderr.txt (as the P2P peers return them), anything else is a
// directory the files are unpacked into, within lim (the archive is
// unpacked as safely as a command's inputs). It returns how many files
// were brought back.
func Save(ctx context.Context, nc *nats.Conn, ticket, out string, lim bundle.Limits, stdout, stderr string) (int, error) {
	if err := CheckOut(out); err != nil {
		return 0, err
	}
	dir := filepath.Dir(out)
	tmp, err := os.CreateTemp(dir, ".baton-out-*.zip")
	if err != nil {
		return 0, fmt.Errorf("%s: %w", out, err)
	}
	defer os.Remove(tmp.Name())
	_, err = Get(ctx, nc, ticket, tmp)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("fetch the files brought back: %w", err)
	}
	if isZip(out) {
		return saveZip(tmp.Name(), out, lim, stdout, stderr)
	}
	_, statErr := os.Lstat(out)
	made := errors.Is(statErr, os.ErrNotExist)
	if err := os.Mkdir(out, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return 0, fmt.Errorf("%s: %w", out, err)
	}
	// Plain files only: a command brings back no links, so an archive
	// with one is not a master's honest answer.
	lim.Plain = true
	got, err := bundle.Unpack(tmp.Name(), bundle.Zip, out, lim)
	if err != nil {
		// Nothing half-made stays: out was missing or empty.
		if made {
			os.RemoveAll(out)
		} else if entries, rerr := os.ReadDir(out); rerr == nil {
			for _, e := range entries {
				os.RemoveAll(filepath.Join(out, e.Name()))
			}
		}
		return 0, fmt.Errorf("%s: %w", out, err)
	}
	n := 0
	for _, f := range got {
		if f.Mode.IsRegular() {
			n++
		}
	}
	return n, nil
}

// saveZip writes the zip at src, with stdout.txt and stderr.txt, to out.
func saveZip(src, out string, lim bundle.Limits, stdout, stderr string) (int, error) {
	n, size, err := bundle.Inspect(src, bundle.Zip)
	if err != nil {
		return 0, err
	}
	if n > lim.MaxFiles || size > lim.MaxBytes {
		return 0, fmt.Errorf("%s: the files brought back say they hold %d files of %s, over the broker's limits", out, n, bundle.Size(size))
	}
	if err := bundle.CheckPlain(src); err != nil {
		return 0, fmt.Errorf("%s: %w", out, err)
	}
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", out, err)
	}
	err = bundle.Extend(f, src, bundle.Extra{Name: "stdout.txt", Data: []byte(stdout)}, bundle.Extra{Name: "stderr.txt", Data: []byte(stderr)})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(out)
		return 0, fmt.Errorf("%s: %w", out, err)
	}
	return n, nil
}
