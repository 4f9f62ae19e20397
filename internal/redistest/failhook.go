package redistest

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// FailCommand is a client hook that fails one command (by its lower-case
// name, "del") while armed, as when Redis goes away between a request's
// first write and its last. Add it with client.AddHook.
type FailCommand struct {
	Name  string
	armed atomic.Bool
}

// Arm makes the command fail (true) or pass (false).
func (f *FailCommand) Arm(on bool) { f.armed.Store(on) }

// DialHook implements redis.Hook.
func (f *FailCommand) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook implements redis.Hook.
func (f *FailCommand) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if f.armed.Load() && cmd.Name() == f.Name {
			return errors.New("redistest: connection reset by peer")
		}
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook implements redis.Hook.
func (f *FailCommand) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
