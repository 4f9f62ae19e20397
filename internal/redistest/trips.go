package redistest

import (
	"context"
	"slices"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Trips is a go-redis hook recording what a client sends, one entry a
// round trip: a lone command, or a pipeline's commands in order. The
// handshake of each new connection is left out.
type Trips struct {
	mu  sync.Mutex
	all [][]redis.Cmder
}

func (t *Trips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (t *Trips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		t.add([]redis.Cmder{cmd})
		return next(ctx, cmd)
	}
}

func (t *Trips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		t.add(cmds)
		return next(ctx, cmds)
	}
}

func (t *Trips) add(cmds []redis.Cmder) {
	trip := slices.DeleteFunc(slices.Clone(cmds), Handshake)
	if len(trip) == 0 {
		return
	}
	t.mu.Lock()
	t.all = append(t.all, trip)
	t.mu.Unlock()
}

// Take returns the round trips recorded since the last Take, and forgets
// them.
func (t *Trips) Take() [][]redis.Cmder {
	t.mu.Lock()
	defer t.mu.Unlock()
	all := t.all
	t.all = nil
	return all
}

// With says how many round trips held a command named name, and how many
// of those also held one named also.
func (t *Trips) With(name, also string) (n, together int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	named := func(want string) func(redis.Cmder) bool {
		return func(c redis.Cmder) bool { return c.Name() == want }
	}
	for _, trip := range t.all {
		if slices.ContainsFunc(trip, named(name)) {
			n++
			if slices.ContainsFunc(trip, named(also)) {
				together++
			}
		}
	}
	return n, together
}

// Handshake reports whether cmd is part of a new connection's handshake.
func Handshake(cmd redis.Cmder) bool {
	switch cmd.Name() {
	case "hello", "client", "auth", "select", "ping":
		return true
	}
	return false
}
