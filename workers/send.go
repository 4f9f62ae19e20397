package workers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/audit"
	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/metrics"
	"github.com/patientmsg/gateway/internal/tracing"
	"github.com/patientmsg/gateway/internal/webhooks"
)

// SendHandler delivers send tasks through the channel registry, with the
// ledger as the single source of truth about what was already sent.
type SendHandler struct {
	Ledger   *ledger.Ledger
	Channels *channels.Registry
	// Grace is how long to wait for a provider callback after an attempt
	// whose outcome is unknown before sending again.
	Grace time.Duration
	// MaxAttempts is the provider-attempt budget per message, counted in the
	// ledger (Asynq's own retry count also includes waits and Redis trouble).
	MaxAttempts int
	// Consent is checked right before every provider call (nil: no check).
	Consent *consent.Ledger
	// Events publishes message.status to the clinics' endpoints (nil: none).
	Events *webhooks.Publisher
	// CrisisExempt lists tenants whose crisis messages are sent despite an
	// opt-out (an explicit, audited emergency exemption; empty by default).
	CrisisExempt map[string]bool
	Logger       *slog.Logger
	// Senders paces every sender across all workers (nil: unpaced).
	Senders *Senders
	// OnBroadcast is told when a broadcast's message is handed over or
	// ends without reaching the provider (nil: nobody).
	OnBroadcast func(ctx context.Context, link, messageID string, status ledger.Status) error
	// RecordBroadcast writes the ledger record of a broadcast's message
	// when its send task runs and says whether the message is still due: a
	// broadcast queues its people's sends without a record each, so that
	// 100,000 people are queued in seconds. Nil: the record exists already.
	RecordBroadcast func(ctx context.Context, link, messageID string) (due bool, err error)
	// Backlog is told when a message leaves its tenant's backlog for good
	// (see Backlog); nil: no backlog is kept.
	Backlog Backlog
	// Now is the clock (time.Now when nil); tests move it.
	Now func() time.Time
	// Audit records each send a provider accepted or finally refused, and
	// each message suppressed (nil: none).
	Audit *audit.Log
	// Fence waits until a claim, and the provider's recorded answer, are
	// on enough Redis replicas (nil: no wait).
	Fence Fence
	// Metrics counts each attempt's outcome, the provider's time to answer
	// and its error codes (nil: none).
	Metrics *metrics.Metrics
	// Tracer makes a span of each send, the child of the span that queued
	// it, and one of each provider call (nil: no tracing).
	Tracer trace.Tracer
}

// Backlog keeps each tenant's queued messages per channel (admission
// control counts them when the API accepts them). Release must be
// idempotent: a task may end more than once (a duplicate delivery, a
// crash after the send).
type Backlog interface {
	Release(ctx context.Context, tenant, channel, id string) error
	// ReleaseIn queues Release on a pipeline the caller runs, then done
	// says how it went.
	ReleaseIn(ctx context.Context, pipe redis.Pipeliner, tenant, channel, id string) (done func() error)
}

func (h *SendHandler) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

func firstErr(err error, wait *waitError) error {
	if err != nil {
		return err
	}
	return wait
}

// IdentityOf is the consent identity a message is sent to.
func IdentityOf(channel string, to ledger.Recipient) consent.Identity {
	spec, _ := channels.SpecOf(channel)
	switch spec.Address {
	case channels.WeChatOpenID:
		return consent.Identity{Kind: consent.WeChat, Value: to.WeChatOpenID}
	case channels.Email:
		return consent.Normalise(consent.Identity{Kind: consent.Email, Value: to.Email})
	}
	return consent.Identity{Kind: consent.Phone, Value: to.Phone}
}

// recordLate is how long after its message's id was made a send task
// waits for a record it does not find.
const recordLate = time.Minute

// waitError asks Asynq to retry after a set delay (see RetryDelay).
type waitError struct {
	reason string
	after  time.Duration
}

func (e *waitError) Error() string { return e.reason }

// ProcessTask implements asynq.Handler.
func (h *SendHandler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	var p SendPayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return fmt.Errorf("bad send payload: %w", asynq.SkipRetry)
	}
	if p.MessageID == "" {
		p.MessageID = messageOfTask(ctx)
	}
	if p.MessageID == "" {
		return fmt.Errorf("send task without a message id: %w", asynq.SkipRetry)
	}
	channel := strings.TrimPrefix(t.Type(), TypeSendPrefix)
	if p.Priority == "" {
		p.Priority = priorityOf(ctx)
	}
	var span trace.Span
	if h.Tracer != nil {
		ctx, span = h.Tracer.Start(tracing.WithTraceParent(ctx, p.TraceParent), "send "+channel,
			trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(
				attribute.String("messaging.system", "asynq"), tracing.Channel.String(channel),
				// A ULID, which says nothing of the patient.
				attribute.String("messaging.message.id", p.MessageID)))
	}
	ctx = context.WithValue(ctx, releaseKey{}, &releaseMark{})
	err := h.process(ctx, t, p, channel)
	if span != nil {
		var we *waitError
		if err != nil && !errors.As(err, &we) {
			// Never the error's text: a provider's message may quote the recipient.
			span.SetStatus(codes.Error, "send failed")
		}
		span.End()
	}
	if h.counted(p) && !released(ctx) {
		retried, _ := asynq.GetRetryCount(ctx)
		most, _ := asynq.GetMaxRetry(ctx)
		if leavesQueue(err, retried, most) {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			if rerr := h.Backlog.Release(rctx, p.Tenant, channel, p.MessageID); rerr != nil {
				// The API's backlog sweep removes it later.
				h.Logger.Warn("message not taken out of its tenant's backlog", "msg_id", p.MessageID, "err", rerr)
			}
			cancel()
		}
	}
	return err
}

// messageOfTask is the message id a send task's Asynq id names: the id
// itself (NewSendTask), or the id with a suffix for a task queued again
// under another id (OrphanSuffix, once or more). Message ids are ULIDs, so
// the first colon ends one. "" outside a task Asynq runs.
func messageOfTask(ctx context.Context) string {
	id, _ := asynq.GetTaskID(ctx)
	id, _, _ = strings.Cut(id, ":")
	return id
}

// counted says whether the message is counted in its tenant's backlog:
// a crisis message or a broadcast's never is.
func (h *SendHandler) counted(p SendPayload) bool {
	return h.Backlog != nil && p.Tenant != "" && p.Priority != PriorityCrisis && p.Broadcast == ""
}

// releaseMark is where a send notes that its message left the backlog in
// the round trip that recorded the provider's acceptance.
type releaseMark struct{ done bool }

type releaseKey struct{}

func released(ctx context.Context) bool {
	m, _ := ctx.Value(releaseKey{}).(*releaseMark)
	return m != nil && m.done
}

// leavesQueue says whether a send task that returned err is done for good,
// so its message leaves its tenant's backlog: it was sent, ended (failed,
// canceled, suppressed, gone) or Asynq archives it after its last retry.
// A retry or a wait (for the sender, quiet hours, a provider's callback)
// keeps it queued.
func leavesQueue(err error, retried, maxRetry int) bool {
	if err == nil || errors.Is(err, asynq.SkipRetry) {
		return true
	}
	var we *waitError
	if errors.As(err, &we) {
		return false // not a failure: Asynq does not count it (IsFailure)
	}
	return retried >= maxRetry
}

func (h *SendHandler) process(ctx context.Context, t *asynq.Task, p SendPayload, channel string) error {
	log := h.Logger.With("msg_id", p.MessageID, "task", t.Type())
	began := h.begin()
	if p.Broadcast != "" && h.RecordBroadcast != nil {
		// Before the sender is asked: a message whose person answered or
		// moved on, or whose broadcast was canceled, takes no sender slot.
		due, err := h.RecordBroadcast(ctx, p.Broadcast, p.MessageID)
		if err != nil {
			return fmt.Errorf("broadcast message record: %w", err) // Redis trouble: retry
		}
		if !due {
			log.Info("broadcast message no longer due (its person answered or moved on, or the broadcast was canceled); nothing sent")
			return nil
		}
	}
	if wait, err := h.holdForQuietHours(ctx, p, log); err != nil || wait != nil {
		return firstErr(err, wait)
	}
	// The sender's rate is checked before the claim, so a wait spends no
	// attempt and holds no worker.
	sender := h.Senders.KeyFor(channel)
	if wait, err := h.pace(ctx, sender, p); err != nil || wait != nil {
		return firstErr(err, wait)
	}
	// The recipient's consent is read in the round trip of the claim: the
	// check right before the provider call uses it (see checkConsent).
	var optedOut func() (bool, error)
	var also []func(redis.Pipeliner)
	digest, named := consentDigest(p.Consent)
	if h.Consent != nil && named {
		also = append(also, func(pipe redis.Pipeliner) { optedOut = h.Consent.OptedOutIn(ctx, pipe, p.Tenant, digest) })
	}
	claim, err := h.Ledger.Claim(ctx, p.MessageID, h.Grace, also...)
	if err != nil {
		return fmt.Errorf("ledger claim: %w", err) // Redis trouble: retry
	}
	switch claim.Outcome {
	case ledger.ClaimMissing:
		// The API writes a record and its send task in one round trip, the
		// record first; only on a rare path (Redis lost the record's script
		// in a restart or failover, or a task queued on a client other than
		// the ledger's) is the record written right after the task. A young
		// message's record is waited for.
		if age := h.now().Sub(ledger.MadeAt(p.MessageID)); age > -recordLate && age < recordLate {
			log.Warn("message record not found yet; waiting for it", "wait", time.Second)
			return &waitError{reason: "message record not written yet", after: time.Second}
		}
		log.Warn("message record not found (expired or deleted); nothing sent")
		return nil
	case ledger.ClaimFinal:
		log.Info("message already final; nothing sent", "status", claim.Status)
		return nil
	case ledger.ClaimAccepted:
		log.Info("provider already accepted this message; not sending again", "provider_id", claim.ProviderID)
		return nil
	case ledger.ClaimUnconfirmed:
		log.Warn("earlier attempt unconfirmed; waiting for the provider's callback before resending", "wait", claim.Wait)
		return &waitError{reason: "previous attempt unconfirmed", after: claim.Wait}
	}
	m := claim.Message
	// Calls placed again after no answer have a budget of their own
	// (VOICE_MAX_CALLS); this one is for failed attempts.
	attempt := claim.Attempt - claim.Redials - min(claim.Throttles, MaxThrottledAttempts)
	if attempt > h.MaxAttempts {
		// Only reachable after a last attempt whose outcome stayed unknown
		// through the grace period: do not exceed the attempt budget.
		_ = h.Ledger.RecordFailure(ctx, m.ID, ledger.Failure{Code: "unconfirmed", Final: true, Attempt: claim.Attempt,
			Message: "the provider never confirmed the last attempt and the attempt budget is spent"})
		return fmt.Errorf("attempts exhausted: %w", asynq.SkipRetry)
	}
	ch, ok := h.Channels.Get(m.Channel)
	if !ok {
		_ = h.Ledger.RecordFailure(ctx, m.ID, ledger.Failure{Code: "channel_unavailable", Final: true, Attempt: claim.Attempt,
			Message: "channel " + m.Channel + " is not configured on the workers"})
		return fmt.Errorf("channel %q not configured: %w", m.Channel, asynq.SkipRetry)
	}
	log = log.With("channel", m.Channel, "attempt", claim.Attempt)
	if err := h.claimReplicated(ctx, began, m.ID, claim.Attempt, log); err != nil {
		return err
	}
	if !claim.UnconfirmedSince.IsZero() {
		// The attempt before may have reached the provider: ask it first.
		if done, err := h.lookUp(ctx, ch, m, claim, log); err != nil || done {
			return err
		}
		optedOut = nil // read again: the lookup took a while
	}
	if optedOut != nil && (h.Fence != nil || p.Tenant != m.Tenant || digest != consent.Digest(IdentityOf(m.Channel, m.To))) {
		// Read again after the wait for the replicas; and when the task
		// does not name this record's tenant and recipient.
		optedOut = nil
	}
	if suppressed, err := h.checkConsent(ctx, m, claim.Attempt, optedOut, log); err != nil || suppressed {
		return err
	}
	start := time.Now()
	pctx, pspan := h.startProviderCall(ctx, m.Channel)
	res, sendErr := ch.Send(pctx, channels.MessageOf(m))
	h.Metrics.ProviderRequest(m.Channel, time.Since(start))
	if pspan != nil {
		endProviderCall(pspan, sendErr)
	}
	if sendErr == nil {
		h.Metrics.SendOutcome(m.Channel, metrics.Accepted)
		// Record with a context of its own: the provider has the message now,
		// and the record must survive a shutdown that cancels ctx.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		var also []func(redis.Pipeliner)
		var releasedIn func() error
		if h.counted(p) {
			// The message leaves its tenant's backlog in the same round trip.
			also = append(also, func(pipe redis.Pipeliner) { releasedIn = h.Backlog.ReleaseIn(rctx, pipe, p.Tenant, channel, m.ID) })
		}
		if err := h.Ledger.RecordAccepted(rctx, m.ID, m.Channel, res.ProviderID, also...); err != nil {
			// The status callback carries the provider id too; until it
			// arrives, the unconfirmed-attempt guard prevents a second send.
			log.Error("provider accepted but the ledger write failed", "provider_id", res.ProviderID, "err", err)
			return fmt.Errorf("record acceptance: %w", err)
		}
		if mark, _ := ctx.Value(releaseKey{}).(*releaseMark); mark != nil && releasedIn != nil {
			// Not done: ProcessTask releases it once more on its own.
			mark.done = releasedIn() == nil
		}
		log.Info("accepted by provider", "provider_id", res.ProviderID, "took", time.Since(start).Round(time.Millisecond))
		h.Audit.Record(rctx, sendEvent(m, audit.ActionSend, audit.OK))
		h.Events.MessageStatus(rctx, h.Ledger, m.Tenant, m.ID)
		h.broadcast(rctx, m, ledger.StatusSent, log)
		return h.answerReplicated(rctx, began, log)
	}
	se := channels.AsSendError(sendErr)
	h.Metrics.ProviderError(m.Channel, se.Code)
	h.Metrics.SendOutcome(m.Channel, outcomeOf(se))
	if se.Class == channels.Throttled {
		// The provider asks the sender to slow down: every worker's pace drops.
		if err := h.Senders.Throttled(context.WithoutCancel(ctx), sender, se.RetryAfter, se.Code); err != nil {
			log.Error("could not record the provider's throttle", "err", err)
		}
	}
	if se.Class == channels.OptedOut && h.Consent != nil {
		// The provider knows the recipient opted out: record it so later
		// messages are suppressed before they reach the provider.
		if _, err := h.Consent.Set(context.WithoutCancel(ctx), m.Tenant, IdentityOf(m.Channel, m.To), true,
			consent.SourceProvider, m.Channel+" error "+se.Code+" on message "+m.ID); err != nil {
			log.Error("could not record the provider's opt-out", "err", err)
		}
	}
	retried, _ := asynq.GetRetryCount(ctx)
	// A throttled attempt is not a failure of the message (up to
	// MaxThrottledAttempts of them): the sender slows down and it is retried.
	throttledFree := se.Class == channels.Throttled && claim.Throttles < MaxThrottledAttempts
	lastTry := attempt >= h.MaxAttempts && !throttledFree
	final := !se.Retryable() || (lastTry && !se.Unconfirmed)
	f := ledger.Failure{Code: se.Code, Message: se.Message, Final: final, Unconfirmed: se.Unconfirmed && !final,
		Attempt: claim.Attempt, Throttled: se.Class == channels.Throttled}
	if se.Class == channels.OptedOut {
		f.FinalStatus = ledger.StatusSuppressed
	}
	// Asynq schedules with one-second precision (it truncates): aim at a
	// whole second so the retry happens when the history says, and never
	// before a provider's Retry-After.
	retryAt := ceilSecond(time.Now().Add(retryDelay(retried, se)))
	if !final {
		f.RetryAt = retryAt
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := h.Ledger.RecordFailure(rctx, m.ID, f); err != nil {
		log.Error("could not record failed attempt", "err", err)
	}
	log.Warn("send failed", "class", se.Class.String(), "code", se.Code, "http_status", se.HTTPStatus, "final", final)
	if final {
		if f.FinalStatus == ledger.StatusSuppressed {
			h.Audit.Record(rctx, sendEvent(m, audit.ActionSuppress, audit.OK))
		} else {
			h.Audit.Record(rctx, sendEvent(m, audit.ActionSend, audit.Error))
		}
		h.Events.MessageStatus(rctx, h.Ledger, m.Tenant, m.ID)
		st := ledger.StatusFailed
		if f.FinalStatus != "" {
			st = f.FinalStatus
		}
		h.broadcast(rctx, m, st, log)
		if err := h.answerReplicated(rctx, began, log); err != nil {
			return err
		}
	}
	switch {
	case !se.Retryable():
		return fmt.Errorf("%w: %w", se, asynq.SkipRetry)
	case lastTry && se.Unconfirmed:
		// The provider may have the message: wait for its callback rather
		// than fail it; the next claim decides (see the attempt check above).
		return &waitError{reason: se.Error(), after: h.Grace}
	}
	if throttledFree {
		return &waitError{reason: se.Error(), after: time.Until(retryAt)}
	}
	return &retryError{SendError: se, after: time.Until(retryAt)}
}

// startProviderCall starts the span of a provider call (none without a
// tracer).
func (h *SendHandler) startProviderCall(ctx context.Context, channel string) (context.Context, trace.Span) {
	if h.Tracer == nil {
		return ctx, nil
	}
	return h.Tracer.Start(ctx, channel+" provider call", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(tracing.Channel.String(channel)))
}

// endProviderCall ends a provider call's span with the class of its
// outcome, never the provider's words.
func endProviderCall(span trace.Span, err error) {
	outcome := metrics.Accepted
	if err != nil {
		outcome = outcomeOf(channels.AsSendError(err))
		span.SetStatus(codes.Error, outcome)
	}
	span.SetAttributes(tracing.Outcome.String(outcome))
	span.End()
}

// outcomeOf is the metrics class of a failed send.
func outcomeOf(se *channels.SendError) string {
	switch se.Class {
	case channels.Throttled:
		return metrics.Throttled
	case channels.OptedOut:
		return metrics.Suppressed
	}
	return metrics.Failed
}

// broadcast tells the broadcast a message belongs to how it went. A
// failure to record it is logged: the broadcast's own timeout moves the
// person on to the next channel anyway.
func (h *SendHandler) broadcast(ctx context.Context, m *ledger.Message, st ledger.Status, log *slog.Logger) {
	if m.Broadcast == "" || h.OnBroadcast == nil {
		return
	}
	if err := h.OnBroadcast(ctx, m.Broadcast, m.ID, st); err != nil {
		log.Error("could not record the message's status in its broadcast", "err", err)
	}
}

func ceilSecond(t time.Time) time.Time {
	if r := t.Truncate(time.Second); !r.Equal(t) {
		return r.Add(time.Second)
	}
	return t
}

// retryError carries the delay the handler chose and recorded in the
// ledger, so Asynq retries exactly when the message history says.
type retryError struct {
	*channels.SendError
	after time.Duration
}

func (e *retryError) Unwrap() error { return e.SendError }

// checkConsent ends the message suppressed when its recipient opted out,
// unless the tenant's crisis exemption applies (then the history says so).
// read, when not nil, is the answer of a read made in the claim's round
// trip; without it, or when it failed, consent is read now.
func (h *SendHandler) checkConsent(ctx context.Context, m *ledger.Message, attempt int, read func() (bool, error), log *slog.Logger) (bool, error) {
	if h.Consent == nil {
		return false, nil
	}
	var out bool
	var err error
	if read != nil {
		out, err = read()
	}
	if read == nil || err != nil {
		out, err = h.Consent.OptedOut(ctx, m.Tenant, IdentityOf(m.Channel, m.To))
	}
	if err != nil {
		return false, fmt.Errorf("consent check: %w", err) // never send unchecked: retry
	}
	if !out {
		return false, nil
	}
	if m.Priority == PriorityCrisis && h.CrisisExempt[m.Tenant] {
		log.Warn("recipient opted out; crisis message sent under the tenant's emergency exemption")
		return false, h.Ledger.Note(ctx, m.ID, "recipient opted out; sent under the tenant's crisis emergency exemption")
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := h.Ledger.RecordFailure(rctx, m.ID, ledger.Failure{Code: "opted_out", Final: true, FinalStatus: ledger.StatusSuppressed,
		Attempt: attempt, Message: "the recipient opted out; the message was not sent"}); err != nil {
		return false, err
	}
	log.Info("recipient opted out: message suppressed before the provider call")
	h.Audit.Record(rctx, sendEvent(m, audit.ActionSuppress, audit.OK))
	h.Metrics.SendOutcome(m.Channel, metrics.Suppressed)
	h.Events.MessageStatus(rctx, h.Ledger, m.Tenant, m.ID)
	h.broadcast(rctx, m, ledger.StatusSuppressed, log)
	return true, nil
}

// sendEvent is the audit event of what a worker did with a message.
func sendEvent(m *ledger.Message, action, outcome string) audit.Event {
	return audit.Event{Tenant: m.Tenant, Actor: audit.ActorWorker, Action: action, Object: "message:" + m.ID, Outcome: outcome}
}

// IsFailure is the Asynq IsFailure func: waiting for a provider callback
// does not spend an attempt.
func IsFailure(err error) bool {
	var we *waitError
	return !errors.As(err, &we)
}

// RetryDelay is the Asynq RetryDelayFunc: the provider's Retry-After when
// it gave one, the wait for an unconfirmed attempt's callback, otherwise
// exponential backoff with full jitter.
func RetryDelay(n int, err error, _ *asynq.Task) time.Duration {
	var we *waitError
	if errors.As(err, &we) {
		return ceilSecond(time.Now().Add(max(we.after, 10*time.Millisecond))).Sub(time.Now())
	}
	var re *retryError
	if errors.As(err, &re) {
		return re.after
	}
	return retryDelay(n, channels.AsSendError(err))
}

func retryDelay(n int, se *channels.SendError) time.Duration {
	if se.RetryAfter > 0 {
		return se.RetryAfter
	}
	return Backoff(n)
}

// Backoff is exponential (2s·2ⁿ, capped at 10 min) with jitter in
// [d/2, d], so retries of a burst spread out.
func Backoff(n int) time.Duration {
	d := 2 * time.Second << min(n, 9)
	d = min(d, 10*time.Minute)
	return d/2 + rand.N(d/2+1)
}
