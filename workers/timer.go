package workers

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/hibiken/asynq"
)

// Timer runs a timer task: it decodes the task's payload, a P, and hands
// it to Fire. A payload that cannot be decoded is not retried.
type Timer[P any] struct {
	Fire func(ctx context.Context, p P) error
}

// ProcessTask implements asynq.Handler.
func (h *Timer[P]) ProcessTask(ctx context.Context, t *asynq.Task) error {
	var p P
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return fmt.Errorf("bad %s payload: %w", t.Type(), asynq.SkipRetry)
	}
	return h.Fire(ctx, p)
}
