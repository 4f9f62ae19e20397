package ledger

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
)

// TestAnEventIsKeptShortAndReadBackWhole: every field of an event comes
// back from its stored form (times to the millisecond), and the stored
// form is far shorter than the API's.
func TestAnEventIsKeptShortAndReadBackWhole(t *testing.T) {
	at := time.Date(2026, 12, 7, 13, 33, 40, 123456789, time.UTC)
	// The message was made 1.5 s before the event.
	id := ulid.MustNew(ulid.Timestamp(at.Add(-1500*time.Millisecond)), nil).String()
	made := MadeAt(id)
	retry := at.Add(90 * time.Second)
	full := Event{Status: StatusSending, At: at, Attempt: 2, ProviderStatus: "queued",
		Error: &ErrorInfo{Code: "30003", Message: "Unreachable destination handset"}, RetryAt: &retry,
		Answer: &Answer{Digits: "2", RecordingSID: "RE0123", Duration: 7}, Detail: "will retry"}
	for _, e := range []Event{full, {Status: StatusQueued, At: at}, {Status: StatusDelivered, At: at, ProviderStatus: "delivered"},
		{Status: StatusSent, At: at, Detail: "accepted by provider"}, {Status: StatusQueued, At: made},
		{Status: StatusQueued, At: made.Add(-time.Millisecond)}} {
		raw := eventJSON(id, e)
		got, ok := parseEvent(raw, made)
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
	// What most messages' histories hold, at its shortest: the queued
	// event as the message is made, the provider's acceptance by number.
	for e, want := range map[Event]string{
		{Status: StatusQueued, At: made}:                             `{"s":"queued"}`,
		{Status: StatusSent, At: at, Detail: "accepted by provider"}: `{"s":"sent","o":1500,"k":1}`,
	} {
		if raw := eventJSON(id, e); raw != want {
			t.Fatalf("stored as %s, want %s", raw, want)
		}
	}
	// What earlier versions stored still reads: times since the epoch,
	// and the API's form.
	for _, legacy := range []string{`{"s":"sent","t":1796650420123,"p":"sent","d":"accepted by provider"}`,
		`{"status":"sent","at":"2026-12-07T13:33:40.123456789Z","provider_status":"sent","detail":"accepted by provider"}`} {
		if e, ok := parseEvent(legacy, made); !ok || e.Status != StatusSent || !e.At.Equal(at.Truncate(msPrecision(legacy))) ||
			e.ProviderStatus != "sent" || e.Detail != "accepted by provider" {
			t.Fatalf("an event in an earlier form (%s) read as %+v, %v", legacy, e, ok)
		}
	}
	for _, bad := range []string{``, `{}`, `not json`, `{"x":1}`} {
		if _, ok := parseEvent(bad, made); ok {
			t.Fatalf("%q read as an event", bad)
		}
	}
}

// msPrecision is how precisely a stored form keeps times: the API's form
// to the nanosecond, the short form to the millisecond.
func msPrecision(raw string) time.Duration {
	if strings.Contains(raw, `"at"`) {
		return time.Nanosecond
	}
	return time.Millisecond
}
