// Package bus is baton's NATS plumbing: the broker's embedded server, the
// client connection helper, and the subjects everything travels on.
package bus
