package email

import (
	"context"
	"errors"
	"strings"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/ledger"
)

// What an email's outcome reports, as the inbound listener, the events
// webhook and the unsubscribe page apply it. Each takes the message the
// signed address, token or webhook names; nothing here trusts an address
// written in the mail itself.

// Event kinds of the events webhook, and of Apply.
const (
	EventBounce      = "bounce"      // a permanent failure (5.x.x): the message fails
	EventDelay       = "delay"       // a transient failure (4.x.x): a note in its history
	EventDelivered   = "delivered"   // a success report (2.x.x): the message is delivered
	EventRelayed     = "relayed"     // relayed or expanded (2.x.x), no further report: a note
	EventComplaint   = "complaint"   // the recipient reported it as spam: opted out
	EventUnsubscribe = "unsubscribe" // the recipient unsubscribed: opted out
)

// Event is one outcome of a message's email.
type Event struct {
	Kind string
	// MessageID is the gateway's message id.
	MessageID string
	// Status ("5.1.1") and Diagnostic (addresses removed) of a bounce or
	// delay; Status ("2.0.0") of a delivery or relay report, whose
	// Diagnostic is not kept.
	Status, Diagnostic string
	// Evidence says where an opt-out came from ("ARF complaint, feedback
	// type abuse").
	Evidence string
}

// ErrNotEmail is returned for an event about a message that is not an
// email the gateway knows (gone with the retention, another channel's).
var ErrNotEmail = errors.New("no such email message")

// ErrNotYet is returned for an event about a message whose send is not
// recorded yet: the sender of the event is asked to try again later.
var ErrNotYet = errors.New("the message's send is not recorded yet")

// Apply applies an outcome to the message: a bounce fails it with the
// DSN's status code and diagnostic, a delay adds them to its history, a
// delivery report makes it delivered with the DSN's status code in its
// history, a relay report notes that code, a complaint or an
// unsubscription opts its recipient out of email (for every tenant, as
// STOP does: the sender address is shared) and notes it. Statuses move
// only forward (a delivery report about a message that bounced is only
// noted). A repeated event changes nothing more.
func Apply(ctx context.Context, rcv channels.Receiver, ev Event) error {
	if !ledger.ValidID(ev.MessageID) {
		return ErrNotEmail
	}
	m, err := rcv.Message(ctx, ev.MessageID)
	if errors.Is(err, ledger.ErrNotFound) {
		return ErrNotEmail
	}
	if err != nil {
		return err
	}
	if m.Channel != "email" {
		return ErrNotEmail
	}
	u := ledger.ProviderUpdate{Channel: "email", ProviderID: m.ProviderID}
	switch ev.Kind {
	case EventBounce:
		u.Status, u.ProviderStatus = ledger.StatusFailed, "bounced"
		u.ErrorCode, u.ErrorMessage = ev.Status, describe(ev.Status, ev.Diagnostic)
	case EventDelay:
		u.Status, u.ProviderStatus = ledger.StatusSent, "delayed"
		u.ErrorCode, u.ErrorMessage = ev.Status, describe(ev.Status, ev.Diagnostic)
	case EventDelivered:
		// The code goes in the event's detail, not its error: a delivery is
		// no error. The remote server's words are not kept (the detail
		// outlives an erasure, and they may name the mailbox).
		u.Status, u.ProviderStatus = ledger.StatusDelivered, "delivered"
		u.Detail = "delivery status notification " + ev.Status + ": delivered to the recipient's mailbox"
	case EventRelayed:
		u.Status, u.ProviderStatus = ledger.StatusSent, "relayed"
		u.Detail = "delivery status notification " + ev.Status + ": handed on (relayed, or expanded to a list) beyond the reach of delivery reports; no further report is expected"
	case EventComplaint, EventUnsubscribe:
		if m.To.Email == "" {
			return nil // erased: there is no one left to opt out
		}
		evidence := "email " + ev.Kind + " about message " + m.ID
		if ev.Evidence != "" {
			evidence += " (" + ev.Evidence + ")"
		}
		if err := rcv.OptOut(ctx, "email", ledger.Recipient{Email: m.To.Email}, evidence); err != nil {
			return err
		}
		u.Status, u.ProviderStatus = ledger.StatusSent, map[string]string{EventComplaint: "complained", EventUnsubscribe: "unsubscribed"}[ev.Kind]
	default:
		return errors.New("unknown email event " + ev.Kind)
	}
	if u.ProviderID == "" {
		if !m.Status.Final() {
			// The relay took the message a moment ago and the worker has
			// not recorded it yet (a local bounce can be that quick).
			return ErrNotYet
		}
		// Ended without the relay's acceptance recorded (a worker died
		// after the relay took it): the report is kept in the logs only.
		return nil
	}
	_, err = rcv.ProviderStatus(ctx, m.ID, u)
	return err
}

// statusText explains the common enhanced status codes (RFC 3463).
var statusText = map[string]string{
	"5.1.1":  "the recipient's mailbox does not exist",
	"5.1.2":  "the recipient's domain does not exist",
	"5.1.10": "the recipient's address has no mail server",
	"5.2.1":  "the recipient's mailbox is disabled",
	"5.2.2":  "the recipient's mailbox is full",
	"5.2.3":  "the message is too large for the recipient's mailbox",
	"5.4.4":  "the recipient's mail server could not be found",
	"5.7.1":  "the recipient's mail server refused the message",
	"4.2.2":  "the recipient's mailbox is full; their server keeps trying",
	"4.4.1":  "the recipient's mail server did not answer; it keeps trying",
	"4.4.7":  "the message expired undelivered",
}

// describe is a bounce's message in the history: what the status means,
// then the remote server's words.
func describe(status, diagnostic string) string {
	s := statusText[status]
	if s == "" {
		s = "delivery failed"
		if strings.HasPrefix(status, "4.") {
			s = "delivery delayed; the recipient's mail server keeps trying"
		}
	}
	if diagnostic != "" {
		s += ": " + diagnostic
	}
	return s
}
