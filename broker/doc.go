// Package broker is baton's broker: it owns the embedded NATS server, the
// election service and the monitoring HTTP server, and starts and stops
// them in order.
package broker
