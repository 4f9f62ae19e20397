package admission

import (
	"context"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"
)

// Message is a message the API is about to queue, as the backlog sees it.
type Message struct {
	Tenant, Channel, ID, Priority string
	// Cost is what the send takes from its sender: SMS segments, else 1.
	Cost int
	// Due is when it is to be sent (zero: now).
	Due time.Time
}

// Every tenant's backlog on a channel is one hash, in the tenant's slot:
// one field per counted message (its id → its cost) and the field "#"
// holding the sum of their costs. When a message was counted is its id's
// (a ULID's) time: a message is counted as its id is made. Adding a
// member that is there already, or removing one that is not, changes
// nothing: the count rises once when a message is accepted and drops once
// when it leaves the queue, however often either is repeated (a retried
// send, a replayed request, a sweep racing a worker).
func backlogKey(tenant, channel string) string { return "gw:adm:{" + tenant + "}:bl:" + channel }

const sumField = "#"

// reserveLua adds a message to its tenant's backlog unless that would pass
// the cap. reserve(backlog, id, cost, cap) returns 1 added, 2 already
// counted or 0 full, and the cost queued.
const reserveLua = `
local function reserve(key, id, cost, cap)
  local queued = tonumber(redis.call('HGET', key, '#') or '0')
  if redis.call('HEXISTS', key, id) == 1 then return 2, queued end
  if queued + cost > cap then return 0, queued end
  redis.call('HSET', key, id, cost)
  return 1, redis.call('HINCRBY', key, '#', cost)
end
`

// reserveScript: KEYS backlog  ARGV id, cost, cap
// Returns {1 added | 2 already counted | 0 full, queued cost}.
var reserveScript = redis.NewScript(reserveLua + `
local added, queued = reserve(KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
return {added, queued}
`)

// releaseScript: KEYS backlog  ARGV id. Returns 1 removed, 0 not counted.
// HDEL comes first: once a script has written, Redis lets it finish even
// at maxmemory, so a release never stops half-way.
var releaseScript = redis.NewScript(`
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
local left = redis.call('HINCRBY', KEYS[1], '#', -tonumber(string.match(v, '^%d+')))
if left <= 0 and redis.call('HLEN', KEYS[1]) <= 1 then redis.call('DEL', KEYS[1]) end
return 1
`)

// BacklogCap is a tenant's cap on a channel, in the sender's cost units
// (SMS segments, else messages): BacklogHours of the channel's sender
// rate; 0 when there is none.
func (c *Controller) BacklogCap(channel string) int64 {
	rate := c.cfg.SenderRates[channel]
	if c.cfg.BacklogHours <= 0 || rate <= 0 {
		return 0
	}
	// Rounded up, but not for the float error of e.g. 0.1 h × 3600.
	return int64(math.Ceil(c.cfg.BacklogHours*3600*rate - 1e-9))
}

// Counted reports whether a message counts in its tenant's backlog: every
// priority but crisis, on a channel with a cap, due within the cap's
// horizon (a message scheduled further ahead is not waiting for its
// sender yet).
func (c *Controller) Counted(m Message) bool {
	if m.Priority == PriorityCrisis || m.Tenant == "" || c.BacklogCap(m.Channel) == 0 {
		return false
	}
	horizon := time.Duration(c.cfg.BacklogHours * float64(time.Hour))
	return m.Due.IsZero() || !m.Due.After(c.cfg.Now().Add(horizon))
}

// Reserve counts a message in its tenant's backlog before it is queued,
// or refuses it with a *BacklogFullError when that would pass the cap.
// It reports whether the message was counted (the caller releases it if
// the message is not queued after all). Redis trouble admits the message
// uncounted, and is logged.
func (c *Controller) Reserve(ctx context.Context, m Message) (bool, error) {
	if !c.Counted(m) {
		return false, nil
	}
	limit, cost := c.BacklogCap(m.Channel), max(m.Cost, 1)
	res, err := reserveScript.Run(ctx, c.rdb, []string{backlogKey(m.Tenant, m.Channel)}, m.ID, cost, limit).Int64Slice()
	if err != nil || len(res) != 2 {
		c.log.Warn("tenant backlog not checked: message admitted uncounted", "tenant", m.Tenant, "channel", m.Channel, "err", err)
		return false, nil
	}
	return c.reserved(m, res[0], res[1])
}

// reserved reads a reservation's outcome (1 added, 2 already counted, 0
// full) and the cost queued: whether the message is counted, or the
// *BacklogFullError refusing it.
func (c *Controller) reserved(m Message, added, queued int64) (bool, error) {
	if added != 0 {
		return true, nil
	}
	limit, cost := c.BacklogCap(m.Channel), int64(max(m.Cost, 1))
	// The sender works through the excess at its rate (shared with other
	// tenants, so this is the earliest the backlog can have room).
	excess := float64(queued + cost - limit)
	wait := time.Duration(excess / c.cfg.SenderRates[m.Channel] * float64(time.Second))
	wait = min(max(ceilSeconds(wait), time.Second), MaxBacklogRetryAfter)
	return false, &BacklogFullError{Tenant: m.Tenant, Channel: m.Channel, Queued: queued, Cap: limit,
		Hours: c.cfg.BacklogHours, Wait: wait}
}

// Release takes a message out of its tenant's backlog: it was sent,
// failed, canceled or suppressed, or was not queued after all. Releasing
// a message twice, or one never counted, changes nothing.
func (c *Controller) Release(ctx context.Context, tenant, channel, id string) error {
	if c.cfg.BacklogHours <= 0 || tenant == "" {
		return nil
	}
	return releaseScript.Run(ctx, c.rdb, []string{backlogKey(tenant, channel)}, id).Err()
}

// ReleaseIn is Release queued on pipe, for a caller that has a round trip
// to make anyway (the worker recording the provider's acceptance). Once
// the caller has run the pipeline, done says how it went, releasing the
// message with a round trip of its own when Redis did not have the
// script cached (after a restart or failover).
func (c *Controller) ReleaseIn(ctx context.Context, pipe redis.Pipeliner, tenant, channel, id string) (done func() error) {
	if c.cfg.BacklogHours <= 0 || tenant == "" {
		return func() error { return nil }
	}
	cmd := releaseScript.EvalSha(ctx, pipe, []string{backlogKey(tenant, channel)}, id)
	return func() error {
		if err := cmd.Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			return c.Release(ctx, tenant, channel, id)
		}
		return cmd.Err()
	}
}

// Backlog is a tenant's backlog on a channel: the cost queued and the cap
// (0: none).
func (c *Controller) Backlog(ctx context.Context, tenant, channel string) (queued, limit int64, err error) {
	limit = c.BacklogCap(channel)
	queued, err = c.rdb.HGet(ctx, backlogKey(tenant, channel), sumField).Int64()
	if errors.Is(err, redis.Nil) {
		err = nil
	}
	return queued, limit, err
}

// Waiting reports, for each message id, whether the message still waits
// to be sent (its record exists and it has not been handed over or ended).
type Waiting func(ctx context.Context, ids []string) ([]bool, error)

// SweepMinAge is how old a backlog entry must be before a sweep may
// remove it: a message is counted just before its record is written.
const SweepMinAge = time.Minute

const sweepLockKey = "gw:adm:sweep"

// countedAt is when a backlog entry was counted, in Unix ms: its id's
// time, or the time its value holds ("cost:added_ms", as entries counted
// before the value was the cost alone hold it). An id that is not a ULID
// counts as old: a sweep asks whether its message still waits.
func countedAt(id, value string) int64 {
	if _, added, ok := strings.Cut(value, ":"); ok {
		if at, err := strconv.ParseInt(added, 10, 64); err == nil {
			return at
		}
	}
	u, err := ulid.ParseStrict(id)
	if err != nil {
		return 0
	}
	return int64(u.Time())
}

// SweepBacklogs removes from the tenants' backlogs the messages that no
// longer wait (their send task was lost, archived or deleted, or their
// record expired), so a count that missed a release does not refuse a
// tenant's messages for ever. With every > 0 it sweeps only when no
// process of the gateway has in the last every (a lock in Redis), and
// returns 0 otherwise. It returns how many entries it removed.
func (c *Controller) SweepBacklogs(ctx context.Context, tenants []string, waiting Waiting, every time.Duration) (int, error) {
	if c.cfg.BacklogHours <= 0 {
		return 0, nil
	}
	if every > 0 {
		ok, err := c.rdb.SetNX(ctx, sweepLockKey, 1, every).Result()
		if err != nil || !ok {
			return 0, err
		}
	}
	removed := 0
	cutoff := c.cfg.Now().Add(-SweepMinAge).UnixMilli()
	for _, tenant := range tenants {
		for channel := range c.cfg.SenderRates {
			n, err := c.sweep(ctx, tenant, channel, cutoff, waiting)
			removed += n
			if err != nil {
				return removed, err
			}
		}
	}
	return removed, nil
}

func (c *Controller) sweep(ctx context.Context, tenant, channel string, cutoff int64, waiting Waiting) (int, error) {
	key := backlogKey(tenant, channel)
	removed := 0
	var cursor uint64
	for {
		kv, next, err := c.rdb.HScan(ctx, key, cursor, "", 500).Result()
		if err != nil {
			return removed, err
		}
		var ids []string
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i] == sumField {
				continue
			}
			if countedAt(kv[i], kv[i+1]) < cutoff {
				ids = append(ids, kv[i])
			}
		}
		if len(ids) > 0 {
			still, err := waiting(ctx, ids)
			if err != nil {
				return removed, err
			}
			for i, id := range ids {
				if i < len(still) && still[i] {
					continue
				}
				n, err := releaseScript.Run(ctx, c.rdb, []string{key}, id).Int()
				if err != nil {
					return removed, err
				}
				removed += n
			}
		}
		if cursor = next; cursor == 0 {
			return removed, nil
		}
	}
}
