package broker

import (
	"encoding/json"
	"net/http"

	"baton/web"
)

// handler serves the dashboard, the NATS monitoring endpoints and baton's
// /status. Only /healthz is open to all, for health checks; the rest
// needs what the dashboard needs (a token, when credentials are
// required): they name every client and member.
func (b *Broker) handler() http.Handler {
	mux := http.NewServeMux()
	for path, h := range b.server.MonitorHandlers() {
		if path == "/healthz" {
			mux.Handle(path, h)
			continue
		}
		mux.Handle(path, b.web.Protect(h))
	}
	mux.Handle("/status", b.web.Protect(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(b.Status())
	})))
	b.web.Register(mux)
	return web.Handler(mux)
}
