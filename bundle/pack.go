package bundle

import (
	"archive/tar"
	"archive/zip"
	"compress/gzip"
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
)

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
		default:
			return fmt.Errorf("bundle: %s is a %v, not a file, directory or link", src, info.Mode().Type())
		}
		entries = append(entries, entry{f, src})
		size += f.Size
		switch {
		case len(entries) > lim.MaxFiles:
			return fmt.Errorf("bundle: more than %d files to send; the broker's limit is --max-bundle-files", lim.MaxFiles)
		case size > lim.MaxBytes:
			return fmt.Errorf("bundle: more than %d bytes to send (at %s); the broker's limit is --max-bundle-bytes", lim.MaxBytes, src)
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
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(p, src)
			if err != nil {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			return add(path.Join(base, filepath.ToSlash(rel)), src, info)
		})
		if err != nil {
			return nil, fmt.Errorf("bundle: %w", err)
		}
	}
	z := zip.NewWriter(w)
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
	h := &zip.FileHeader{Name: f.Name, Method: zip.Deflate}
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
		z, err := zip.OpenReader(src)
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
