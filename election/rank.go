package election

import (
	"cmp"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"baton/messages"
)

// candidate is what ranking needs to know of a member.
type candidate struct {
	name       string
	priority   int32
	startedAt  time.Time
	instanceID string
	execKey    []byte
	version    string
}

// compareRank orders candidates for master: priority descending, then
// start time (earlier first), then name.
func compareRank(a, b candidate) int {
	if c := cmp.Compare(b.priority, a.priority); c != 0 {
		return c
	}
	if c := a.startedAt.Compare(b.startedAt); c != 0 {
		return c
	}
	return cmp.Compare(a.name, b.name)
}

// rank returns the best limit candidates (all when limit is 0) as members
// with their ranks, rank 0 first, without gaps.
func rank(cs []candidate, limit int) []*messages.Member {
	slices.SortFunc(cs, compareRank)
	if limit > 0 && len(cs) > limit {
		cs = cs[:limit]
	}
	ms := make([]*messages.Member, len(cs))
	for i, c := range cs {
		ms[i] = &messages.Member{
			Name:       c.name,
			Priority:   c.priority,
			Rank:       uint32(i),
			StartedAt:  timestamppb.New(c.startedAt),
			InstanceId: c.instanceID,
			ExecKey:    c.execKey,
			Version:    c.version,
		}
	}
	return ms
}
