package ledger

// Status is where a message stands. Statuses are ordered: a message only
// moves forward (queued → sending → sent → a final status), so a late or
// replayed provider callback can never undo a later one.
type Status string

// The statuses of a message.
const (
	StatusQueued      Status = "queued"      // accepted by the API, waiting for a worker
	StatusScheduled   Status = "scheduled"   // waiting for its send_at, or deferred (quiet hours)
	StatusSending     Status = "sending"     // a worker is handing it to the provider (or retrying)
	StatusSent        Status = "sent"        // the provider accepted it
	StatusDelivered   Status = "delivered"   // the provider reports delivery to the handset
	StatusUndelivered Status = "undelivered" // the provider reports the carrier could not deliver it
	StatusFailed      Status = "failed"      // it could not be sent (permanent error or attempts exhausted)
	StatusCanceled    Status = "canceled"    // canceled before it was handed to the provider
	StatusSuppressed  Status = "suppressed"  // not sent because the recipient opted out
)

// Rank orders statuses; final statuses share the top rank.
func (s Status) Rank() int {
	switch s {
	case StatusQueued, StatusScheduled:
		return 0
	case StatusSending:
		return 1
	case StatusSent:
		return 2
	case StatusDelivered, StatusUndelivered, StatusFailed, StatusCanceled, StatusSuppressed:
		return 3
	}
	return -1
}

// Final reports whether nothing more will happen to the message.
func (s Status) Final() bool { return s.Rank() == 3 }

// Valid reports whether s is a known status.
func (s Status) Valid() bool { return s.Rank() >= 0 }

// Statuses are the statuses a message can have, in the order it moves
// through them (the final ones last).
var Statuses = []Status{StatusQueued, StatusScheduled, StatusSending, StatusSent,
	StatusDelivered, StatusUndelivered, StatusFailed, StatusCanceled, StatusSuppressed}
