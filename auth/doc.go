// Package auth says who may do what on baton's bus: the roles (watch,
// submit, node, admin), the NATS permissions of each, and the credential
// files that carry them.
package auth
