// Package ratelimit spaces out sends per sender across every worker
// process, with a GCRA (generic cell rate algorithm) kept in Redis: each
// sender key holds its theoretical arrival time, moved forward atomically
// by a Lua script, so a limit holds however many workers run.
package ratelimit

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Limiter allows a number of events per second per key, with a burst.
type Limiter struct {
	rdb      redis.UniversalClient
	interval time.Duration
	burst    int
}

// New allows perSecond events per key (fractions allowed: 0.5 is one every
// two seconds) with a burst of that many at once (at least 1).
func New(rdb redis.UniversalClient, perSecond float64, burst int) (*Limiter, error) {
	if perSecond <= 0 {
		return nil, fmt.Errorf("ratelimit: rate must be positive, got %v", perSecond)
	}
	return &Limiter{rdb: rdb, interval: time.Duration(float64(time.Second) / perSecond), burst: max(burst, 1)}, nil
}

// gcra: KEYS[1] the key; ARGV interval_us, burst. Uses the server clock.
// Returns {allowed (1/0), wait_us}.
var gcra = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * (tonumber(ARGV[2]) - 1)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then return {0, allow_at - now} end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, 0}
`)

// Reserve takes a slot for key, or returns how long to wait for one (and
// takes nothing).
func (l *Limiter) Reserve(ctx context.Context, key string) (time.Duration, error) {
	res, err := gcra.Run(ctx, l.rdb, []string{"gw:rl:{" + key + "}"}, l.interval.Microseconds(), l.burst).Int64Slice()
	if err != nil {
		return 0, err
	}
	if res[0] == 1 {
		return 0, nil
	}
	return time.Duration(res[1]) * time.Microsecond, nil
}
