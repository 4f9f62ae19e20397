// Package ops is the gateway's internal operations listener
// (GATEWAY_OPS_ADDR): Prometheus metrics, the orchestrator's probes and the
// queue dashboard, on a port of its own that stays off the public network.
//
//	GET /metrics   the gateway's metrics (package metrics); no authentication
//	GET /healthz   the process is up
//	GET /readyz    the process can reach Redis
//	/queues/       the queue dashboard (asynqmon), for the operators named
//	               in GATEWAY_OPS_USERS (HTTP basic authentication)
//
// The queue dashboard never shows a task's payload, which holds phone
// numbers and message text: only the task's type and the ids in it (see
// Payload). Its UI is embedded in the asynqmon module; the page it serves
// is stripped of the two font stylesheets it would load from the
// internet, and a Content-Security-Policy keeps the browser from fetching
// anything but the listener's own files.
package ops

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"
)

// Options configure the listener's handler.
type Options struct {
	// Redis is the gateway's Redis: readiness pings it, the dashboard
	// reads the queues in it.
	Redis redis.UniversalClient
	// Metrics serves /metrics (nil: not served).
	Metrics http.Handler
	// Users maps an operator's name to the bcrypt hash of their password;
	// without any, the queue dashboard is not served.
	Users map[string]string
	// ReadOnly keeps the dashboard's users from acting on the queues.
	ReadOnly bool
	Logger   *slog.Logger
}

// DashboardPath is where the queue dashboard is served.
const DashboardPath = "/queues"

// Handler returns the listener's handler.
func Handler(o Options) http.Handler {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		if err := o.Redis.Ping(ctx).Err(); err != nil {
			w.Header().Set("Content-Type", "application/problem+json")
			w.Header().Set("Retry-After", "5")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"type":"/problems/not-ready","title":"Service Unavailable","status":503,"detail":"Redis is not reachable"}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ready"}`))
	})
	if o.Metrics != nil {
		mux.Handle("GET /metrics", o.Metrics)
	}
	var dashboard http.Handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "the queue dashboard is off: GATEWAY_OPS_USERS names no operator", http.StatusNotFound)
	})
	if len(o.Users) > 0 {
		dashboard = basicAuth(newUsers(o.Users), o.Logger, queueDashboard(o.Redis, o.ReadOnly))
	}
	mux.Handle(DashboardPath, dashboard)
	mux.Handle(DashboardPath+"/", dashboard)
	return mux
}
