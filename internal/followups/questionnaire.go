package followups

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/hibiken/asynq"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/contacts"
	"github.com/patientmsg/gateway/internal/messaging"
	"github.com/patientmsg/gateway/workers"
)

var (
	// ErrNoQuestionnaire: the tenant has no questionnaire of that name.
	ErrNoQuestionnaire = errors.New("followups: no such questionnaire")
	// ErrQuestionnaireOpen: the patient is answering that questionnaire
	// already.
	ErrQuestionnaireOpen = errors.New("followups: the questionnaire is already in progress for the patient")
)

// QuestionnaireStarter starts the questionnaires of plans' steps (package
// questionnaires' Service, adapted where the gateway is assembled: this
// package does not import it).
type QuestionnaireStarter interface {
	// FirstQuestion is the text of the first question of the tenant's
	// questionnaire name as it is asked on channel in locale:
	// ErrNoQuestionnaire when the tenant has none of that name, a
	// *messaging.InvalidError naming "channel" when questionnaires are
	// not asked on that channel.
	FirstQuestion(ctx context.Context, tenant, name, channel, locale string) (string, error)
	// Start starts the questionnaire and asks its first question. A start
	// with a Key seen before starts nothing and returns what that one
	// started. ErrNoQuestionnaire, ErrQuestionnaireOpen and a
	// *messaging.InvalidError are final; any other error is worth a retry.
	Start(ctx context.Context, in QuestionnaireStart) (QuestionnaireStarted, error)
}

// QuestionnaireStart is the questionnaire a step starts.
type QuestionnaireStart struct {
	Tenant, Name, Channel string
	To                    *messaging.To
	Locale                string
	// Metadata names the plan and the step ({"followup_id": …,
	// "followup_step": …}).
	Metadata json.RawMessage
	// Key is the start's idempotency key, derived from the plan and the
	// step.
	Key string
}

// QuestionnaireStarted is what a start made: the response and the message
// of its first question.
type QuestionnaireStarted struct {
	ResponseID, MessageID string
}

// startKey is the idempotency key of a step's questionnaire start. Its
// newlines keep it apart from every key a client can send (an HTTP header
// holds none).
func startKey(planID string, index int) string {
	return "followup\n" + planID + "\n" + strconv.Itoa(index)
}

// earlyTolerance is how early a step's timer may run and still start its
// questionnaire (clocks of processes differ a little); earlier, it waits.
const earlyTolerance = 5 * time.Second

func (pl *Planner) log() *slog.Logger {
	if pl.Logger == nil {
		return slog.Default()
	}
	return pl.Logger
}

// questionnaireStep checks a step that starts a questionnaire and fills in
// step: its questionnaire, locale and start time. The first question is
// prepared as its message will be, at the step's time (sendAt, or now for
// a step sent at once), so the same address, locale and quiet-hours rules
// apply as to a message step: StartAt is the end of quiet hours when the
// step falls inside them. It returns the step's mistakes, fields relative
// to the step; an error is the store's.
func (pl *Planner) questionnaireStep(ctx context.Context, tenant string, who *planWho, st PlanStep, planID string, step *Step, sendAt, now time.Time) ([]messaging.FieldError, error) {
	var errs []messaging.FieldError
	bad := func(field, format string, a ...any) {
		errs = append(errs, messaging.FieldError{Field: field, Detail: fmt.Sprintf(format, a...)})
	}
	name := *st.Questionnaire
	step.Questionnaire = name
	for field, set := range map[string]bool{"template": st.Template != nil, "vars": st.Vars != nil, "body": st.Body != nil,
		"subject": st.Subject != nil, "priority": st.Priority != "", "expect_reply": st.ExpectReply != nil,
		"gather": st.Gather != nil, "record": st.Record != nil} {
		if set {
			bad(field, "is not taken with a questionnaire: a step starts a questionnaire or sends a message, not both")
		}
	}
	switch {
	case name == "":
		bad("questionnaire", "is empty: name a questionnaire of this tenant or a built-in one (GET /v1/questionnaires)")
		return errs, nil
	case pl.Questionnaires == nil:
		bad("questionnaire", "questionnaires cannot be started by plans on this gateway")
		return errs, nil
	}
	to, why := who.address(st.Channel)
	if why != "" {
		bad("channel", "%s", why)
		return errs, nil
	}
	locale := who.Locale
	if id, ok := identityFor(who.Identities, st.Channel); locale == "" && ok && pl.Contacts != nil {
		// The language of the patient's contact, as a template's would be.
		ct, err := pl.Contacts.Find(ctx, tenant, id)
		switch {
		case err == nil:
			locale = ct.Locale
		case !errors.Is(err, contacts.ErrNotFound):
			return nil, err
		}
	}
	step.Locale = locale
	text, err := pl.Questionnaires.FirstQuestion(ctx, tenant, name, st.Channel, locale)
	var invalid *messaging.InvalidError
	switch {
	case errors.Is(err, ErrNoQuestionnaire):
		bad("questionnaire", "%q is not a questionnaire of this tenant or a built-in one (GET /v1/questionnaires lists them)", messaging.Clip(name))
		return errs, nil
	case errors.As(err, &invalid):
		return append(errs, invalid.Errors...), nil
	case err != nil:
		return nil, err
	}
	d := &messaging.Draft{Channel: st.Channel, To: to, Body: &text, Metadata: stepMetadata(planID, step.Index)}
	if locale != "" {
		d.Locale = &locale
	}
	start := now
	if !sendAt.IsZero() {
		start = sendAt
		at := sendAt.UTC().Format(time.RFC3339)
		d.SendAt = &at
	}
	req, err := pl.Messages.Prepare(ctx, tenant, d)
	if errors.As(err, &invalid) {
		return append(errs, invalid.Errors...), nil
	} else if err != nil {
		return nil, err
	}
	step.StartAt = start.UTC()
	if req.SendAt != nil && req.SendAt.After(start) {
		step.StartAt, step.Deferred = req.SendAt.UTC(), req.Deferred
	}
	return errs, nil
}

// queueTimer queues the timer of a plan's questionnaire step, at its
// start time (once: the task id is the plan's and the step's).
func (pl *Planner) queueTimer(ctx context.Context, p *Plan, index int) error {
	task, err := workers.NewFollowupStepTask(workers.FollowupStep{Tenant: p.Tenant, Plan: p.ID, Step: index}, p.Steps[index].StartAt)
	if err != nil {
		return err
	}
	if _, err := pl.Messages.Queue.EnqueueContext(ctx, task); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("followups: plan %s step %d: queueing its timer: %w", p.ID, index, err)
	}
	return nil
}

// startable says whether a questionnaire step may be started now: it is
// still scheduled in an active plan (or was sent at once, past due) and
// its timer has not taken it up yet.
func startable(p *Plan, st *Step) bool {
	if st.Questionnaire == "" || st.StartedAt != nil {
		return false
	}
	switch st.State {
	case StepScheduled:
		return p.State == PlanActive && st.Detail != DetailAlreadySent
	case StepSentNow:
		return p.State == PlanActive || p.State == PlanCompleted
	}
	return false
}

// Due runs the timer of a questionnaire step (workers.FollowupHandler):
// it starts the step's questionnaire for the plan's patient on the step's
// channel, in the step's locale, with the plan and the step as metadata,
// and records the response and its first question's message in the step.
//
// It starts it once. The step is taken up first (StartedAt, written while
// no stopper holds the plan), so a plan canceled or stopped before starts
// nothing and one stopped after leaves the questionnaire alone; the start
// itself carries a key derived from the plan and the step, so a timer run
// again after a crash finds the response it made instead of making
// another. A timer that runs early, or meets the plan being stopped, runs
// again later; a step that is no longer scheduled, or a plan gone, ends
// it.
func (pl *Planner) Due(ctx context.Context, t workers.FollowupStep) error {
	p, err := pl.Store.Get(ctx, t.Tenant, t.Plan)
	if errors.Is(err, ErrNotFound) {
		return nil // expired, or never stored
	} else if err != nil {
		return err
	}
	if t.Step < 0 || t.Step >= len(p.Steps) || p.Steps[t.Step].Questionnaire == "" {
		return fmt.Errorf("followups: plan %s has no questionnaire step %d: %w", t.Plan, t.Step, asynq.SkipRetry)
	}
	log := pl.log().With("tenant", t.Tenant, "followup_id", t.Plan, "followup_step", t.Step)
	st := p.Steps[t.Step]
	if st.ResponseID != "" {
		return nil // started and recorded
	}
	if st.StartedAt == nil {
		if !startable(p, &st) {
			log.Info("questionnaire step not started: the step is no longer scheduled", "state", st.State, "plan_state", p.State)
			return nil
		}
		if wait := st.StartAt.Sub(pl.Now()); wait > earlyTolerance {
			return workers.RetryIn("the step is not due yet", wait)
		}
		taken := false
		p, err = pl.Store.update(ctx, t.Tenant, t.Plan, func(p *Plan) (bool, error) {
			s := &p.Steps[t.Step]
			if !startable(p, s) {
				return false, nil
			}
			now := pl.Now().UTC()
			s.StartedAt, taken = &now, true
			return true, nil
		})
		if ok, err := afterUpdate(err); !ok {
			return err
		}
		if !taken && p.Steps[t.Step].StartedAt == nil {
			log.Info("questionnaire step not started: the plan was canceled or stopped first")
			return nil
		}
		st = p.Steps[t.Step]
	}
	// Taken up (now, or by a run that died before it recorded the start).
	to, ok := addressIn(p, st.Channel)
	if !ok {
		return pl.recordStart(ctx, t, QuestionnaireStarted{}, StepFailed, "questionnaire not started: the plan has no address for the "+st.Channel+" channel", log)
	}
	started, err := pl.Questionnaires.Start(ctx, QuestionnaireStart{Tenant: t.Tenant, Name: st.Questionnaire, Channel: st.Channel,
		To: to, Locale: st.Locale, Metadata: stepMetadata(p.ID, t.Step), Key: startKey(p.ID, t.Step)})
	var invalid *messaging.InvalidError
	switch {
	case err == nil:
		log.Info("questionnaire step started", "questionnaire", st.Questionnaire, "response_id", started.ResponseID, "msg_id", started.MessageID)
		return pl.recordStart(ctx, t, started, "", "", log)
	case errors.Is(err, ErrQuestionnaireOpen):
		return pl.recordStart(ctx, t, started, StepSkipped, "not started: the patient is answering this questionnaire already", log)
	case errors.Is(err, ErrNoQuestionnaire):
		return pl.recordStart(ctx, t, started, StepFailed, "questionnaire not started: the tenant no longer has it", log)
	case errors.As(err, &invalid):
		detail := "questionnaire not started:"
		for _, fe := range invalid.Errors {
			detail += " " + fe.Field + ": " + fe.Detail + ";"
		}
		return pl.recordStart(ctx, t, started, StepFailed, detail[:len(detail)-1], log)
	}
	return err // worth a retry: the key makes the next start this one
}

// recordStart records how a step's questionnaire start went: the response
// and its first question, or (state) why none was started.
func (pl *Planner) recordStart(ctx context.Context, t workers.FollowupStep, started QuestionnaireStarted, state, detail string, log *slog.Logger) error {
	_, err := pl.Store.update(ctx, t.Tenant, t.Plan, func(p *Plan) (bool, error) {
		s := &p.Steps[t.Step]
		if state != "" {
			if s.State != StepScheduled && s.State != StepSentNow {
				return false, nil
			}
			s.State, s.Detail = state, detail
			return true, nil
		}
		if s.ResponseID == started.ResponseID && s.MessageID == started.MessageID {
			return false, nil
		}
		s.ResponseID, s.MessageID = started.ResponseID, started.MessageID
		return true, nil
	})
	if ok, err := afterUpdate(err); !ok {
		// Waiting for a stopper, the next run starts nothing new (the
		// key) and records it then.
		return err
	}
	if state != "" {
		log.Warn("questionnaire step not started", "state", state)
	}
	return nil
}

// identityFor is the identity among ids a channel reaches.
func identityFor(ids []consent.Identity, channel string) (consent.Identity, bool) {
	spec, ok := channels.SpecOf(channel)
	if !ok {
		return consent.Identity{}, false
	}
	kind := consent.Phone
	switch spec.Address {
	case channels.Email:
		kind = consent.Email
	case channels.WeChatOpenID:
		kind = consent.WeChat
	}
	for _, id := range ids {
		if id.Kind == kind {
			return id, true
		}
	}
	return consent.Identity{}, false
}

// afterUpdate says whether a step's timer goes on after it updated the
// plan with err and, if not, what it returns: nothing when the plan is
// gone, a wait while a stopper holds the plan, any other error as it is.
func afterUpdate(err error) (bool, error) {
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, ErrNotFound):
		return false, nil
	case errors.Is(err, errBusy):
		return false, workers.RetryIn("the plan is being stopped", time.Second)
	}
	return false, err
}

// addressIn is the plan's patient's address on a channel, with the plan's
// time zone.
func addressIn(p *Plan, channel string) (*messaging.To, bool) {
	id, ok := identityFor(p.Identities, channel)
	if !ok {
		return nil, false
	}
	to := messaging.ToAddress(channel, id.Value)
	if p.TimeZone != "" {
		tz := p.TimeZone
		to.TimeZone = &tz
	}
	return to, true
}
