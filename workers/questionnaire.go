package workers

import (
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

// QuestionnaireHandler runs TypeQuestionnaireTimer tasks: it hands the
// timer to Fire (package questionnaires' Service.Timer).
type QuestionnaireHandler = Timer[QuestionnaireTimer]
