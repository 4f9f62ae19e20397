package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/escalation"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/replies"
	"github.com/patientmsg/gateway/internal/webhooks"
	"github.com/patientmsg/gateway/workers"
)

// InboundDedupeWindow is how long a provider's message id is remembered to
// drop its retries (Twilio retries for minutes, WeChat three times in 15 s).
const InboundDedupeWindow = 7 * 24 * time.Hour

// Inbound handles a message a patient sent. Opt-out and opt-in keywords
// change consent for every tenant of this gateway: the sending number or
// account is shared, and a patient who wrote STOP to it must hear from
// none of them (the carrier would block them anyway). Each change is
// confirmed once; a repeated STOP gets no second reply. START, UNSTOP and
// YES opt back in only a patient who opted out: otherwise YES is an
// ordinary answer.
func (r receiver) Inbound(ctx context.Context, in channels.InboundMessage) (channels.InboundResult, error) {
	key := "gw:in:" + in.Channel + ":" + in.ProviderID
	first, err := r.rdb.SetNX(ctx, key, 1, InboundDedupeWindow).Result()
	if err != nil {
		return channels.InboundResult{}, err
	}
	if !first {
		return channels.InboundResult{Duplicate: true}, nil
	}
	res, err := r.inbound(ctx, in)
	if err != nil {
		// Forget the message id so the provider's retry is processed again:
		// a reply filed twice is better than an urgent reply lost.
		r.rdb.Del(context.WithoutCancel(ctx), key)
	}
	return res, err
}

func (r receiver) inbound(ctx context.Context, in channels.InboundMessage) (channels.InboundResult, error) {
	var err error
	action, lang := consent.Keyword(in.Body)
	if action == consent.NoKeyword || r.consent == nil {
		return channels.InboundResult{}, r.queueReply(ctx, in)
	}
	id := workers.IdentityOf(in.Channel, in.From)
	evidence := in.Channel + " inbound message " + in.ProviderID
	changed := false
	for _, tenant := range r.tenants {
		var c bool
		switch action {
		case consent.OptOut:
			c, err = r.consent.Set(ctx, tenant, id, true, consent.SourceKeyword, evidence)
		case consent.OptIn:
			out, gerr := r.consent.OptedOut(ctx, tenant, id)
			if gerr != nil {
				err = gerr
			} else if out {
				c, err = r.consent.Set(ctx, tenant, id, false, consent.SourceKeyword, evidence)
			}
		}
		if err != nil {
			return channels.InboundResult{}, err
		}
		changed = changed || c
		if c {
			typ := webhooks.ContactOptedOut
			if action == consent.OptIn {
				typ = webhooks.ContactOptedIn
			}
			r.events.Publish(ctx, tenant, typ, map[string]any{"identity": id, "source": consent.SourceKeyword, "evidence": evidence}, "")
		}
	}
	if action == consent.Help {
		return channels.InboundResult{Reply: r.helpText(ctx, id, lang)}, nil
	}
	if changed {
		return channels.InboundResult{Reply: consent.Replies[action][lang]}, nil
	}
	if action == consent.OptIn {
		// YES from a patient who never opted out answers a question.
		return channels.InboundResult{}, r.queueReply(ctx, in)
	}
	return channels.InboundResult{}, nil
}

// reply files an answer in the feed of the tenant whose message last went
// to the sender, and notes it in that message's history. An answer from
// someone no tenant wrote to recently is logged (ids only) and dropped:
// there is no one it could be shown to.
//
// Filing is idempotent at every point a worker can die, keyed by the
// provider's message id: what the reply answers is recorded first, and a
// task run again reaches the same question and option; the feed entry,
// the escalation and the clinic-webhook event are made once; the question
// is closed last.
func (r receiver) reply(ctx context.Context, in channels.InboundMessage) error {
	if r.replies == nil {
		return nil
	}
	id := workers.IdentityOf(in.Channel, in.From)
	f, closes, err := r.matchReply(ctx, in, id)
	if err != nil {
		return err
	}
	tenant, msgID, option := f.Tenant, f.MessageID, f.Option
	if tenant == "" {
		r.log.Info("reply from a sender no tenant has written to recently; not kept", "channel", in.Channel, "provider_id", in.ProviderID)
		return nil
	}
	at := in.ReceivedAt
	if at.IsZero() {
		at = time.Now()
	}
	rep := replies.Reply{Channel: in.Channel, From: id, Body: in.Body, ReceivedAt: at, InReplyTo: msgID,
		ProviderID: in.ProviderID, Option: option}
	if rep.ID, _, err = r.replies.AddOnce(ctx, tenant, rep); err != nil {
		return err
	}
	r.events.PublishAs(ctx, tenant, webhooks.MessageReply, rep, "", "reply-"+in.Channel+"-"+in.ProviderID)
	var esc *escalation.Escalation
	if r.escalator != nil {
		if esc, err = r.escalator.Consider(ctx, tenant, rep.ID, msgID, in.Channel, in.Body, option); err != nil {
			r.log.Error("urgent-reply check failed; the provider will retry", "provider_id", in.ProviderID, "err", err)
			return err
		}
	}
	r.replied(ctx, tenant, id, esc)
	if r.onAnswer != nil {
		link, err := r.l.BroadcastOf(ctx, msgID)
		if err != nil {
			return err
		}
		if link != "" {
			if err := r.onAnswer(ctx, link, msgID, in.Channel, option, "", in.ReceivedAt); err != nil {
				return err
			}
		}
	}
	note := "the patient replied (see GET /v1/replies)"
	if option != "" {
		note = "the patient answered: " + option
	}
	if err := r.l.Note(ctx, msgID, note); err != nil && !errors.Is(err, ledger.ErrNotFound) {
		return err
	}
	if closes != nil {
		return r.replies.ClosePrompt(ctx, id, *closes)
	}
	return nil
}

// OptOut records an opt-out the provider reported (a WeChat unfollow) for
// every tenant, as a keyword opt-out is.
func (r receiver) OptOut(ctx context.Context, channel string, who ledger.Recipient, evidence string) error {
	if r.consent == nil {
		return nil
	}
	id := workers.IdentityOf(channel, who)
	for _, tenant := range r.tenants {
		changed, err := r.consent.Set(ctx, tenant, id, true, consent.SourceUnsubscribe, evidence)
		if err != nil {
			return err
		}
		if changed {
			r.events.Publish(ctx, tenant, webhooks.ContactOptedOut, map[string]any{"identity": id, "source": consent.SourceUnsubscribe, "evidence": evidence}, "")
		}
	}
	return nil
}

// matchReply finds what a reply answers: one of the sender's open
// questions (expect_reply), matched by replies.Match, or else the message
// last sent to the sender. The match is recorded under the provider's
// message id before anything is filed, so that a task run again after a
// failure finds the same one (its question is closed by then). closes is
// the question to close once the answer is filed.
func (r receiver) matchReply(ctx context.Context, in channels.InboundMessage, id consent.Identity) (f replies.Filing, closes *replies.Prompt, err error) {
	if in.ProviderID != "" {
		if f, ok, err := r.replies.RememberedMatch(ctx, in.Channel, in.ProviderID); err != nil || ok {
			if ok && f.Option != "" {
				closes = &replies.Prompt{Tenant: f.Tenant, MessageID: f.MessageID}
			}
			return f, closes, err
		}
	}
	prompts, err := r.replies.OpenPrompts(ctx, id, time.Now())
	if err != nil {
		return f, nil, err
	}
	var qs []replies.Question
	for _, p := range prompts {
		m, err := r.l.Get(ctx, p.Tenant, p.MessageID)
		if errors.Is(err, ledger.ErrNotFound) {
			continue
		}
		if err != nil {
			return f, nil, err
		}
		if m.ExpectReply != nil && m.Status != ledger.StatusCanceled && m.Status != ledger.StatusSuppressed {
			qs = append(qs, replies.Question{Prompt: p, Options: m.ExpectReply.Options, Code: m.ExpectReply.Code})
		}
	}
	if q, opt := replies.Match(in.Body, qs); q != nil {
		f = replies.Filing{Tenant: q.Tenant, MessageID: q.MessageID, Option: opt}
	} else {
		if f.Tenant, f.MessageID, err = r.replies.Last(ctx, id); err != nil {
			return f, nil, err
		}
	}
	if in.ProviderID != "" && f.Tenant != "" {
		if f, err = r.replies.RememberMatch(ctx, in.Channel, in.ProviderID, f); err != nil {
			return f, nil, err
		}
	}
	if f.Option != "" {
		closes = &replies.Prompt{Tenant: f.Tenant, MessageID: f.MessageID}
	}
	return f, closes, nil
}

// helpTextKey holds a tenant's help texts by language.
func helpTextKey(tenant string) string { return "gw:help:{" + tenant + "}" }

// helpText is the help text of the tenant that last wrote to the sender,
// in the keyword's language, or the gateway's default.
func (r receiver) helpText(ctx context.Context, id consent.Identity, lang string) string {
	if r.replies != nil {
		if tenant, _, err := r.replies.Last(ctx, id); err == nil && tenant != "" {
			if t, err := r.rdb.HGet(ctx, helpTextKey(tenant), lang).Result(); err == nil && t != "" {
				return t
			}
		}
	}
	return consent.Replies[consent.Help][lang]
}

// TypeInboundReply is the task that files a patient's answer: matching it
// to the question it answers, the reply feed, the clinic webhook and the
// urgent-reply check run in the workers, off the provider's webhook.
const TypeInboundReply = "inbound:reply"

// queueReply queues an answer for the workers. It goes to a queue of its
// own, served by a pool no send uses: an answer ("need help") must not
// wait behind a bulk backlog, nor behind a crisis broadcast's own
// messages. The provider id keeps it queued once.
func (r receiver) queueReply(ctx context.Context, in channels.InboundMessage) error {
	if in.ReceivedAt.IsZero() {
		in.ReceivedAt = time.Now().UTC()
	}
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	t := asynq.NewTask(TypeInboundReply, b, asynq.TaskID("in:"+in.Channel+":"+in.ProviderID),
		asynq.Queue(workers.QueueReplies), asynq.MaxRetry(25), asynq.Timeout(time.Minute))
	_, err = r.q.EnqueueContext(ctx, t)
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil
	}
	return err
}

// Inbox files queued answers (the TypeInboundReply handler of the workers).
type Inbox struct {
	Ledger    *ledger.Ledger
	Replies   *replies.Store
	Escalator *escalation.Escalator
	Events    *webhooks.Publisher
	Logger    *slog.Logger
	// OnReply is told of every reply filed (nil: nobody).
	OnReply ReplyHook
	// OnAnswer is told of replies to broadcasts' messages (nil: nobody).
	OnAnswer AnswerHook
}

// ProcessTask implements asynq.Handler.
func (b *Inbox) ProcessTask(ctx context.Context, t *asynq.Task) error {
	var in channels.InboundMessage
	if err := json.Unmarshal(t.Payload(), &in); err != nil {
		return fmt.Errorf("bad inbound payload: %w", asynq.SkipRetry)
	}
	r := receiver{l: b.Ledger, replies: b.Replies, escalator: b.Escalator, events: b.Events, log: b.Logger, onReply: b.OnReply,
		onAnswer: b.OnAnswer}
	return r.reply(ctx, in)
}
