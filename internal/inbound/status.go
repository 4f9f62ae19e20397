package inbound

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/replies"
	"github.com/patientmsg/gateway/internal/webhooks"
	"github.com/patientmsg/gateway/workers"
)

// ProviderStatus applies a provider's delivery report to the message's
// record, publishes message.status when it changed the status and tells a
// broadcast of its message's new status. An empty id is found from the
// provider id; a report for a message the ledger does not know is
// AppliedUnknown, and looked at again a few times (workers.LateReport):
// it may have come before the send wrote the provider's id.
func (r *Receiver) ProviderStatus(ctx context.Context, id string, u ledger.ProviderUpdate) (ledger.Applied, error) {
	if id == "" {
		found, err := r.Ledger.MessageIDByProvider(ctx, u.Channel, u.ProviderID)
		if errors.Is(err, ledger.ErrNotFound) {
			// The report may have come before the send wrote the
			// provider's id: look again a little later.
			r.later(ctx, workers.LateReport{Update: u})
			return ledger.AppliedUnknown, nil
		}
		if err != nil {
			return ledger.AppliedUnknown, err
		}
		id = found
	}
	rep, err := r.Ledger.ApplyReport(ctx, id, u)
	applied, link := rep.Applied, rep.Broadcast
	if err != nil {
		return applied, err
	}
	r.Metrics.Inbound(u.Channel, "status")
	if applied == ledger.AppliedChanged {
		r.Events.MessageStatus(ctx, r.Ledger, rep.Tenant, id)
	}
	// The roster follows the message on every report, a duplicate too: the
	// first report may have reached the message and not the roster (Redis
	// failed between the two), and the provider does not retry a report
	// it got an answer to. The roster's update is idempotent.
	if link != "" && r.OnStatus != nil && applied != ledger.AppliedUnknown {
		if err := r.OnStatus(ctx, link, id, u.Status); err != nil {
			return applied, err // the provider retries; the update is idempotent
		}
	}
	return applied, nil
}

// later queues another look for a report's message, unless the last was
// made: then the report is of a message the gateway does not know.
func (r *Receiver) later(ctx context.Context, p workers.LateReport) {
	if p.Try >= len(workers.LateReportDelays) || r.Queue == nil {
		r.log().Info("provider report of an unknown message dropped", "channel", p.Update.Channel, "provider_id", p.Update.ProviderID)
		return
	}
	t, err := workers.NewLateReportTask(p)
	if err == nil {
		_, err = r.Queue.EnqueueContext(ctx, t)
	}
	if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		r.log().Warn("provider report not queued for a later look", "channel", p.Update.Channel, "provider_id", p.Update.ProviderID, "err", err)
	}
}

// LateReport looks again for the message of a report that came before
// its provider id was written, and applies the report once it is found.
func (r *Receiver) LateReport(ctx context.Context, p workers.LateReport) error {
	id, err := r.Ledger.MessageIDByProvider(ctx, p.Update.Channel, p.Update.ProviderID)
	if errors.Is(err, ledger.ErrNotFound) {
		p.Try++
		r.later(ctx, p)
		return nil
	}
	if err != nil {
		return err
	}
	_, err = r.ProviderStatus(ctx, id, p.Update)
	return err
}

// Message returns a message's record, whatever its tenant.
func (r *Receiver) Message(ctx context.Context, id string) (*ledger.Message, error) {
	return r.Ledger.Get(ctx, "", id)
}

// Answer records what the patient answered on a call. A key pressed joins
// the reply feed (with the option it means), may open an escalation and is
// told to a broadcast; a recording joins the feed too and is queued to be
// fetched into the blob store.
func (r *Receiver) Answer(ctx context.Context, id string, a ledger.Answer, recordingURL string) error {
	if err := r.Ledger.RecordAnswer(ctx, id, a); err != nil {
		return err
	}
	r.Metrics.Inbound("voice", "answer") // answers come from calls
	if a.Digits != "" && r.Replies != nil {
		// A key pressed on a call answers that call: it joins the reply
		// feed like a text answer ("2"), with the call's id.
		m, err := r.Ledger.Get(ctx, "", id)
		if err != nil {
			return err
		}
		rep := replies.Reply{Channel: m.Channel, From: workers.IdentityOf(m.Channel, m.To), Body: a.Digits, ReceivedAt: time.Now(), InReplyTo: id}
		if m.ExpectReply != nil {
			// The key's meaning, as a texted "2" carries it: "2" → need_help.
			rep.Option = m.ExpectReply.Options[a.Digits]
		}
		if rep.ID, err = r.Replies.Add(ctx, m.Tenant, rep); err != nil {
			return err
		}
		r.Events.Publish(ctx, m.Tenant, webhooks.MessageReply, rep, "")
		if r.Escalator != nil {
			// A key pressed on a call can be urgent too ("3 to talk to a nurse").
			esc, err := r.Escalator.Consider(ctx, m.Tenant, rep.ID, id, m.Channel, a.Digits, rep.Option)
			if err != nil {
				return err
			}
			r.replied(ctx, m.Tenant, rep.From, esc)
		} else {
			r.replied(ctx, m.Tenant, rep.From, nil)
		}
		if m.Broadcast != "" && r.OnAnswer != nil {
			if err := r.OnAnswer(ctx, m.Broadcast, id, m.Channel, rep.Option, a.Digits, time.Now()); err != nil {
				return err
			}
		}
	}
	if recordingURL == "" {
		return nil
	}
	m, err := r.Ledger.Get(ctx, "", id)
	if err != nil {
		return err
	}
	if r.Replies != nil && a.RecordingSID != "" {
		// A recorded answer joins the feed too; its audio is fetched into
		// the blob store and served by GET /v1/messages/{id}/recording.
		rep := replies.Reply{Channel: m.Channel, From: workers.IdentityOf(m.Channel, m.To), ReceivedAt: time.Now(), InReplyTo: id,
			ProviderID: a.RecordingSID, Body: fmt.Sprintf("(recorded answer, %d s: GET /v1/messages/%s/recording)", a.Duration, id)}
		if rep.ID, err = r.Replies.Add(ctx, m.Tenant, rep); err != nil {
			return err
		}
		r.Events.Publish(ctx, m.Tenant, webhooks.MessageReply, rep, "")
	}
	t, err := workers.NewFetchRecordingTask(workers.FetchRecordingPayload{MessageID: id, Channel: m.Channel,
		RecordingSID: a.RecordingSID, URL: recordingURL, Duration: a.Duration})
	if err != nil {
		return err
	}
	_, err = r.Queue.EnqueueContext(ctx, t)
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil // the provider repeated its callback
	}
	return err
}

// Redial places a call again after `after` when the provider reported it
// busy or not answered, at most maxRedials times; past that the message
// ends undelivered. A broadcast's call is not placed again: the broadcast
// is told at once, and moves the person on to their next channel.
func (r *Receiver) Redial(ctx context.Context, id, providerID string, after time.Duration, maxRedials int, reason ledger.ErrorInfo) error {
	// Asynq schedules in whole seconds (truncating): aim at one, so the call
	// is not placed before the time the history gives.
	at := time.Now().Add(after).Truncate(time.Second).Add(time.Second)
	link, err := r.Ledger.BroadcastOf(ctx, id)
	if err != nil {
		return err
	}
	if link != "" {
		maxRedials = 0
	}
	again, err := r.Ledger.Redial(ctx, id, providerID, maxRedials, at, reason)
	if err != nil || !again {
		if errors.Is(err, ledger.ErrNotFound) {
			return nil // a report for a call that is not the message's current one
		}
		if err == nil && link != "" && r.OnStatus != nil {
			return r.OnStatus(ctx, link, id, ledger.StatusUndelivered)
		}
		return err
	}
	m, err := r.Ledger.Get(ctx, "", id)
	if err != nil {
		return err
	}
	o := workers.SendOptionsOf(id, m.Request, r.MaxAttempts, r.AttemptTimeout)
	o.SendAt = at
	t, err := workers.NewSendTask(o)
	if err != nil {
		return err
	}
	_, err = r.Queue.EnqueueContext(ctx, t)
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil
	}
	return err
}
