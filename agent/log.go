package agent

// Log keys.
const (
	keyComponent  = "component"
	keyEpoch      = "epoch"
	keyID         = "id"
	keyMaster     = "master"
	keyEvent      = "event"
	keyCmd        = "cmd"
	keyRequester  = "requester"
	keySubject    = "subject"
	keyAttempt    = "attempt"
	keyBytes      = "bytes"
	keySinceHeard = "since_heard"
	keyExitCode   = "exit_code"
	keyError      = "error"
	keyErr        = "err"
	keyPath       = "path"
	keyCount      = "count"
	keyRetryIn    = "retry_in"
	keySetting    = "setting"
	keyValue      = "value"
	keyWas        = "was"
)
