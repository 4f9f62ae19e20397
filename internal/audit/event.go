// Package audit keeps the tamper-evident audit log: who read or changed
// patient data, and what the system did with it on its own (a send, a
// suppression, a consent change from STOP, an escalation opened).
//
// Each tenant has its own log, a Merkle tree in the form of
// golang.org/x/mod/sumdb/tlog: an event is a record whose index is its
// position, appended atomically in Redis with the tree hashes it completes.
// A background export (Exporter) copies the records and hashes to the blob
// store as write-once objects, each batch ending with a checkpoint — the
// tree's size and root hash — signed with an Ed25519 key
// (golang.org/x/mod/sumdb/note). Verify proves every exported record against
// a signed checkpoint, so a record changed or removed after its export is
// found.
//
// An event never holds a message body, a phone number, an e-mail address,
// an openid or a secret: only ids (Check refuses values that look like
// them).
package audit

import (
	"encoding/json"
	"fmt"
	"regexp"
	"time"
)

// Outcomes of an event.
const (
	OK     = "ok"     // done
	Denied = "denied" // refused: not found, not allowed, invalid
	Error  = "error"  // failed on the gateway's side
)

// Actions the system records on its own (the HTTP side names its actions
// after its routes: see gateway's audit table).
const (
	ActionSend           = "message.send"     // a provider accepted, or finally refused, a message
	ActionSuppress       = "message.suppress" // a message not sent: its recipient opted out
	ActionConsentChange  = "consent.change"   // an opt-out or opt-in recorded
	ActionEscalationOpen = "escalation.open"  // an urgent reply or a risk opened an escalation
	ActionKeyChange      = "key.change"       // a console account or key created or removed
	ActionErase          = "patient.erase"    // a patient's data erased (the erasure completed)
)

// Actors that are not a person or an API key.
const (
	ActorWorker  = "system:worker"  // a delivery worker
	ActorInbound = "system:inbound" // what a provider reported (a STOP, a reply)
	ActorCLI     = "system:cli"     // the gateway command on a server
)

// Event is one entry of a tenant's audit log. Its JSON form is the record
// whose hash the tree holds: it is written once and never re-encoded.
type Event struct {
	// Index is the event's position in its tenant's log (set by Append).
	Index int64 `json:"index"`
	// Time is when the event happened (set by Append when zero), UTC.
	Time time.Time `json:"time"`
	// Tenant owns the log the event is in.
	Tenant string `json:"tenant"`
	// Actor is who acted: "apikey:<fingerprint>", "user:<id>" or a
	// system actor (ActorWorker…). Never a secret.
	Actor string `json:"actor"`
	// Action is what was done: "message.read", "consent.change"…
	Action string `json:"action"`
	// Object is what it was done to: "message:<id>", "contact:<id>"…
	// ("" when the action names a list or the tenant's own settings).
	Object string `json:"object,omitempty"`
	// Outcome is OK, Denied or Error; Status the HTTP status when the
	// event is a request's (0 otherwise).
	Outcome string `json:"outcome"`
	Status  int    `json:"status,omitempty"`
	// RequestID ties the event to the request's X-Request-Id.
	RequestID string `json:"request_id,omitempty"`
}

// idChars are the characters of the fields of an event: no '@', no '+',
// no space, so neither an e-mail address nor an E.164 number fits.
var idChars = regexp.MustCompile(`^[A-Za-z0-9._:/-]*$`)

// Check says what is wrong with an event before it is appended: a field
// missing, too long, or with a character no id has ('@', '+', spaces) —
// so an e-mail address or a phone number in E.164 form never gets in.
func (e Event) Check() error {
	if e.Tenant == "" || e.Actor == "" || e.Action == "" {
		return fmt.Errorf("audit: an event needs a tenant, an actor and an action")
	}
	switch e.Outcome {
	case OK, Denied, Error:
	default:
		return fmt.Errorf("audit: outcome %q is not ok, denied or error", e.Outcome)
	}
	for _, f := range [...]struct{ name, v string }{{"tenant", e.Tenant}, {"actor", e.Actor},
		{"action", e.Action}, {"object", e.Object}, {"request_id", e.RequestID}} {
		if len(f.v) > 200 || !idChars.MatchString(f.v) {
			return fmt.Errorf("audit: the %s is not an id (events hold ids only)", f.name)
		}
	}
	return nil
}

// encode is the record of an event: its JSON, one line.
func (e Event) encode() []byte {
	b, _ := json.Marshal(e)
	return b
}

// Decode reads a record.
func Decode(record []byte) (Event, error) {
	var e Event
	err := json.Unmarshal(record, &e)
	return e, err
}
