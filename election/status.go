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
	// Version is the node's build version, empty when it reported none.
	Version string `json:"version"`
	// HeartbeatAgeMs is how long before the status was read the broker
	// last heard from the node; -1 when the status does not say (the
	// members of a master.current announcement).
	HeartbeatAgeMs int64 `json:"heartbeat_age_ms"`
}

// Status is the cluster's state as `node status --json`, the broker's
// /status and the dashboard's /api/status print it.
type Status struct {
	Epoch   uint64         `json:"epoch"`
	Master  string         `json:"master"`
	Members []StatusMember `json:"members"`
	// LastChange is what changed last, and LastChangeAt when.
	LastChange   string    `json:"last_change"`
	LastChangeAt time.Time `json:"last_change_at"`
	// At is when the broker read this state.
	At time.Time `json:"at"`
	// MaxMembers is the most members the broker admits, 0 for no limit;
	// Refused counts the nodes it turned away for it since it started.
	MaxMembers uint32 `json:"max_members"`
	Refused    uint64 `json:"refused"`
}

// StatusOf summarises an announcement.
func StatusOf(a *messages.Announcement) Status {
	members := make([]StatusMember, len(a.Members))
	at := a.At.AsTime()
	for i, m := range a.Members {
		age := int64(-1)
		if m.HeardAt != nil {
			age = max(at.Sub(m.HeardAt.AsTime()).Milliseconds(), 0)
		}
		members[i] = StatusMember{Name: m.Name, Priority: m.Priority, Rank: m.Rank, Master: a.Master != "" && m.Name == a.Master,
			Version: m.Version, HeartbeatAgeMs: age}
	}
	return Status{Epoch: a.Epoch, Master: a.Master, Members: members, LastChange: a.Event, LastChangeAt: a.ChangedAt.AsTime(), At: at,
		MaxMembers: a.MaxMembers, Refused: a.Refused}
}
