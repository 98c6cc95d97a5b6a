package bus

// Log keys.
const (
	keyComponent = "component"
	keyConn      = "conn"
	keySubject   = "subject"
	keyErr       = "err"
	keyNATS      = "nats"
)
