package followups

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/address"
	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/contacts"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/messaging"
	"github.com/patientmsg/gateway/internal/schedule"
)

// Planner makes follow-up plans: each step a message made through
// Messages, as the API's are, scheduled from the plan's anchor, or a
// questionnaire started by a timer (Due) when the step is due.
type Planner struct {
	Store    *Store
	Messages *messaging.Service
	// Contacts resolve a plan's contact by id (nil: addresses only).
	Contacts *contacts.Store
	// Questionnaires start the questionnaires of questionnaire steps (nil:
	// such steps are refused).
	Questionnaires QuestionnaireStarter
	// Logger logs the questionnaire steps' timers (slog.Default when nil).
	Logger *slog.Logger
	// Now is the clock (required).
	Now func() time.Time
}

// Request is a plan to make; its JSON form is the body of POST
// /v1/
type Request struct {
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
	Offset   string            `json:"offset"`
	At       string            `json:"at"`
	Channel  string            `json:"channel"`
	Template *string           `json:"template"`
	Vars     map[string]string `json:"vars"`
	Body     *string           `json:"body"`
	// Questionnaire names a questionnaire to start instead of a message
	// (sms or wechat; no template, body or other message field with it).
	Questionnaire *string           `json:"questionnaire"`
	Subject       *string           `json:"subject"`
	Priority      string            `json:"priority"`
	ExpectReply   *messaging.Expect `json:"expect_reply"`
	Gather        *ledger.Gather    `json:"gather"`
	Record        *ledger.Record    `json:"record"`
}

// Create checks a plan and creates one scheduled message per step (quiet
// hours apply to each), or records why a step was skipped. Every step is
// checked, and every mistake of every step reported, before anything is
// written: a bad plan is a *messaging.InvalidError. Should the store fail
// half-way, the messages already queued are canceled.
func (pl *Planner) Create(ctx context.Context, tenant string, in *Request) (*Plan, error) {
	now := pl.Now()
	var errs []messaging.FieldError
	bad := func(field, format string, a ...any) {
		errs = append(errs, messaging.FieldError{Field: field, Detail: fmt.Sprintf(format, a...)})
	}
	anchor, err := time.Parse(time.RFC3339, in.Anchor)
	if err != nil {
		bad("anchor", "is required: an RFC 3339 time such as 2026-11-20T10:00:00+08:00 (e.g. the discharge)")
	}
	if len(in.Steps) == 0 || len(in.Steps) > MaxSteps {
		bad("steps", "must list 1 to %d steps", MaxSteps)
	}
	for i, cond := range in.StopOn {
		if !ValidStopOn(cond) {
			bad(fmt.Sprintf("stop_on[%d]", i), "%q is not a stop condition; use opt_out, reply:urgent or reply:any", messaging.Clip(cond))
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
		return nil, &messaging.InvalidError{Errors: errs}
	}
	who, err := pl.planContact(ctx, tenant, in.Contact)
	if err != nil {
		return nil, err
	}
	set, err := pl.Messages.SettingsOf(ctx, tenant)
	if err != nil {
		return nil, err
	}
	loc, _ := schedule.ResolveZone(who.TimeZone, "", who.phone(), set.TimeZone, pl.Messages.DefaultZone)
	plan := &Plan{ID: NewID(), Tenant: tenant, ContactID: who.ID, Identities: who.Identities,
		Anchor: anchor.UTC(), TimeZone: loc.String(), StopOn: in.StopOn, PastDue: in.PastDue, State: PlanActive,
		CreatedAt: now.UTC(), UpdatedAt: now.UTC()}
	type pending struct {
		step int
		id   string
		req  ledger.Request
	}
	var todo []pending
	var timers []int // the questionnaire steps, by index
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
		step := Step{Index: i, Offset: st.Offset, At: st.At, Channel: st.Channel, DueAt: due.UTC()}
		if st.Template != nil {
			step.Template = *st.Template
		}
		sendAt, skip := due, false
		if !due.After(now) {
			if in.PastDue == PastDueSkip {
				// Checked like the others all the same: a mistake in a
				// plan is reported whichever steps happen to be past.
				step.State, skip = StepSkipped, true
				step.Detail = fmt.Sprintf("due %s, before the plan was created; past_due is skip, so it was not sent",
					due.In(loc).Format("2006-01-02 15:04 MST"))
			} else {
				step.State = StepSentNow
				step.Detail = fmt.Sprintf("due %s, before the plan was created; past_due is send_now", due.In(loc).Format("2006-01-02 15:04 MST"))
			}
			sendAt = time.Time{}
		} else {
			step.State = StepScheduled
		}
		if st.Questionnaire != nil {
			fieldErrs, err := pl.questionnaireStep(ctx, tenant, who, st, plan.ID, &step, sendAt, now)
			if err != nil {
				return nil, err
			}
			for _, fe := range fieldErrs {
				bad(field+"."+fe.Field, "%s", fe.Detail)
			}
			if len(fieldErrs) == 0 && !skip {
				timers = append(timers, i)
			}
			plan.Steps = append(plan.Steps, step)
			continue
		}
		msg, why := who.message(st, plan.ID, i, sendAt)
		if why != "" {
			bad(field+".channel", "%s", why)
			continue
		}
		req, err := pl.Messages.Prepare(ctx, tenant, msg)
		if err != nil {
			var invalid *messaging.InvalidError
			if !errors.As(err, &invalid) {
				return nil, err
			}
			for _, fe := range invalid.Errors {
				bad(field+"."+fe.Field, "%s", fe.Detail)
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
		return nil, &messaging.InvalidError{Errors: errs}
	}
	// Every step is valid: write them. Should Redis fail half-way, the
	// messages already queued are canceled, so no partial plan runs.
	for n, t := range todo {
		if err := pl.Messages.Submit(ctx, t.id, t.req); err != nil {
			for _, done := range todo[:n] {
				_, _ = pl.Messages.Cancel(context.WithoutCancel(ctx), tenant, done.id, planNotMade)
			}
			return nil, err
		}
	}
	if err := pl.Store.Create(ctx, plan); err != nil {
		for _, done := range todo {
			_, _ = pl.Messages.Cancel(context.WithoutCancel(ctx), tenant, done.id, planNotMade)
		}
		return nil, err
	}
	// The questionnaire steps' timers, once the plan they read is stored.
	// Should one not be queued, the plan is canceled: no plan runs with a
	// step that would never start.
	for _, i := range timers {
		if err := pl.queueTimer(ctx, plan, i); err != nil {
			_, _ = pl.Cancel(context.WithoutCancel(ctx), tenant, plan.ID, planNotMade)
			return nil, err
		}
	}
	return plan, nil
}

// planWho is the patient of a plan.
type planWho struct {
	ID         string
	Identities []consent.Identity
	to         messaging.To
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
func (pl *Planner) planContact(ctx context.Context, tenant string, in *PlanContact) (*planWho, error) {
	w := &planWho{ID: strings.TrimSpace(in.ID)}
	if w.ID != "" && pl.Contacts != nil {
		ct, err := pl.Contacts.Get(ctx, tenant, w.ID)
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
				return nil, messaging.Invalid("contact.id", "is not a contact of this tenant; PUT /v1/contacts/{id} first, or give the addresses")
			}
		default:
			return nil, err
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
			return nil, messaging.Invalid("contact.timezone", "is not an IANA time zone such as Asia/Shanghai")
		}
		w.TimeZone = *in.TimeZone
	}
	if w.to.Phone == nil && w.to.Email == nil && w.to.WeChatOpenID == nil {
		return nil, messaging.Invalid("contact", "has no address: give phone, email or wechat_openid, or the id of a contact that has one")
	}
	for kind, v := range map[consent.Kind]*string{consent.Phone: w.to.Phone, consent.Email: w.to.Email, consent.WeChat: w.to.WeChatOpenID} {
		if v == nil {
			continue
		}
		val := *v
		if kind == consent.Phone {
			if e164, err := address.Phone(val, ""); err == nil {
				val = e164
			}
		}
		w.Identities = append(w.Identities, consent.Normalise(consent.Identity{Kind: kind, Value: val}))
	}
	slices.SortFunc(w.Identities, func(a, b consent.Identity) int { return strings.Compare(string(a.Kind), string(b.Kind)) })
	return w, nil
}

// address is the patient's address on a channel, or why the channel
// cannot reach them.
func (w *planWho) address(channel string) (*messaging.To, string) {
	spec, ok := channels.SpecOf(channel)
	if !ok {
		return nil, fmt.Sprintf("%q is not a channel; use one of %s", messaging.Clip(channel), strings.Join(channels.Declared(), ", "))
	}
	var addr *string
	switch spec.Address {
	case channels.Phone:
		addr = w.to.Phone
	case channels.Email:
		addr = w.to.Email
	case channels.WeChatOpenID:
		addr = w.to.WeChatOpenID
	}
	if addr == nil {
		return nil, fmt.Sprintf("the contact has no address for the %s channel", channel)
	}
	to := messaging.ToAddress(channel, *addr)
	if w.TimeZone != "" {
		tz := w.TimeZone
		to.TimeZone = &tz
	}
	return to, ""
}

// stepMetadata is the metadata of a step's message or questionnaire.
func stepMetadata(planID string, index int) json.RawMessage {
	meta, _ := json.Marshal(map[string]any{"followup_id": planID, "followup_step": index})
	return meta
}

// message is the draft of a step's message, or why the step's channel
// cannot reach the patient.
func (w *planWho) message(st PlanStep, planID string, index int, sendAt time.Time) (*messaging.Draft, string) {
	to, why := w.address(st.Channel)
	if why != "" {
		return nil, why
	}
	meta := stepMetadata(planID, index)
	m := &messaging.Draft{Channel: st.Channel, To: to, Body: st.Body, Subject: st.Subject, Priority: st.Priority,
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
	return m, ""
}

// planNotMade is the history of a step's message canceled because its plan
// could not be written.
const planNotMade = "canceled: its follow-up plan could not be created"

// Cancel cancels an active plan of the tenant: the steps not sent yet
// have their messages canceled, saying why (reason) in their history. It
// is how the API and the console cancel a plan; ErrNotFound, ErrNotActive
// as Store.Stop.
func (pl *Planner) Cancel(ctx context.Context, tenant, id, reason string) (*Plan, error) {
	return pl.Store.Stop(ctx, tenant, id, PlanCanceled, reason, pl.CancelStep)
}

// CancelStep cancels a plan step's message, saying why in its history; a
// message the provider already has (or whose record has expired) is
// reported as ErrAlreadySent.
func (pl *Planner) CancelStep(ctx context.Context, tenant, id, reason string) error {
	_, err := pl.Messages.Cancel(ctx, tenant, id, reason)
	if errors.Is(err, ledger.ErrConflict) || errors.Is(err, ledger.ErrNotFound) {
		return fmt.Errorf("%w: %w", ErrAlreadySent, err)
	}
	return err
}

// StepView is a plan's step with its message as the ledger has it now
// (for a questionnaire step not started yet, when it starts).
type StepView struct {
	Step
	// Status is its message's status ("" when the step made none, or the
	// record has expired); SendAt and Deferred its time, and why it was
	// deferred (quiet hours).
	Status   ledger.Status
	SendAt   *time.Time
	Deferred string
}

// View is a plan with its steps' messages. State is PlanCompleted once
// every step's message is final or with the provider, though the plan is
// still active in the store.
type View struct {
	*Plan
	State string
	Steps []StepView
}

// View joins a plan with its messages' current status, for the API and
// the console.
func (pl *Planner) View(ctx context.Context, p *Plan) (*View, error) {
	v := &View{Plan: p, State: p.State, Steps: make([]StepView, 0, len(p.Steps))}
	done := true
	for _, st := range p.Steps {
		sv := StepView{Step: st}
		if st.Questionnaire != "" && st.MessageID == "" && (st.State == StepScheduled || st.State == StepSentNow) {
			// Its questionnaire is still to start: when it will.
			if !st.StartAt.IsZero() {
				at := st.StartAt
				sv.SendAt, sv.Deferred = &at, st.Deferred
			}
			done = false
		}
		if st.MessageID != "" {
			m, err := pl.Messages.Ledger.Get(ctx, p.Tenant, st.MessageID)
			switch {
			case err == nil:
				sv.Status, sv.SendAt, sv.Deferred = m.Status, m.SendAt, m.Deferred
			case !errors.Is(err, ledger.ErrNotFound):
				return nil, err
			}
			if !sv.Status.Final() && sv.Status.Rank() < ledger.StatusSent.Rank() {
				done = false
			}
		}
		v.Steps = append(v.Steps, sv)
	}
	if v.State == PlanActive && done {
		v.State = PlanCompleted // every step has run its course
	}
	return v, nil
}
