package files

// Log keys.
const (
	keyComponent = "component"
	keyErr       = "err"
	keySHA       = "sha256"
	keyBytes     = "bytes"
)
