package messages

// The size budget, chosen together: the largest result is two output
// streams that JSON escaping can grow up to six-fold (a control byte
// becomes \u00XX), plus a command of at most MaxCommandBytes and a few small
// fields; MaxPayload holds that for the default 1 MiB output cap of each
// stream (executor.DefaultConfig) with room to spare.
const (
	// MaxCommandBytes is the largest command line a request may carry.
	MaxCommandBytes = 64 << 10
	// MaxStdinBytes is the largest standard input a request may carry.
	MaxStdinBytes = 1 << 20
	// MaxPayload is the broker's NATS max payload.
	MaxPayload = 16 << 20
)

// resultOverhead is what a result holds besides its output: the command,
// escaped, and the small fields.
const resultOverhead = 6*MaxCommandBytes + 4<<10

// ResultBytesBound is the largest encoded result (in any encoding the
// broker carries) for output caps of maxOutput bytes per stream.
func ResultBytesBound(maxOutput int) int { return 2*6*maxOutput + resultOverhead }

// MaxOutputCap is the largest output cap per stream whose results still fit
// MaxPayload.
const MaxOutputCap = (MaxPayload - resultOverhead) / (2 * 6)
