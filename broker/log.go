package broker

// Log keys.
const (
	keyComponent = "component"
	keyAddr      = "addr"
	keyDataDir   = "data_dir"
	keyHTTP      = "http"
	keyDiscovery = "discovery"
	keyPath      = "path"
	keyDir       = "dir"
	keyErr       = "err"
)
