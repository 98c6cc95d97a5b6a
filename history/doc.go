// Package history keeps the job history on the broker: one record per job in
// a JetStream stream that only the broker writes, indexed in memory for
// queries, marked lost when its master is, and trimmed by age and size.
package history
