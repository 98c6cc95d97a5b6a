package bus

import (
	"strings"

	"google.golang.org/protobuf/proto"

	"baton/messages"
)

// Headers that make baton's traffic readable to the nats CLI without
// decoding the protobuf body.
const (
	HeaderNode     = "Baton-Node"
	HeaderPriority = "Baton-Priority"
	HeaderSeq      = "Baton-Seq"
	HeaderEpoch    = "Baton-Epoch"
	HeaderMaster   = "Baton-Master"
	HeaderEvent    = "Baton-Event"
	HeaderMembers  = "Baton-Members"
	HeaderReason   = "Baton-Reason"
)

// MessageFor returns an empty message of the type that travels on subject,
// false for a subject baton does not define a body for.
func MessageFor(subject string) (proto.Message, bool) {
	switch {
	case subject == SubjectRegister:
		return &messages.Register{}, true
	case subject == SubjectHeartbeat:
		return &messages.Heartbeat{}, true
	case subject == SubjectDeregister:
		return &messages.Deregister{}, true
	case subject == SubjectMaster:
		return &messages.Announcement{}, true
	case subject == SubjectExec:
		return &messages.ExecRequest{}, true
	case strings.HasPrefix(subject, SubjectExecStatus+"."):
		return &messages.ExecStatusQuery{}, true
	}
	return nil, false
}
