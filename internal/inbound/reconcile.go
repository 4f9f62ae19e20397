package inbound

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/ledger"
)

// Reconciler recovers lost status callbacks: a provider such as Twilio
// does not send a status callback again when it got an error (or no
// answer), so a message it delivered would stay `sent`. The reconciler
// asks the provider (channels.Reporter) about the messages that have
// waited longer than After for their final status, and applies the answer
// exactly as the callback would have been applied. It is bounded: at most
// PerPass questions a pass, passes Every apart, one pass at a time across
// all worker processes (a Redis lease).
type Reconciler struct {
	Redis    redis.UniversalClient
	Ledger   *ledger.Ledger
	Channels *channels.Registry
	// Apply applies a report (Receiver.ProviderStatus).
	Apply func(ctx context.Context, id string, u ledger.ProviderUpdate) (ledger.Applied, error)
	// Redial places a call again (Receiver.Redial) when the provider says
	// it was busy or not answered and the channel redials such calls.
	Redial func(ctx context.Context, id, providerID string, after time.Duration, maxRedials int, reason ledger.ErrorInfo) error
	// After is how long a message waits for its callback before the
	// provider is asked (DELIVERY_REPORT_WAIT); it is asked again every
	// After until GiveUp after it was accepted.
	After  time.Duration
	GiveUp time.Duration
	// Every is how often passes are made (the lease outlives a pass by it).
	Every   time.Duration
	PerPass int
	Logger  *slog.Logger
	Now     func() time.Time
}

// reconcileLease is the key of the pass in progress.
const reconcileLease = "gw:reconcile:lease"

func (r *Reconciler) now() time.Time {
	if r.Now == nil {
		return time.Now()
	}
	return r.Now()
}

// Result counts what a pass did.
type Result struct {
	Asked, Applied, StillWaiting, GaveUp int
}

// Pass asks the providers about the messages waiting too long for their
// final status, unless another process is making a pass.
func (r *Reconciler) Pass(ctx context.Context) (Result, error) {
	var res Result
	token := strconv.FormatInt(time.Now().UnixNano(), 36)
	ok, err := r.Redis.SetNX(ctx, reconcileLease, token, r.Every+time.Minute).Result()
	if err != nil || !ok {
		return res, err
	}
	defer func() {
		ctx := context.WithoutCancel(ctx)
		if v, _ := r.Redis.Get(ctx, reconcileLease).Result(); v == token {
			r.Redis.Del(ctx, reconcileLease)
		}
	}()
	for _, name := range r.Channels.Names() {
		ch, _ := r.Channels.Get(name)
		rep, ok := ch.(channels.Reporter)
		if !ok || !ledger.AwaitsReport(name) {
			continue
		}
		if err := r.channel(ctx, name, rep, &res); err != nil {
			return res, err
		}
	}
	if res.Asked > 0 || res.GaveUp > 0 {
		r.Logger.Info("delivery reports reconciled", "asked", res.Asked, "applied", res.Applied,
			"still_waiting", res.StillWaiting, "gave_up", res.GaveUp)
	}
	return res, nil
}

// redial applies a report that asks for another call (a busy or
// unanswered call whose callback was lost) as the callback would have
// been: the report, then the redial. It is false for any other report.
func (r *Reconciler) redial(ctx context.Context, rep channels.Reporter, id string, u ledger.ProviderUpdate) (bool, error) {
	rd, ok := rep.(channels.Redialer)
	if !ok || r.Redial == nil {
		return false, nil
	}
	reason, after, maxRedials, ok := rd.RedialFor(u)
	if !ok {
		return false, nil
	}
	if _, err := r.Apply(ctx, id, u); err != nil {
		return false, err
	}
	if err := r.Redial(ctx, id, u.ProviderID, after, maxRedials, reason); err != nil {
		return false, err
	}
	r.Logger.Info("a call whose callback was lost was not answered: redial requested", "msg_id", id, "provider_id", u.ProviderID,
		"reason", u.ProviderStatus)
	return true, nil
}

func (r *Reconciler) channel(ctx context.Context, name string, rep channels.Reporter, res *Result) error {
	now := r.now()
	ids, err := r.Ledger.Awaiting(ctx, name, now.Add(-r.After), r.PerPass-res.Asked)
	if err != nil {
		return err
	}
	for _, id := range ids {
		m, err := r.Ledger.Get(ctx, "", id)
		switch {
		case errors.Is(err, ledger.ErrNotFound):
			r.Ledger.Reported(ctx, name, id) // expired or erased
			continue
		case err != nil:
			return err
		case m.Status.Final() || m.ProviderID == "":
			r.Ledger.Reported(ctx, name, id)
			continue
		case now.Sub(m.CreatedAt) > r.GiveUp:
			_ = r.Ledger.Note(ctx, id, "no final status from the provider, which was asked until "+r.GiveUp.String()+" after the message was made")
			r.Ledger.Reported(ctx, name, id)
			res.GaveUp++
			continue
		}
		res.Asked++
		u, err := rep.Report(ctx, m.ProviderID)
		if err == nil && !u.Status.Final() {
			redialled, err := r.redial(ctx, rep, id, u)
			if err != nil {
				return err
			}
			if redialled {
				r.Ledger.Reported(ctx, name, id)
				res.Applied++
				continue
			}
		}
		if err != nil || !u.Status.Final() {
			if err != nil {
				r.Logger.Warn("provider not asked about a message's status", "msg_id", id, "provider_id", m.ProviderID, "err", err)
			}
			res.StillWaiting++
			if err := r.Ledger.AwaitAgain(ctx, name, id, now); err != nil {
				return err
			}
			continue
		}
		if _, err := r.Apply(ctx, id, u); err != nil {
			return err
		}
		r.Ledger.Reported(ctx, name, id)
		res.Applied++
	}
	return nil
}
