package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/contacts"
	"github.com/patientmsg/gateway/internal/followups"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/schedule"
)

// MaxPlanSteps is the most steps a plan may have.
const MaxPlanSteps = 50

// Past-due policies.
const (
	PastDueSkip    = followups.PastDueSkip
	PastDueSendNow = followups.PastDueSendNow
)

// PlanRequest is the body of POST /v1/followups.
type PlanRequest struct {
	Contact *PlanContact `json:"contact"`
	Anchor  string       `json:"anchor"`
	Steps   []PlanStep   `json:"steps"`
	StopOn  []string     `json:"stop_on"`
	PastDue string       `json:"past_due"`
}

// PlanContact names the patient: a contact id, or addresses, or both.
type PlanContact struct {
	ID           string  `json:"id"`
	Phone        *string `json:"phone"`
	Email        *string `json:"email"`
	WeChatOpenID *string `json:"wechat_openid"`
	Locale       *string `json:"locale"`
	TimeZone     *string `json:"timezone"`
}

// PlanStep is one scheduled message of a plan: when (offset from the
// anchor, optionally at a local time of day) and what (a template or a
// body, as in POST /v1/messages).
type PlanStep struct {
	Offset      string            `json:"offset"`
	At          string            `json:"at"`
	Channel     string            `json:"channel"`
	Template    *string           `json:"template"`
	Vars        map[string]string `json:"vars"`
	Body        *string           `json:"body"`
	Subject     *string           `json:"subject"`
	Priority    string            `json:"priority"`
	ExpectReply *ExpectReplyIn    `json:"expect_reply"`
	Gather      *ledger.Gather    `json:"gather"`
	Record      *ledger.Record    `json:"record"`
}

// POST /v1/followups: creates one scheduled message per step (quiet hours
// apply to each), or records why a step was skipped.
func (s *Server) createFollowup(c *fiber.Ctx) error {
	var in PlanRequest
	if p := decodeJSON(c, &in); p != nil {
		return p
	}
	ctx, tenant, now := c.UserContext(), tenantOf(c), s.opts.Now()
	var errs []FieldError
	bad := func(field, format string, a ...any) {
		errs = append(errs, FieldError{Field: field, Detail: fmt.Sprintf(format, a...)})
	}
	anchor, err := time.Parse(time.RFC3339, in.Anchor)
	if err != nil {
		bad("anchor", "is required: an RFC 3339 time such as 2026-11-20T10:00:00+08:00 (e.g. the discharge)")
	}
	if len(in.Steps) == 0 || len(in.Steps) > MaxPlanSteps {
		bad("steps", "must list 1 to %d steps", MaxPlanSteps)
	}
	for i, cond := range in.StopOn {
		if !followups.ValidStopOn(cond) {
			bad(fmt.Sprintf("stop_on[%d]", i), "%q is not a stop condition; use opt_out, reply:urgent or reply:any", clip(cond))
		}
	}
	switch in.PastDue {
	case "":
		in.PastDue = PastDueSkip
	case PastDueSkip, PastDueSendNow:
	default:
		bad("past_due", "must be skip (the default: a step whose time has passed is not sent) or send_now")
	}
	if in.Contact == nil {
		bad("contact", "is required: {\"id\": …} of a contact, or its addresses {\"phone\": …}")
	}
	if len(errs) > 0 {
		return validationProblem(errs)
	}
	who, p := s.planContact(ctx, tenant, in.Contact)
	if p != nil {
		return p
	}
	set, err := s.settingsOf(ctx, tenant)
	if err != nil {
		return s.unavailable(err)
	}
	loc, _ := schedule.ResolveZone(who.TimeZone, "", who.phone(), set.TimeZone, s.opts.DefaultZone)
	plan := &followups.Plan{ID: followups.NewID(), Tenant: tenant, ContactID: who.ID, Identities: who.Identities,
		Anchor: anchor.UTC(), TimeZone: loc.String(), StopOn: in.StopOn, PastDue: in.PastDue, State: followups.PlanActive,
		CreatedAt: now.UTC(), UpdatedAt: now.UTC()}
	type pending struct {
		step int
		id   string
		req  ledger.Request
	}
	var todo []pending
	for i, st := range in.Steps {
		field := fmt.Sprintf("steps[%d]", i)
		// A bad offset or time of day is reported with whatever else is
		// wrong in the step: its message is checked all the same.
		off, err := schedule.ParseDuration(st.Offset)
		if de := (*schedule.DurationError)(nil); errors.As(err, &de) {
			bad(field+".offset", "is not a valid duration: %s", de.Why)
		}
		var at *schedule.Clock
		if st.At != "" {
			c, err := schedule.ParseClock(st.At)
			if err != nil {
				bad(field+".at", "is not a local time of day such as 10:00")
			}
			at = &c
		}
		due := schedule.StepTime(anchor, off, at, loc)
		step := followups.Step{Index: i, Offset: st.Offset, At: st.At, Channel: st.Channel, DueAt: due.UTC()}
		if st.Template != nil {
			step.Template = *st.Template
		}
		sendAt, skip := due, false
		if !due.After(now) {
			if in.PastDue == PastDueSkip {
				// Checked like the others all the same: a mistake in a
				// plan is reported whichever steps happen to be past.
				step.State, skip = followups.StepSkipped, true
				step.Detail = fmt.Sprintf("due %s, before the plan was created; past_due is skip, so it was not sent",
					due.In(loc).Format("2006-01-02 15:04 MST"))
			} else {
				step.State = followups.StepSentNow
				step.Detail = fmt.Sprintf("due %s, before the plan was created; past_due is send_now", due.In(loc).Format("2006-01-02 15:04 MST"))
			}
			sendAt = time.Time{}
		} else {
			step.State = followups.StepScheduled
		}
		msg, p := who.message(st, plan.ID, i, sendAt)
		if p != nil {
			bad(field+".channel", "%s", p.Detail)
			continue
		}
		req, err := s.prepare(ctx, tenant, msg)
		if err != nil {
			var pr *Problem
			if !errors.As(err, &pr) || pr.Status >= 500 {
				return err
			}
			for _, fe := range pr.Errors {
				bad(field+"."+fe.Field, "%s", fe.Detail)
			}
			if len(pr.Errors) == 0 {
				bad(field, "%s", pr.Detail)
			}
			continue
		}
		if skip {
			plan.Steps = append(plan.Steps, step)
			continue
		}
		step.MessageID = ledger.NewID()
		todo = append(todo, pending{step: len(plan.Steps), id: step.MessageID, req: req})
		plan.Steps = append(plan.Steps, step)
	}
	if len(errs) > 0 {
		return validationProblem(errs)
	}
	// Every step is valid: write them. Should Redis fail half-way, the
	// messages already queued are canceled, so no partial plan runs.
	for n, t := range todo {
		if err := s.submit(ctx, t.id, t.req); err != nil {
			for _, done := range todo[:n] {
				_, _ = s.cancel(context.WithoutCancel(ctx), tenant, done.id)
			}
			return s.unavailable(err)
		}
	}
	if err := s.opts.Followups.Create(ctx, plan); err != nil {
		for _, done := range todo {
			_, _ = s.cancel(context.WithoutCancel(ctx), tenant, done.id)
		}
		return s.unavailable(err)
	}
	view, err := s.planView(ctx, plan)
	if err != nil {
		return s.unavailable(err)
	}
	return c.Status(fiber.StatusCreated).JSON(view)
}

// planWho is the patient of a plan.
type planWho struct {
	ID         string
	Identities []consent.Identity
	to         RecipientIn
	Locale     string
	TimeZone   string
}

func (w *planWho) phone() string {
	if w.to.Phone != nil {
		return *w.to.Phone
	}
	return ""
}

// planContact resolves the plan's contact: an existing contact by id,
// addresses given inline, or both (inline addresses win).
func (s *Server) planContact(ctx context.Context, tenant string, in *PlanContact) (*planWho, *Problem) {
	w := &planWho{ID: strings.TrimSpace(in.ID)}
	if w.ID != "" && s.opts.Contacts != nil {
		ct, err := s.opts.Contacts.Get(ctx, tenant, w.ID)
		switch {
		case err == nil:
			w.Locale, w.TimeZone = ct.Locale, ct.TimeZone
			for _, id := range ct.Identities {
				v := id.Value
				switch id.Kind {
				case consent.Phone:
					w.to.Phone = &v
				case consent.Email:
					w.to.Email = &v
				case consent.WeChat:
					w.to.WeChatOpenID = &v
				}
			}
		case errors.Is(err, contacts.ErrNotFound):
			if in.Phone == nil && in.Email == nil && in.WeChatOpenID == nil {
				return nil, validationProblem([]FieldError{{Field: "contact.id", Detail: "is not a contact of this tenant; PUT /v1/contacts/{id} first, or give the addresses"}})
			}
		default:
			return nil, s.unavailable(err).(*Problem)
		}
	}
	if in.Phone != nil {
		w.to.Phone = in.Phone
	}
	if in.Email != nil {
		w.to.Email = in.Email
	}
	if in.WeChatOpenID != nil {
		w.to.WeChatOpenID = in.WeChatOpenID
	}
	if in.Locale != nil {
		w.Locale = *in.Locale
	}
	if in.TimeZone != nil {
		if _, err := schedule.LoadZone(*in.TimeZone); err != nil {
			return nil, validationProblem([]FieldError{{Field: "contact.timezone", Detail: "is not an IANA time zone such as Asia/Shanghai"}})
		}
		w.TimeZone = *in.TimeZone
	}
	if w.to.Phone == nil && w.to.Email == nil && w.to.WeChatOpenID == nil {
		return nil, validationProblem([]FieldError{{Field: "contact", Detail: "has no address: give phone, email or wechat_openid, or the id of a contact that has one"}})
	}
	for kind, v := range map[consent.Kind]*string{consent.Phone: w.to.Phone, consent.Email: w.to.Email, consent.WeChat: w.to.WeChatOpenID} {
		if v == nil {
			continue
		}
		val := *v
		if kind == consent.Phone {
			if e164, ok := normalisePhone(val); ok {
				val = e164
			}
		}
		w.Identities = append(w.Identities, consent.Normalise(consent.Identity{Kind: kind, Value: val}))
	}
	slices.SortFunc(w.Identities, func(a, b consent.Identity) int { return strings.Compare(string(a.Kind), string(b.Kind)) })
	return w, nil
}

// message is the message request of a step.
func (w *planWho) message(st PlanStep, planID string, index int, sendAt time.Time) (*MessageRequest, *Problem) {
	to := &RecipientIn{}
	switch st.Channel {
	case "sms", "voice":
		to.Phone = w.to.Phone
	case "email":
		to.Email = w.to.Email
	case "wechat":
		to.WeChatOpenID = w.to.WeChatOpenID
	default:
		return nil, problem(422, "validation", fmt.Sprintf("%q is not a channel; use sms, voice, wechat or email", clip(st.Channel)))
	}
	if to.Phone == nil && to.Email == nil && to.WeChatOpenID == nil {
		return nil, problem(422, "validation", fmt.Sprintf("the contact has no address for the %s channel", st.Channel))
	}
	if w.TimeZone != "" {
		tz := w.TimeZone
		to.TimeZone = &tz
	}
	meta, _ := json.Marshal(map[string]any{"followup_id": planID, "followup_step": index})
	m := &MessageRequest{Channel: st.Channel, To: to, Body: st.Body, Subject: st.Subject, Priority: st.Priority,
		Template: st.Template, Vars: st.Vars, ExpectReply: st.ExpectReply, Gather: st.Gather, Record: st.Record,
		Metadata: meta}
	if w.Locale != "" {
		l := w.Locale
		m.Locale = &l
	}
	if !sendAt.IsZero() {
		at := sendAt.UTC().Format(time.RFC3339)
		m.SendAt = &at
	}
	return m, nil
}

// planStepJSON is a step as the API shows it, with its message's status.
type planStepJSON struct {
	followups.Step
	Status ledger.Status `json:"message_status,omitempty"`
	SendAt *time.Time    `json:"send_at,omitempty"`
	// Deferred says the step waits for the end of quiet hours.
	Deferred string `json:"deferred,omitempty"`
}

type planJSON struct {
	ID         string         `json:"id"`
	ContactID  string         `json:"contact_id,omitempty"`
	Anchor     time.Time      `json:"anchor"`
	TimeZone   string         `json:"timezone"`
	StopOn     []string       `json:"stop_on"`
	PastDue    string         `json:"past_due"`
	State      string         `json:"state"`
	StopReason string         `json:"stop_reason,omitempty"`
	CreatedAt  time.Time      `json:"created_at"`
	UpdatedAt  time.Time      `json:"updated_at"`
	Steps      []planStepJSON `json:"steps"`
}

// planView joins a plan with its messages' current status.
func (s *Server) planView(ctx context.Context, p *followups.Plan) (planJSON, error) {
	v := planJSON{ID: p.ID, ContactID: p.ContactID, Anchor: p.Anchor, TimeZone: p.TimeZone, StopOn: p.StopOn,
		PastDue: p.PastDue, State: p.State, StopReason: p.StopReason, CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt,
		Steps: make([]planStepJSON, 0, len(p.Steps))}
	if v.StopOn == nil {
		v.StopOn = []string{}
	}
	for _, st := range p.Steps {
		sj := planStepJSON{Step: st}
		if st.MessageID != "" {
			m, err := s.opts.Ledger.Get(ctx, p.Tenant, st.MessageID)
			switch {
			case err == nil:
				sj.Status, sj.SendAt, sj.Deferred = m.Status, m.SendAt, m.Deferred
			case !errors.Is(err, ledger.ErrNotFound):
				return v, err
			}
		}
		v.Steps = append(v.Steps, sj)
	}
	if v.State == followups.PlanActive && planDone(v.Steps) {
		v.State = followups.PlanCompleted // every step has run its course
	}
	return v, nil
}

// planDone says whether no step of a plan has anything left to do.
func planDone(steps []planStepJSON) bool {
	for _, st := range steps {
		if st.MessageID != "" && !st.Status.Final() && st.Status.Rank() < ledger.StatusSent.Rank() {
			return false
		}
	}
	return true
}

// GET /v1/followups/{id}
func (s *Server) getFollowup(c *fiber.Ctx) error {
	p, err := s.opts.Followups.Get(c.UserContext(), tenantOf(c), c.Params("id"))
	if errors.Is(err, followups.ErrNotFound) {
		return problem(404, "not-found", "no follow-up plan with this id for your API key")
	} else if err != nil {
		return s.unavailable(err)
	}
	v, err := s.planView(c.UserContext(), p)
	if err != nil {
		return s.unavailable(err)
	}
	return c.JSON(v)
}

// POST /v1/followups/{id}/cancel: cancels the steps not sent yet.
func (s *Server) cancelFollowup(c *fiber.Ctx) error {
	ctx, tenant := c.UserContext(), tenantOf(c)
	p, err := s.opts.Followups.Stop(ctx, tenant, c.Params("id"), followups.PlanCanceled, "canceled by API request", s.CancelStep)
	switch {
	case errors.Is(err, followups.ErrNotFound):
		return problem(404, "not-found", "no follow-up plan with this id for your API key")
	case errors.Is(err, followups.ErrNotActive):
		return problem(409, "not-cancelable", "the plan is no longer active (completed, canceled or stopped)")
	case err != nil:
		return s.unavailable(err)
	}
	v, err := s.planView(ctx, p)
	if err != nil {
		return s.unavailable(err)
	}
	return c.JSON(v)
}

// CancelStep cancels a plan step's message; a message the provider already
// has (or whose record has expired) is reported as followups.ErrAlreadySent.
func (s *Server) CancelStep(ctx context.Context, tenant, id string) error {
	_, err := s.cancel(ctx, tenant, id)
	if errors.Is(err, ledger.ErrConflict) || errors.Is(err, ledger.ErrNotFound) {
		return fmt.Errorf("%w: %w", followups.ErrAlreadySent, err)
	}
	return err
}
