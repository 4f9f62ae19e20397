package workers

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
)

// TypeQuestionnaireTimer is the task that, after a patient's silence,
// reminds them of a questionnaire's question or expires the response.
const TypeQuestionnaireTimer = "questionnaire:timer"

// Kinds of questionnaire timer.
const (
	TimerRemind = "remind"
	TimerExpire = "expire"
)

// QuestionnaireTimer says which response's question the timer is for:
// Seq counts the questions asked, so a timer of a question already
// answered does nothing.
type QuestionnaireTimer struct {
	Tenant   string `json:"t"`
	Response string `json:"r"`
	Seq      int    `json:"s"`
	Kind     string `json:"k"`
}

// NewQuestionnaireTimerTask builds the timer, due after in; its task id is
// derived from the response, question and kind, so it is queued once.
func NewQuestionnaireTimerTask(p QuestionnaireTimer, in time.Duration) (*asynq.Task, error) {
	if p.Tenant == "" || p.Response == "" || (p.Kind != TimerRemind && p.Kind != TimerExpire) {
		return nil, fmt.Errorf("workers: questionnaire timer needs a tenant, a response and a kind")
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return asynq.NewTask(TypeQuestionnaireTimer, b,
		asynq.TaskID("qn:"+p.Response+":"+strconv.Itoa(p.Seq)+":"+p.Kind),
		asynq.Queue(QueueFor(PriorityHigh)), asynq.ProcessIn(in), asynq.MaxRetry(20), asynq.Timeout(time.Minute)), nil
}

// QuestionnaireHandler runs TypeQuestionnaireTimer tasks: it decodes the
// timer and hands it to Fire (package questionnaires' Service.Timer).
type QuestionnaireHandler struct {
	Fire func(ctx context.Context, p QuestionnaireTimer) error
}

// ProcessTask implements asynq.Handler.
func (h *QuestionnaireHandler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	var p QuestionnaireTimer
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return fmt.Errorf("bad questionnaire timer payload: %w", asynq.SkipRetry)
	}
	return h.Fire(ctx, p)
}
