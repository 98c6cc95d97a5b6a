package election

import (
	"time"

	"baton/messages"
)

// StatusMember is one member in the cluster status.
type StatusMember struct {
	Name     string `json:"name"`
	Priority int32  `json:"priority"`
	Rank     uint32 `json:"rank"`
	Master   bool   `json:"master"`
}

// Status is the cluster's state as `node status --json` and the broker's
// /status print it.
type Status struct {
	Epoch   uint64         `json:"epoch"`
	Master  string         `json:"master"`
	Members []StatusMember `json:"members"`
	// LastChange is what changed last, and LastChangeAt when.
	LastChange   string    `json:"last_change"`
	LastChangeAt time.Time `json:"last_change_at"`
}

// StatusOf summarises an announcement.
func StatusOf(a *messages.Announcement) Status {
	members := make([]StatusMember, len(a.Members))
	for i, m := range a.Members {
		members[i] = StatusMember{Name: m.Name, Priority: m.Priority, Rank: m.Rank, Master: a.Master != "" && m.Name == a.Master}
	}
	return Status{Epoch: a.Epoch, Master: a.Master, Members: members, LastChange: a.Event, LastChangeAt: a.ChangedAt.AsTime()}
}
