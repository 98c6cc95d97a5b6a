// Package web serves baton's dashboard and its JSON API from the broker:
// the cluster, a command runner, and the job history, live.
package web
