package gateway

import (
	"strings"

	"github.com/gofiber/fiber/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// trace makes a server span of each request (with a tracer only, see
// Options.Tracer), named for its method and route template, never the path
// as sent: that holds ids, and a form link its token. The span carries the
// method, the route and the status only: no query string, no client
// address, no header. A request refused before its route's handler (by
// authentication, say) is named for the prefix that refused it ("/v1").
func (s *Server) trace(c *fiber.Ctx) (err error) {
	// Fiber's method string shares the request's buffer, which the next
	// request reuses; the span outlives this one.
	method := strings.Clone(c.Method())
	ctx, span := s.opts.Tracer.Start(c.UserContext(), method, trace.WithSpanKind(trace.SpanKindServer))
	c.SetUserContext(ctx)
	defer func() {
		// After routing, the route is the template that matched.
		route := c.Route().Path
		status := statusOf(c, err)
		r := recover()
		if r != nil {
			status = 500 // recover, outside, answers it
		}
		span.SetName(method + " " + route)
		span.SetAttributes(attribute.String("http.request.method", method), attribute.String("http.route", route),
			attribute.Int("http.response.status_code", status))
		if status >= 500 {
			span.SetStatus(codes.Error, "")
		}
		span.End()
		if r != nil {
			panic(r)
		}
	}()
	return c.Next()
}
