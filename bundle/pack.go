package bundle

import (
	"archive/tar"
	"archive/zip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/gzip"
)

// ErrTooMuch is why files are not sent: they are over a limit.
var ErrTooMuch = errors.New("bundle: the files are over a limit")

// Pack zips the files and directories at paths onto w, each under its
// base name (a directory with everything in it), and returns what it
// packed. Modes are kept; symbolic links inside a directory are packed as
// links, a path given itself is followed. No time is recorded, so the
// same files make the same bytes: the file store keeps them once. Two
// paths with the same base name, and going past lim, are refused before
// anything is written.
func Pack(w io.Writer, paths []string, lim Limits) ([]File, error) {
	type entry struct {
		File
		src string // where it is on this machine
	}
	var entries []entry
	var size int64
	seen := make(map[string]string)
	add := func(name, src string, info fs.FileInfo) error {
		f := File{Name: name, Mode: info.Mode().Perm()}
		switch {
		case info.Mode().IsRegular():
			f.Size = info.Size()
		case info.IsDir():
			f.Mode |= fs.ModeDir
		case info.Mode()&fs.ModeSymlink != 0:
			f.Mode = fs.ModeSymlink | 0o777
			// A master refuses a link out of its work directory: say so
			// before anything is sent.
			target, err := os.Readlink(src)
			if err != nil {
				return fmt.Errorf("bundle: %w", err)
			}
			t := filepath.ToSlash(target)
			if j := path.Join(path.Dir(name), t); path.IsAbs(t) || j == ".." || strings.HasPrefix(j, "../") {
				return fmt.Errorf("bundle: %s links to %s, outside what is sent; send what it points to instead", src, target)
			}
		default:
			return fmt.Errorf("bundle: %s is a %v, not a file, directory or link", src, info.Mode().Type())
		}
		entries = append(entries, entry{f, src})
		size += f.Size
		if len(entries) > lim.MaxFiles {
			return fmt.Errorf("%w: more than %d files, over the broker's --max-bundle-files of %d", ErrTooMuch, lim.MaxFiles, lim.MaxFiles)
		}
		return nil
	}
	for _, p := range paths {
		info, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("bundle: %w", err)
		}
		base := filepath.Base(filepath.Clean(p))
		if base == "." || base == ".." || base == string(filepath.Separator) {
			return nil, fmt.Errorf("bundle: %s has no name to place it under; name a file or directory inside it", p)
		}
		if prior, ok := seen[base]; ok {
			return nil, fmt.Errorf("bundle: %s and %s would both be placed as %s", prior, p, base)
		}
		seen[base] = p
		if !info.IsDir() {
			if err := add(base, p, info); err != nil {
				return nil, err
			}
			continue
		}
		err = filepath.WalkDir(p, func(src string, d fs.DirEntry, err error) error {
			var info fs.FileInfo
			if err == nil {
				info, err = d.Info()
			}
			if err != nil {
				return fmt.Errorf("bundle: %w", err)
			}
			rel, err := filepath.Rel(p, src)
			if err != nil {
				return fmt.Errorf("bundle: %w", err)
			}
			return add(path.Join(base, filepath.ToSlash(rel)), src, info)
		})
		if err != nil {
			return nil, err
		}
	}
	if size > lim.MaxBytes {
		return nil, fmt.Errorf("%w: %s, over the broker's --max-bundle-bytes of %s", ErrTooMuch, Size(size), Size(lim.MaxBytes))
	}
	z := newZipWriter(w)
	out := make([]File, 0, len(entries))
	for _, e := range entries {
		f, err := packLocal(z, e.File, e.src)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	if err := z.Close(); err != nil {
		return nil, fmt.Errorf("bundle: pack: %w", err)
	}
	return out, nil
}

// packLocal writes f, found at src, into z.
func packLocal(z *zip.Writer, f File, src string) (File, error) {
	h := &zip.FileHeader{Name: f.Name, Method: zip.Deflate, Modified: epoch}
	h.SetMode(f.Mode)
	if f.Mode.IsDir() {
		h.Name += "/"
		h.Method = zip.Store
	}
	zw, err := z.CreateHeader(h)
	if err != nil {
		return File{}, fmt.Errorf("bundle: pack %s: %w", src, err)
	}
	switch {
	case f.Mode.IsDir():
		return f, nil
	case f.Mode&fs.ModeSymlink != 0:
		target, err := os.Readlink(src)
		if err == nil {
			_, err = io.WriteString(zw, filepath.ToSlash(target))
		}
		if err != nil {
			return File{}, fmt.Errorf("bundle: pack %s: %w", src, err)
		}
		return f, nil
	}
	r, err := os.Open(src)
	if err != nil {
		return File{}, fmt.Errorf("bundle: pack %s: %w", src, err)
	}
	defer r.Close()
	sum := sha256.New()
	// What was counted is what is packed, should the file grow meanwhile.
	n, err := io.Copy(io.MultiWriter(zw, sum), io.LimitReader(r, f.Size))
	if err != nil {
		return File{}, fmt.Errorf("bundle: pack %s: %w", src, err)
	}
	f.Size, f.SHA256 = n, hex.EncodeToString(sum.Sum(nil))
	return f, nil
}

// Inspect counts the entries of the archive at src and the bytes its
// files say they hold, as its headers tell, so that an archive over the
// limits is refused before it is sent. Headers can lie: Unpack checks
// again while it unpacks.
func Inspect(src string, f Format) (files int, size int64, err error) {
	switch f {
	case Zip:
		z, err := openZip(src)
		if err != nil {
			return 0, 0, fmt.Errorf("bundle: read %s: %w", src, err)
		}
		defer z.Close()
		for _, e := range z.File {
			size += int64(e.UncompressedSize64)
		}
		return len(z.File), size, nil
	case TarGz:
		r, err := os.Open(src)
		if err != nil {
			return 0, 0, fmt.Errorf("bundle: read %s: %w", src, err)
		}
		defer r.Close()
		gz, err := gzip.NewReader(r)
		if err != nil {
			return 0, 0, fmt.Errorf("bundle: read %s: %w", src, err)
		}
		t := tar.NewReader(gz)
		for {
			h, err := t.Next()
			if errors.Is(err, io.EOF) {
				return files, size, nil
			}
			if err != nil {
				return 0, 0, fmt.Errorf("bundle: read %s: %w", src, err)
			}
			if h.Typeflag != tar.TypeXGlobalHeader {
				files++
				size += h.Size
			}
		}
	}
	return 0, 0, fmt.Errorf("bundle: unknown format %d", f)
}

// String is how the file store names f: "zip" or "tar.gz".
func (f Format) String() string {
	switch f {
	case Zip:
		return "zip"
	case TarGz:
		return "tar.gz"
	}
	return fmt.Sprintf("format(%d)", int(f))
}

// ParseFormat is the format named s (Format.String).
func ParseFormat(s string) (Format, error) {
	switch strings.ToLower(s) {
	case "zip":
		return Zip, nil
	case "tar.gz", "tgz":
		return TarGz, nil
	}
	return 0, fmt.Errorf("bundle: format %q is neither zip nor tar.gz", s)
}

// CheckPlain refuses a zip at src that holds anything but plain files and
// directories inside itself: a link, a path that climbs out or is
// absolute, or a name twice. It reads no content.
func CheckPlain(src string) error {
	z, err := openZip(src)
	if err != nil {
		return fmt.Errorf("bundle: read %s: %w", src, err)
	}
	defer z.Close()
	seen := make(map[string]bool)
	for _, e := range z.File {
		p, err := clean(e.Name)
		switch {
		case err != nil:
			return err
		case !e.Mode().IsRegular() && !e.Mode().IsDir():
			return fmt.Errorf("%w: %s is a %v, where plain files were expected", ErrUnsafe, e.Name, e.Mode().Type())
		case seen[p]:
			return fmt.Errorf("%w: %s is in the archive twice", ErrUnsafe, e.Name)
		}
		seen[p] = true
	}
	return nil
}

// Extend writes to w the zip at src with extras added after its entries,
// which it copies as they are (not decompressed); an extra named as an
// entry of src is refused.
func Extend(w io.Writer, src string, extras ...Extra) error {
	r, err := openZip(src)
	if err != nil {
		return fmt.Errorf("bundle: read %s: %w", src, err)
	}
	defer r.Close()
	z := newZipWriter(w)
	names := make(map[string]bool)
	for _, f := range r.File {
		names[f.Name] = true
		if err := z.Copy(f); err != nil {
			return fmt.Errorf("bundle: copy %s: %w", f.Name, err)
		}
	}
	for _, e := range extras {
		if names[e.Name] {
			return fmt.Errorf("bundle: the files brought back hold a %s of their own; fetch them into a directory instead", e.Name)
		}
		if err := e.write(z); err != nil {
			return err
		}
	}
	if err := z.Close(); err != nil {
		return fmt.Errorf("bundle: pack: %w", err)
	}
	return nil
}

// Size is n bytes as people read it: "64 MiB", "1.5 KiB", "12 bytes".
func Size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d bytes", n)
	}
	v, i := float64(n), -1
	for v >= unit && i < 3 {
		v /= unit
		i++
	}
	s := fmt.Sprintf("%.1f %ciB", v, "KMGT"[i])
	if v == float64(int64(v)) {
		s = fmt.Sprintf("%d %ciB", int64(v), "KMGT"[i])
	}
	return s
}
