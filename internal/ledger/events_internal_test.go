package ledger

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestAnEventIsKeptShortAndReadBackWhole: every field of an event comes
// back from its stored form (times to the millisecond), and the stored
// form is far shorter than the API's.
func TestAnEventIsKeptShortAndReadBackWhole(t *testing.T) {
	at := time.Date(2026, 12, 7, 13, 33, 40, 123456789, time.UTC)
	retry := at.Add(90 * time.Second)
	full := Event{Status: StatusSending, At: at, Attempt: 2, ProviderStatus: "queued",
		Error: &ErrorInfo{Code: "30003", Message: "Unreachable destination handset"}, RetryAt: &retry,
		Answer: &Answer{Digits: "2", RecordingSID: "RE0123", Duration: 7}, Detail: "will retry"}
	for _, e := range []Event{full, {Status: StatusQueued, At: at}, {Status: StatusDelivered, At: at, ProviderStatus: "delivered"}} {
		raw := eventJSON(e)
		got, ok := parseEvent(raw)
		want := e
		want.At = e.At.Truncate(time.Millisecond)
		if e.RetryAt != nil {
			r := e.RetryAt.Truncate(time.Millisecond)
			want.RetryAt = &r
		}
		if !ok || !reflect.DeepEqual(got, want) {
			t.Fatalf("%s read back as %+v, want %+v", raw, got, want)
		}
		if strings.Contains(raw, "status") || strings.Contains(raw, "2026-") {
			t.Fatalf("stored in the API's form: %s", raw)
		}
	}
	if raw := eventJSON(Event{Status: StatusQueued, At: at}); len(raw) > 35 {
		t.Fatalf("a queued event takes %d bytes: %s", len(raw), raw)
	}
	// What an earlier version stored still reads.
	legacy := `{"status":"sent","at":"2026-12-07T13:33:40.123456789Z","provider_status":"sent","detail":"accepted by provider"}`
	if e, ok := parseEvent(legacy); !ok || e.Status != StatusSent || !e.At.Equal(at) || e.ProviderStatus != "sent" || e.Detail != "accepted by provider" {
		t.Fatalf("an event in the earlier form read as %+v, %v", e, ok)
	}
	for _, bad := range []string{``, `{}`, `not json`, `{"x":1}`} {
		if _, ok := parseEvent(bad); ok {
			t.Fatalf("%q read as an event", bad)
		}
	}
}
