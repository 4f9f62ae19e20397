package tracing_test

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/patientmsg/gateway/internal/tracing"
)

func TestATraceParentCarriesTheSpanAcrossTheQueue(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())
	ctx, span := tp.Tracer("test").Start(context.Background(), "request")
	defer span.End()

	header := tracing.TraceParent(ctx)
	if header == "" {
		t.Fatal("no traceparent for a context with a span")
	}
	got := trace.SpanContextFromContext(tracing.WithTraceParent(context.Background(), header))
	want := span.SpanContext()
	if got.TraceID() != want.TraceID() || got.SpanID() != want.SpanID() || !got.IsRemote() || !got.IsSampled() {
		t.Fatalf("carried %v, want %v", got, want)
	}
}

func TestWithoutASpanTheresNoTraceParentAndItCostsNothing(t *testing.T) {
	ctx := context.Background()
	if tp := tracing.TraceParent(ctx); tp != "" {
		t.Fatalf("traceparent %q without a span", tp)
	}
	if n := testing.AllocsPerRun(100, func() { _ = tracing.TraceParent(ctx) }); n != 0 {
		t.Fatalf("%v allocations per message with tracing off", n)
	}
	for _, tp := range []string{"", "garbage", "00-00000000000000000000000000000000-0000000000000000-01"} {
		if sc := trace.SpanContextFromContext(tracing.WithTraceParent(ctx, tp)); sc.IsValid() {
			t.Fatalf("%q gave a parent %v", tp, sc)
		}
	}
}

func TestAProviderIsBuiltForACollectorWithoutReachingIt(t *testing.T) {
	tp, err := tracing.NewProvider(context.Background(), "http://127.0.0.1:1", "patient-messaging-gateway")
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatalf("shutdown with no span to flush: %v", err)
	}
}
