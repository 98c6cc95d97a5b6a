// Package election elects baton's master: the broker-side Service ranks
// live members and announces the master, and the node-side Member joins,
// beats and follows those announcements.
package election
