package election

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"baton/bus"
	"baton/messages"
)

// Get asks the broker for the cluster's state, every member listed. It
// blocks until the broker answers or ctx ends; a broker still starting its
// election service is asked again.
func Get(ctx context.Context, nc *nats.Conn) (*messages.Announcement, error) {
	var msg *nats.Msg
	var err error
	for attempt := 1; ; attempt++ {
		msg, err = nc.RequestWithContext(ctx, messages.SubjectMasterGet, nil)
		if !errors.Is(err, nats.ErrNoResponders) || !bus.Backoff(ctx, attempt) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("ask the broker for the cluster status: %w", err)
	}
	var a messages.Announcement
	if err := proto.Unmarshal(msg.Data, &a); err != nil {
		return nil, fmt.Errorf("cluster status: malformed reply: %w", err)
	}
	return &a, nil
}
