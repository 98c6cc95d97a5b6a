package broker

// Log keys.
const (
	keyComponent = "component"
	keyAddr      = "addr"
	keyDataDir   = "data_dir"
	keyHTTP      = "http"
	keyPath      = "path"
	keyDir       = "dir"
	keyErr       = "err"
)
