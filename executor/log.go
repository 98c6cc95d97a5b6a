package executor

// Log keys.
const (
	keyComponent = "component"
	keyCmd       = "cmd"
	keyExitCode  = "exit_code"
	keyKind      = "kind"
	keyDuration  = "duration"
	keyErr       = "err"
)
