package web

// Log keys.
const (
	keyComponent = "component"
	keyErr       = "err"
	keyJob       = "job"
	keyRole      = "role"
	keyRemote    = "remote"
	keyPath      = "path"
)
