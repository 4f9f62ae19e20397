package questionnaires

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/patientmsg/gateway/internal/followups"
	"github.com/patientmsg/gateway/internal/messaging"
)

// PlanChannels are the channels a plan's step starts a questionnaire on.
var PlanChannels = []string{"sms", "wechat", ChannelVoice}

// PlanStarter lets follow-up plans start questionnaires: it is package
// followups' QuestionnaireStarter over a Service.
type PlanStarter struct {
	Service *Service
	// TTL is how long a step's start key is kept: a timer run again
	// within it finds the response it made.
	TTL time.Duration
}

var _ followups.QuestionnaireStarter = PlanStarter{}

// FirstQuestion implements followups.QuestionnaireStarter.
func (a PlanStarter) FirstQuestion(ctx context.Context, tenant, name, channel, locale string) (string, error) {
	if !slices.Contains(PlanChannels, channel) {
		return "", messaging.Invalid("channel", "must be sms, wechat or voice for a questionnaire step (email does not converse)")
	}
	if !ValidName(name) {
		return "", followups.ErrNoQuestionnaire
	}
	def, err := a.Service.Definition(ctx, tenant, name, 0)
	if errors.Is(err, ErrNotFound) {
		return "", followups.ErrNoQuestionnaire
	} else if err != nil {
		return "", err
	}
	if channel == ChannelVoice {
		if err := byKeypad(def); err != nil {
			return "", err
		}
		return callGreeting(def, LocaleOf(locale), false), nil
	}
	return def.Prompt(&def.Questions[0], LocaleOf(locale)), nil
}

// Start implements followups.QuestionnaireStarter: the step's key is the
// start's idempotency key, so a second start replays the first.
func (a PlanStarter) Start(ctx context.Context, in followups.QuestionnaireStart) (followups.QuestionnaireStarted, error) {
	r, _, err := a.Service.Start(ctx, in.Tenant, in.Name,
		&StartRequest{Channel: in.Channel, To: in.To, Locale: in.Locale, Metadata: in.Metadata},
		Idempotency{Key: in.Key, BodyHash: in.Key, TTL: a.TTL})
	switch {
	case errors.Is(err, ErrNotFound):
		return followups.QuestionnaireStarted{}, followups.ErrNoQuestionnaire
	case errors.Is(err, ErrAlreadyOpen):
		return followups.QuestionnaireStarted{}, followups.ErrQuestionnaireOpen
	case err != nil:
		return followups.QuestionnaireStarted{}, err
	}
	out := followups.QuestionnaireStarted{ResponseID: r.ID}
	if len(r.Messages) > 0 {
		out.MessageID = r.Messages[0]
	}
	return out, nil
}
