package broker

import (
	"encoding/json"
	"net/http"

	"baton/web"
)

// handler serves the NATS monitoring endpoints, baton's /status and the
// dashboard.
func (b *Broker) handler() http.Handler {
	mux := b.server.MonitorMux()
	mux.HandleFunc("/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(b.Status())
	})
	b.web.Register(mux)
	return web.Handler(mux)
}
