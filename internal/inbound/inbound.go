// Package inbound is what the gateway makes of what providers report:
// patients' messages (opt-out and opt-in keywords for every tenant, help
// requests, answers matched to the question they answer and filed in the
// reply feed), delivery reports, keypad and recorded answers of calls, and
// calls to place again. Its Receiver implements channels.Receiver; the
// gateway serves the webhooks that feed it and the workers file the
// answers it queues.
package inbound

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/escalation"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/metrics"
	"github.com/patientmsg/gateway/internal/replies"
	"github.com/patientmsg/gateway/internal/webhooks"
	"github.com/patientmsg/gateway/workers"
)

// DedupeWindow is how long a provider's message id is remembered to drop
// its retries (Twilio retries for minutes, WeChat three times in 15 s).
const DedupeWindow = 7 * 24 * time.Hour

// dedupeKey remembers that a provider's message was taken.
func dedupeKey(channel, providerID string) string { return "gw:in:" + channel + ":" + providerID }

// Enqueuer queues tasks (an *asynq.Client).
type Enqueuer interface {
	EnqueueContext(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error)
}

// StatusHook is told when a broadcast's message (link "bc_…:index")
// changes status.
type StatusHook func(ctx context.Context, link, messageID string, status ledger.Status) error

// AnswerHook is told of a reply to a broadcast's message: the option's
// meaning ("safe"; "" for free text) or the keys pressed on a call.
// at is when the answer was received (zero: now).
type AnswerHook func(ctx context.Context, link, messageID, channel, option, digits string, at time.Time) error

// ReplyHook is told of every reply a tenant received, and whether it opened
// an urgent-reply escalation (follow-up plans stop on it).
type ReplyHook func(ctx context.Context, tenant string, from consent.Identity, urgent bool)

// Questionnaires are the questionnaires in progress (package
// questionnaires' Service): their current questions take part in reply
// matching, and the answers matched to them go on to their conversation.
type Questionnaires interface {
	OpenQuestions(ctx context.Context, channel string, from consent.Identity) ([]replies.Question, error)
	Answer(ctx context.Context, tenant, responseID, providerID, body string, at time.Time) error
}

// Receiver applies what providers report to the ledger, the consent ledger
// and the reply feed, and queues the work that follows (filing an answer,
// fetching a recording, calling again). It implements channels.Receiver.
type Receiver struct {
	// Redis remembers the providers' message ids already taken.
	Redis  redis.UniversalClient
	Ledger *ledger.Ledger
	// Consent is the consent ledger keywords change (nil: keywords are
	// ordinary answers).
	Consent *consent.Ledger
	// Replies is the reply feed (nil: replies are not kept).
	Replies *replies.Store
	// HelpTexts are the tenants' answers to HELP (nil: the default text).
	HelpTexts *HelpTexts
	// Events publishes to the tenants' endpoints (nil: none).
	Events *webhooks.Publisher
	// Escalator flags urgent replies and escalates them (nil: none).
	Escalator *escalation.Escalator
	// Queue takes the answers to file, recordings to fetch and calls to
	// place again.
	Queue Enqueuer
	// Tenants are every tenant of the gateway: a keyword changes consent
	// for each of them.
	Tenants []string
	// MaxAttempts and AttemptTimeout are those of a call placed again.
	MaxAttempts    int
	AttemptTimeout time.Duration
	Logger         *slog.Logger
	// Questionnaires take the answers to their questions (nil: none).
	Questionnaires Questionnaires
	// OnReply is told of every reply filed (nil: nobody).
	OnReply ReplyHook
	// OnStatus is told of status changes of broadcasts' messages (nil: nobody).
	OnStatus StatusHook
	// OnAnswer is told of replies to broadcasts' messages (nil: nobody).
	OnAnswer AnswerHook
	// Metrics counts what providers report, by kind (nil: none).
	Metrics *metrics.Metrics
}

var _ channels.Receiver = (*Receiver)(nil)

func (r *Receiver) log() *slog.Logger {
	if r.Logger == nil {
		return slog.Default()
	}
	return r.Logger
}

// Inbound handles a message a patient sent. Opt-out and opt-in keywords
// change consent for every tenant of this gateway: the sending number or
// account is shared, and a patient who wrote STOP to it must hear from
// none of them (the carrier would block them anyway). Each change is
// confirmed once; a repeated STOP gets no second reply. START, UNSTOP and
// YES opt back in only a patient who opted out: otherwise YES is an
// ordinary answer. A message that is no keyword is read for a revocation
// in other words (consent.Recognise): a clear one ("Stop texting me") opts
// out as STOP does, with the patient's words as evidence; a possible one
// ("Leave me alone") is filed as a reply flagged for staff, and the
// patient is asked once to confirm with STOP. Any other message is queued
// for FileReply.
//
// A provider's message id is marked taken only once its work is done: a
// delivery that failed part-way (Redis lost in the middle, so that not even
// the mark could be removed) leaves it pending, and the provider's retry
// does the work again; every step of it is idempotent (the queued answer
// has the message id as its task id, consent changes are confirmed once).
func (r *Receiver) Inbound(ctx context.Context, in channels.InboundMessage) (channels.InboundResult, error) {
	key := dedupeKey(in.Channel, in.ProviderID)
	first, err := r.Redis.SetNX(ctx, key, dedupePending, DedupeWindow).Result()
	if err != nil {
		return channels.InboundResult{}, err
	}
	if !first {
		mark, err := r.Redis.Get(ctx, key).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return channels.InboundResult{}, err
		}
		if mark != dedupePending {
			r.Metrics.Inbound(in.Channel, "duplicate")
			return channels.InboundResult{Duplicate: true}, nil
		}
		// Pending: a delivery whose outcome is unknown, or one running
		// now. Doing the work again is safe; losing it is not.
	}
	res, kind, err := r.inbound(ctx, in)
	if err != nil {
		// Forget the message id so the provider's retry is processed again:
		// a reply filed twice is better than an urgent reply lost.
		r.Redis.Del(context.WithoutCancel(ctx), key)
		return res, err
	}
	if err := r.Redis.Set(context.WithoutCancel(ctx), key, dedupeTaken, DedupeWindow).Err(); err != nil {
		// The work is done; a retry would do it again, harmlessly.
		r.log().Warn("a provider's message id not marked taken", "channel", in.Channel, "provider_id", in.ProviderID, "err", err)
	}
	r.Metrics.Inbound(in.Channel, kind)
	return res, nil
}

// kindReply is the metrics kind of a patient's message that is an
// answer, not a keyword.
const kindReply = "reply"

// The marks of a provider's message id: its work running or failed
// part-way, or done.
const (
	dedupePending = "pending"
	dedupeTaken   = "1"
)

// inbound does Inbound's work and says what kind of message it was
// (reply, opt_out, opt_in, help, possible_opt_out), for the metrics.
func (r *Receiver) inbound(ctx context.Context, in channels.InboundMessage) (channels.InboundResult, string, error) {
	var err error
	action, lang := consent.Keyword(in.Body)
	if r.Consent == nil {
		return channels.InboundResult{}, kindReply, r.queueReply(ctx, in)
	}
	id := workers.IdentityOf(in.Channel, in.From)
	evidence := in.Channel + " inbound message " + in.ProviderID
	source := consent.SourceKeyword
	if action == consent.NoKeyword {
		rev, err := r.revocation(ctx, in, id)
		if err != nil {
			return channels.InboundResult{}, "", err
		}
		switch rev.Outcome {
		case consent.PerSe:
			action, lang = consent.OptOut, rev.Lang
		case consent.ClearRevocation:
			action, lang, source = consent.OptOut, rev.Lang, consent.SourceReply
		case consent.PossibleRevocation:
			res, err := r.possible(ctx, in, id, rev.Lang)
			return res, "possible_opt_out", err
		default:
			return channels.InboundResult{}, kindReply, r.queueReply(ctx, in)
		}
		// The patient's own words are the evidence of what they asked.
		evidence += ": " + strconv.Quote(clipWords(in.Body))
	}
	changed := false
	for _, tenant := range r.Tenants {
		var c bool
		switch action {
		case consent.OptOut:
			c, err = r.Consent.Set(ctx, tenant, id, true, source, evidence)
		case consent.OptIn:
			out, gerr := r.Consent.OptedOut(ctx, tenant, id)
			if gerr != nil {
				err = gerr
			} else if out {
				c, err = r.Consent.Set(ctx, tenant, id, false, consent.SourceKeyword, evidence)
			}
		}
		if err != nil {
			return channels.InboundResult{}, "", err
		}
		changed = changed || c
		if c {
			typ := webhooks.ContactOptedOut
			if action == consent.OptIn {
				typ = webhooks.ContactOptedIn
			}
			r.Events.Publish(ctx, tenant, typ, map[string]any{"identity": id, "source": source, "evidence": evidence}, "")
		}
	}
	kind := "opt_out"
	switch action {
	case consent.Help:
		return channels.InboundResult{Reply: r.helpText(ctx, id, lang)}, "help", nil
	case consent.OptIn:
		kind = "opt_in"
	}
	if changed {
		return channels.InboundResult{Reply: consent.Replies[action][lang]}, kind, nil
	}
	if action == consent.OptIn {
		// YES from a patient who never opted out answers a question.
		return channels.InboundResult{}, kindReply, r.queueReply(ctx, in)
	}
	return channels.InboundResult{}, kind, nil
}

// revocation reads a message that is no keyword for a revocation of
// consent (consent.Recognise). A message that picks an option of one of the
// sender's open questions is that answer, never a clear or possible
// revocation; the opt-out keywords stay opt-outs whatever was asked, as
// the carriers treat them.
func (r *Receiver) revocation(ctx context.Context, in channels.InboundMessage, id consent.Identity) (consent.Revocation, error) {
	rev := consent.Recognise(in.Body)
	if rev.Outcome != consent.ClearRevocation && rev.Outcome != consent.PossibleRevocation || r.Replies == nil {
		return rev, nil
	}
	qs, err := r.openQuestions(ctx, in.Channel, id)
	if err != nil {
		return rev, err
	}
	if q, opt := replies.Match(in.Body, qs); q != nil && opt != "" {
		return consent.Revocation{}, nil
	}
	return rev, nil
}

// possible answers a message that may be a wish to stop: it is filed as
// a reply (FileReply flags it for staff) and the sender is asked, once in
// the review period, to confirm with STOP.
func (r *Receiver) possible(ctx context.Context, in channels.InboundMessage, id consent.Identity, lang string) (channels.InboundResult, error) {
	if err := r.queueReply(ctx, in); err != nil {
		return channels.InboundResult{}, err
	}
	first, err := r.Consent.ClarifyOnce(ctx, id)
	if err != nil || !first {
		return channels.InboundResult{}, err
	}
	return channels.InboundResult{Reply: consent.Clarifications[lang]}, nil
}

// clipWords keeps the first 300 characters of a patient's words as
// evidence.
func clipWords(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if r := []rune(s); len(r) > 300 {
		return string(r[:300]) + "…"
	}
	return s
}

// queueReply queues an answer for FileReply in the workers (see
// workers.NewInboundReplyTask). The provider id keeps it queued once.
func (r *Receiver) queueReply(ctx context.Context, in channels.InboundMessage) error {
	if in.ReceivedAt.IsZero() {
		in.ReceivedAt = time.Now().UTC()
	}
	t, err := workers.NewInboundReplyTask(in)
	if err != nil {
		return err
	}
	_, err = r.Queue.EnqueueContext(ctx, t)
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil
	}
	return err
}

// FileReply files an answer queued by Inbound in the feed of the tenant
// whose message last went to the sender, and notes it in that message's
// history. An answer from someone no tenant wrote to recently is logged
// (ids only) and dropped: there is no one it could be shown to.
//
// Filing is idempotent at every point a worker can die, keyed by the
// provider's message id: what the reply answers is recorded first, and a
// task run again reaches the same question and option; the feed entry,
// the escalation and the clinic-webhook event are made once; the question
// is closed last.
func (r *Receiver) FileReply(ctx context.Context, in channels.InboundMessage) error {
	if r.Replies == nil {
		return nil
	}
	id := workers.IdentityOf(in.Channel, in.From)
	f, closes, err := r.matchReply(ctx, in, id)
	if err != nil {
		return err
	}
	tenant, msgID, option := f.Tenant, f.MessageID, f.Option
	if tenant == "" {
		r.log().Info("reply from a sender no tenant has written to recently; not kept", "channel", in.Channel, "provider_id", in.ProviderID)
		return nil
	}
	at := in.ReceivedAt
	if at.IsZero() {
		at = time.Now()
	}
	rep := replies.Reply{Channel: in.Channel, From: id, Body: in.Body, ReceivedAt: at, InReplyTo: msgID,
		ProviderID: in.ProviderID, Option: option}
	possible := option == "" && r.Consent != nil && consent.Recognise(in.Body).Outcome == consent.PossibleRevocation
	if possible {
		rep.PossibleOptOut = &replies.PossibleOptOut{Deadline: consent.Deadline(at)}
	}
	if rep.ID, _, err = r.Replies.AddOnce(ctx, tenant, rep); err != nil {
		return err
	}
	r.Events.PublishAs(ctx, tenant, webhooks.MessageReply, rep, "", "reply-"+in.Channel+"-"+in.ProviderID)
	if possible {
		p := consent.PossibleOptOut{ID: rep.ID, Channel: in.Channel, From: id, ReceivedAt: at.UTC(),
			Deadline: rep.PossibleOptOut.Deadline, InReplyTo: msgID}
		if _, err := r.Consent.FlagPossible(ctx, tenant, p); err != nil {
			return err
		}
		r.Events.PublishAs(ctx, tenant, webhooks.ContactPossibleOptOut, p, "", "possible-"+in.Channel+"-"+in.ProviderID)
	}
	var esc *escalation.Escalation
	if r.Escalator != nil {
		if esc, err = r.Escalator.Consider(ctx, tenant, rep.ID, msgID, in.Channel, in.Body, option); err != nil {
			r.log().Error("urgent-reply check failed; the provider will retry", "provider_id", in.ProviderID, "err", err)
			return err
		}
	}
	r.replied(ctx, tenant, id, esc)
	if f.Response != "" && r.Questionnaires != nil {
		if err := r.Questionnaires.Answer(ctx, tenant, f.Response, in.ProviderID, in.Body, at); err != nil {
			return err
		}
	}
	if r.OnAnswer != nil {
		link, err := r.Ledger.BroadcastOf(ctx, msgID)
		if err != nil {
			return err
		}
		if link != "" {
			if err := r.OnAnswer(ctx, link, msgID, in.Channel, option, "", in.ReceivedAt); err != nil {
				return err
			}
		}
	}
	note := "the patient replied (see GET /v1/replies)"
	if possible {
		note = "the patient replied: possibly a wish to stop, for staff to resolve (see GET /v1/possible-opt-outs)"
	}
	if option != "" {
		note = "the patient answered: " + option
	}
	if err := r.Ledger.Note(ctx, msgID, note); err != nil && !errors.Is(err, ledger.ErrNotFound) {
		return err
	}
	if closes != nil {
		return r.Replies.ClosePrompt(ctx, id, *closes)
	}
	return nil
}

func (r *Receiver) replied(ctx context.Context, tenant string, from consent.Identity, esc *escalation.Escalation) {
	if r.OnReply != nil {
		r.OnReply(ctx, tenant, from, esc != nil)
	}
}

// OptOut records an opt-out the provider reported (a WeChat unfollow) for
// every tenant, as a keyword opt-out is.
func (r *Receiver) OptOut(ctx context.Context, channel string, who ledger.Recipient, evidence string) error {
	if r.Consent == nil {
		return nil
	}
	r.Metrics.Inbound(channel, "unfollow")
	id := workers.IdentityOf(channel, who)
	for _, tenant := range r.Tenants {
		changed, err := r.Consent.Set(ctx, tenant, id, true, consent.SourceUnsubscribe, evidence)
		if err != nil {
			return err
		}
		if changed {
			r.Events.Publish(ctx, tenant, webhooks.ContactOptedOut, map[string]any{"identity": id, "source": consent.SourceUnsubscribe, "evidence": evidence}, "")
		}
	}
	return nil
}

// matchReply finds what a reply answers: one of the sender's open
// questions (expect_reply, or the current question of a questionnaire in
// progress on the reply's channel), matched by replies.Match, or else the message
// last sent to the sender. The match is recorded under the provider's
// message id before anything is filed, so that a task run again after a
// failure finds the same one (its question is closed by then). closes is
// the question to close once the answer is filed.
func (r *Receiver) matchReply(ctx context.Context, in channels.InboundMessage, id consent.Identity) (f replies.Filing, closes *replies.Prompt, err error) {
	if in.ProviderID != "" {
		if f, ok, err := r.Replies.RememberedMatch(ctx, in.Channel, in.ProviderID); err != nil || ok {
			if ok && f.Option != "" {
				closes = &replies.Prompt{Tenant: f.Tenant, MessageID: f.MessageID}
			}
			return f, closes, err
		}
	}
	qs, err := r.openQuestions(ctx, in.Channel, id)
	if err != nil {
		return f, nil, err
	}
	if q, opt := replies.Match(in.Body, qs); q != nil {
		f = replies.Filing{Tenant: q.Tenant, MessageID: q.MessageID, Option: opt, Response: q.Response}
	} else if f.Tenant, f.MessageID, err = r.Replies.Last(ctx, id); err != nil {
		return f, nil, err
	}
	if in.ProviderID != "" && f.Tenant != "" {
		if f, err = r.Replies.RememberMatch(ctx, in.Channel, in.ProviderID, f); err != nil {
			return f, nil, err
		}
	}
	if f.Option != "" {
		closes = &replies.Prompt{Tenant: f.Tenant, MessageID: f.MessageID}
	}
	return f, closes, nil
}

// openQuestions are the sender's open questions, most recent first:
// expect_reply questions that reached them, and the current questions of
// their questionnaires in progress on the channel.
func (r *Receiver) openQuestions(ctx context.Context, channel string, id consent.Identity) ([]replies.Question, error) {
	prompts, err := r.Replies.OpenPrompts(ctx, id, time.Now())
	if err != nil {
		return nil, err
	}
	var qs []replies.Question
	for _, p := range prompts {
		m, err := r.Ledger.Get(ctx, p.Tenant, p.MessageID)
		if errors.Is(err, ledger.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if m.ExpectReply != nil && reached(m.Status) {
			qs = append(qs, replies.Question{Prompt: p, Options: m.ExpectReply.Options, Code: m.ExpectReply.Code})
		}
	}
	if r.Questionnaires != nil {
		open, err := r.Questionnaires.OpenQuestions(ctx, channel, id)
		if err != nil {
			return nil, err
		}
		qs = append(qs, open...)
		// Most recent question first, whichever kind (message ids are ULIDs).
		sort.SliceStable(qs, func(i, j int) bool { return qs[i].MessageID > qs[j].MessageID })
	}
	return qs, nil
}

// reached says whether a question in this status may be what a patient
// answers: one a worker has handed, or is handing, to the provider. A
// question still queued has reached nobody (a broadcast's next step made
// a moment before the patient answered the last one), and one canceled,
// suppressed or failed never will.
func reached(s ledger.Status) bool {
	switch s {
	case ledger.StatusSending, ledger.StatusSent, ledger.StatusDelivered:
		return true
	}
	return false
}

// helpText is the help text of the tenant that last wrote to the sender,
// in the keyword's language, or the gateway's default.
func (r *Receiver) helpText(ctx context.Context, id consent.Identity, lang string) string {
	if r.Replies != nil && r.HelpTexts != nil {
		if tenant, _, err := r.Replies.Last(ctx, id); err == nil && tenant != "" {
			if t, err := r.HelpTexts.Get(ctx, tenant, lang); err == nil && t != "" {
				return t
			}
		}
	}
	return consent.Replies[consent.Help][lang]
}
