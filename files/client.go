package files

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"baton/bundle"
	"baton/bus"
	"baton/messages"
)

// pieceTimeout bounds one piece's round trip to the broker.
const pieceTimeout = 30 * time.Second

// Put stores the archive at path, of format f and holding entries
// entries, through the broker on nc, and returns its bundle with a ticket.
// An archive the broker holds already is not sent again; one over the
// broker's limits is refused before any of it is sent.
func Put(ctx context.Context, nc *nats.Conn, path string, f bundle.Format, entries int) (*messages.Bundle, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("files: %w", err)
	}
	defer file.Close()
	sum, proof := sha256.New(), NewProof()
	size, err := io.Copy(io.MultiWriter(sum, proof), file)
	if err != nil {
		return nil, fmt.Errorf("files: read %s: %w", path, err)
	}
	req := &messages.FilePut{Sha256: hex.EncodeToString(sum.Sum(nil)), Size: uint64(size), Format: f.String(), Files: uint32(entries),
		Proof: hex.EncodeToString(proof.Sum(nil))}
	reply, err := putRequest(ctx, nc, req)
	if err != nil || reply.Bundle != nil {
		return reply.GetBundle(), err
	}
	if _, err := file.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("files: read %s: %w", path, err)
	}
	buf := make([]byte, messages.FileChunkBytes)
	for offset := uint64(0); ; {
		n, err := io.ReadFull(file, buf)
		last := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
		if err != nil && !last {
			return nil, fmt.Errorf("files: read %s: %w", path, err)
		}
		last = last || offset+uint64(n) == uint64(size)
		piece := &messages.FilePut{Upload: reply.Upload, Offset: offset, Data: buf[:n], Last: last}
		if reply, err = putRequest(ctx, nc, piece); err != nil {
			return nil, err
		}
		if last {
			if reply.Bundle == nil {
				return nil, errors.New("files: the broker stored the archive but sent no ticket")
			}
			return reply.Bundle, nil
		}
		offset += uint64(n)
	}
}

func putRequest(ctx context.Context, nc *nats.Conn, req *messages.FilePut) (*messages.FilePutReply, error) {
	for attempt := 1; ; attempt++ {
		reply := &messages.FilePutReply{}
		if err := request(ctx, nc, messages.SubjectFilePut, req, reply); err != nil {
			return nil, err
		}
		switch {
		case reply.Error == "":
			return reply, nil
		case !reply.Retry || !pause(ctx, attempt):
			return nil, errors.New(reply.Error)
		}
	}
}

// maxTries bounds the tries of a request the broker was too busy for:
// with the reconnect backoff, about 15 s of them.
const maxTries = 30

// pause waits before try attempt+1 (bus.ReconnectDelay), and reports
// whether there is one.
func pause(ctx context.Context, attempt int) bool {
	return attempt < maxTries && bus.Backoff(ctx, attempt)
}

// Get writes the archive ticket grants reading to w, through the broker
// on nc, and returns its size.
func Get(ctx context.Context, nc *nats.Conn, ticket string, w io.Writer) (int64, error) {
	req := &messages.FileGet{Ticket: ticket}
	var n int64
	for attempt := 1; ; attempt++ {
		chunk := &messages.FileChunk{}
		if err := request(ctx, nc, messages.SubjectFileGet, req, chunk); err != nil {
			return n, err
		}
		if chunk.Error != "" && chunk.Retry && pause(ctx, attempt) {
			continue
		}
		if chunk.Error != "" {
			return n, errors.New(chunk.Error)
		}
		attempt = 0
		if chunk.Offset != uint64(n) {
			return n, fmt.Errorf("files: a piece at offset %d, want %d", chunk.Offset, n)
		}
		if _, err := w.Write(chunk.Data); err != nil {
			return n, fmt.Errorf("files: write: %w", err)
		}
		n += int64(len(chunk.Data))
		if chunk.Last {
			return n, nil
		}
		req = &messages.FileGet{Download: chunk.Download, Offset: uint64(n)}
	}
}

// request sends req on subject and decodes the reply into reply.
func request(ctx context.Context, nc *nats.Conn, subject string, req, reply proto.Message) error {
	b, err := proto.Marshal(req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, pieceTimeout)
	defer cancel()
	msg, err := nc.RequestWithContext(ctx, subject, b)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return errors.New("files: the broker keeps no files (it runs with --history=false, or is an older version)")
	case err != nil && errors.Is(err, nats.ErrPermissionViolation):
		return fmt.Errorf("files: this credential may not send or fetch files: %w", err)
	case err != nil:
		return fmt.Errorf("files: %s: %w", subject, err)
	}
	if err := proto.Unmarshal(msg.Data, reply); err != nil {
		return fmt.Errorf("files: unreadable reply on %s: %w", subject, err)
	}
	return nil
}
