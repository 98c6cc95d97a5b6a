package election

// Log keys.
const (
	keyComponent   = "component"
	keyNode        = "node"
	keyBrokerEpoch = "broker_epoch"
	keyEpoch       = "epoch"
	keyMaster      = "master"
	keyCause       = "cause"
	keyEvent       = "event"
	keyReason      = "reason"
	keyPriority    = "priority"
	keyClientID    = "client_id"
	keySubject     = "subject"
	keyNodes       = "nodes"
	keyDropped     = "dropped"
	keyErr         = "err"
)
