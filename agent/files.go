package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"baton/bundle"
	"baton/files"
	"baton/messages"
)

// BundleLimits are the broker's limits on a command's files, as it
// announces them; an error when it keeps no files.
func (c *Client) BundleLimits() (bundle.Limits, error) {
	c.mu.Lock()
	a := c.latest
	c.mu.Unlock()
	if a == nil || a.MaxBundleBytes == 0 {
		return bundle.Limits{}, errors.New("the broker keeps no files (it runs with --no-history, or is an older version)")
	}
	return bundle.Limits{MaxBytes: int64(a.MaxBundleBytes), MaxFiles: int(a.MaxBundleFiles)}, nil
}

// SendFiles packs the files and directories at paths into one zip, each
// under its base name (bundle.Pack), and stores it in the broker's file
// store for a Job's Inputs. Going over the broker's limits is refused
// before anything is sent.
func (c *Client) SendFiles(ctx context.Context, paths []string) (*messages.Bundle, error) {
	lim, err := c.BundleLimits()
	if err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp("", "baton-files-*.zip")
	if err != nil {
		return nil, fmt.Errorf("pack the files: %w", err)
	}
	defer os.Remove(tmp.Name())
	packed, err := bundle.Pack(tmp, paths, lim)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, bundle.ErrTooMuch) {
		return nil, fmt.Errorf("%w; nothing was sent", err)
	}
	if err != nil {
		return nil, err
	}
	if info, err := os.Stat(tmp.Name()); err == nil && info.Size() > lim.MaxBytes {
		return nil, fmt.Errorf("%w: they pack to %s, over the broker's --max-bundle-bytes of %s; nothing was sent", bundle.ErrTooMuch,
			bundle.Size(info.Size()), bundle.Size(lim.MaxBytes))
	}
	b, err := files.Put(ctx, c.nc, tmp.Name(), bundle.Zip, len(packed))
	if err != nil {
		return nil, err
	}
	names := make([]string, len(paths))
	for i, p := range paths {
		names[i] = filepath.Base(p)
	}
	b.Name = strings.Join(names, ", ")
	return b, nil
}

// SendArchive stores the .zip or .tar.gz at path in the broker's file
// store, for a Job's Inputs, as it is (the master unpacks it). One whose
// headers say it is over the broker's limits is refused before anything
// is sent.
func (c *Client) SendArchive(ctx context.Context, path string) (*messages.Bundle, error) {
	lim, err := c.BundleLimits()
	if err != nil {
		return nil, err
	}
	f, err := bundle.FormatOf(path)
	if err != nil {
		return nil, err
	}
	n, size, err := bundle.Inspect(path, f)
	if err != nil {
		return nil, err
	}
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	switch {
	case n > lim.MaxFiles:
		return nil, fmt.Errorf("%w: %d files, over the broker's --max-bundle-files of %d; nothing was sent", bundle.ErrTooMuch, n, lim.MaxFiles)
	case size > lim.MaxBytes || info.Size() > lim.MaxBytes:
		return nil, fmt.Errorf("%w: %s, over the broker's --max-bundle-bytes of %s; nothing was sent",
			bundle.ErrTooMuch, bundle.Size(max(size, info.Size())), bundle.Size(lim.MaxBytes))
	}
	b, err := files.Put(ctx, c.nc, path, f, n)
	if err != nil {
		return nil, err
	}
	b.Name = filepath.Base(path)
	return b, nil
}

// Save puts the files res brought back at out (see files.Save) and
// returns how many there are.
func (c *Client) Save(ctx context.Context, res *messages.ExecResult, out string) (int, error) {
	if res.ResultBundle == nil {
		return 0, errors.New("the result brings back no files")
	}
	lim, err := c.BundleLimits()
	if err != nil {
		return 0, err
	}
	return files.Save(ctx, c.nc, res.ResultBundle.Ticket, out, lim, res.Stdout, res.Stderr)
}
