package auth

import (
	"fmt"
	"slices"

	"github.com/nats-io/nats-server/v2/server"

	"baton/messages"
)

// Role is what a credential may do.
type Role string

// The roles, each a superset of the one before (but for its own inbox).
const (
	// Watch learns the master and the cluster's status; it changes
	// nothing and sees no one's commands or results.
	Watch Role = "watch"
	// Submit may also run commands and read its own results.
	Submit Role = "submit"
	// Node may also register, beat and leave, and take exec requests when
	// it is master.
	Node Role = "node"
	// Admin may do every baton action, but never the broker's own, and is
	// the history's reader: every job's command and output.
	Admin Role = "admin"
)

// Roles lists every role, least able first.
func Roles() []Role { return []Role{Watch, Submit, Node, Admin} }

// ParseRole returns the role named s.
func ParseRole(s string) (Role, error) {
	for _, r := range Roles() {
		if string(r) == s {
			return r, nil
		}
	}
	return "", fmt.Errorf("auth: unknown role %q (want watch, submit, node or admin)", s)
}

// InboxPrefix is where the role's clients receive replies; no other role
// may subscribe there.
func (r Role) InboxPrefix() string { return "_INBOX_" + string(r) }

// Subjects of the server and of JetStream that no client role touches.
var forbidden = []string{"$SYS.>", "$JS.>", "$KV.>", "$O.>"}

// Permissions are the role's NATS permissions in the clients' account: an
// allow-list for publishing and subscribing (a user with neither would be
// unrestricted), and the server's own subjects denied outright.
func (r Role) Permissions() *server.Permissions {
	inbox := r.InboxPrefix() + ".>"
	// Everyone may learn the master, list and query the micro service, and
	// read its own replies. Nobody may read what nodes send the broker (a
	// registration carries the node's session key) or answer it.
	pub := []string{messages.SubjectMasterGet, "$SRV.>"}
	sub := []string{messages.SubjectMaster, inbox}
	var resp *server.ResponsePermission
	if r == Submit || r == Node || r == Admin {
		// Files go with commands and come back from them: the broker's
		// file store, through its tickets (no JetStream rights).
		pub = append(pub, messages.SubjectExec, messages.SubjectExecStatus+".*", messages.SubjectFilePut, messages.SubjectFileGet)
	}
	deny := forbidden
	if r == Admin {
		// The history, and its stream read-only with the nats CLI: the
		// allow-list names the few JetStream subjects it may use.
		pub = append(pub, messages.SubjectJobList, messages.SubjectJobGet)
		// node ctl: show, change and stop nodes.
		pub = append(pub, messages.SubjectControl+".*")
		pub = append(pub, messages.JobReadSubjects()...)
		deny = slices.DeleteFunc(slices.Clone(forbidden), func(s string) bool { return s == "$JS.>" })
	}
	if r == Node || r == Admin {
		// A master reports its jobs to the history.
		pub = append(pub, messages.SubjectRegister, messages.SubjectHeartbeat, messages.SubjectDeregister, messages.SubjectJobRecord)
		// A master answers on its main connection, not the one the request
		// came in on, so it publishes to the inboxes of those who may
		// submit; `nats micro` queries it answers as responses.
		for _, to := range []Role{Submit, Node, Admin} {
			pub = append(pub, to.InboxPrefix()+".>")
		}
		sub = append(sub,
			// Only as a queue member: a plain subscription would take a
			// copy of every request.
			messages.SubjectExec+" "+messages.ExecQueue,
			messages.SubjectExecStatus+".*",
			// Its own control requests (node.ctl.<instance id>).
			messages.SubjectControl+".*",
			"$SRV.>")
		resp = &server.ResponsePermission{MaxMsgs: 1, Expires: server.DEFAULT_ALLOW_RESPONSE_EXPIRATION}
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub, Deny: deny},
		Subscribe: &server.SubjectPermission{Allow: sub, Deny: forbidden},
		Response:  resp,
	}
}
