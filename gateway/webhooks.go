package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/escalation"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/replies"
	"github.com/patientmsg/gateway/internal/webhooks"
	"github.com/patientmsg/gateway/workers"
)

// mountWebhooks serves every route the channels declare.
func (s *Server) mountWebhooks() {
	rcv := receiver{onReply: s.opts.OnReply, onStatus: s.opts.OnBroadcastStatus, onAnswer: s.opts.OnBroadcastAnswer, l: s.opts.Ledger, rdb: s.opts.Redis, consent: s.opts.Consent, replies: s.opts.Replies, events: s.opts.Events, escalator: s.opts.Escalator, log: s.log, tenants: s.tenants(),
		q: s.opts.Queue, maxAttempts: s.opts.MaxAttempts, timeout: s.opts.AttemptTimeout}
	for _, r := range s.opts.Channels.Routes(rcv) {
		s.app.Add(r.Method, r.Path, s.webhook(r))
	}
}

func (s *Server) webhook(r channels.Route) fiber.Handler {
	return func(c *fiber.Ctx) error {
		req := channels.WebhookRequest{
			URL:    s.opts.PublicURL + string(c.Request().RequestURI()),
			Header: http.Header{},
			Body:   append([]byte(nil), c.Body()...),
		}
		c.Request().Header.VisitAll(func(k, v []byte) { req.Header.Add(string(k), string(v)) })
		req.Query, _ = url.ParseQuery(string(c.Request().URI().QueryString()))
		if strings.HasPrefix(string(c.Request().Header.ContentType()), fiber.MIMEApplicationForm) {
			form, err := url.ParseQuery(string(req.Body))
			if err != nil {
				return c.Status(400).SendString("malformed form body\n")
			}
			req.Form = form
		} else {
			req.Form = url.Values{}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// Status callbacks and patients' messages are admitted until Redis'
		// last few percent; then the provider is asked to try again later.
		// A call in progress is never cut off by the guard.
		if !liveCall(r.Path) {
			if after, refused := s.webhookRefused(ctx); refused {
				return webhookTryAgain(c, after)
			}
		}
		began := s.webhookBegin()
		resp := r.Handle(ctx, req)
		if resp.Status < 300 && s.webhookReplicated(ctx, c, r.Path, began) {
			return nil
		}
		if resp.Status >= 500 {
			// Every 5xx is a 503 with Retry-After: the provider tries again
			// (a push that does not decrypt, a configuration error, too).
			resp.Status = http.StatusServiceUnavailable
			c.Set(fiber.HeaderRetryAfter, strconv.Itoa(seconds(DefaultRetryAfter)))
		}
		if resp.ContentType != "" {
			c.Set(fiber.HeaderContentType, resp.ContentType)
		}
		return c.Status(resp.Status).Send(resp.Body)
	}
}

// liveCall reports whether a webhook route is a step of a call in
// progress (its TwiML, a keypad answer, the end of a recording), which
// the patient is waiting on.
func liveCall(path string) bool {
	for _, step := range []string{"/voice/twiml", "/voice/gather", "/voice/record"} {
		if strings.HasSuffix(path, step) {
			return true
		}
	}
	return false
}

// webhookTryAgain answers a provider 503 with Retry-After (as the
// channels do when Redis is unavailable).
func webhookTryAgain(c *fiber.Ctx, after time.Duration) error {
	c.Set(fiber.HeaderRetryAfter, strconv.Itoa(max(seconds(after), 1)))
	c.Set(fiber.HeaderContentType, "text/plain")
	return c.Status(http.StatusServiceUnavailable).SendString("try again\n")
}

// receiver applies what webhooks report to the ledger and queues the work
// that follows (fetching a recording, calling again).
type receiver struct {
	l           *ledger.Ledger
	rdb         redis.UniversalClient
	consent     *consent.Ledger
	replies     *replies.Store
	events      *webhooks.Publisher
	escalator   *escalation.Escalator
	log         *slog.Logger
	tenants     []string
	q           Enqueuer
	maxAttempts int
	timeout     time.Duration
	onReply     ReplyHook
	onStatus    StatusHook
	onAnswer    AnswerHook
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

func (r receiver) replied(ctx context.Context, tenant string, from consent.Identity, esc *escalation.Escalation) {
	if r.onReply != nil {
		r.onReply(ctx, tenant, from, esc != nil)
	}
}

func (r receiver) Message(ctx context.Context, id string) (*ledger.Message, error) {
	return r.l.Get(ctx, "", id)
}

func (r receiver) Answer(ctx context.Context, id string, a ledger.Answer, recordingURL string) error {
	if err := r.l.RecordAnswer(ctx, id, a); err != nil {
		return err
	}
	if a.Digits != "" && r.replies != nil {
		// A key pressed on a call answers that call: it joins the reply
		// feed like a text answer ("2"), with the call's id.
		m, err := r.l.Get(ctx, "", id)
		if err != nil {
			return err
		}
		rep := replies.Reply{Channel: m.Channel, From: workers.IdentityOf(m.Channel, m.To), Body: a.Digits, ReceivedAt: time.Now(), InReplyTo: id}
		if m.ExpectReply != nil {
			// The key's meaning, as a texted "2" carries it: "2" → need_help.
			rep.Option = m.ExpectReply.Options[a.Digits]
		}
		if rep.ID, err = r.replies.Add(ctx, m.Tenant, rep); err != nil {
			return err
		}
		r.events.Publish(ctx, m.Tenant, webhooks.MessageReply, rep, "")
		if r.escalator != nil {
			// A key pressed on a call can be urgent too ("3 to talk to a nurse").
			esc, err := r.escalator.Consider(ctx, m.Tenant, rep.ID, id, m.Channel, a.Digits, rep.Option)
			if err != nil {
				return err
			}
			r.replied(ctx, m.Tenant, rep.From, esc)
		} else {
			r.replied(ctx, m.Tenant, rep.From, nil)
		}
		if m.Broadcast != "" && r.onAnswer != nil {
			if err := r.onAnswer(ctx, m.Broadcast, id, m.Channel, rep.Option, a.Digits, time.Now()); err != nil {
				return err
			}
		}
	}
	if recordingURL == "" {
		return nil
	}
	m, err := r.l.Get(ctx, "", id)
	if err != nil {
		return err
	}
	if r.replies != nil && a.RecordingSID != "" {
		// A recorded answer joins the feed too; its audio is fetched into
		// the blob store and served by GET /v1/messages/{id}/recording.
		rep := replies.Reply{Channel: m.Channel, From: workers.IdentityOf(m.Channel, m.To), ReceivedAt: time.Now(), InReplyTo: id,
			ProviderID: a.RecordingSID, Body: fmt.Sprintf("(recorded answer, %d s: GET /v1/messages/%s/recording)", a.Duration, id)}
		if rep.ID, err = r.replies.Add(ctx, m.Tenant, rep); err != nil {
			return err
		}
		r.events.Publish(ctx, m.Tenant, webhooks.MessageReply, rep, "")
	}
	t, err := workers.NewFetchRecordingTask(workers.FetchRecordingPayload{MessageID: id, Channel: m.Channel,
		RecordingSID: a.RecordingSID, URL: recordingURL, Duration: a.Duration})
	if err != nil {
		return err
	}
	_, err = r.q.EnqueueContext(ctx, t)
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil // the provider repeated its callback
	}
	return err
}

func (r receiver) Redial(ctx context.Context, id, providerID string, after time.Duration, maxRedials int, reason ledger.ErrorInfo) error {
	// Asynq schedules in whole seconds (truncating): aim at one, so the call
	// is not placed before the time the history gives.
	at := time.Now().Add(after).Truncate(time.Second).Add(time.Second)
	// A broadcast's call is not placed again: the broadcast moves the
	// person on to their next channel instead, at once.
	link, err := r.l.BroadcastOf(ctx, id)
	if err != nil {
		return err
	}
	if link != "" {
		maxRedials = 0
	}
	again, err := r.l.Redial(ctx, id, providerID, maxRedials, at, reason)
	if err != nil || !again {
		if errors.Is(err, ledger.ErrNotFound) {
			return nil // a report for a call that is not the message's current one
		}
		if err == nil && link != "" && r.onStatus != nil {
			return r.onStatus(ctx, link, id, ledger.StatusUndelivered)
		}
		return err
	}
	m, err := r.l.Get(ctx, "", id)
	if err != nil {
		return err
	}
	o := workers.SendOptionsOf(id, m.Request, r.maxAttempts, r.timeout)
	o.SendAt = at
	t, err := workers.NewSendTask(o)
	if err != nil {
		return err
	}
	_, err = r.q.EnqueueContext(ctx, t)
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil
	}
	return err
}

func (r receiver) ProviderStatus(ctx context.Context, id string, u ledger.ProviderUpdate) (ledger.Applied, error) {
	if id == "" {
		found, err := r.l.MessageIDByProvider(ctx, u.Channel, u.ProviderID)
		if errors.Is(err, ledger.ErrNotFound) {
			return ledger.AppliedUnknown, nil
		}
		if err != nil {
			return ledger.AppliedUnknown, err
		}
		id = found
	}
	applied, link, err := r.l.ApplyProviderUpdateLinked(ctx, id, u)
	if err == nil && applied == ledger.AppliedChanged {
		r.events.MessageStatus(ctx, r.l, "", id)
		if link != "" && r.onStatus != nil {
			if err := r.onStatus(ctx, link, id, u.Status); err != nil {
				return applied, err // the provider retries; the update is idempotent
			}
		}
	}
	return applied, err
}

// tenants lists the tenants of the API keys, sorted, once each.
func (s *Server) tenants() []string {
	seen := map[string]bool{}
	var out []string
	for _, t := range s.opts.APIKeys {
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	sort.Strings(out)
	return out
}
