package workers

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/hibiken/asynq"
)

// Task types of crisis broadcasts.
const (
	TypeBroadcastFanout = "broadcast:fanout" // one chunk of the audience
	TypeBroadcastSweep  = "broadcast:sweep"  // people whose try timed out, every second
	TypeBroadcastCancel = "broadcast:cancel" // stop what has not been sent
)

// BroadcastPayload is the payload of a broadcast's tasks: the broadcast,
// and the chunk of its audience for a fan-out.
type BroadcastPayload struct {
	Broadcast string `json:"bc"`
	Chunk     int    `json:"chunk"`
}

// BroadcastRunner does a broadcast's work (the broadcast engine).
type BroadcastRunner interface {
	Fanout(ctx context.Context, p BroadcastPayload) error
	Sweep(ctx context.Context, broadcast string) error
	CancelPeople(ctx context.Context, broadcast string) error
}

// BroadcastHandler runs a broadcast's tasks on r.
func BroadcastHandler(r BroadcastRunner) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		var p BroadcastPayload
		if json.Unmarshal(t.Payload(), &p) != nil {
			return fmt.Errorf("bad payload: %w", asynq.SkipRetry)
		}
		switch t.Type() {
		case TypeBroadcastFanout:
			return r.Fanout(ctx, p)
		case TypeBroadcastSweep:
			return r.Sweep(ctx, p.Broadcast)
		case TypeBroadcastCancel:
			return r.CancelPeople(ctx, p.Broadcast)
		}
		return fmt.Errorf("unknown task %s: %w", t.Type(), asynq.SkipRetry)
	})
}
