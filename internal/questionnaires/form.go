package questionnaires

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/workers"
)

// The patient web form: a questionnaire answered on one page the gateway
// serves, behind a link sent by SMS, email or as a WeChat template
// message's URL. The link holds nothing but an opaque token of 256 random
// bits; only its SHA-256 names the form in Redis, so the token cannot be
// forged or derived from what is stored. The link works until the
// response ends: it is single-use because the first complete submission
// ends the response (a reused link gets a page saying it was answered),
// and it expires with the response (ExpireAfter of silence after it was
// sent, or a reminder's) and with its Redis key.

// ChannelWeb is the web form's channel.
const ChannelWeb = "web"

// FormVia are the channels a web form's link is sent on.
var FormVia = []string{"sms", "email", "wechat"}

// FormPath is the path of a form's link under the gateway's public URL;
// the token follows it.
const FormPath = "/f/"

// ErrFormNotFound: the link is unknown, or its form has gone (expired
// past the retention, or never existed). Its page says the link is not
// valid or has expired.
var ErrFormNotFound = errors.New("this form link is not valid or has expired")

// formTokenBytes is the token's randomness (256 bits).
const formTokenBytes = 32

func newFormToken() string {
	b := make([]byte, formTokenBytes)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// ValidFormToken says whether s has the shape of a form token (43
// characters of base64url), so a malformed one costs no Redis read.
func ValidFormToken(s string) bool {
	if len(s) != base64.RawURLEncoding.EncodedLen(formTokenBytes) {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil
}

// formKey names a form by its token's hash: "tenant id" of its response.
func formKey(token string) string { return "gw:qn:form:" + hash(token) }

// linkKey keeps a response's link, for its reminder.
func linkKey(tenant, id string) string { return "gw:qn:{" + tenant + "}:link:" + id }

func (s *Service) formURL(token string) string {
	return strings.TrimRight(s.PublicURL, "/") + FormPath + token
}

// formTTL is how long a form's keys live: past its expiry by a day, so
// that a late click still finds it and is told it expired.
func formTTL(def *Definition) time.Duration {
	_, expire := def.Durations()
	return expire + 24*time.Hour
}

func (s *Service) saveFormLink(ctx context.Context, r *Response, def *Definition, link string) error {
	token := strings.TrimPrefix(link, s.formURL(""))
	pipe := s.Redis.TxPipeline()
	pipe.Set(ctx, formKey(token), r.Tenant+" "+r.ID, formTTL(def))
	pipe.Set(ctx, linkKey(r.Tenant, r.ID), link, formTTL(def))
	_, err := pipe.Exec(ctx)
	return err
}

// formLink is a response's link ("" once it has gone), and keeps it (and
// its form) alive for another expiry window: a reminder re-sends it.
func (s *Service) formLink(ctx context.Context, r *Response) (string, error) {
	link, err := s.Redis.Get(ctx, linkKey(r.Tenant, r.ID)).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	def, err := s.Definition(ctx, r.Tenant, r.Questionnaire, r.Version)
	if err != nil {
		return "", err
	}
	pipe := s.Redis.Pipeline()
	pipe.Expire(ctx, formKey(strings.TrimPrefix(link, s.formURL(""))), formTTL(def))
	pipe.Expire(ctx, linkKey(r.Tenant, r.ID), formTTL(def))
	_, err = pipe.Exec(ctx)
	return link, err
}

// formInvite is the message that sends a form's link (or reminds of it).
func (s *Service) formInvite(r *Response, def *Definition, link string, reminder bool) Outbox {
	title := def.Title.In(r.Locale)
	var b strings.Builder
	if reminder {
		b.WriteString(phrase(r.Locale, "reminder"))
	}
	b.WriteString(title)
	if intro := def.Intro.In(r.Locale); intro != "" && !reminder {
		b.WriteString(": " + intro)
	}
	_, expire := def.Durations()
	b.WriteString("\n" + fmt.Sprintf(phrase(r.Locale, "form"), link, days(expire)))
	o := Outbox{Text: b.String(), Priority: workers.PriorityNormal, URL: link}
	if r.Via == "email" {
		o.Subject = title
	}
	return o
}

// days is a duration in whole days, at least 1.
func days(d time.Duration) int { return max(1, int((d+12*time.Hour)/(24*time.Hour))) }

// FormView is what a form's page shows: the questions with what was
// given and why it did not fit, or why the form cannot be answered.
type FormView struct {
	Tenant, ResponseID string
	Locale             string
	Title, Intro       string
	// State is the response's: in_progress shows the questions;
	// completed says it was answered; any other ended state that the
	// form is closed.
	State     string
	Questions []FormQuestion
	// Problems counts the questions whose answer did not fit.
	Problems int
	// Expires is when the link stops working if it is not answered.
	Expires time.Time
}

// FormQuestion is one question on the page.
type FormQuestion struct {
	ID, Type, Text string
	// N is its number (1-based).
	N       int
	Options []FormOption
	Min     *float64
	Max     *float64
	// Value is what was given; Problem what did not fit ("" when it did).
	Value, Problem string
	// Conditional: the question is asked only after some answers to an
	// earlier one (it may be left blank otherwise).
	Conditional bool
}

// FormOption is a choice question's answer.
type FormOption struct{ Key, Text string }

// Form loads the form a token opens.
func (s *Service) Form(ctx context.Context, token string) (*FormView, error) {
	r, def, err := s.formResponse(ctx, token)
	if err != nil {
		return nil, err
	}
	return s.view(r, def, nil), nil
}

func (s *Service) formResponse(ctx context.Context, token string) (*Response, *Definition, error) {
	if !ValidFormToken(token) {
		return nil, nil, ErrFormNotFound
	}
	v, err := s.Redis.Get(ctx, formKey(token)).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil, ErrFormNotFound
	}
	if err != nil {
		return nil, nil, err
	}
	tenant, id, _ := strings.Cut(v, " ")
	r, err := s.GetResponse(ctx, tenant, id)
	if errors.Is(err, ErrResponseNotFound) {
		return nil, nil, ErrFormNotFound
	}
	if err != nil {
		return nil, nil, err
	}
	def, err := s.Definition(ctx, r.Tenant, r.Questionnaire, r.Version)
	if err != nil {
		return nil, nil, err
	}
	return r, def, nil
}

// view is a response's form page; given are the submitted values and
// problems of a submission that did not fit (nil: the first view).
func (s *Service) view(r *Response, def *Definition, given map[string]formAnswer) *FormView {
	_, expire := def.Durations()
	v := &FormView{Tenant: r.Tenant, ResponseID: r.ID, Locale: r.Locale, Title: def.Title.In(r.Locale),
		Intro: def.Intro.In(r.Locale), State: r.State, Expires: r.AskedAt.Add(expire)}
	if r.State != StateInProgress {
		return v
	}
	conditional := conditionalQuestions(def)
	for i := range def.Questions {
		q := &def.Questions[i]
		fq := FormQuestion{ID: q.ID, Type: q.Type, Text: q.Text.In(r.Locale), N: i + 1, Min: q.Min, Max: q.Max,
			Conditional: conditional[q.ID]}
		for _, o := range q.Options {
			fq.Options = append(fq.Options, FormOption{Key: o.Key, Text: o.Text.In(r.Locale)})
		}
		if g, ok := given[q.ID]; ok {
			fq.Value, fq.Problem = g.raw, g.problem
			if g.problem != "" {
				v.Problems++
			}
		}
		v.Questions = append(v.Questions, fq)
	}
	return v
}

// conditionalQuestions are the questions some path through the skip
// logic passes over: a patient may leave them blank when their earlier
// answers skip them.
func conditionalQuestions(def *Definition) map[string]bool {
	out := map[string]bool{}
	for i := range def.Questions {
		if i == 0 {
			continue
		}
		id := def.Questions[i].ID
		prev := &def.Questions[i-1]
		jumps := prev.Next != "" && prev.Next != id
		for _, o := range prev.Options {
			if o.Next != "" && o.Next != id {
				jumps = true
			}
		}
		// Reached only by a jump from further up, or passed over by one.
		for j := 0; j < i-1 && !jumps; j++ {
			q := &def.Questions[j]
			if skipsOver(def, q.Next, i) {
				jumps = true
			}
			for _, o := range q.Options {
				if skipsOver(def, o.Next, i) {
					jumps = true
				}
			}
		}
		out[id] = jumps
	}
	return out
}

// skipsOver: a jump to next passes over the question at index i.
func skipsOver(def *Definition, next string, i int) bool {
	if next == "" {
		return false
	}
	if next == End {
		return true
	}
	for k := range def.Questions {
		if def.Questions[k].ID == next {
			return k > i
		}
	}
	return false
}

// branches says whether an answer to q can change which question follows.
func branches(q *Question) bool {
	for _, o := range q.Options {
		if o.Next != "" && o.Next != q.Next {
			return true
		}
	}
	return false
}

type formAnswer struct {
	raw, problem string
	value        Value
}

// MaxFormValue bounds one submitted value (a free-text answer's
// MaxAnswerChars, in bytes of UTF-8 at most 4 each).
const MaxFormValue = 4 * MaxAnswerChars

// SubmitForm answers a form with values by question id. The questions
// are read in the order the skip logic takes, from the first: each one
// reached must have an answer that fits; those the answers skip are
// ignored. When one does not fit, nothing is recorded and the view says
// which and why (Problems > 0). Otherwise the answers are recorded, the
// risk rules fire, the response completes (questionnaire.completed) and
// the view's State is completed. A form already answered or ended is
// returned as it is, unchanged.
func (s *Service) SubmitForm(ctx context.Context, token string, values map[string]string) (*FormView, error) {
	r, _, err := s.formResponse(ctx, token)
	if err != nil {
		return nil, err
	}
	unlock, err := s.lock(ctx, r.Tenant, r.ID)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if r, err = s.GetResponse(ctx, r.Tenant, r.ID); err != nil {
		if errors.Is(err, ErrResponseNotFound) {
			return nil, ErrFormNotFound
		}
		return nil, err
	}
	def, err := s.Definition(ctx, r.Tenant, r.Questionnaire, r.Version)
	if err != nil {
		return nil, err
	}
	if len(r.Pending) > 0 { // an earlier change died before its messages were made
		if err := s.commit(ctx, r); err != nil {
			return nil, err
		}
	}
	if r.State != StateInProgress {
		return s.view(r, def, nil), nil
	}
	given, answers, problems := ReadForm(def, r.Locale, values)
	if problems > 0 {
		return s.view(r, def, given), nil
	}
	now := s.now().UTC()
	for _, a := range answers {
		a.At = now
		r.Answers = append(r.Answers, a)
		for _, rule := range def.AnswerRisks(a) {
			if err := s.fire(ctx, r, rule); err != nil {
				return nil, err
			}
		}
	}
	if err := s.complete(ctx, r, def); err != nil {
		return nil, err
	}
	if err := s.commit(ctx, r); err != nil {
		return nil, err
	}
	s.Redis.Del(ctx, linkKey(r.Tenant, r.ID)) // no reminder needs it now
	return s.view(r, def, nil), nil
}

// ReadForm reads a form's submitted values (by question id) as the
// answers to def, following the skip logic from the first question: a
// question reached must have an answer that fits (parsed as an SMS reply
// to it is), one the answers skip is ignored. It returns each reached
// question's value and problem (a hint in locale), the answers in order,
// and how many did not fit.
func ReadForm(def *Definition, locale string, values map[string]string) (map[string]formAnswer, []Answer, int) {
	given := map[string]formAnswer{}
	var answers []Answer
	problems := 0
	seen := map[string]bool{}
	// unsure: an earlier choice that branches was not answered, so
	// whether a conditional question applies is not known; it is not
	// named as missing then (the branch's own problem is).
	unsure, conditional := false, conditionalQuestions(def)
	for id := def.Questions[0].ID; id != "" && !seen[id]; {
		seen[id] = true
		q := def.Question(id)
		if q == nil {
			break
		}
		raw := values[q.ID]
		fa := formAnswer{raw: raw}
		var v Value
		ok := false
		switch {
		case len(raw) > MaxFormValue:
			fa.raw = ""
		case strings.TrimSpace(raw) == "":
		default:
			v, ok = Parse(q, raw)
		}
		if !ok && unsure && conditional[q.ID] {
			given[q.ID] = formAnswer{raw: fa.raw} // shown again as given, not named
			id = def.NextAfter(q, Value{})
			continue
		}
		if !ok {
			fa.problem = FormHint(q, locale)
			problems++
			given[q.ID] = fa
			unsure = unsure || branches(q)
			id = def.NextAfter(q, Value{}) // the order's next: its own problems show too
			continue
		}
		fa.value = v
		given[q.ID] = fa
		answers = append(answers, Answer{Question: q.ID, Value: v, Points: PointsOf(q, v)})
		id = def.NextAfter(q, v)
	}
	return given, answers, problems
}
