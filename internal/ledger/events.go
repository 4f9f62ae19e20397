package ledger

import (
	"encoding/json"
	"slices"
	"time"

	"github.com/oklog/ulid/v2"
)

// storedEvent is how an Event is kept in a record's history: short names,
// its time as milliseconds since the message was made (the time of its
// id, a ULID; "o", left out when 0), and a detail the gateway writes for
// most messages by its number in knownDetails ("k"). A delivered SMS's
// five events take about 150 bytes instead of 480 in the API's form.
// Histories written by earlier versions hold the time in ms since the
// epoch ("t"), or the API's form; both still read. Lua scripts that touch
// an event use these names (claimScript: n, d; deferScript: s); a time in
// ms has 13 digits, within the 14 Lua's cjson writes exactly.
type storedEvent struct {
	Status         Status     `json:"s"`
	At             int64      `json:"t,omitempty"`
	Since          int64      `json:"o,omitempty"`
	Attempt        int        `json:"n,omitempty"`
	ProviderStatus string     `json:"p,omitempty"`
	Error          *ErrorInfo `json:"e,omitempty"`
	RetryAt        int64      `json:"r,omitempty"`
	Answer         *Answer    `json:"a,omitempty"`
	Detail         string     `json:"d,omitempty"`
	Known          int        `json:"k,omitempty"`
}

// knownDetails are details most messages' histories hold, stored by their
// index (only ever appended to: stored histories name them by number).
var knownDetails = []string{1: detailAccepted}

// detailAccepted is the detail of the event that records the provider's
// acceptance.
const detailAccepted = "accepted by provider"

// MadeAt is when message id was made: its ULID's time (zero for an id
// that is not one).
func MadeAt(id string) time.Time {
	u, err := ulid.ParseStrict(id)
	if err != nil {
		return time.Time{}
	}
	return ulid.Time(u.Time()).UTC()
}

// eventJSON is an event as the history of message id stores it.
func eventJSON(id string, e Event) string {
	s := storedEvent{Status: e.Status, Attempt: e.Attempt, ProviderStatus: e.ProviderStatus, Error: e.Error,
		Answer: e.Answer, Detail: e.Detail}
	if !e.At.IsZero() {
		if made := MadeAt(id); !made.IsZero() {
			s.Since = e.At.UnixMilli() - made.UnixMilli()
		} else {
			s.At = e.At.UnixMilli()
		}
	}
	if e.RetryAt != nil {
		s.RetryAt = e.RetryAt.UnixMilli()
	}
	if i := slices.Index(knownDetails, e.Detail); i > 0 {
		s.Detail, s.Known = "", i
	}
	b, _ := json.Marshal(s)
	return string(b)
}

// anyEvent reads both forms of a history entry: the stored one, and the
// API's form that earlier versions stored.
type anyEvent struct {
	Event
	storedEvent
}

// parseEvent reads an entry of the history of a message made at made
// (MadeAt); ok is false for one it cannot read.
func parseEvent(raw string, made time.Time) (Event, bool) {
	var a anyEvent
	if json.Unmarshal([]byte(raw), &a) != nil {
		return Event{}, false
	}
	s := a.storedEvent
	if s.Status == "" {
		return a.Event, a.Event.Status != "" // written by an earlier version
	}
	e := Event{Status: s.Status, Attempt: s.Attempt, ProviderStatus: s.ProviderStatus, Error: s.Error,
		Answer: s.Answer, Detail: s.Detail}
	switch {
	case s.At != 0: // written by an earlier version
		e.At = time.UnixMilli(s.At).UTC()
	case !made.IsZero():
		e.At = time.UnixMilli(made.UnixMilli() + s.Since).UTC()
	}
	if s.RetryAt != 0 {
		r := time.UnixMilli(s.RetryAt).UTC()
		e.RetryAt = &r
	}
	if s.Known > 0 && s.Known < len(knownDetails) {
		e.Detail = knownDetails[s.Known]
	}
	return e, true
}
