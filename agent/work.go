package agent

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"baton/bundle"
	"baton/files"
	"baton/messages"
)

// A command sent with files, or asked to bring files back, runs in a work
// directory of its own, <work root>/<node name>.<random>/<job id>, which
// holds exactly its inputs and is removed when the job ends, however it
// ends. Each node process holds a lock (flock, released by the kernel
// however the process ends) on its own directory; a node that starts
// removes the directories of the dead, whose locks no one holds.

// DefaultWorkRoot is where nodes keep their commands' work directories by
// default: under the user's cache directory (never a shared one such as
// /tmp, where another user could plant a link), or the temporary
// directory when there is none.
func DefaultWorkRoot() string {
	base, err := os.UserCacheDir()
	if err != nil {
		base = filepath.Join(os.TempDir(), fmt.Sprintf("baton-%d", os.Getuid()))
	}
	return filepath.Join(base, "baton", "work")
}

// workLock is the file each node's work directory is locked by.
const workLock = ".lock"

// takeWorkDir makes the node's work directory (mode 0700) and locks it,
// then removes what dead nodes left under the work root.
func (n *Node) takeWorkDir() error {
	safe := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, cut(n.cfg.Name, 64))
	if err := os.MkdirAll(n.cfg.WorkRoot, 0o700); err != nil {
		return fmt.Errorf("work directory root: %w", err)
	}
	if err := ownRoot(n.cfg.WorkRoot); err != nil {
		return err
	}
	dir, err := os.MkdirTemp(n.cfg.WorkRoot, safe+".")
	if err != nil {
		return fmt.Errorf("work directory: %w", err)
	}
	lock, ok, err := tryLock(filepath.Join(dir, workLock), true)
	if err != nil || !ok {
		os.RemoveAll(dir)
		return fmt.Errorf("work directory %s: cannot lock it: %v", dir, err)
	}
	n.workDir, n.workLock = dir, lock
	entries, err := os.ReadDir(n.cfg.WorkRoot)
	if err != nil {
		return fmt.Errorf("work directory root: %w", err)
	}
	for _, e := range entries {
		other := filepath.Join(n.cfg.WorkRoot, e.Name())
		if !e.IsDir() || other == dir {
			continue
		}
		f, ok, err := tryLock(filepath.Join(other, workLock), false)
		if err != nil || !ok {
			continue // not a node's, or its node lives
		}
		n.removeLeftovers(other)
		os.Remove(filepath.Join(other, workLock))
		os.Remove(other)
		f.Close()
	}
	return nil
}

// ownRoot refuses a work root that another user could change: one that
// is a link, belongs to someone else, or others may write to (as ssh
// refuses such a home directory).
func ownRoot(root string) error {
	info, err := os.Lstat(root)
	if err != nil {
		return fmt.Errorf("work directory root: %w", err)
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	switch {
	case !info.IsDir():
		return fmt.Errorf("work directory root %s is not a directory (a link?); give --work-dir a directory of this user's", root)
	case ok && int(st.Uid) != os.Geteuid():
		return fmt.Errorf("work directory root %s belongs to user %d, not to this one (%d); give --work-dir a directory of this user's", root, st.Uid, os.Geteuid())
	case info.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("work directory root %s may be written by others (mode %#o); chmod go-w %s", root, info.Mode().Perm(), root)
	}
	return nil
}

// tryLock opens path, made if create says so, and takes an exclusive
// lock on it without waiting: false when another process holds it.
func tryLock(path string, create bool) (*os.File, bool, error) {
	flags := os.O_RDWR
	if create {
		flags |= os.O_CREATE
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		return nil, false, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, err
	}
	return f, true, nil
}

// releaseWorkDir removes the node's work directory, its commands done,
// and unlocks it.
func (n *Node) releaseWorkDir() {
	if n.workLock == nil {
		return
	}
	n.removeLeftovers(n.workDir)
	os.Remove(filepath.Join(n.workDir, workLock))
	os.Remove(n.workDir)
	n.workLock.Close()
}

// removeLeftovers removes from dir the work directories a dead node left:
// entries named by a job ID, and nothing else.
func (n *Node) removeLeftovers(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		id, _, _ := strings.Cut(e.Name(), ".")
		if !messages.ValidJobID(id) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		if err := removeAll(path); err != nil {
			n.cfg.Logger.Warn("a work directory a killed node left is not removed", keyPath, path, keyErr, err)
			continue
		}
		n.cfg.Logger.Info("removed a work directory a killed node left", keyPath, path)
	}
}

// removeAll removes path, even where the command made a directory
// read-only.
func removeAll(path string) error {
	err := os.RemoveAll(path)
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	_ = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(path)
}

// wantsWork reports whether req runs in a work directory of its own.
func wantsWork(req *messages.ExecRequest) bool {
	return len(req.Inputs) > 0 || req.Bundle != nil || len(req.Collect) > 0
}

// bundleLimits are the limits the broker announces on a command's files,
// or the file store's defaults when it announces none.
func (n *Node) bundleLimits() (bundle.Limits, bool) {
	d := files.DefaultConfig()
	lim := bundle.Limits{MaxBytes: d.MaxBytes, MaxFiles: d.MaxFiles}
	a := n.member.Current()
	if a == nil || a.MaxBundleBytes == 0 {
		return lim, false
	}
	return bundle.Limits{MaxBytes: int64(a.MaxBundleBytes), MaxFiles: int(a.MaxBundleFiles)}, true
}

// runInWork runs req in a fresh work directory for job: its inputs
// unpacked first, the files it names brought back after, the directory
// removed at the end.
func (n *Node) runInWork(ctx context.Context, req *messages.ExecRequest, job *messages.JobRecord, asJSON bool,
	received time.Time, timeout, queue time.Duration, epoch uint64) *messages.ExecResult {
	lim, stored := n.bundleLimits()
	dir := filepath.Join(n.workDir, job.Id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return &messages.ExecResult{Id: req.Id, ExitCode: -1, ErrorKind: messages.ErrorKind_ERROR_KIND_START_FAILED,
			Error: fmt.Sprintf("work directory: %v", err)}
	}
	defer func() {
		if err := removeAll(dir); err != nil {
			n.cfg.Logger.Error("work directory not removed", keyPath, dir, keyErr, err)
		}
	}()
	if len(req.Inputs) > 0 || req.Bundle != nil {
		// As many prepare at once as may run: a queue of commands with
		// files does not fetch them all at once.
		if !n.preparing.Acquire(ctx, received.Add(queue)) {
			return &messages.ExecResult{Id: req.Id, ExitCode: -1, ErrorKind: messages.ErrorKind_ERROR_KIND_BUSY,
				Error: fmt.Sprintf("busy: no slot to fetch the command's files within %v; retry later", queue)}
		}
		prepare, cancel := context.WithTimeout(ctx, timeout)
		inputs, err := n.unpackInputs(prepare, req, dir, lim)
		cancel()
		n.preparing.Release()
		job.Inputs = inputs
		if err != nil {
			return rejected(req.Id, err.Error())
		}
		// Fetching took time the requester counted: the command's own
		// starts now.
		n.extend(req, job.Id, epoch, timeout+queue)
	}
	res := n.run(ctx, req, received, timeout, queue, epoch, dir)
	if len(req.Collect) == 0 || ctx.Err() != nil {
		return res
	}
	switch res.ErrorKind {
	case messages.ErrorKind_ERROR_KIND_NONE, messages.ErrorKind_ERROR_KIND_TIMEOUT, messages.ErrorKind_ERROR_KIND_MEMORY_LIMIT:
		// What a command that ran out of time left is brought back too:
		// it tells why.
	default:
		return res
	}
	if err := n.collect(ctx, req, job, res, dir, lim, stored, asJSON, epoch); err != nil {
		if res.ErrorKind == messages.ErrorKind_ERROR_KIND_NONE {
			res.ErrorKind = messages.ErrorKind_ERROR_KIND_COLLECT_FAILED
			res.Error = err.Error()
		} else {
			res.Error += "; " + err.Error()
		}
	}
	return res
}

// unpackInputs fetches req's inputs and unpacks them, and its inline
// bundle, into dir, within lim all together.
func (n *Node) unpackInputs(ctx context.Context, req *messages.ExecRequest, dir string, lim bundle.Limits) ([]*messages.FileEntry, error) {
	var entries []*messages.FileEntry
	left := lim
	unpack := func(src string, f bundle.Format, what string) error {
		got, err := bundle.Unpack(src, f, dir, left)
		for _, g := range got {
			left.MaxFiles--
			left.MaxBytes -= g.Size
			entries = append(entries, fileEntry(g))
		}
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
	for i, in := range req.Inputs {
		f, err := bundle.ParseFormat(in.Format)
		if err != nil {
			return entries, fmt.Errorf("input %s: %w", inputName(i, in), err)
		}
		tmp := dir + fmt.Sprintf(".in%d", i+1)
		err = n.fetch(ctx, in, tmp)
		if err == nil {
			err = unpack(tmp, f, "input "+inputName(i, in))
		}
		os.Remove(tmp)
		if err != nil {
			return entries, err
		}
	}
	if req.Bundle != nil {
		tmp := dir + ".bundle"
		err := os.WriteFile(tmp, req.Bundle, 0o600)
		if err == nil {
			if _, zerr := zip.NewReader(bytes.NewReader(req.Bundle), int64(len(req.Bundle))); zerr != nil {
				err = fmt.Errorf("the request's bundle is not a zip: %v", zerr)
			} else {
				err = unpack(tmp, bundle.Zip, "the request's bundle")
			}
		}
		os.Remove(tmp)
		if err != nil {
			return entries, err
		}
	}
	return entries, nil
}

// inputName names req's input i in messages: as its sender calls it, or
// by its place.
func inputName(i int, in *messages.Bundle) string {
	if in.Name != "" && len(in.Name) <= 256 && utf8.ValidString(in.Name) {
		return strconv.Quote(in.Name)
	}
	return fmt.Sprintf("%d", i+1)
}

// fetch writes the archive in grants to path, and checks that it is the
// one the request names (the history records that name).
func (n *Node) fetch(ctx context.Context, in *messages.Bundle, path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("fetch input: %w", err)
	}
	sum := sha256.New()
	_, err = files.Get(ctx, n.nc, in.Ticket, io.MultiWriter(f, sum))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fetch input: %w", err)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != in.Sha256 {
		return fmt.Errorf("fetch input: its ticket is for archive %s, not the %s the request names", got, in.Sha256)
	}
	return nil
}

// uploadTimeout bounds the storing of what a command brings back.
const uploadTimeout = 2 * time.Minute

// extend tells req's requester, if it asked for acks, that the master
// needs up to d more for it, so that it waits that long again.
func (n *Node) extend(req *messages.ExecRequest, job string, epoch uint64, d time.Duration) {
	if req.AckSubject == "" {
		return
	}
	n.publish(req.AckSubject, &messages.ExecAck{Id: req.Id, Master: n.cfg.Name, Epoch: epoch, InstanceId: n.member.InstanceID(),
		TimeoutMs: uint32(min(d, maxRequestDuration).Milliseconds()), Job: job})
}

// collect brings back the files of dir that req names: zipped into the
// broker's file store (when it keeps files), and for a JSON request also
// inline, with stdout.txt and stderr.txt, as the P2P peers return them.
func (n *Node) collect(ctx context.Context, req *messages.ExecRequest, job *messages.JobRecord, res *messages.ExecResult,
	dir string, lim bundle.Limits, stored, asJSON bool, epoch uint64) error {
	found, err := bundle.Collect(dir, req.Collect, lim)
	if err != nil {
		return fmt.Errorf("collect: %w", err)
	}
	if !stored && !asJSON {
		return errors.New("collect: the broker keeps no files (it runs with --no-history)")
	}
	zipPath := dir + ".out.zip"
	defer os.Remove(zipPath)
	out, err := os.OpenFile(zipPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("collect: %w", err)
	}
	packed, err := bundle.WriteZip(out, dir, found)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("collect: %w", err)
	}
	for _, f := range packed {
		res.Outputs = append(res.Outputs, fileEntry(f))
	}
	job.Outputs = res.Outputs
	if stored {
		// The requester waits while the files go up.
		n.extend(req, job.Id, epoch, uploadTimeout)
		up, cancel := context.WithTimeout(ctx, uploadTimeout)
		defer cancel()
		b, err := files.Put(up, n.nc, zipPath, bundle.Zip, len(packed))
		if err != nil {
			return fmt.Errorf("bring back: %w", err)
		}
		res.ResultBundle, job.OutputBundle = b, b.Sha256
	}
	if asJSON {
		var buf bytes.Buffer
		_, err := bundle.WriteZip(&buf, dir, found,
			bundle.Extra{Name: "stdout.txt", Data: []byte(res.Stdout)}, bundle.Extra{Name: "stderr.txt", Data: []byte(res.Stderr)})
		if err != nil {
			return fmt.Errorf("collect: %w", err)
		}
		// Base64 grows it by a third, and the result's other fields come
		// with it.
		if room := (messages.MaxPayload-proto.Size(res))*3/4 - 64<<10; buf.Len() > room {
			return fmt.Errorf("collect: the files make a zip of %s, more than a JSON result carries (%s); use node exec --collect",
				bundle.Size(int64(buf.Len())), bundle.Size(int64(room)))
		}
		res.ResultZip = buf.Bytes()
	}
	return nil
}

func fileEntry(f bundle.File) *messages.FileEntry {
	return &messages.FileEntry{Name: f.Name, Size: uint64(f.Size), Mode: uint32(f.Mode), Sha256: f.SHA256}
}
