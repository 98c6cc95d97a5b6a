package web

// Log keys.
const (
	keyComponent = "component"
	keyErr       = "err"
	keyRole      = "role"
	keyRemote    = "remote"
	keyPath      = "path"
)
