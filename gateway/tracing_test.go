package gateway

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

func TestARequestsSpanIsNamedForItsRouteNeverItsPath(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	s := New(Options{Logger: slog.New(slog.DiscardHandler), Tracer: tp.Tracer("test"), APIKeys: map[string]string{"clinic-a-key-0123456789": "clinic-a"}})
	cases := []struct {
		name, path, span, route string
		status                  int64
	}{
		{"a route without parameters, asked with a query", "/healthz?to=%2B14155550123", "GET /healthz", "/healthz", 200},
		{"a request refused before its handler is named for the prefix that refused it",
			"/v1/messages/01JDA0Q9Z1Y2X3W4V5T6S7R8Q9?x=1", "GET /v1", "/v1", 401},
		{"a path no route matches is never named", "/patients/+14155550123", "GET /", "/", 404},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec.Reset()
			req := httptest.NewRequest("GET", c.path, nil)
			req.Header.Set("X-Forwarded-For", "203.0.113.7")
			resp, err := s.App().Test(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			spans := rec.Ended()
			if len(spans) != 1 {
				t.Fatalf("%d spans", len(spans))
			}
			sp := spans[0]
			got := map[string]any{}
			for _, kv := range sp.Attributes() {
				got[string(kv.Key)] = kv.Value.AsInterface()
			}
			if sp.Name() != c.span || len(got) != 3 || got["http.request.method"] != "GET" || got["http.route"] != c.route ||
				got["http.response.status_code"] != c.status {
				t.Fatalf("span %q %v, want %q on route %s answered %d", sp.Name(), got, c.span, c.route, c.status)
			}
		})
	}
}
