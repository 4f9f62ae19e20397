package questionnaires

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/escalation"
	"github.com/patientmsg/gateway/internal/invalid"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/messaging"
	"github.com/patientmsg/gateway/internal/replies"
	"github.com/patientmsg/gateway/workers"
)

// Response states.
const (
	StateInProgress = "in_progress"
	StateCompleted  = "completed"
	// StateIncomplete: answers that did not fit, asked again MaxReasks times.
	StateIncomplete = "incomplete"
	StateExpired    = "expired"
	// StateStopped: the patient opted out.
	StateStopped = "stopped"
)

// MaxReasks is how often a question is asked again after an answer that
// does not fit; the next such answer ends the response as incomplete.
const MaxReasks = 2

// Channels a questionnaire converses on: one question a message on SMS
// and WeChat; ChannelWeb is the patient web form, its link sent on one of
// FormVia.
var Channels = []string{"sms", "wechat", ChannelVoice, ChannelWeb}

// Event types sent to the clinic's webhook.
const (
	EventCompleted = "questionnaire.completed"
	EventRisk      = "questionnaire.risk"
)

// Response is one patient's run through one version of a questionnaire.
type Response struct {
	ID            string `json:"id"`
	Tenant        string `json:"tenant"`
	Questionnaire string `json:"questionnaire"`
	Version       int    `json:"version"`
	Code          string `json:"code"`
	Channel       string `json:"channel"`
	// Via is the channel a web form's link goes on (web only).
	Via    string           `json:"via,omitempty"`
	To     ledger.Recipient `json:"to"`
	Locale string           `json:"locale"`
	State  string           `json:"state"`
	// EndReason says why a response that is not completed ended.
	EndReason string `json:"end_reason,omitempty"`
	// Current is the question asked now; Asked the message that asked it
	// (last); Seq counts the questions asked (timers name it).
	Current  string    `json:"current,omitempty"`
	Asked    string    `json:"asked,omitempty"`
	AskedAt  time.Time `json:"asked_at"`
	Seq      int       `json:"seq"`
	Reasks   int       `json:"reasks"`
	Reminded bool      `json:"reminded,omitempty"`
	Messages []string  `json:"messages"`
	Answers  []Answer  `json:"answers"`
	Scores   *Scores   `json:"scores,omitempty"`
	Risks    []Risk    `json:"risks,omitempty"`
	// RiskLevel is the highest level of the rules fired.
	RiskLevel string          `json:"risk_level,omitempty"`
	Metadata  json.RawMessage `json:"metadata,omitempty"`
	// WeChat is the template message each question falls back to when
	// WeChat's customer-service window with the patient is closed.
	WeChat    *messaging.WeChatFields `json:"wechat,omitempty"`
	CreatedAt time.Time               `json:"created_at"`
	UpdatedAt time.Time               `json:"updated_at"`
	EndedAt   *time.Time              `json:"ended_at,omitempty"`
	// Seen are the provider ids of the replies taken (a filing run again
	// takes nothing twice).
	Seen []string `json:"seen,omitempty"`
	// Pending are the messages decided on and not known to be made yet.
	Pending []Outbox `json:"pending,omitempty"`
	// FormURL is a web form's link, in the answer to the request that
	// started it only (it is not kept with the response).
	FormURL string `json:"form_url,omitempty"`
}

// Outbox is a message a response decided to send, its id chosen and saved
// before it is made: a change run again after a failure half-way makes
// the same message (the ledger and the queue take an id once), never a
// second one.
type Outbox struct {
	ID       string `json:"id"`
	Text     string `json:"text"`
	Priority string `json:"priority"`
	// Question is the question it asks ("" for a closing line).
	Question string `json:"question,omitempty"`
	// Subject is an email's subject; URL the web form a WeChat template
	// message opens.
	Subject string `json:"subject,omitempty"`
	URL     string `json:"url,omitempty"`
}

// Risk is a rule that fired, and the escalation it opened.
type Risk struct {
	Rule       string    `json:"rule"`
	Level      string    `json:"level"`
	Kind       string    `json:"kind"`
	At         time.Time `json:"at"`
	Escalation string    `json:"escalation_id,omitempty"`
	Detail     string    `json:"detail,omitempty"`
}

func (r *Response) identity() consent.Identity { return workers.IdentityOf(r.sendChannel(), r.To) }

// sendChannel is the channel the response's messages go on: its own, or
// the one its web form's link goes on.
func (r *Response) sendChannel() string {
	if r.Channel == ChannelWeb {
		return r.Via
	}
	return r.Channel
}

// addressOf is the response's address on the channel its messages go on.
func addressOf(r *Response) string {
	spec, _ := channels.SpecOf(r.sendChannel())
	return spec.Address.Of(r.To)
}

// Publisher sends events to the clinic's webhook (a *webhooks.Publisher).
type Publisher interface {
	PublishAs(ctx context.Context, tenant, typ string, data any, callbackURL, eventID string)
}

// Enqueuer queues tasks (an *asynq.Client).
type Enqueuer interface {
	EnqueueContext(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error)
}

// Service keeps questionnaires and runs their conversations. Every
// question is a message made by Messages, the way the API makes one.
type Service struct {
	Redis    redis.UniversalClient
	Messages *messaging.Service
	// Escalator pages on-call when a rule of level high or urgent fires
	// (nil: no paging).
	Escalator *escalation.Escalator
	Events    Publisher
	// Queue takes the reminder and expiry timers.
	Queue Enqueuer
	// Retention is how long responses are kept (default 30 days).
	Retention time.Duration
	// PublicURL is the gateway's base URL, that web forms' links start
	// with (GATEWAY_PUBLIC_URL).
	PublicURL string
	Logger    *slog.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

func (s *Service) now() time.Time {
	if s.Now == nil {
		return time.Now()
	}
	return s.Now()
}

func (s *Service) log() *slog.Logger {
	if s.Logger == nil {
		return slog.Default()
	}
	return s.Logger
}

func (s *Service) retention() time.Duration {
	if s.Retention <= 0 {
		return 30 * 24 * time.Hour
	}
	return s.Retention
}

func invalidField(field, detail string) error { return invalid.Field(field, detail) }

// StartRequest is the body of POST /v1/questionnaires/{name}/responses.
type StartRequest struct {
	Channel  string          `json:"channel"`
	To       *messaging.To   `json:"to"`
	Locale   string          `json:"locale"`
	Metadata json.RawMessage `json:"metadata"`
	// WeChat names a template message ("template_id", "data", "url") a
	// question goes as when WeChat's customer-service window with the
	// patient is closed (wechat only). For a web form sent by WeChat, its
	// url is the form's link.
	WeChat *messaging.WeChatFields `json:"wechat"`
	// Via is the channel a web form's link is sent on: sms, email or
	// wechat (channel web only).
	Via string `json:"via"`
}

// Idempotency is a start request's key and the hash of its body.
type Idempotency struct {
	Key, BodyHash string
	TTL           time.Duration
}

// Start sends the first question of the latest version of a questionnaire
// to an address and returns the response, in progress. With a key seen
// before with the same body it starts nothing and returns that response
// (replayed); with another body, ErrIdempotencyMismatch. A questionnaire
// already in progress for the address is ErrAlreadyOpen.
func (s *Service) Start(ctx context.Context, tenant, name string, in *StartRequest, idem Idempotency) (*Response, bool, error) {
	def, err := s.Definition(ctx, tenant, name, 0)
	if err != nil {
		return nil, false, err
	}
	if !slices.Contains(Channels, in.Channel) {
		return nil, false, invalidField("channel", "must be sms, wechat, voice or web")
	}
	switch {
	case in.Channel == ChannelWeb && !slices.Contains(FormVia, in.Via):
		return nil, false, invalidField("via", "must be sms, email or wechat: the channel the web form's link is sent on")
	case in.Channel != ChannelWeb && in.Via != "":
		return nil, false, invalidField("via", "is for the web channel only")
	}
	r := &Response{ID: "qr_" + ulid.Make().String(), Tenant: tenant, Questionnaire: name, Version: def.Version,
		Code: def.Code, Channel: in.Channel, Via: in.Via, Locale: LocaleOf(in.Locale), State: StateInProgress,
		Current: def.Questions[0].ID, Metadata: in.Metadata, CreatedAt: s.now().UTC(), Messages: []string{}, Answers: []Answer{},
		WeChat: in.WeChat}
	if r.WeChat != nil && r.WeChat.Kind == "" {
		r.WeChat.Kind = "auto"
	}
	first := Outbox{Text: def.Prompt(&def.Questions[0], r.Locale), Priority: workers.PriorityNormal, Question: r.Current}
	var link string
	switch r.Channel {
	case ChannelWeb:
		link = s.formURL(newFormToken())
		first = s.formInvite(r, def, link, false)
	case ChannelVoice:
		if err := byKeypad(def); err != nil {
			return nil, false, err
		}
		first = Outbox{Text: callGreeting(def, r.Locale, false), Priority: workers.PriorityNormal}
	}
	// The first question's draft checks the address (and the metadata).
	d := s.draft(r, first)
	d.To, d.Metadata = in.To, in.Metadata
	if in.Locale != "" {
		d.Locale = &in.Locale
	}
	req, err := s.Messages.Prepare(ctx, tenant, d)
	if err != nil {
		return nil, false, err
	}
	r.To = req.To
	if idem.Key != "" {
		ok, err := s.Redis.SetNX(ctx, idemKey(tenant, idem.Key), idem.BodyHash+" "+r.ID, idem.TTL).Result()
		if err != nil {
			return nil, false, err
		}
		if !ok {
			return s.replay(ctx, tenant, idem)
		}
	}
	release := func() {
		if idem.Key != "" {
			s.Redis.Del(context.WithoutCancel(ctx), idemKey(tenant, idem.Key))
		}
	}
	open, err := s.openResponses(ctx, r.identity())
	if err != nil {
		release()
		return nil, false, err
	}
	for _, o := range open {
		if o[0] != tenant {
			continue
		}
		if other, err := s.GetResponse(ctx, tenant, o[1]); err == nil && other.Questionnaire == name && other.State == StateInProgress {
			release()
			return nil, false, ErrAlreadyOpen
		}
	}
	if link != "" {
		if err := s.saveFormLink(ctx, r, def, link); err != nil {
			release()
			return nil, false, err
		}
	}
	s.ask(r, first)
	if err := s.save(ctx, r); err != nil {
		release()
		return nil, false, err
	}
	// Saved: from here a retry with the key finds the response and sends
	// what is still pending.
	if err := s.commit(ctx, r); err != nil {
		return nil, false, err
	}
	s.schedule(ctx, r, def)
	s.log().Info("questionnaire started", "tenant", tenant, "response_id", r.ID, "questionnaire", name, "version", def.Version, "channel", r.Channel, "via", r.Via)
	r.FormURL = link
	return r, false, nil
}

func (s *Service) replay(ctx context.Context, tenant string, idem Idempotency) (*Response, bool, error) {
	v, err := s.Redis.Get(ctx, idemKey(tenant, idem.Key)).Result()
	if err != nil {
		return nil, false, err
	}
	hash, id, _ := strings.Cut(v, " ")
	if hash != idem.BodyHash {
		return nil, false, ErrIdempotencyMismatch
	}
	for try := 0; try < 50; try++ { // the first request may still be saving
		r, err := s.GetResponse(ctx, tenant, id)
		if errors.Is(err, ErrResponseNotFound) {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if err != nil || len(r.Pending) == 0 {
			return r, true, err
		}
		// The first request died before its question was made: make it.
		unlock, err := s.lock(ctx, tenant, id)
		if err != nil {
			return nil, false, err
		}
		defer unlock()
		if r, err = s.GetResponse(ctx, tenant, id); err != nil {
			return nil, false, err
		}
		return r, true, s.commit(ctx, r)
	}
	return nil, false, errBusy
}

// draft is the message of one question (or closing line) of a response.
func (s *Service) draft(r *Response, o Outbox) *messaging.Draft {
	meta, _ := json.Marshal(map[string]any{"questionnaire": r.Questionnaire, "questionnaire_response": r.ID, "question": o.Question})
	loc, text, ch := r.Locale, o.Text, r.sendChannel()
	d := &messaging.Draft{Channel: ch, To: messaging.ToAddress(ch, addressOf(r)), Body: &text,
		Priority: o.Priority, Metadata: meta, Locale: &loc}
	if ch == "wechat" {
		d.WeChat = r.WeChat
		if o.URL != "" {
			w := messaging.WeChatFields{Kind: "auto", URL: o.URL}
			if r.WeChat != nil {
				w.Kind, w.TemplateID, w.Data = r.WeChat.Kind, r.WeChat.TemplateID, r.WeChat.Data
			}
			d.WeChat = &w
		}
	}
	if o.Subject != "" {
		subject := o.Subject
		d.Subject = &subject
	}
	return d
}

// ask decides to send o (a question, asked again or reminded) as the
// response's current question; commit makes the message.
func (s *Service) ask(r *Response, o Outbox) {
	o.ID, o.Question = ledger.NewID(), r.Current
	r.Pending = append(r.Pending, o)
	r.Asked, r.AskedAt = o.ID, s.now().UTC()
	r.Messages = append(r.Messages, o.ID)
}

// say decides to send a closing line (thanks, or why the response ended).
func (s *Service) say(r *Response, text string) {
	r.Pending = append(r.Pending, Outbox{ID: ledger.NewID(), Text: text, Priority: workers.PriorityHigh})
}

// commit saves a response, makes the messages it decided to send, and
// saves it again without them. Its questions are not held by the tenant's
// backlog cap: a patient answering is waiting for the next one.
func (s *Service) commit(ctx context.Context, r *Response) error {
	if err := s.save(ctx, r); err != nil {
		return err
	}
	if len(r.Pending) == 0 {
		return nil
	}
	for len(r.Pending) > 0 {
		if err := s.make(ctx, r, r.Pending[0]); err != nil {
			return err
		}
		r.Pending = r.Pending[1:]
	}
	return s.save(ctx, r)
}

// make writes and queues one decided message, unless it was before.
func (s *Service) make(ctx context.Context, r *Response, o Outbox) error {
	req, err := s.Messages.Prepare(ctx, r.Tenant, s.draft(r, o))
	var bad *invalid.Error
	if errors.As(err, &bad) {
		// It can never be made (definitions are checked to fit): say so, go on.
		s.log().Error("questionnaire message refused", "response_id", r.ID, "msg_id", o.ID, "err", err)
		return nil
	}
	if err != nil {
		return err
	}
	if _, err := s.Messages.Ledger.Create(ctx, o.ID, req); err != nil {
		return err
	}
	m, err := s.Messages.Ledger.Get(ctx, r.Tenant, o.ID)
	if err != nil {
		return err
	}
	if m.Status.Rank() == 0 { // not yet with a worker: make sure it is queued (by its id, once)
		return s.Messages.Enqueue(ctx, s.Messages.Queue, o.ID, m.Request)
	}
	return nil
}

// schedule queues the reminder and expiry of the question asked now. A
// timer that cannot be queued is logged, not fatal: the question went out,
// and failing the answer would only send it again.
func (s *Service) schedule(ctx context.Context, r *Response, def *Definition) {
	remind, expire := def.Durations()
	for _, t := range []struct {
		kind string
		in   time.Duration
	}{{workers.TimerRemind, remind}, {workers.TimerExpire, expire}} {
		task, err := workers.NewQuestionnaireTimerTask(workers.QuestionnaireTimer{Tenant: r.Tenant, Response: r.ID, Seq: r.Seq, Kind: t.kind}, t.in)
		if err == nil {
			_, err = s.Queue.EnqueueContext(ctx, task)
		}
		if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
			s.log().Warn("questionnaire timer not queued", "response_id", r.ID, "timer", t.kind, "err", err)
		}
	}
}

// OpenQuestions are the current questions of the responses in progress
// to an address on a channel, for reply matching (see replies.Match).
func (s *Service) OpenQuestions(ctx context.Context, channel string, from consent.Identity) ([]replies.Question, error) {
	open, err := s.openResponses(ctx, from)
	if err != nil {
		return nil, err
	}
	var out []replies.Question
	for _, o := range open {
		r, err := s.GetResponse(ctx, o[0], o[1])
		if errors.Is(err, ErrResponseNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if r.State != StateInProgress || r.Channel != channel || r.Asked == "" {
			continue
		}
		def, err := s.Definition(ctx, r.Tenant, r.Questionnaire, r.Version)
		if err != nil {
			return nil, err
		}
		q, code := def.Question(r.Current), r.Code
		if q == nil {
			continue
		}
		out = append(out, replies.Question{Prompt: replies.Prompt{Tenant: r.Tenant, MessageID: r.Asked}, Code: code,
			Response: r.ID, Fits: func(reply string) bool { _, ok := Parse(q, StripCode(code, reply)); return ok }})
	}
	return out, nil
}

// Answer takes a patient's reply matched to a response: an answer that
// fits moves to the next question (or completes the response), one that
// does not is asked again with a hint, MaxReasks times at most. Risk rules
// fire as the answers come. Taken again with the same provider id, it
// does nothing.
func (s *Service) Answer(ctx context.Context, tenant, id, providerID, body string, at time.Time) error {
	unlock, err := s.lock(ctx, tenant, id)
	if err != nil {
		return err
	}
	defer unlock()
	r, err := s.GetResponse(ctx, tenant, id)
	if errors.Is(err, ErrResponseNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(r.Pending) > 0 { // an earlier change died before its messages were made
		if err := s.commit(ctx, r); err != nil {
			return err
		}
	}
	if r.State != StateInProgress || (providerID != "" && slices.Contains(r.Seen, providerID)) {
		return nil
	}
	if !at.IsZero() && at.Before(r.CreatedAt) {
		return nil // sent before the questionnaire began, filed after: not an answer to it
	}
	def, err := s.Definition(ctx, tenant, r.Questionnaire, r.Version)
	if err != nil {
		return err
	}
	q := def.Question(r.Current)
	if q == nil {
		return fmt.Errorf("questionnaire %s v%d has no question %s", r.Questionnaire, r.Version, r.Current)
	}
	if at.IsZero() {
		at = s.now()
	}
	v, ok := Parse(q, StripCode(r.Code, body))
	switch {
	case !ok && r.Reasks >= MaxReasks:
		s.end(r, StateIncomplete, "answers did not fit the question after it was asked again twice")
		s.say(r, fmt.Sprintf(phrase(r.Locale, "incomplete"), def.Title.In(r.Locale)))
	case !ok:
		r.Reasks++
		r.Seq++
		s.ask(r, Outbox{Text: Hint(q, r.Locale) + "\n" + def.Prompt(q, r.Locale), Priority: workers.PriorityHigh})
		s.schedule(ctx, r, def)
	default:
		next, err := s.take(ctx, r, def, q, v, at)
		if err != nil {
			return err
		}
		if next != "" {
			s.ask(r, Outbox{Text: def.Prompt(def.Question(next), r.Locale), Priority: workers.PriorityHigh})
			s.schedule(ctx, r, def)
		}
	}
	if providerID != "" {
		r.Seen = append(r.Seen, providerID)
		if len(r.Seen) > 20 {
			r.Seen = r.Seen[len(r.Seen)-20:]
		}
	}
	return s.commit(ctx, r)
}

// take records an answer v that fits the current question q, fires its
// risk rules, and moves on: to the next question, returned, or to the end
// (the response completes; "" is returned).
func (s *Service) take(ctx context.Context, r *Response, def *Definition, q *Question, v Value, at time.Time) (string, error) {
	a := Answer{Question: q.ID, Value: v, Points: PointsOf(q, v), At: at.UTC()}
	r.Answers = append(r.Answers, a)
	r.Reasks, r.Reminded = 0, false
	for _, rule := range def.AnswerRisks(a) {
		if err := s.fire(ctx, r, rule); err != nil {
			return "", err
		}
	}
	next := def.NextAfter(q, v)
	if next == "" {
		return "", s.complete(ctx, r, def)
	}
	r.Current = next
	r.Seq++
	return next, nil
}

func (s *Service) end(r *Response, state, reason string) {
	now := s.now().UTC()
	r.State, r.EndReason, r.EndedAt, r.Current = state, reason, &now, ""
}

// complete scores a finished response, fires its total rules, thanks the
// patient and tells the clinic (questionnaire.completed, with the answers).
func (s *Service) complete(ctx context.Context, r *Response, def *Definition) error {
	sc := def.Score(r.Answers)
	r.Scores = &sc
	for _, rule := range def.TotalRisks(sc) {
		if err := s.fire(ctx, r, rule); err != nil {
			return err
		}
	}
	s.end(r, StateCompleted, "")
	if r.Channel != ChannelWeb && r.Channel != ChannelVoice { // the form's page, or the call, thanks the patient
		s.say(r, fmt.Sprintf(phrase(r.Locale, "thanks"), def.Title.In(r.Locale)))
	}
	if s.Events != nil {
		s.Events.PublishAs(ctx, r.Tenant, EventCompleted, map[string]any{
			"response_id": r.ID, "questionnaire": r.Questionnaire, "version": r.Version, "channel": r.Channel,
			"state": r.State, "answers": r.Answers, "scores": r.Scores, "risk_level": r.RiskLevel, "risks": r.Risks,
			"metadata": r.Metadata, "created_at": r.CreatedAt, "completed_at": r.EndedAt,
		}, "", "qn-completed-"+r.ID)
	}
	s.log().Info("questionnaire completed", "tenant", r.Tenant, "response_id", r.ID, "risk_level", r.RiskLevel)
	return nil
}

// fire records a risk rule that fired (once per response), tells the
// clinic (questionnaire.risk, naming the rule, never the answers) and, at
// level high or urgent, pages on-call through the escalator.
func (s *Service) fire(ctx context.Context, r *Response, rule RiskRule) error {
	for _, f := range r.Risks {
		if f.Rule == rule.Name {
			return nil
		}
	}
	fired := Risk{Rule: rule.Name, Level: rule.Level, Kind: rule.Kind(), At: s.now().UTC()}
	if Escalates(rule.Level) && s.Escalator != nil {
		esc, err := s.Escalator.Raise(ctx, r.Tenant, escalation.Alert{Key: r.ID + ":" + rule.Name, MessageID: r.Asked,
			Channel: r.Channel, Questionnaire: r.Questionnaire, ResponseID: r.ID, Rule: rule.Name, RiskLevel: rule.Level})
		switch {
		case errors.Is(err, escalation.ErrNoRules):
			fired.Detail = "not escalated: the tenant has no on-call targets (PUT /v1/escalation-rules)"
			s.log().Warn("questionnaire risk not escalated: no on-call targets", "tenant", r.Tenant, "response_id", r.ID, "rule", rule.Name)
		case err != nil:
			return err
		default:
			fired.Escalation = esc.ID
		}
	}
	r.Risks = append(r.Risks, fired)
	if LevelRank(rule.Level) > LevelRank(r.RiskLevel) {
		r.RiskLevel = rule.Level
	}
	if s.Events != nil {
		s.Events.PublishAs(ctx, r.Tenant, EventRisk, map[string]any{
			"response_id": r.ID, "questionnaire": r.Questionnaire, "version": r.Version, "channel": r.Channel,
			"rule": rule.Name, "level": rule.Level, "kind": fired.Kind, "escalation_id": fired.Escalation,
			"metadata": r.Metadata, "at": fired.At,
		}, "", "qn-risk-"+r.ID+"-"+rule.Name)
	}
	s.log().Warn("questionnaire risk rule fired", "tenant", r.Tenant, "response_id", r.ID, "rule", rule.Name, "level", rule.Level, "escalation_id", fired.Escalation)
	return nil
}

// Timer runs a reminder or expiry timer: after the silence the
// definition sets, the question is asked once more, and later the
// response expires. A timer of a question already answered does nothing.
func (s *Service) Timer(ctx context.Context, p workers.QuestionnaireTimer) error {
	unlock, err := s.lock(ctx, p.Tenant, p.Response)
	if err != nil {
		return err
	}
	defer unlock()
	r, err := s.GetResponse(ctx, p.Tenant, p.Response)
	if errors.Is(err, ErrResponseNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(r.Pending) > 0 {
		if err := s.commit(ctx, r); err != nil {
			return err
		}
	}
	if r.State != StateInProgress || r.Seq != p.Seq {
		return nil
	}
	def, err := s.Definition(ctx, r.Tenant, r.Questionnaire, r.Version)
	if err != nil {
		return err
	}
	switch p.Kind {
	case workers.TimerRemind:
		if r.Reminded {
			return nil
		}
		switch r.Channel {
		case ChannelVoice:
			s.ask(r, Outbox{Text: callGreeting(def, r.Locale, true), Priority: workers.PriorityNormal})
		case ChannelWeb:
			link, err := s.formLink(ctx, r)
			if err != nil {
				return err
			}
			if link != "" {
				s.ask(r, s.formInvite(r, def, link, true))
			}
		default:
			q := def.Question(r.Current)
			s.ask(r, Outbox{Text: phrase(r.Locale, "reminder") + def.Prompt(q, r.Locale), Priority: workers.PriorityNormal})
		}
		r.Reminded = true
	case workers.TimerExpire:
		s.end(r, StateExpired, "no answer in time")
		s.log().Info("questionnaire expired", "tenant", r.Tenant, "response_id", r.ID)
	}
	return s.commit(ctx, r)
}

// StopFor ends the tenant's responses in progress to an address (the
// patient opted out); nothing more is sent to them.
func (s *Service) StopFor(ctx context.Context, tenant string, who consent.Identity, reason string) (int, error) {
	open, err := s.openResponses(ctx, who)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, o := range open {
		if o[0] != tenant {
			continue
		}
		if err := s.stop(ctx, tenant, o[1], reason); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func (s *Service) stop(ctx context.Context, tenant, id, reason string) error {
	unlock, err := s.lock(ctx, tenant, id)
	if err != nil {
		return err
	}
	defer unlock()
	r, err := s.GetResponse(ctx, tenant, id)
	if errors.Is(err, ErrResponseNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if r.State == StateInProgress {
		s.end(r, StateStopped, reason)
		r.Pending = nil // the patient opted out: nothing more is made
	}
	return s.save(ctx, r)
}
