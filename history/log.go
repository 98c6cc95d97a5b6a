package history

// Log keys.
const (
	keyComponent = "component"
	keyErr       = "err"
	keyJob       = "job"
	keyJobs      = "jobs"
	keyMaster    = "master"
	keyBytes     = "bytes"
	keyTook      = "took"
)
