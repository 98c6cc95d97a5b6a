package history

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"baton/messages"
)

// maxListBytes bounds a JobList's encoding: far below a message's limit,
// whatever the commands hold.
const maxListBytes = 8 << 20

// readChunk is how many records one read fetches (the server answers at
// most 1,024 subjects at once).
const readChunk = 128

// List answers q: the jobs that match it, newest first.
func (s *Store) List(ctx context.Context, q messages.JobQuery) (*messages.JobList, error) {
	if err := checkQuery(&q); err != nil {
		return nil, err
	}
	if err := s.waitLoaded(ctx); err != nil {
		return nil, err
	}
	list := &messages.JobList{Jobs: []messages.JobSummary{}}
	size := 0
	add := func(sum messages.JobSummary) bool {
		b, _ := json.Marshal(sum)
		if size+len(b) > maxListBytes && len(list.Jobs) > 0 {
			list.More = true
			return false
		}
		size += len(b)
		list.Jobs = append(list.Jobs, sum)
		return len(list.Jobs) < q.Limit
	}
	before := q.Before
	for {
		// A chunk of candidates at a time: the index is not held while the
		// store is read.
		var chunk []*entry
		s.mu.Lock()
		s.idx.newestFirst(before, func(e *entry) bool {
			if e.matches(&q) {
				chunk = append(chunk, e)
			}
			before = e.sum.ID
			return len(chunk) < readChunk
		})
		s.mu.Unlock()
		if len(chunk) == 0 {
			return list, nil
		}
		var full map[string]*messages.Job
		var need []string
		for _, e := range chunk {
			if e.cmdCut || q.Grep != "" && !strings.Contains(e.sum.Cmd, q.Grep) {
				need = append(need, e.sum.ID)
			}
		}
		if len(need) > 0 {
			var err error
			if full, err = s.readMany(ctx, need, grepFilter(q.Grep)); err != nil {
				return nil, err
			}
		}
		for _, e := range chunk {
			sum := e.sum
			job := full[sum.ID]
			if job != nil {
				sum = job.JobSummary
			}
			if q.Grep != "" && !strings.Contains(sum.Cmd, q.Grep) &&
				(job == nil || !strings.Contains(job.Stdout, q.Grep) && !strings.Contains(job.Stderr, q.Grep)) {
				continue
			}
			if !add(sum) {
				return list, nil
			}
		}
	}
}

func checkQuery(q *messages.JobQuery) error {
	switch {
	case q.State != "" && !slices.Contains(messages.JobStates(), q.State):
		return fmt.Errorf("unknown state %q (want one of %s)", q.State, strings.Join(messages.JobStates(), ", "))
	case q.Limit < 0 || q.Limit > messages.MaxJobLimit:
		return fmt.Errorf("limit %d is not from 1 to %d", q.Limit, messages.MaxJobLimit)
	case q.Before != "" && !messages.ValidJobID(q.Before):
		return fmt.Errorf("before %q is not a job ID", q.Before)
	case len(q.Grep) > messages.MaxCommandBytes:
		return fmt.Errorf("grep text of %d bytes is longer than the %d allowed", len(q.Grep), messages.MaxCommandBytes)
	}
	if q.Limit == 0 {
		q.Limit = messages.DefaultJobLimit
	}
	return nil
}

// grepFilter is a quick test of a stored record for text: false when the
// record's JSON cannot hold it (then decoding it is spared), true when it
// may. JSON escapes each character on its own, so text in a field's value
// shows in the record as text escaped.
func grepFilter(text string) func([]byte) bool {
	if text == "" {
		return func([]byte) bool { return true }
	}
	quoted, _ := encode(text)
	escaped := quoted[1 : len(quoted)-1]
	return func(record []byte) bool { return bytes.Contains(record, escaped) }
}

// readMany returns the stored records of ids, by ID, but for those that
// keep fails, and for those no longer stored (expired meanwhile). The
// server ends an answer early past a byte budget, so what did not come is
// asked for again.
func (s *Store) readMany(ctx context.Context, ids []string, keep func([]byte) bool) (map[string]*messages.Job, error) {
	jobs := make(map[string]*messages.Job, len(ids))
	for len(ids) > 0 {
		subjects := make([]string, len(ids))
		for i, id := range ids {
			subjects[i] = messages.JobSubject(id)
		}
		msgs, err := jetstreamext.GetLastMsgsFor(ctx, s.js, messages.JobStream, subjects)
		if err != nil {
			return nil, fmt.Errorf("read jobs: %w", err)
		}
		came := make(map[string]bool, len(ids))
		for m, err := range msgs {
			if err != nil {
				if errors.Is(err, jetstreamext.ErrNoMessages) {
					break // all expired meanwhile
				}
				return nil, fmt.Errorf("read jobs: %w", err)
			}
			id := strings.TrimPrefix(m.Subject, messages.JobSubjectPrefix)
			came[id] = true
			if !keep(m.Data) {
				continue
			}
			var job messages.Job
			if err := json.Unmarshal(m.Data, &job); err == nil {
				jobs[job.ID] = &job
			}
		}
		if len(came) == 0 {
			break
		}
		ids = slices.DeleteFunc(ids, func(id string) bool { return came[id] })
	}
	return jobs, nil
}

// Get returns job id's whole record, or an error wrapping ErrUnknownJob.
func (s *Store) Get(ctx context.Context, id string) (*messages.Job, error) {
	if !messages.ValidJobID(id) {
		return nil, fmt.Errorf("%w: %q is not a job ID (%d characters of 0-9 and a-z)", ErrUnknownJob, id, messages.JobIDLen)
	}
	if err := s.waitLoaded(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	known := s.idx.get(id) != nil
	s.mu.Unlock()
	if !known {
		return nil, fmt.Errorf("%w: %s (never run, or expired)", ErrUnknownJob, id)
	}
	return s.read(ctx, id)
}

func (s *Store) handleList(msg *nats.Msg) {
	var q messages.JobQuery
	var list *messages.JobList
	err := json.Unmarshal(msg.Data, &q)
	if err != nil {
		err = fmt.Errorf(`query is not JSON such as {"state":"failed","limit":20}: %v`, err)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		list, err = s.List(ctx, q)
		cancel()
	}
	if err != nil {
		list = &messages.JobList{Jobs: []messages.JobSummary{}, Error: err.Error()}
	}
	b, _ := encode(list) // of plain values: it cannot fail
	s.respond(msg, b)
}

func (s *Store) handleGet(msg *nats.Msg) {
	var q messages.JobGet
	var ans messages.JobAnswer
	err := json.Unmarshal(msg.Data, &q)
	if err != nil {
		err = fmt.Errorf(`request is not JSON such as {"id":"…"}: %v`, err)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		ans.Job, err = s.Get(ctx, q.ID)
		cancel()
		if err == nil && ans.Job.OutputBundle != "" && s.cfg.Ticket != nil {
			// Whoever may read the record may fetch what it brought back.
			ans.Job.OutputTicket = s.cfg.Ticket(ans.Job.OutputBundle)
		}
	}
	if err != nil {
		ans.Error = strings.TrimPrefix(err.Error(), "history: ")
	}
	b, _ := encode(&ans)
	s.respond(msg, b)
}
