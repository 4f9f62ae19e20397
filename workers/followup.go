package workers

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
)

// TypeFollowupStep is the timer of a follow-up plan's step that starts a
// questionnaire when the step is due.
const TypeFollowupStep = "followup:step"

// FollowupStep names the plan and the step whose time has come.
type FollowupStep struct {
	Tenant string `json:"t"`
	Plan   string `json:"p"`
	Step   int    `json:"s"`
}

// NewFollowupStepTask builds the timer, run at at; its id is derived from
// the plan and the step, so it is queued once.
func NewFollowupStepTask(p FollowupStep, at time.Time) (*asynq.Task, error) {
	if p.Tenant == "" || p.Plan == "" || p.Step < 0 {
		return nil, fmt.Errorf("workers: a follow-up step timer needs a tenant, a plan and a step")
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return asynq.NewTask(TypeFollowupStep, b, asynq.TaskID("fu:"+p.Plan+":"+strconv.Itoa(p.Step)),
		asynq.Queue(QueueFor(PriorityNormal)), asynq.ProcessAt(at), asynq.MaxRetry(20), asynq.Timeout(time.Minute)), nil
}

// FollowupHandler runs TypeFollowupStep tasks: it hands the timer to Fire
// (package followups' Planner.Due).
type FollowupHandler = Timer[FollowupStep]

// RetryIn asks Asynq to run a task again after a set delay, without
// counting a failure: a timer that came early, or found its subject busy.
func RetryIn(reason string, after time.Duration) error {
	return &waitError{reason: reason, after: after}
}
