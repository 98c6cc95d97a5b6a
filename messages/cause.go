package messages

// Text says in a few words how a member departed.
func (c Cause) Text() string {
	switch c {
	case Cause_CAUSE_CONNECTION_CLOSED:
		return "connection closed"
	case Cause_CAUSE_HEARTBEAT_TIMEOUT:
		return "heartbeat timeout"
	case Cause_CAUSE_LEFT:
		return "left"
	}
	return "unknown cause"
}
