package messages

import (
	"bytes"
	"strings"

	"google.golang.org/protobuf/proto"
)

// ForSubject returns an empty message of the type that travels on subject,
// false for a subject baton does not define a body for.
func ForSubject(subject string) (proto.Message, bool) {
	switch {
	case subject == SubjectRegister:
		return &Register{}, true
	case subject == SubjectHeartbeat:
		return &Heartbeat{}, true
	case subject == SubjectDeregister:
		return &Deregister{}, true
	case subject == SubjectMaster:
		return &Announcement{}, true
	case subject == SubjectExec:
		return &ExecRequest{}, true
	case strings.HasPrefix(subject, SubjectExecStatus+"."):
		return &ExecStatusQuery{}, true
	}
	return nil, false
}

// IsJSON reports whether a request body is JSON: a protobuf ExecRequest
// never starts with '{' (it would be a group field, which proto3 lacks).
func IsJSON(data []byte) bool {
	b := bytes.TrimLeft(data, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}
