package ledger

import (
	"encoding/json"
	"time"
)

// storedEvent is how an Event is kept in a record's history: short names
// and times in milliseconds, about 30 bytes an event less than the API's
// form (a delivered SMS has five). Lua scripts that touch an event use
// these names (claimScript: n, d; deferScript: s). A time in ms has 13
// digits, within the 14 Lua's cjson writes exactly.
type storedEvent struct {
	Status         Status     `json:"s"`
	At             int64      `json:"t"`
	Attempt        int        `json:"n,omitempty"`
	ProviderStatus string     `json:"p,omitempty"`
	Error          *ErrorInfo `json:"e,omitempty"`
	RetryAt        int64      `json:"r,omitempty"`
	Answer         *Answer    `json:"a,omitempty"`
	Detail         string     `json:"d,omitempty"`
}

// eventJSON is an event as a history stores it.
func eventJSON(e Event) string {
	s := storedEvent{Status: e.Status, Attempt: e.Attempt, ProviderStatus: e.ProviderStatus, Error: e.Error,
		Answer: e.Answer, Detail: e.Detail}
	if !e.At.IsZero() {
		s.At = e.At.UnixMilli()
	}
	if e.RetryAt != nil {
		s.RetryAt = e.RetryAt.UnixMilli()
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

// parseEvent reads a history entry; ok is false for one it cannot read.
func parseEvent(raw string) (Event, bool) {
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
	if s.At != 0 {
		e.At = time.UnixMilli(s.At).UTC()
	}
	if s.RetryAt != 0 {
		r := time.UnixMilli(s.RetryAt).UTC()
		e.RetryAt = &r
	}
	return e, true
}
