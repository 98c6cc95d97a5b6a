package messages

// The subjects baton uses. Each carries the message named beside it.
const (
	// SubjectRegister carries Register requests; the reply is RegisterReply.
	SubjectRegister = "node.register"
	// SubjectHeartbeat carries Heartbeats; the reply is a HeartbeatAck.
	SubjectHeartbeat = "node.heartbeat"
	// SubjectDeregister carries Deregister requests (graceful leave).
	SubjectDeregister = "node.deregister"
	// SubjectMaster carries the broker's Announcements.
	SubjectMaster = "master.current"
	// SubjectMasterGet answers a request with the current Announcement, for
	// clients that cannot wait for the next re-publication.
	SubjectMasterGet = "master.get"
	// SubjectExec carries ExecRequests; only the master subscribes, in
	// queue group ExecQueue, and replies with an ExecResult.
	SubjectExec = "exec.request"
	// ExecQueue is the queue group of exec.request subscribers, so that a
	// request reaches one master even while two briefly overlap.
	ExecQueue = "baton-exec"
	// SubjectExecStatus prefixes the subject on which each node answers
	// ExecStatusQuery: exec.status.<instance id> (see ExecStatusSubject).
	SubjectExecStatus = "exec.status"
	// SubjectControl prefixes the subject on which each node answers
	// NodeControl requests, from admins only: node.ctl.<instance id> (see
	// ControlSubject).
	SubjectControl = "node.ctl"
)

// The wire protocol. A build speaks Protocol; a broker admits nodes that
// speak MinProtocol to Protocol. It goes up when a message gains a
// meaning an older build would silently get wrong.
const (
	// Protocol 2: requests may carry files (ExecRequest.inputs, bundle,
	// collect), which a master of protocol 1 would ignore, running the
	// command without them.
	Protocol = 2
	// MinProtocol is the oldest protocol a broker admits.
	MinProtocol = 2
)

// ControlSubject is the control subject of the node with instanceID.
func ControlSubject(instanceID string) string { return SubjectControl + "." + instanceID }

// ExecStatusSubject is the status subject of the node with instanceID.
func ExecStatusSubject(instanceID string) string { return SubjectExecStatus + "." + instanceID }

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
