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
	"strings"

	"github.com/klauspost/compress/gzip"
)

// ErrUnsafe is wrapped by every refusal of an archive's entry: a path or
// link that leads out of the work directory, a kind of file a bundle
// cannot hold, or more bytes or files than the limits allow.
var ErrUnsafe = errors.New("bundle: unsafe archive")

// Limits bound what an archive may unpack to, checked while unpacking:
// an archive's own headers may lie about sizes (a zip bomb).
type Limits struct {
	// MaxBytes bounds the bytes of all files unpacked together.
	MaxBytes int64
	// MaxFiles bounds the entries unpacked (files, directories, links).
	MaxFiles int
	// Plain refuses links: what a command brings back is plain files
	// and directories.
	Plain bool
}

// File is one file a bundle holds.
type File struct {
	// Name is its path in the bundle, slash-separated, relative.
	Name string
	Size int64
	// Mode is its permission bits (setuid, setgid and sticky are never
	// kept), with fs.ModeDir or fs.ModeSymlink for those.
	Mode fs.FileMode
	// SHA256 is the hex SHA-256 of a regular file's content, once it has
	// been read (unpacked or packed).
	SHA256 string
}

// Format is how an archive is packed.
type Format int

// The archive formats a bundle comes in.
const (
	Zip Format = iota + 1
	TarGz
)

// FormatOf is the format a file name says (.zip, .tar.gz or .tgz).
func FormatOf(name string) (Format, error) {
	switch n := strings.ToLower(name); {
	case strings.HasSuffix(n, ".zip"):
		return Zip, nil
	case strings.HasSuffix(n, ".tar.gz"), strings.HasSuffix(n, ".tgz"):
		return TarGz, nil
	}
	return 0, fmt.Errorf("bundle: %s is neither a .zip nor a .tar.gz", name)
}

// Unpack unpacks the archive at src, of format f, into dir, which must
// exist, and returns what it unpacked. Every operation goes through an
// os.Root at dir: nothing is written outside it, even through a link the
// archive made. An entry whose path is absolute or climbs out, a link
// whose target lies outside dir, a device, pipe or socket, and going past
// lim are refused with ErrUnsafe; what was unpacked until then stays in
// dir, for its owner to remove.
func Unpack(src string, f Format, dir string, lim Limits) ([]File, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("bundle: work directory: %w", err)
	}
	defer root.Close()
	u := &unpacker{root: root, lim: lim}
	switch f {
	case Zip:
		err = u.zip(src)
	case TarGz:
		err = u.tarGz(src)
	default:
		err = fmt.Errorf("bundle: unknown format %d", f)
	}
	if err == nil {
		err = u.checkLinks()
	}
	return u.files, err
}

// checkLinks refuses a link that, with every entry in place, leads out of
// the work directory: each target was inside on its own, but one link
// can climb out through another ("a" to ".", then "e" to "a/.."). A
// link that leads nowhere yet is no way out.
func (u *unpacker) checkLinks() error {
	for _, f := range u.files {
		if f.Mode&fs.ModeSymlink == 0 {
			continue
		}
		if _, err := u.root.Stat(f.Name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %s leads out of the work directory (through another link): %v", ErrUnsafe, f.Name, err)
		}
	}
	return nil
}

// unpacker writes entries into root, counting them against lim.
type unpacker struct {
	root  *os.Root
	lim   Limits
	bytes int64
	files []File
	// globals counts a tar's global headers.
	globals int
}

func (u *unpacker) zip(src string) error {
	z, err := openZip(src)
	if err != nil {
		return fmt.Errorf("bundle: read %s: %w", src, err)
	}
	defer z.Close()
	for _, e := range z.File {
		mode := e.Mode()
		switch {
		case mode.IsDir():
			err = u.dir(e.Name, mode)
		case mode&fs.ModeSymlink != 0:
			err = u.zipLink(e)
		case mode.IsRegular():
			err = u.zipFile(e)
		default:
			err = fmt.Errorf("%w: %s is a %v, not a file, directory or link", ErrUnsafe, e.Name, mode.Type())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (u *unpacker) zipFile(e *zip.File) error {
	r, err := e.Open()
	if err != nil {
		return fmt.Errorf("bundle: %s: %w", e.Name, err)
	}
	defer r.Close()
	return u.file(e.Name, e.Mode(), &honest{r: r, f: e})
}

// honest reads a zip entry, and says so when the entry holds more than
// its headers claim: a zip bomb that lies, which archive/zip stops at.
type honest struct {
	r io.Reader
	f *zip.File
}

func (h *honest) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	if errors.Is(err, zip.ErrFormat) || errors.Is(err, zip.ErrChecksum) {
		err = fmt.Errorf("%w: %s holds other than the %d bytes its headers say (a zip bomb, or a damaged archive)", ErrUnsafe, h.f.Name, h.f.UncompressedSize64)
	}
	return n, err
}

// zipLink reads a link's target: a zip holds it as the entry's content.
func (u *unpacker) zipLink(e *zip.File) error {
	r, err := e.Open()
	if err != nil {
		return fmt.Errorf("bundle: %s: %w", e.Name, err)
	}
	defer r.Close()
	target, err := io.ReadAll(io.LimitReader(r, maxLinkTarget+1))
	if err != nil {
		return fmt.Errorf("bundle: %s: %w", e.Name, err)
	}
	if len(target) > maxLinkTarget {
		return fmt.Errorf("%w: %s links to a target longer than %d bytes", ErrUnsafe, e.Name, maxLinkTarget)
	}
	return u.symlink(e.Name, string(target))
}

// maxLinkTarget is the longest link target taken (Linux's PATH_MAX).
const maxLinkTarget = 4096

func (u *unpacker) tarGz(src string) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("bundle: read %s: %w", src, err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("bundle: read %s: %w", src, err)
	}
	defer gz.Close()
	t := tar.NewReader(gz)
	for {
		h, err := t.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("bundle: read %s: %w", src, err)
		}
		mode := fs.FileMode(h.Mode).Perm()
		switch h.Typeflag {
		case tar.TypeDir:
			err = u.dir(h.Name, mode)
		case tar.TypeReg:
			err = u.file(h.Name, mode, t)
		case tar.TypeSymlink:
			err = u.symlink(h.Name, h.Linkname)
		case tar.TypeLink:
			err = u.hardLink(h.Name, h.Linkname)
		case tar.TypeXGlobalHeader:
			// Nothing to unpack, but counted: a flood of them would
			// otherwise decompress for as long as it likes.
			u.globals++
			if u.globals > u.lim.MaxFiles {
				err = fmt.Errorf("%w: more than %d global headers; the limit is --max-bundle-files", ErrUnsafe, u.lim.MaxFiles)
			}
		default:
			err = fmt.Errorf("%w: %s is of tar type %q, not a file, directory or link", ErrUnsafe, h.Name, h.Typeflag)
		}
		if err != nil {
			return err
		}
	}
}

// clean is an entry's path, relative and inside the work directory, or
// why it is refused.
func clean(name string) (string, error) {
	switch {
	case name == "":
		return "", fmt.Errorf("%w: an entry has no name", ErrUnsafe)
	case strings.ContainsRune(name, '\\'):
		return "", fmt.Errorf("%w: %s has a backslash in its path", ErrUnsafe, name)
	case strings.ContainsRune(name, 0):
		return "", fmt.Errorf("%w: %q has a NUL in its path", ErrUnsafe, name)
	case path.IsAbs(name):
		return "", fmt.Errorf("%w: %s is an absolute path", ErrUnsafe, name)
	}
	p := path.Clean(name)
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", fmt.Errorf("%w: %s leads out of the work directory", ErrUnsafe, name)
	}
	return p, nil
}

// count counts one more entry against the limit.
func (u *unpacker) count(name string) error {
	if len(u.files) >= u.lim.MaxFiles {
		return fmt.Errorf("%w: more than %d files (at %s), over the broker's --max-bundle-files of %d", ErrUnsafe, u.lim.MaxFiles, name, u.lim.MaxFiles)
	}
	return nil
}

func (u *unpacker) dir(name string, mode fs.FileMode) error {
	p, err := clean(name)
	if err != nil || p == "." {
		return err
	}
	if err := u.count(p); err != nil {
		return err
	}
	// Owner-writable while unpacking, whatever the archive says: files go
	// in it next.
	if err := u.root.MkdirAll(p, mode.Perm()|0o700); err != nil {
		return fmt.Errorf("bundle: %s: %w", name, err)
	}
	u.files = append(u.files, File{Name: p, Mode: fs.ModeDir | mode.Perm()})
	return nil
}

func (u *unpacker) file(name string, mode fs.FileMode, r io.Reader) error {
	p, err := clean(name)
	if err != nil {
		return err
	}
	if err := u.count(p); err != nil {
		return err
	}
	if dir := path.Dir(p); dir != "." {
		if err := u.root.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("bundle: %s: %w", name, err)
		}
	}
	// O_EXCL: an entry never writes through what an earlier one made.
	f, err := u.root.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode.Perm()|0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%w: %s is in the archive twice, in an input before it too, or where a link is", ErrUnsafe, name)
	}
	if err != nil {
		return fmt.Errorf("bundle: %s: %w", name, err)
	}
	room := u.lim.MaxBytes - u.bytes
	sum := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, sum), io.LimitReader(r, room+1))
	u.bytes += n
	if err == nil && n > room {
		err = fmt.Errorf("%w: more than %s unpacked (at %s), over the broker's --max-bundle-bytes of %s", ErrUnsafe, Size(u.lim.MaxBytes), name, Size(u.lim.MaxBytes))
	}
	if err == nil {
		// The mode the archive says, umask or not.
		err = f.Chmod(mode.Perm())
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if errors.Is(err, ErrUnsafe) {
			return err
		}
		return fmt.Errorf("bundle: %s: %w", name, err)
	}
	u.files = append(u.files, File{Name: p, Size: n, Mode: mode.Perm(), SHA256: hex.EncodeToString(sum.Sum(nil))})
	return nil
}

// symlink makes a link whose target stays inside the work directory,
// resolved from the link's own directory.
func (u *unpacker) symlink(name, target string) error {
	p, err := clean(name)
	if err != nil {
		return err
	}
	if err := u.count(p); err != nil {
		return err
	}
	if u.lim.Plain {
		return fmt.Errorf("%w: %s is a link, where plain files were expected", ErrUnsafe, name)
	}
	if path.IsAbs(target) {
		return fmt.Errorf("%w: %s links to %s, an absolute path", ErrUnsafe, name, target)
	}
	if t := path.Join(path.Dir(p), target); t == ".." || strings.HasPrefix(t, "../") {
		return fmt.Errorf("%w: %s links to %s, outside the work directory", ErrUnsafe, name, target)
	}
	if dir := path.Dir(p); dir != "." {
		if err := u.root.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("bundle: %s: %w", name, err)
		}
	}
	if err := u.root.Symlink(target, p); err != nil {
		return fmt.Errorf("bundle: %s: %w", name, err)
	}
	u.files = append(u.files, File{Name: p, Mode: fs.ModeSymlink | 0o777})
	return nil
}

// hardLink links to a file unpacked before, inside the work directory.
func (u *unpacker) hardLink(name, target string) error {
	p, err := clean(name)
	if err != nil {
		return err
	}
	t, err := clean(target)
	if err != nil {
		return fmt.Errorf("%w: %s links to %s", ErrUnsafe, name, target)
	}
	if err := u.count(p); err != nil {
		return err
	}
	if u.lim.Plain {
		return fmt.Errorf("%w: %s is a link, where plain files were expected", ErrUnsafe, name)
	}
	info, err := u.root.Lstat(t)
	if err != nil || !info.Mode().IsRegular() {
		return fmt.Errorf("%w: %s links to %s, which is no file unpacked before it", ErrUnsafe, name, target)
	}
	if err := u.root.Link(t, p); err != nil {
		return fmt.Errorf("bundle: %s: %w", name, err)
	}
	f := File{Name: p, Size: info.Size(), Mode: info.Mode().Perm()}
	for _, g := range u.files {
		if g.Name == t {
			f.SHA256 = g.SHA256
		}
	}
	u.files = append(u.files, f)
	return nil
}
