package broker

import (
	"encoding/json"
	"net/http"
)

// handler serves the NATS monitoring endpoints and baton's /status.
func (b *Broker) handler() http.Handler {
	mux := b.server.MonitorMux()
	mux.HandleFunc("/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(b.Status())
	})
	return mux
}
