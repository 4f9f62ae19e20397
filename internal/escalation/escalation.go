// Package escalation flags urgent patient replies ("chest pain", "胸痛",
// "can't breathe"…) by per-tenant rules and escalates them to the tenant's
// on-call targets until someone acknowledges: each target is notified in
// turn, every AckTimeout, and the last one again and again — an urgent
// reply is never dropped silently.
package escalation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/address"
	"github.com/patientmsg/gateway/internal/audit"
	"github.com/patientmsg/gateway/internal/invalid"
	"github.com/patientmsg/gateway/internal/metrics"
)

// TypeCheck is the task that escalates an unacknowledged escalation.
const TypeCheck = "escalation:check"

// Errors.
var (
	ErrNotFound = errors.New("escalation not found")
	ErrNoRules  = errors.New("no escalation rules")
)

// Target is someone on call: a phone number to text or call.
type Target struct {
	Channel string `json:"channel"` // sms or voice
	Phone   string `json:"phone"`
}

// Rules are a tenant's urgent-reply rules.
type Rules struct {
	// Keywords match anywhere in a reply, case-insensitively ("chest pain", "胸痛").
	Keywords []string `json:"keywords"`
	// Patterns are regular expressions (RE2 syntax), matched case-insensitively.
	Patterns []string `json:"patterns,omitempty"`
	// Options are answer meanings of questions (expect_reply) that are
	// urgent in themselves, e.g. "need_help".
	Options []string `json:"options,omitempty"`
	OnCall  []Target `json:"on_call"`
	// AckTimeout is how long a target has to acknowledge before the next
	// is notified, in seconds (default 600).
	AckTimeout int `json:"ack_timeout_seconds,omitempty"`

	compiled []*regexp.Regexp
}

// Check normalises the on-call phone numbers and compiles the rules; what
// is wrong is an *invalid.Error naming the field.
func (r *Rules) Check() error {
	for i, t := range r.OnCall {
		e164, err := address.Phone(t.Phone, "")
		if err != nil {
			return invalid.Field("on_call["+strconv.Itoa(i)+"].phone", "is not a valid international phone number")
		}
		r.OnCall[i].Phone = e164
	}
	if err := r.Compile(); err != nil {
		return invalid.Field("rules", err.Error())
	}
	return nil
}

// Compile checks the rules and prepares the patterns.
func (r *Rules) Compile() error {
	if len(r.OnCall) == 0 {
		return errors.New("on_call: at least one target is required")
	}
	for i, t := range r.OnCall {
		if t.Channel != "sms" && t.Channel != "voice" {
			return fmt.Errorf("on_call[%d].channel: sms or voice", i)
		}
	}
	if len(r.Keywords) == 0 && len(r.Patterns) == 0 && len(r.Options) == 0 {
		return errors.New("keywords, patterns or options: at least one is required")
	}
	r.compiled = r.compiled[:0]
	for i, p := range r.Patterns {
		re, err := regexp.Compile("(?i)" + p)
		if err != nil {
			return fmt.Errorf("patterns[%d]: %v", i, err)
		}
		r.compiled = append(r.compiled, re)
	}
	if r.AckTimeout <= 0 {
		r.AckTimeout = 600
	}
	return nil
}

// Match reports whether a reply is urgent, and by which rule. option is
// the meaning of the answer when it matched a question's options.
func (r *Rules) Match(body, option string) (bool, string) {
	for _, o := range r.Options {
		if option != "" && strings.EqualFold(o, option) {
			return true, "option"
		}
	}
	low := strings.ToLower(body)
	for _, k := range r.Keywords {
		if k != "" && strings.Contains(low, strings.ToLower(k)) {
			return true, "keyword"
		}
	}
	for _, re := range r.compiled {
		if re.MatchString(body) {
			return true, "pattern"
		}
	}
	return false, ""
}

// Escalation is one urgent reply and who was told.
type Escalation struct {
	ID        string     `json:"id"`
	State     string     `json:"state"` // open, acknowledged
	ReplyID   string     `json:"reply_id"`
	MessageID string     `json:"message_id"` // the message the patient answered
	Channel   string     `json:"channel"`
	Level     int        `json:"level"` // notifications sent so far
	Notified  []Notified `json:"notified"`
	CreatedAt time.Time  `json:"created_at"`
	AckedAt   *time.Time `json:"acknowledged_at,omitempty"`
	AckedBy   string     `json:"acknowledged_by,omitempty"`
	// Paging is the message id of the page being sent (chosen before it is
	// sent, so a page sent again after a failure half-way is the same
	// message, not a second page).
	Paging string `json:"paging,omitempty"`
	// Questionnaire, ResponseID, Rule and RiskLevel name the questionnaire
	// risk rule that opened it (see Raise); empty for an urgent reply.
	Questionnaire string `json:"questionnaire,omitempty"`
	ResponseID    string `json:"response_id,omitempty"`
	Rule          string `json:"rule,omitempty"`
	RiskLevel     string `json:"risk_level,omitempty"`
}

// Alert is a reason to page on-call other than a reply matching the
// urgent-reply rules: a questionnaire's risk rule that fired. It names the
// questionnaire and the rule, never the patient's answers.
type Alert struct {
	// Key makes one escalation of an alert however often it is raised.
	Key           string
	MessageID     string
	Channel       string
	Questionnaire string
	ResponseID    string
	Rule          string
	RiskLevel     string
}

// Raise opens an escalation for an alert and notifies the first on-call
// target at once, as Consider does for an urgent reply; raised again with
// the same key, it opens nothing new. ErrNoRules: the tenant has no
// on-call targets to tell.
func (e *Escalator) Raise(ctx context.Context, tenant string, a Alert) (*Escalation, error) {
	r, err := e.GetRules(ctx, tenant)
	if err != nil {
		return nil, err
	}
	esc := Escalation{MessageID: a.MessageID, Channel: a.Channel, Questionnaire: a.Questionnaire,
		ResponseID: a.ResponseID, Rule: a.Rule, RiskLevel: a.RiskLevel}
	return e.open(ctx, tenant, "alert:"+a.Key, esc, r, "questionnaire:"+a.Rule)
}

// Deadline is when the next on-call target is notified if nobody
// acknowledges: the rules' AckTimeout after the last notification (or
// after the escalation opened, before the first). Zero once acknowledged.
func (esc *Escalation) Deadline(r *Rules) time.Time {
	if esc.State != "open" {
		return time.Time{}
	}
	from := esc.CreatedAt
	if n := len(esc.Notified); n > 0 {
		from = esc.Notified[n-1].At
	}
	timeout := 600
	if r != nil && r.AckTimeout > 0 {
		timeout = r.AckTimeout
	}
	return from.Add(time.Duration(timeout) * time.Second)
}

// Notified is one notification of an on-call target.
type Notified struct {
	Target    Target    `json:"target"`
	MessageID string    `json:"message_id"`
	At        time.Time `json:"at"`
}

// Sender sends a notification (a crisis-priority message) as the message
// id; sending the same id again makes no second message.
type Sender func(ctx context.Context, tenant string, t Target, text, id string) error

// Events publishes escalation.opened / escalation.acknowledged.
type Events interface {
	Publish(ctx context.Context, tenant, typ string, data any, callbackURL string)
	PublishAs(ctx context.Context, tenant, typ string, data any, callbackURL, eventID string)
}

// Escalator opens, escalates and acknowledges escalations.
type Escalator struct {
	Redis redis.UniversalClient
	Queue interface {
		EnqueueContext(context.Context, *asynq.Task, ...asynq.Option) (*asynq.TaskInfo, error)
	}
	Send   Sender
	Events Events
	Log    *slog.Logger
	// Audit records the escalations opened (nil: none).
	Audit *audit.Log
	// Metrics counts escalations opened, passed on and acknowledged (nil: none).
	Metrics *metrics.Metrics
}

func rulesKey(tenant string) string   { return "gw:esc:{" + tenant + "}:rules" }
func escKey(tenant, id string) string { return "gw:esc:{" + tenant + "}:" + id }

// byReplyKey holds the escalation of a reply.
func byReplyKey(tenant, replyID string) string { return "gw:esc:{" + tenant + "}:reply:" + replyID }
func openKey(tenant string) string             { return "gw:esc:{" + tenant + "}:open" }

// PutRules stores a tenant's rules after checking them.
func (e *Escalator) PutRules(ctx context.Context, tenant string, r Rules) error {
	if err := r.Compile(); err != nil {
		return err
	}
	b, _ := json.Marshal(r)
	return e.Redis.Set(ctx, rulesKey(tenant), b, 0).Err()
}

// GetRules returns a tenant's rules, compiled.
func (e *Escalator) GetRules(ctx context.Context, tenant string) (*Rules, error) {
	raw, err := e.Redis.Get(ctx, rulesKey(tenant)).Result()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNoRules
	}
	if err != nil {
		return nil, err
	}
	var r Rules
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		return nil, err
	}
	return &r, r.Compile()
}

// Consider checks a reply against the tenant's rules and, when urgent,
// opens an escalation and notifies the first on-call target at once.
func (e *Escalator) Consider(ctx context.Context, tenant, replyID, messageID, channel, body, option string) (*Escalation, error) {
	r, err := e.GetRules(ctx, tenant)
	if errors.Is(err, ErrNoRules) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	urgent, by := r.Match(body, option)
	if !urgent {
		return nil, nil
	}
	return e.open(ctx, tenant, replyID, Escalation{ReplyID: replyID, MessageID: messageID, Channel: channel}, r, by)
}

// open opens the escalation of a reply (or an alert, "alert:<key>") unless
// it was opened before, and notifies the first target.
func (e *Escalator) open(ctx context.Context, tenant, replyID string, init Escalation, r *Rules, by string) (*Escalation, error) {
	// One escalation per reply, however often the reply is filed (a task
	// run again after a worker died half-way): its id is kept by the reply.
	id := ulid.Make().String()
	prev, err := e.Redis.SetArgs(ctx, byReplyKey(tenant, replyID), id, redis.SetArgs{Mode: "NX", Get: true, TTL: 90 * 24 * time.Hour}).Result()
	switch {
	case err == nil:
		id = prev // considered before
	case !errors.Is(err, redis.Nil):
		return nil, err
	}
	esc, err := e.Get(ctx, tenant, id)
	if errors.Is(err, ErrNotFound) {
		esc = &init
		esc.ID, esc.State, esc.CreatedAt, esc.Notified = id, "open", time.Now().UTC(), []Notified{}
		if err := e.save(ctx, tenant, esc); err != nil {
			return nil, err
		}
		e.Log.Warn("escalation opened", "escalation_id", esc.ID, "msg_id", esc.MessageID, "matched_by", by)
		e.Audit.Record(ctx, audit.Event{Tenant: tenant, Actor: audit.ActorInbound, Action: audit.ActionEscalationOpen,
			Object: "escalation:" + esc.ID, Outcome: audit.OK})
		reason := "urgent_reply"
		if esc.Questionnaire != "" {
			reason = "questionnaire"
		}
		e.Metrics.EscalationOpened(reason)
	} else if err != nil {
		return nil, err
	}
	if err := e.Redis.ZAdd(ctx, openKey(tenant), redis.Z{Score: float64(esc.CreatedAt.UnixMilli()), Member: esc.ID}).Err(); err != nil {
		return nil, err
	}
	e.Events.PublishAs(ctx, tenant, "escalation.opened", esc, "", "esc-opened-"+esc.ID)
	if esc.Level > 0 {
		// The first page went out before: make sure its check is queued.
		return esc, e.scheduleCheck(ctx, tenant, esc, r)
	}
	return esc, e.notify(ctx, tenant, esc, r)
}

// notify tells the next on-call target and schedules the next check.
func (e *Escalator) notify(ctx context.Context, tenant string, esc *Escalation, r *Rules) error {
	t := r.OnCall[min(esc.Level, len(r.OnCall)-1)]
	text := fmt.Sprintf("URGENT: a patient's reply needs attention now (escalation %s, about message %s). Acknowledge it in your clinic system or with POST /v1/escalations/%s/ack.",
		esc.ID, esc.MessageID, esc.ID)
	if esc.Questionnaire != "" {
		text = fmt.Sprintf("URGENT: questionnaire %s (response %s) raised risk rule %s, level %s (escalation %s). Acknowledge it in your clinic system or with POST /v1/escalations/%s/ack.",
			esc.Questionnaire, esc.ResponseID, esc.Rule, esc.RiskLevel, esc.ID, esc.ID)
	}
	if esc.Paging == "" {
		// The page's id is kept before it is sent: sent again, it is the
		// same message.
		esc.Paging = ulid.Make().String()
		if err := e.save(ctx, tenant, esc); err != nil {
			return err
		}
	}
	id := esc.Paging
	if err := e.Send(ctx, tenant, t, text, id); err != nil {
		return fmt.Errorf("notify on-call: %w", err)
	}
	esc.Notified = append(esc.Notified, Notified{Target: t, MessageID: id, At: time.Now().UTC()})
	esc.Level++
	esc.Paging = ""
	if err := e.save(ctx, tenant, esc); err != nil {
		return err
	}
	return e.scheduleCheck(ctx, tenant, esc, r)
}

// scheduleCheck queues the check that escalates further when nobody
// acknowledges in time (once per level: queueing it again is a no-op).
func (e *Escalator) scheduleCheck(ctx context.Context, tenant string, esc *Escalation, r *Rules) error {
	b, _ := json.Marshal(checkPayload{Tenant: tenant, ID: esc.ID, Level: esc.Level})
	task := asynq.NewTask(TypeCheck, b, asynq.TaskID("esc:"+esc.ID+":"+fmt.Sprint(esc.Level)), asynq.Queue("gw:crisis"),
		asynq.ProcessIn(time.Duration(r.AckTimeout)*time.Second), asynq.MaxRetry(20))
	_, err := e.Queue.EnqueueContext(ctx, task)
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		err = nil
	}
	return err
}

type checkPayload struct {
	Tenant string `json:"tenant"`
	ID     string `json:"id"`
	Level  int    `json:"level"`
}

// ProcessTask escalates to the next target when no one acknowledged.
func (e *Escalator) ProcessTask(ctx context.Context, t *asynq.Task) error {
	var p checkPayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return fmt.Errorf("bad escalation payload: %w", asynq.SkipRetry)
	}
	esc, err := e.Get(ctx, p.Tenant, p.ID)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if esc.State != "open" || esc.Level != p.Level {
		return nil // acknowledged, or this check was overtaken
	}
	r, err := e.GetRules(ctx, p.Tenant)
	if err != nil {
		return err // without rules there is no one to tell: keep retrying, loudly
	}
	e.Log.Warn("escalation not acknowledged in time: notifying the next on-call target", "escalation_id", esc.ID, "level", esc.Level)
	if err := e.notify(ctx, p.Tenant, esc, r); err != nil {
		return err
	}
	e.Metrics.EscalationEscalated()
	return nil
}

// Ack acknowledges an escalation; further notifications stop.
func (e *Escalator) Ack(ctx context.Context, tenant, id, by string) (*Escalation, error) {
	esc, err := e.Get(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	if esc.State == "open" {
		now := time.Now().UTC()
		esc.State, esc.AckedAt, esc.AckedBy = "acknowledged", &now, by
		if err := e.save(ctx, tenant, esc); err != nil {
			return nil, err
		}
		e.Redis.ZRem(ctx, openKey(tenant), id)
		e.Metrics.EscalationAcknowledged(now.Sub(esc.CreatedAt))
		e.Events.Publish(ctx, tenant, "escalation.acknowledged", esc, "")
	}
	return esc, nil
}

// Get returns an escalation.
func (e *Escalator) Get(ctx context.Context, tenant, id string) (*Escalation, error) {
	raw, err := e.Redis.Get(ctx, escKey(tenant, id)).Result()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	var esc Escalation
	return &esc, json.Unmarshal([]byte(raw), &esc)
}

// Open lists the open escalations, oldest first.
func (e *Escalator) Open(ctx context.Context, tenant string) ([]*Escalation, error) {
	ids, err := e.Redis.ZRange(ctx, openKey(tenant), 0, 999).Result()
	if err != nil {
		return nil, err
	}
	out := []*Escalation{}
	for _, id := range ids {
		esc, err := e.Get(ctx, tenant, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, esc)
	}
	return out, nil
}

func (e *Escalator) save(ctx context.Context, tenant string, esc *Escalation) error {
	b, _ := json.Marshal(esc)
	return e.Redis.Set(ctx, escKey(tenant, esc.ID), b, 90*24*time.Hour).Err()
}
