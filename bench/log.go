package bench

// Log keys.
const (
	keyPart    = "part"
	keyTook    = "took"
	keyMembers = "members"
	keyFigures = "figures"
)
