package service_test

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/patientmsg/gateway/channels/twilio"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/redistest"
	"github.com/patientmsg/gateway/internal/service/servicetest"
)

var ipv4 = regexp.MustCompile(`\b\d{1,3}(\.\d{1,3}){3}\b`)

func TestOneTraceRunsFromTheAPIThroughTheQueueToTheProviderAndCarriesNothingPersonal(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	e := startWithOptions(t, redistest.Start(t), config.RoleAll, servicetest.Options{TracerProvider: tp})

	id := e.send(keyA, smsBody(patientPhone, secretBody, "priority", "high"))
	e.waitFor(id, ledger.StatusDelivered, 10*time.Second)
	if a := e.do("GET", "/v1/messages/"+id+"?view=full", keyA, ""); a.Status != 200 {
		t.Fatalf("GET = %d %s", a.Status, a.Raw)
	}

	// The status callbacks' spans end once they are answered, a moment
	// after the ledger has the delivery.
	byName := map[string][]sdktrace.ReadOnlySpan{}
	callback := "POST " + twilio.StatusPath
	deadline := time.Now().Add(5 * time.Second)
	for {
		byName = map[string][]sdktrace.ReadOnlySpan{}
		for _, s := range rec.Ended() {
			byName[s.Name()] = append(byName[s.Name()], s)
		}
		if len(byName[callback]) >= 2 && len(byName["GET /v1/messages/:id"]) == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	one := func(name string) sdktrace.ReadOnlySpan {
		t.Helper()
		if len(byName[name]) != 1 {
			t.Fatalf("%d spans named %q, want 1; spans: %v", len(byName[name]), name, names(byName))
		}
		return byName[name][0]
	}
	api, send, call := one("POST /v1/messages"), one("send sms"), one("sms provider call")
	one("GET /v1/messages/:id")
	if len(byName[callback]) < 2 {
		t.Fatalf("%d status callback spans, want the sent and delivered ones; spans: %v", len(byName[callback]), names(byName))
	}

	if api.SpanKind() != trace.SpanKindServer || send.SpanKind() != trace.SpanKindConsumer || call.SpanKind() != trace.SpanKindClient {
		t.Errorf("kinds: API %v, send %v, provider call %v", api.SpanKind(), send.SpanKind(), call.SpanKind())
	}
	if send.Parent().SpanID() != api.SpanContext().SpanID() || send.SpanContext().TraceID() != api.SpanContext().TraceID() {
		t.Errorf("the send span is not the API span's child in its trace: parent %v, API %v", send.Parent(), api.SpanContext())
	}
	if call.Parent().SpanID() != send.SpanContext().SpanID() || call.SpanContext().TraceID() != api.SpanContext().TraceID() {
		t.Errorf("the provider call is not the send's child: parent %v, send %v", call.Parent(), send.SpanContext())
	}
	wantAttrs := func(s sdktrace.ReadOnlySpan, want map[string]string) {
		t.Helper()
		got := map[string]string{}
		for _, kv := range s.Attributes() {
			got[string(kv.Key)] = kv.Value.Emit()
		}
		if len(got) != len(want) {
			t.Errorf("%s: attributes %v, want %v", s.Name(), got, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: %s = %q, want %q", s.Name(), k, got[k], v)
			}
		}
	}
	wantAttrs(api, map[string]string{"http.request.method": "POST", "http.route": "/v1/messages", "http.response.status_code": "202"})
	wantAttrs(send, map[string]string{"messaging.system": "asynq", "gateway.channel": "sms", "messaging.message.id": id})
	wantAttrs(call, map[string]string{"gateway.channel": "sms", "gateway.outcome": "accepted"})
	wantAttrs(byName[callback][0], map[string]string{"http.request.method": "POST", "http.route": twilio.StatusPath,
		"http.response.status_code": "200"})

	// Nothing personal, no raw URL or query string, no address, in any span.
	for _, s := range rec.Ended() {
		values := []string{s.Name()}
		for _, kv := range s.Attributes() {
			values = append(values, kv.Value.Emit())
		}
		for _, ev := range s.Events() {
			values = append(values, ev.Name)
			for _, kv := range ev.Attributes {
				values = append(values, kv.Value.Emit())
			}
		}
		values = append(values, s.Status().Description)
		for _, v := range values {
			for _, secret := range []string{"4155550123", "biopsy", "CLINIC", "?", "view=full", keyA} {
				if strings.Contains(v, secret) {
					t.Errorf("span %q carries %q: %q", s.Name(), secret, v)
				}
			}
			if _, err := netip.ParseAddr(v); err == nil || ipv4.MatchString(v) || strings.Contains(v, "127.0.0.1") {
				t.Errorf("span %q carries an address: %q", s.Name(), v)
			}
			if v == id && s.Name() != "send sms" {
				t.Errorf("span %q carries the message id, which only the send span names", s.Name())
			}
		}
	}
}

func names(m map[string][]sdktrace.ReadOnlySpan) []string {
	var out []string
	for n, ss := range m {
		out = append(out, fmt.Sprintf("%s ×%d", n, len(ss)))
	}
	return out
}
