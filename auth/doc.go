// Package auth says who may do what on baton's bus and how they prove it:
// the roles (watch, submit, node, admin), the NATS permissions of each, the
// credential files that carry them, and the broker's TLS certificates.
package auth
