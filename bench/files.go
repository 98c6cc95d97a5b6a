package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"baton/agent"
	"baton/messages"
)

// Files is how fast files travel with commands, next to a local copy of
// the same bytes.
type Files struct {
	Bytes  int `json:"bytes"`
	Trials int `json:"trials"`
	// LocalMBs is a copy of the file on the same disk (read, write, no
	// sync), in MB/s (10^6 bytes), median of Trials.
	LocalMBs float64 `json:"local_mb_s"`
	// SendMBs is an input sent: node exec --file of Bytes of random data
	// (new each trial, so never stored before) until the master has run
	// `true` in a work directory holding it: pack, upload to the broker's
	// object store, the master's download and unpack, the result.
	SendMBs float64 `json:"send_mb_s"`
	// ReturnMBs is an output returned: --collect of a file of Bytes the
	// command wrote, from the command's end until it is saved on the
	// requester's disk: pack, upload, download, unpack (the command's
	// own run time is taken off).
	ReturnMBs float64 `json:"return_mb_s"`
}

// filesBytes is the size of the file sent and returned.
const filesBytes = 32 << 20

// files measures an input sent and an output returned, and a local copy.
func files(ctx context.Context, cfg Config, r *Report) error {
	trials := 3
	if cfg.Quick {
		trials = 1
	}
	c, err := servingCluster(ctx, cfg, "master")
	if err != nil {
		return err
	}
	defer c.close()
	dir, err := os.MkdirTemp(cfg.Dir, "files")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var local, send, ret []float64
	mbs := func(d time.Duration) float64 { return float64(filesBytes) / 1e6 / d.Seconds() }
	for i := range trials {
		in := filepath.Join(dir, fmt.Sprintf("in%d.bin", i))
		if err := randomFile(in, filesBytes); err != nil {
			return err
		}
		d, err := copyFile(in, filepath.Join(dir, fmt.Sprintf("copy%d.bin", i)))
		if err != nil {
			return err
		}
		local = append(local, mbs(d))

		t0 := time.Now()
		b, err := c.client.SendFiles(ctx, []string{in})
		if err != nil {
			return fmt.Errorf("send: %w", err)
		}
		res, err := c.client.SubmitJob(ctx, &agent.Job{Cmd: "true", Inputs: []*messages.Bundle{b}, Timeout: time.Minute})
		if err = jobErr(res, err); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		send = append(send, mbs(time.Since(t0)))

		t0 = time.Now()
		res, err = c.client.SubmitJob(ctx, &agent.Job{Cmd: fmt.Sprintf("head -c %d /dev/urandom > out.bin", filesBytes),
			Collect: []string{"out.bin"}, Timeout: time.Minute})
		if err = jobErr(res, err); err != nil {
			return fmt.Errorf("return: %w", err)
		}
		out := filepath.Join(dir, fmt.Sprintf("out%d", i))
		if _, err := c.client.Save(ctx, res, out); err != nil {
			return fmt.Errorf("return: %w", err)
		}
		ret = append(ret, mbs(time.Since(t0)-time.Duration(res.DurationMs)*time.Millisecond))
		if info, err := os.Stat(filepath.Join(out, "out.bin")); err != nil || info.Size() != filesBytes {
			return fmt.Errorf("return: out.bin came back as %v (%v), want %d bytes", info, err, filesBytes)
		}
	}
	median := func(v []float64) float64 {
		slices.Sort(v)
		return v[len(v)/2]
	}
	r.Files = Files{Bytes: filesBytes, Trials: trials, LocalMBs: median(local), SendMBs: median(send), ReturnMBs: median(ret)}
	return nil
}

// jobErr is why res, err is no successful run.
func jobErr(res *messages.ExecResult, err error) error {
	switch {
	case err != nil:
		return err
	case res.ErrorKind != messages.ErrorKind_ERROR_KIND_NONE || res.ExitCode != 0:
		return fmt.Errorf("exit %d: %s", res.ExitCode, res.Error)
	}
	return nil
}

func randomFile(path string, n int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	_, err = io.CopyN(f, rand.Reader, n)
	return errors.Join(err, f.Close())
}

// copyFile copies src to dst and says how long it took.
func copyFile(src, dst string) (time.Duration, error) {
	t0 := time.Now()
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(out, in)
	if err = errors.Join(err, out.Close()); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}
