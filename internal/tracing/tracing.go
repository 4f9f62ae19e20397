// Package tracing is the gateway's OpenTelemetry tracing: off unless
// OTEL_EXPORTER_OTLP_ENDPOINT is set, then spans are batched to an OTLP
// HTTP collector. It also carries a span's W3C trace context across the
// queue (a send task's traceparent), so one trace runs from the API call
// to the provider call.
//
// Spans carry route templates, channel names, message ids and outcome
// classes only: never a phone number, email address, openid, message body,
// raw URL, query string or client address.
package tracing

import (
	"context"
	"os"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Scope names the gateway's tracer.
const Scope = "github.com/patientmsg/gateway"

// Attribute keys the gateway's spans use beyond the OpenTelemetry
// semantic conventions'.
const (
	// Channel is the channel a message goes out on ("sms").
	Channel = attribute.Key("gateway.channel")
	// Outcome is the class of a provider call's result: accepted, failed,
	// throttled or suppressed (the send-outcome metric's classes).
	Outcome = attribute.Key("gateway.outcome")
)

// endpointVar is the exporter's own setting: it reads the endpoint from it.
const endpointVar = "OTEL_EXPORTER_OTLP_ENDPOINT"

// NewProvider builds the tracer provider that exports to endpoint (the
// OTLP HTTP base URL, "/v1/traces" appended) in batches, the spans named
// as service. Shutdown flushes it.
func NewProvider(ctx context.Context, endpoint, service string) (*sdktrace.TracerProvider, error) {
	var opts []otlptracehttp.Option
	if os.Getenv(endpointVar) == "" {
		// Set in GATEWAY_CONFIG_FILE, not in the environment the exporter reads.
		opts = append(opts, otlptracehttp.WithEndpointURL(strings.TrimSuffix(endpoint, "/")+"/v1/traces"))
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, err
	}
	res, err := resource.Merge(resource.Default(),
		resource.NewSchemaless(attribute.String("service.name", service)))
	if err != nil {
		return nil, err
	}
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)), nil
}

var propagator = propagation.TraceContext{}

// TraceParent is the W3C traceparent of the span in ctx; "" when ctx holds
// none (tracing off), at the cost of a context lookup.
func TraceParent(ctx context.Context) string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ""
	}
	c := propagation.MapCarrier{}
	propagator.Inject(ctx, c)
	return c["traceparent"]
}

// WithTraceParent returns ctx with the remote span of a W3C traceparent as
// the parent of the spans started from it; ctx itself when tp is "" or
// malformed.
func WithTraceParent(ctx context.Context, tp string) context.Context {
	if tp == "" {
		return ctx
	}
	return propagator.Extract(ctx, propagation.MapCarrier{"traceparent": tp})
}
