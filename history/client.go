package history

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"

	"baton/messages"
)

// ErrNoHistory: nobody answers the history's subjects; the broker keeps
// none.
var ErrNoHistory = errors.New("history: the broker keeps no job history (it was started with --no-history)")

// List asks the broker's history on nc for the jobs q matches, newest
// first, following pages until q.Limit jobs or the last. It blocks until
// the broker answers or ctx ends.
func List(ctx context.Context, nc *nats.Conn, q messages.JobQuery) ([]messages.JobSummary, error) {
	if q.Limit == 0 {
		q.Limit = messages.DefaultJobLimit
	}
	var jobs []messages.JobSummary
	for {
		var page messages.JobList
		if err := ask(ctx, nc, messages.SubjectJobList, q, &page); err != nil {
			return nil, err
		}
		if page.Error != "" {
			return nil, errors.New(page.Error)
		}
		jobs = append(jobs, page.Jobs...)
		if !page.More || len(page.Jobs) == 0 || len(jobs) >= q.Limit {
			return jobs, nil
		}
		q.Before, q.Limit = page.Jobs[len(page.Jobs)-1].ID, q.Limit-len(page.Jobs)
	}
}

// Get asks the broker's history on nc for job id's whole record. It blocks
// until the broker answers or ctx ends.
func Get(ctx context.Context, nc *nats.Conn, id string) (*messages.Job, error) {
	var ans messages.JobAnswer
	if err := ask(ctx, nc, messages.SubjectJobGet, messages.JobGet{ID: id}, &ans); err != nil {
		return nil, err
	}
	if ans.Error != "" {
		return nil, errors.New(ans.Error)
	}
	if ans.Job == nil {
		return nil, fmt.Errorf("job %s: empty answer", id)
	}
	return ans.Job, nil
}

func ask(ctx context.Context, nc *nats.Conn, subject string, body, answer any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	msg, err := nc.RequestWithContext(ctx, subject, b)
	if errors.Is(err, nats.ErrNoResponders) {
		return ErrNoHistory
	}
	if err != nil {
		return fmt.Errorf("ask the broker's history (%s): %w", subject, err)
	}
	if err := json.Unmarshal(msg.Data, answer); err != nil {
		return fmt.Errorf("ask the broker's history (%s): malformed answer: %w", subject, err)
	}
	return nil
}
