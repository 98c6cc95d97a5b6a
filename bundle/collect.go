package bundle

import (
	"archive/zip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
)

// Collect finds the regular files under dir that globs match (path.Match
// patterns relative to dir; a directory matched brings all its files),
// sorted by name, each once. A pattern that is absolute or climbs out of
// dir is refused; symbolic links are not followed, and nothing outside dir
// is read (an os.Root at dir). Going past lim is refused before anything
// is read.
func Collect(dir string, globs []string, lim Limits) ([]File, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("bundle: work directory: %w", err)
	}
	defer root.Close()
	fsys := root.FS()
	found := make(map[string]File)
	var size int64
	add := func(name string, info fs.FileInfo) error {
		if !info.Mode().IsRegular() {
			return nil
		}
		if _, ok := found[name]; ok {
			return nil
		}
		found[name] = File{Name: name, Size: info.Size(), Mode: info.Mode().Perm()}
		size += info.Size()
		switch {
		case len(found) > lim.MaxFiles:
			return fmt.Errorf("%w: more than %d files to bring back, over the broker's --max-bundle-files of %d", ErrTooMuch, lim.MaxFiles, lim.MaxFiles)
		case size > lim.MaxBytes:
			return fmt.Errorf("%w: more than %s to bring back (at %s), over the broker's --max-bundle-bytes of %s", ErrTooMuch, Size(lim.MaxBytes), name, Size(lim.MaxBytes))
		}
		return nil
	}
	for _, g := range globs {
		p, err := checkGlob(g)
		if err != nil {
			return nil, err
		}
		matches, err := fs.Glob(fsys, p)
		if err != nil {
			return nil, fmt.Errorf("bundle: collect %q: %w", g, err)
		}
		for _, m := range matches {
			info, err := fs.Lstat(fsys, m)
			if err != nil {
				return nil, fmt.Errorf("bundle: collect %s: %w", m, err)
			}
			if !info.IsDir() {
				if err := add(m, info); err != nil {
					return nil, err
				}
				continue
			}
			err = fs.WalkDir(fsys, m, func(name string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				if d.Type().IsRegular() {
					info, err := d.Info()
					if err != nil {
						return err
					}
					return add(name, info)
				}
				return nil
			})
			if errors.Is(err, ErrTooMuch) {
				return nil, err
			}
			if err != nil {
				return nil, fmt.Errorf("bundle: collect %s: %w", m, err)
			}
		}
	}
	files := make([]File, 0, len(found))
	for _, f := range found {
		files = append(files, f)
	}
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Name, b.Name) })
	return files, nil
}

// ErrGlob is why a collect pattern is refused.
var ErrGlob = errors.New("bundle: bad --collect pattern")

// CheckGlob refuses a collect pattern that is not path.Match syntax, or
// that is absolute or climbs out of the work directory: what a requester
// checks before it sends a command, and a master before it runs one.
func CheckGlob(g string) error {
	_, err := checkGlob(g)
	return err
}

// CheckGlobs is CheckGlob of each of globs: the first refusal, nil when
// none is refused.
func CheckGlobs(globs []string) error {
	for _, g := range globs {
		if err := CheckGlob(g); err != nil {
			return err
		}
	}
	return nil
}

func checkGlob(g string) (string, error) {
	switch {
	case g == "":
		return "", fmt.Errorf("%w: an empty pattern", ErrGlob)
	case strings.ContainsRune(g, '\\'):
		return "", fmt.Errorf("%w: %q has a backslash: patterns are path.Match globs, / between directories, no escapes", ErrGlob, g)
	case path.IsAbs(g):
		return "", fmt.Errorf("%w: %q is absolute; patterns are relative to the work directory", ErrGlob, g)
	}
	p := path.Clean(g)
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", fmt.Errorf("%w: %q leads out of the work directory", ErrGlob, g)
	}
	if _, err := path.Match(p, ""); err != nil {
		return "", fmt.Errorf("%w: %q: %v (path.Match syntax: * ? [a-z], no **)", ErrGlob, g, err)
	}
	return p, nil
}

// Extra is a file a packed bundle holds besides those collected, such as
// a command's stdout.txt.
type Extra struct {
	Name string
	Data []byte
}

// write adds e to z as a plain file, mode 0644.
func (e Extra) write(z *zip.Writer) error {
	h := &zip.FileHeader{Name: e.Name, Method: zip.Deflate, Modified: epoch}
	h.SetMode(0o644)
	zw, err := z.CreateHeader(h)
	if err == nil {
		_, err = zw.Write(e.Data)
	}
	if err != nil {
		return fmt.Errorf("bundle: pack %s: %w", e.Name, err)
	}
	return nil
}

// WriteZip packs files (as Collect found them under dir) and extras into
// a zip on w, keeping each file's mode, and returns the files with their
// SHA-256 set. A file that grew past its collected size is cut there: what
// Collect's limits allowed is what is packed.
func WriteZip(w io.Writer, dir string, files []File, extras ...Extra) ([]File, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("bundle: work directory: %w", err)
	}
	defer root.Close()
	z := newZipWriter(w)
	out := make([]File, 0, len(files))
	for _, f := range files {
		c, err := addFile(z, root, f)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	for _, e := range extras {
		if err := e.write(z); err != nil {
			return nil, err
		}
	}
	if err := z.Close(); err != nil {
		return nil, fmt.Errorf("bundle: pack: %w", err)
	}
	return out, nil
}

func addFile(z *zip.Writer, root *os.Root, f File) (File, error) {
	src, err := root.Open(f.Name)
	if err != nil {
		return File{}, fmt.Errorf("bundle: pack %s: %w", f.Name, err)
	}
	defer src.Close()
	h := &zip.FileHeader{Name: f.Name, Method: zip.Deflate, Modified: epoch}
	h.SetMode(f.Mode.Perm())
	zw, err := z.CreateHeader(h)
	if err != nil {
		return File{}, fmt.Errorf("bundle: pack %s: %w", f.Name, err)
	}
	sum := sha256.New()
	n, err := io.Copy(io.MultiWriter(zw, sum), io.LimitReader(src, f.Size))
	if err != nil {
		return File{}, fmt.Errorf("bundle: pack %s: %w", f.Name, err)
	}
	f.Size, f.SHA256 = n, hex.EncodeToString(sum.Sum(nil))
	return f, nil
}
