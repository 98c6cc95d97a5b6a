// Package files keeps the archives sent with commands and brought back: a
// JetStream object store on the broker, content-addressed by SHA-256,
// written and read only through the broker, with tickets.
package files
