package bus

// The subjects baton uses. Each carries the protobuf message named beside
// it (package messages).
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
)

// ExecStatusSubject is the status subject of the node with instanceID.
func ExecStatusSubject(instanceID string) string { return SubjectExecStatus + "." + instanceID }

// Size limits, chosen together: the largest result is two output streams of
// MaxOutput bytes that JSON escaping can grow up to six-fold (a control byte
// becomes \u00XX), plus a command of at most MaxCommandBytes and a few
// small fields; MaxPayload holds that with room to spare.
const (
	// MaxOutput is the default cap of each of stdout and stderr.
	MaxOutput = 1 << 20
	// MaxCommandBytes is the largest command line a request may carry.
	MaxCommandBytes = 64 << 10
	// MaxPayload is the broker's NATS max payload.
	MaxPayload = 16 << 20
)

// ResultBytesBound is the largest encoded result (in any encoding the
// broker carries) for output caps of maxOutput bytes per stream.
func ResultBytesBound(maxOutput int) int {
	return 2*6*maxOutput + 6*MaxCommandBytes + 4<<10
}
