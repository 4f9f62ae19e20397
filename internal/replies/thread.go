package replies

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/ledger"
)

// ThreadEntry is one line of a contact's conversation: a message sent to them
// or a reply from them.
type ThreadEntry struct {
	Kind      string        `json:"kind"` // message or reply
	ID        string        `json:"id"`
	At        time.Time     `json:"at"`
	Channel   string        `json:"channel"`
	Body      string        `json:"body"`
	Status    ledger.Status `json:"status,omitempty"`      // messages
	Option    string        `json:"option,omitempty"`      // replies
	InReplyTo string        `json:"in_reply_to,omitempty"` // replies
	// From is the address a reply came from (not shown by the API: the
	// caller knows the contact's addresses).
	From consent.Identity `json:"-"`
}

// Thread is a contact's conversation across its addresses and channels:
// the messages sent to them (from the ledger) and their replies, oldest
// first, the last limit of them (at most ConversationKept). Messages past
// their retention are left out. The API and the console both read it here.
func (s *Store) Thread(ctx context.Context, led *ledger.Ledger, tenant string, ids []consent.Identity, limit int) ([]ThreadEntry, error) {
	out := []ThreadEntry{}
	limit = min(limit, ConversationKept)
	for _, id := range ids {
		entries, err := s.Conversation(ctx, tenant, id, limit)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			switch e.Kind {
			case "message":
				m, err := led.Get(ctx, tenant, e.ID)
				if errors.Is(err, ledger.ErrNotFound) {
					continue // past its retention
				} else if err != nil {
					return nil, err
				}
				out = append(out, ThreadEntry{Kind: "message", ID: m.ID, At: m.CreatedAt, Channel: m.Channel, Body: m.Body, Status: m.Status})
			case "reply":
				r, err := s.Get(ctx, tenant, e.ID)
				if errors.Is(err, ErrBadCursor) {
					continue
				} else if err != nil {
					return nil, err
				}
				out = append(out, ThreadEntry{Kind: "reply", ID: r.ID, At: r.ReceivedAt, Channel: r.Channel, Body: r.Body,
					Option: r.Option, InReplyTo: r.InReplyTo, From: r.From})
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	if len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, nil
}
