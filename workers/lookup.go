package workers

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/ledger"
)

// lookUp asks the provider, after an attempt whose outcome stayed unknown
// (a timeout once the request was written), whether it holds the message
// already: a message it holds to the same recipient with the same content,
// made since this message was, and not another message's, is this one's —
// it is recorded as accepted and not sent again (done). When the channel
// cannot be asked (WeChat, SMTP have no such lookup) the message is sent
// again: a rare duplicate rather than a message never sent. When the
// provider cannot answer now, the attempt stays unconfirmed and the task
// is retried, so the next attempt asks again.
func (h *SendHandler) lookUp(ctx context.Context, ch channels.Channel, m *ledger.Message, claim ledger.Claim, log *slog.Logger) (bool, error) {
	f, ok := ch.(channels.Finder)
	if !ok {
		log.Info("earlier attempt unconfirmed and the provider cannot be asked; sending again")
		return false, nil
	}
	sids, err := f.Find(ctx, channels.MessageOf(m), m.CreatedAt.Add(-5*time.Second))
	if err != nil {
		se := channels.AsSendError(err)
		_ = h.Ledger.RecordFailure(context.WithoutCancel(ctx), m.ID, ledger.Failure{Code: "lookup_failed", Unconfirmed: true,
			Attempt: claim.Attempt, Message: "could not ask the provider whether an earlier attempt reached it: " + se.Message})
		return true, fmt.Errorf("look up an unconfirmed attempt: %w", err)
	}
	for _, sid := range sids {
		mine, err := h.Ledger.ClaimProviderID(ctx, m.Channel, sid, m.ID)
		if err != nil {
			return true, fmt.Errorf("claim provider id: %w", err)
		}
		if !mine {
			continue // another message's (same content to the same patient)
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := h.Ledger.RecordAccepted(rctx, m.ID, m.Channel, sid); err != nil {
			return true, fmt.Errorf("record acceptance: %w", err)
		}
		_ = h.Ledger.Note(rctx, m.ID, "the provider holds this message from an earlier attempt whose answer was lost: not sent again")
		log.Info("earlier unconfirmed attempt found at the provider; not sending again", "provider_id", sid)
		h.Events.MessageStatus(rctx, h.Ledger, m.Tenant, m.ID)
		h.broadcast(rctx, m, ledger.StatusSent, log)
		return true, nil
	}
	log.Info("earlier unconfirmed attempt not found at the provider; sending again")
	return false, nil
}
