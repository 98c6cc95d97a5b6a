// Package bench measures baton: command round trips against the local
// fork/exec floor, failover times, and the broker's load at scale.
package bench
