package workers

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/patientmsg/gateway/internal/ratelimit"
	"github.com/patientmsg/gateway/internal/schedule"
)

// MaxThrottledAttempts is how many provider throttles (429) a message may
// meet without them counting against its attempt budget.
const MaxThrottledAttempts = 20

// Senders ties each channel to its sender (a from-number, a Messaging
// Service, a WeChat app, an SMTP relay) and paces the senders across all
// worker processes.
type Senders struct {
	Limiter *ratelimit.Senders
	// Keys maps a channel name to its sender's key.
	Keys map[string]string
}

// KeyFor is the sender key of a channel ("" when unpaced).
func (s *Senders) KeyFor(channel string) string {
	if s == nil {
		return ""
	}
	return s.Keys[channel]
}

// Throttled tells the limiter the provider asked the sender to slow down.
func (s *Senders) Throttled(ctx context.Context, key string, retryAfter time.Duration, code string) error {
	if s == nil || key == "" {
		return nil
	}
	return s.Limiter.Throttled(ctx, key, retryAfter, code)
}

// pace takes the sender's capacity for the message, or says when to come
// back. A slot booked within the next moment is waited for here; anything
// later re-schedules the task, so no worker is held.
func (h *SendHandler) pace(ctx context.Context, sender string, p SendPayload) (*waitError, error) {
	if h.Senders == nil || sender == "" {
		return nil, nil
	}
	d, err := h.Senders.Limiter.Reserve(ctx, ratelimit.Request{Sender: sender, Tenant: p.Tenant, Priority: p.Priority, Cost: max(p.Cost, 1),
		ID: p.MessageID})
	if err != nil {
		return nil, fmt.Errorf("rate limit: %w", err) // Redis trouble: retry
	}
	if d.Allowed {
		return nil, nil
	}
	if h.Metrics != nil {
		if c, ok := h.Senders.Limiter.Config(sender); ok {
			h.Metrics.SenderWait(c.Channel, d.Reason)
		}
	}
	return &waitError{reason: "sender " + d.Reason, after: d.Wait}, nil
}

// holdForQuietHours re-schedules a message that would reach its recipient
// inside the quiet window of their time zone (a retry or a rate-limit wait
// can drift into it after the API checked), to the window's end.
func (h *SendHandler) holdForQuietHours(ctx context.Context, p SendPayload, log *slog.Logger) (*waitError, error) {
	if p.Quiet == "" || p.Zone == "" {
		return nil, nil
	}
	w, err := schedule.ParseWindow(p.Quiet)
	if err != nil {
		log.Warn("ignoring an unreadable quiet window", "err", err)
		return nil, nil
	}
	loc, err := schedule.LoadZone(p.Zone) // cached by the schedule package
	if err != nil {
		log.Warn("ignoring quiet hours in an unknown time zone", "err", err)
		return nil, nil
	}
	until, inside := w.Defer(h.now(), loc)
	if !inside {
		return nil, nil
	}
	reason := fmt.Sprintf("quiet hours (%s in the recipient's time zone %s): held until %s", p.Quiet, p.Zone,
		until.In(loc).Format("2006-01-02 15:04 MST"))
	deferred, err := h.Ledger.Defer(ctx, p.MessageID, until, reason)
	if err != nil {
		return nil, fmt.Errorf("ledger defer: %w", err)
	}
	if !deferred {
		return nil, nil // final or with the provider: the claim decides
	}
	log.Info("held for the recipient's quiet hours", "until", until.UTC())
	h.Events.MessageStatus(ctx, h.Ledger, p.Tenant, p.MessageID)
	return &waitError{reason: "quiet hours", after: until.Sub(h.now())}, nil
}
