// Package ratelimit spaces out sends per sender across every worker
// process, with a GCRA (generic cell rate algorithm) kept in Redis: each
// sender key holds its theoretical arrival time, moved forward atomically
// by a Lua script, so a limit holds however many workers run.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Reasons a Decision refuses a request.
const (
	// ReasonRate: the sender is at its (effective) rate.
	ReasonRate = "rate"
	// ReasonDailyQuota: the sender's daily quota is used up.
	ReasonDailyQuota = "daily_quota"
	// ReasonProviderBackoff: the provider asked to wait (Retry-After).
	ReasonProviderBackoff = "provider_backoff"
)

// Option defaults.
const (
	DefaultDecrease    = 0.5
	DefaultMinFraction = 0.05
	DefaultRecovery    = 60 * time.Second
	DefaultHold        = time.Second
)

// stateKeep is how long a sender's state hash outlives the last time it
// refers to (TAT, backoff, recovery), so Status can still show the last
// throttle of a sender that went idle.
const stateKeep = 24 * time.Hour

// SenderConfig describes one provider sender.
type SenderConfig struct {
	// Key names the sender, e.g. "sms:+15005550006", "voice:+1…",
	// "wechat:wx123", "email:smtp.example.org".
	Key string
	// Channel is "sms", "voice", "wechat" or "email"; empty takes the part
	// of Key before the first colon.
	Channel string
	// PerSecond is the rate in cost units per second (SMS: segments per
	// second); fractions are allowed (0.5 is one every two seconds).
	PerSecond float64
	// Burst is the number of cost units normal traffic may send at once
	// (0 means 1).
	Burst int
	// PerDay is the daily quota in cost units; 0 means none. (A request
	// costing more than PerDay is never admitted.)
	PerDay int64
	// DayZone is where the daily quota resets at midnight; nil means UTC
	// (WeChat resets at midnight Asia/Shanghai).
	DayZone *time.Location
}

// Options tune the adaptive back-pressure; zero fields take the defaults.
type Options struct {
	// Decrease multiplies the effective rate on a provider throttle
	// (0 < Decrease ≤ 1; default 0.5).
	Decrease float64
	// MinFraction is the floor of the effective rate as a fraction of the
	// configured one (0 < MinFraction ≤ 1; default 0.05).
	MinFraction float64
	// Recovery is how long the effective rate takes to climb linearly back
	// to the configured one after the last throttle (default 60s).
	Recovery time.Duration
	// Hold: throttles within Hold of the last decrease do not decrease the
	// rate again, since those requests were sent at the old rate (default 1s).
	Hold time.Duration
	// ReturnEarly is how much earlier than its place in line can be
	// reached a refused request is told to come back (default 0). With a
	// task queue that schedules in whole seconds and polls for due tasks,
	// a request comes back up to a second or so late; one back early only
	// waits in line (asking again later), while one back late leaves the
	// sender idle: set about a second there.
	ReturnEarly time.Duration
}

// Request asks for capacity on a sender.
type Request struct {
	// Sender is a configured SenderConfig.Key; unknown senders are not limited.
	Sender string
	// Tenant is served fairly against the sender's other tenants.
	Tenant string
	// Priority is "crisis", "high", "normal" or "bulk"; anything else is normal.
	Priority string
	// Cost is the number of units the request uses (SMS segments); below 1
	// counts as 1.
	Cost int
	// ID names the request (the message id) so that, once refused, it keeps
	// its place in line when it asks again; empty: every ask is a new one.
	ID string
}

// Decision is the answer to a Request.
type Decision struct {
	// Allowed is true when the capacity was taken: send now.
	Allowed bool
	// Wait is, when refused, how long to wait before asking again.
	Wait time.Duration
	// Reason is, when refused, ReasonRate, ReasonDailyQuota or
	// ReasonProviderBackoff.
	Reason string
}

// SenderStatus describes a sender's current state.
type SenderStatus struct {
	Key     string
	Channel string
	// ConfiguredPerSecond is SenderConfig.PerSecond; EffectivePerSecond is
	// the rate in force now, lower after provider throttles.
	ConfiguredPerSecond float64
	EffectivePerSecond  float64
	// PerDay is the daily quota (0: none); UsedToday the cost admitted
	// on the current local day.
	PerDay    int64
	UsedToday int64
	// Tokens is how many sends the sender could make at once now: its
	// burst less what the sends of the last moments still hold.
	Tokens float64
	// BackoffUntil is set while a provider Retry-After is in force.
	BackoffUntil *time.Time
	// LastThrottleAt and LastThrottleCode describe the last provider
	// throttle, and Throttles counts them, while the sender's state is kept
	// (until it has been idle for a day).
	LastThrottleAt   *time.Time
	LastThrottleCode string
	Throttles        int64
}

// Senders limits provider senders (SMS or voice numbers, WeChat accounts,
// SMTP relays) across all worker processes, one shared limiter per sender,
// with priorities, tenant fairness, cost weighting (SMS segments), daily
// quotas and adaptive back-pressure when the provider throttles.
//
// Every sender keeps, in Redis, a GCRA theoretical arrival time (TAT) that
// moves forward by Cost×interval for every admitted request, where interval
// is 1/effective rate. A request of priority p is admitted when
//
//	TAT ≤ now + headroom(p)×interval
//
// (the TAT is first raised to now when it lies in the past). A request is
// admitted as soon as the sender has room for its first unit; its remaining
// units are paid by pushing the TAT further out, so a 10-segment SMS is
// never starved by 1-segment ones and the units it borrowed are repaid by
// the requests after it.
//
// The headroom, in cost units, grows with the priority (B is Burst, r the
// effective rate in units per second):
//
//	bulk    max(½, N − 1)            (a burst of B − 1 units; one request when B ≤ 2)
//	normal  N = B − ¼                (a burst of B units, as in a plain GCRA)
//	high    N + max(1, r×0.5s)
//	crisis  N + max(2, B, r×2s)
//
// Each level is strictly above the one below, so when requests of several
// priorities compete for the same slot the higher one is admitted first;
// when bulk traffic saturates a sender the TAT stays within the bulk
// headroom of now, so normal traffic still finds a slot and high and crisis
// requests are admitted immediately, taking from the headroom above. Bulk
// gets nearly the whole burst because refused requests come back in
// batches (a task queue schedules in whole seconds): with a burst of a
// second's worth, each batch is admitted whole instead of one request per
// batch. The fractions add no unit
// to any burst: they let a refused request that comes back up to half an
// interval late still find the sender on schedule (see lanes below), and
// keep normal a quarter interval ahead of bulk when Burst is 1.
//
// Over any window of length W during which the effective rate r is
// constant, the cost admitted is at most
//
//	r×W + H + c
//
// where H is the headroom of the highest priority admitted in the window
// and c the cost of the last admitted request: for normal traffic of unit
// cost r×W + B + ¾, for bulk r×W + B. Crisis traffic may exceed the rate
// by its headroom (the burst plus about two seconds' worth of the rate, at
// least B + 1.75 units) and only until that is used up: the borrowed units
// are repaid by lower priorities waiting longer. Crisis is admitted at once
// behind saturating bulk traffic as long as a bulk request costs less than
// the crisis headroom.
//
// A refused request takes no capacity. It gets its Wait from its lane:
// every (tenant, priority) pair of a sender has a lane holding, in the
// TAT's time, the slot of its next refused request. A refused request gets
// the lane's slot, or the current TAT if that is later (or the end of a
// backoff or of the day, below), and the lane moves on by Cost×interval.
// Its Wait ends headroom×interval (plus Options.ReturnEarly) before the slot: the moment the request
// is admitted if the TAT has reached the slot, so it is admitted on return
// even up to that much late. N refused requests of one tenant thus come
// back one interval apart, each typically admitted, instead of all at
// once; another tenant's lane starts fresh at the current TAT, so two
// tenants with backlogs each get about half of the sender and a tenant with
// a few messages is not queued behind another tenant's thousands. Slots are
// rounded up to a grid of the configured interval shared by all lanes, so
// requests of different lanes due at the same slot come back together and
// compete on equal terms instead of one lane always arriving first. With k
// busy lanes, k requests come back per interval and k−1 are refused again
// (and go to the end of their lanes): retry traffic is spread evenly and
// bounded by the number of busy lanes. Lanes whose slots have all passed
// are removed a few at a time.
//
// A request with an ID keeps the place in line it got when first refused:
// each priority of a sender has a line (gw:snd:{K}:w:<priority>) of refused
// requests by slot, and a request is admitted only when fewer requests of
// the line with earlier slots than there is room for now. A task queue that
// brings refused requests back in whole-second batches, in an order of its
// own, thus still admits each batch by place: clinic A's requests asking
// first cannot take clinic B's places. A request that does not come back
// within lineStale of its slot (canceled, or its task lost) loses its place.
//
// A sender with PerDay > 0 counts admitted cost per local day (DayZone);
// a request that would exceed the quota, of any priority, is refused with
// ReasonDailyQuota and a Wait after the next local midnight, spread through
// the lanes so the backlog returns at the sender's pace rather than all at
// midnight.
//
// Throttled reports a provider throttle: the effective rate is multiplied
// by Options.Decrease (not below MinFraction of the configured rate, at
// most once per Options.Hold) and climbs back linearly to the configured
// rate over Options.Recovery after the last throttle. A Retry-After blocks
// every priority until it has passed (ReasonProviderBackoff), with Waits
// spread after it through the lanes. The effective rate is computed from
// the stored values by each script, with no background job.
//
// All keys of a sender share the Redis Cluster hash tag {<sender key>}, so
// each operation is one Lua script in one round trip on one shard:
//
//	gw:snd:{K}               hash: tat, base, lt, ld, bu, code, n
//	gw:snd:{K}:lanes         sorted set: "<priority>|<tenant>" → next slot
//	gw:snd:{K}:day:YYYYMMDD  admitted cost on that local day
//
// Times are microseconds of the Redis server clock (TIME). Every key has a
// TTL: the state hash lives a day past its last relevant time, the lanes
// until their last slot, a day counter an hour past its day.
//
// Senders is safe for concurrent use, in any number of processes.
type Senders struct {
	rdb   redis.UniversalClient
	opts  Options
	cfgs  []SenderConfig
	byKey map[string]int
}

// NewSenders validates cfgs (unique non-empty keys, positive finite rates,
// no negative burst or quota) and o, and returns the limiter.
func NewSenders(rdb redis.UniversalClient, cfgs []SenderConfig, o Options) (*Senders, error) {
	if rdb == nil {
		return nil, errors.New("ratelimit: senders need a Redis client")
	}
	opts, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Senders{rdb: rdb, opts: opts, cfgs: make([]SenderConfig, 0, len(cfgs)), byKey: make(map[string]int, len(cfgs))}
	for i, c := range cfgs {
		if c.Key == "" {
			return nil, fmt.Errorf("ratelimit: sender %d has no key", i)
		}
		if _, dup := s.byKey[c.Key]; dup {
			return nil, fmt.Errorf("ratelimit: sender %q is configured twice", c.Key)
		}
		if !(c.PerSecond > 0) || math.IsInf(c.PerSecond, 0) {
			return nil, fmt.Errorf("ratelimit: sender %q: rate must be positive and finite, got %v", c.Key, c.PerSecond)
		}
		if c.Burst < 0 {
			return nil, fmt.Errorf("ratelimit: sender %q: burst must not be negative, got %d", c.Key, c.Burst)
		}
		if c.PerDay < 0 {
			return nil, fmt.Errorf("ratelimit: sender %q: daily quota must not be negative, got %d", c.Key, c.PerDay)
		}
		c.Burst = max(c.Burst, 1)
		if c.DayZone == nil {
			c.DayZone = time.UTC
		}
		if c.Channel == "" {
			c.Channel, _, _ = strings.Cut(c.Key, ":")
		}
		s.byKey[c.Key] = len(s.cfgs)
		s.cfgs = append(s.cfgs, c)
	}
	return s, nil
}

func (o Options) withDefaults() (Options, error) {
	if o.Decrease == 0 {
		o.Decrease = DefaultDecrease
	}
	if o.MinFraction == 0 {
		o.MinFraction = DefaultMinFraction
	}
	if o.Recovery == 0 {
		o.Recovery = DefaultRecovery
	}
	if o.Hold == 0 {
		o.Hold = DefaultHold
	}
	switch {
	case !(o.Decrease > 0 && o.Decrease <= 1):
		return o, fmt.Errorf("ratelimit: Decrease must be in (0, 1], got %v", o.Decrease)
	case !(o.MinFraction > 0 && o.MinFraction <= 1):
		return o, fmt.Errorf("ratelimit: MinFraction must be in (0, 1], got %v", o.MinFraction)
	case o.Recovery < 0:
		return o, fmt.Errorf("ratelimit: Recovery must not be negative, got %s", o.Recovery)
	case o.Hold < 0:
		return o, fmt.Errorf("ratelimit: Hold must not be negative, got %s", o.Hold)
	}
	return o, nil
}

// Config returns the sender's configuration (with defaults applied).
func (s *Senders) Config(key string) (SenderConfig, bool) {
	i, ok := s.byKey[key]
	if !ok {
		return SenderConfig{}, false
	}
	return s.cfgs[i], true
}

// priority levels as the scripts know them.
const (
	levelBulk = iota
	levelNormal
	levelHigh
	levelCrisis
)

func priorityLevel(p string) int {
	switch p {
	case "crisis":
		return levelCrisis
	case "high":
		return levelHigh
	case "bulk":
		return levelBulk
	}
	return levelNormal
}

var levelNames = [...]string{levelBulk: "bulk", levelNormal: "normal", levelHigh: "high", levelCrisis: "crisis"}

func stateKey(sender string) string { return "gw:snd:{" + sender + "}" }

// dayWindow returns the labels (YYYYMMDD) of the local days before, of and
// after now in loc, and the starts of those three days and of the one
// after (Unix µs). The script picks the day holding the server's clock, so
// a skew between this host and Redis, or a run across midnight, still
// counts on the right day; DST days of 23 or 25 hours are handled by
// time.Date.
func dayWindow(now time.Time, loc *time.Location) (labels [3]string, starts [4]int64) {
	y, m, d := now.In(loc).Date()
	for i := range 4 {
		starts[i] = time.Date(y, m, d-1+i, 0, 0, 0, 0, loc).UnixMicro()
		if i < 3 {
			labels[i] = time.Date(y, m, d-1+i, 12, 0, 0, 0, time.UTC).Format("20060102")
		}
	}
	return labels, starts
}

// senderKeys returns the state, lanes and the three day keys of a sender,
// and the day starts to pass as arguments.
func senderKeys(c SenderConfig, now time.Time) ([]string, [4]int64) {
	st := stateKey(c.Key)
	labels, starts := dayWindow(now, c.DayZone)
	return []string{st, st + ":lanes", st + ":day:" + labels[0], st + ":day:" + labels[1], st + ":day:" + labels[2]}, starts
}

// waitKey is the line of a priority of a sender: refused requests by slot.
func waitKey(sender string, level int) string { return stateKey(sender) + ":w:" + levelNames[level] }

// lineStale is how late past its slot a request in line may come back
// before its place is given up (its task was canceled or lost).
const lineStale = 10 * time.Second

// luaCommon is shared by the scripts: the server clock, the effective rate
// and the day holding the clock.
const luaCommon = `
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- effective rate: back from base (the rate set by the last throttle, at lt)
-- to the configured rate linearly over recovery µs; within [floor, rate].
local function effective(rate, minfrac, recovery, base, lt, now)
  local eff = rate
  base = tonumber(base)
  lt = tonumber(lt)
  if base and lt then
    local f = 1
    if recovery > 0 then f = (now - lt) / recovery end
    if f < 0 then f = 0 end
    if f < 1 then eff = base + (rate - base) * f end
  end
  if eff > rate then eff = rate end
  if eff < rate * minfrac then eff = rate * minfrac end
  return eff
end

-- the index (1..3) of the day holding now among starts s[1..4], and when it ends.
local function pick_day(now, s)
  local i = 2
  if now < s[2] then i = 1 elseif now >= s[3] then i = 3 end
  return i, s[i + 1]
end
`

// reserveScript: KEYS state, lanes, day-1, day, day+1, line. ARGV rate,
// burst, cost, level, lane, minfrac, recovery_us, perday, keep_ms, 4 day
// starts, request id ("" for none), stale_us, early_us.
// Returns {allowed, wait_us, reason} (reason 1 rate, 2 quota, 3 backoff).
var reserveScript = redis.NewScript(luaCommon + `
local now = clock()
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local level, lane = tonumber(ARGV[4]), ARGV[5]
local minfrac, recovery = tonumber(ARGV[6]), tonumber(ARGV[7])
local perday, keep = tonumber(ARGV[8]), tonumber(ARGV[9])
local starts = {tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])}

local h = redis.call('HMGET', KEYS[1], 'tat', 'base', 'lt', 'bu')
local eff = effective(rate, minfrac, recovery, h[2], h[3], now)
local interval = 1000000 / eff

local normal = burst - 0.25
local headroom = math.max(0.5, normal - 1)
if level == 1 then headroom = normal
elseif level == 2 then headroom = normal + math.max(1, eff * 0.5)
elseif level == 3 then headroom = normal + math.max(2, burst, eff * 2) end

-- forget a few lanes whose slots have all passed (bounded work per call)
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 16)
if #stale > 0 then redis.call('ZREM', KEYS[2], unpack(stale)) end

local di, day_end = pick_day(now, starts)
local day_key = KEYS[2 + di]
local tat = tonumber(h[1]) or now
if tat < now then tat = now end
local bu = tonumber(h[4]) or 0
local lead = headroom * interval

-- The line of this priority: requests refused earlier wait in it by slot;
-- entries whose slot is long past belong to requests that never came back.
local wkey, msg, stale = KEYS[6], ARGV[14], tonumber(ARGV[15])
local mine = nil
if msg ~= '' then
  redis.call('ZREMRANGEBYSCORE', wkey, '-inf', '(' .. (now - stale))
  mine = tonumber(redis.call('ZSCORE', wkey, msg))
end

-- reason, and the earliest TAT a refused request may be given
local reason, floor_tat = 0, tat
if perday > 0 and tonumber(redis.call('GET', day_key) or '0') + cost > perday then
  reason, floor_tat = 2, math.max(tat, math.max(day_end, bu, now + 1000000) + lead)
elseif bu > now then
  reason, floor_tat = 3, math.max(tat, bu + lead)
elseif tat - lead > now then
  reason = 1
elseif msg ~= '' then
  -- The sender has room now for this many requests; those in line with
  -- an earlier slot come first, however the task queue orders their
  -- return (it schedules in whole seconds: a line of a second's worth
  -- comes back at once, in an order of its own).
  local room = math.floor((now + lead - tat) / interval) + 1
  local ahead
  if mine then ahead = redis.call('ZCOUNT', wkey, '-inf', '(' .. mine)
  else ahead = redis.call('ZCOUNT', wkey, '-inf', now + lead) end
  if ahead >= room then reason = 1 end
end

if reason == 0 then
  if mine then redis.call('ZREM', wkey, msg) end
  local ntat = tat + cost * interval
  redis.call('HSET', KEYS[1], 'tat', ntat)
  local horizon = math.max(ntat, bu, (tonumber(h[3]) or 0) + recovery) - now
  redis.call('PEXPIRE', KEYS[1], math.ceil(horizon / 1000) + keep)
  redis.call('INCRBY', day_key, cost)
  redis.call('PEXPIREAT', day_key, math.ceil(day_end / 1000) + 3600000)
  return {1, 0, 0}
end

-- The lane holds, in the TAT's time, the slot of its next refused request.
-- Slots are rounded up to a grid of the configured interval shared by all
-- lanes, so requests of different lanes due at the same slot come back
-- together and compete on equal terms; the lane itself moves on unrounded,
-- so it keeps the effective pace on average.
local slot = mine
if not slot or slot < floor_tat - lead then
  -- a place in line: from the lane, and kept until admitted
  local f = tonumber(redis.call('ZSCORE', KEYS[2], lane)) or 0
  if f < floor_tat then f = floor_tat end
  local grid = 1000000 / rate
  local anchor = math.floor(now / 86400000000) * 86400000000
  slot = anchor + math.ceil((f - anchor) / grid - 0.0001) * grid
  local nxt = f + cost * interval
  redis.call('ZADD', KEYS[2], nxt, lane)
  local ttl = math.ceil((nxt - now) / 1000) + 60000
  if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
  if msg ~= '' then
    redis.call('ZADD', wkey, slot, msg)
    local wttl = math.ceil((slot + stale - now) / 1000) + 60000
    if redis.call('PTTL', wkey) < wttl then redis.call('PEXPIRE', wkey, wttl) end
  end
end
-- come back lead early: the request is admitted as soon as the TAT reaches
-- its slot, and a return up to lead late still finds it on schedule
return {0, math.max(math.ceil(slot - lead - tonumber(ARGV[16]) - now), 1), reason}
`)

// throttleScript: KEYS state. ARGV rate, decrease, minfrac, recovery_us,
// hold_us, retry_after_us, code, keep_ms. Returns 1 when the rate decreased.
var throttleScript = redis.NewScript(luaCommon + `
local now = clock()
local rate, decrease, minfrac = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local recovery, hold, retry = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local keep = tonumber(ARGV[8])

local h = redis.call('HMGET', KEYS[1], 'tat', 'base', 'lt', 'ld', 'bu')
local eff = effective(rate, minfrac, recovery, h[2], h[3], now)
local ld = tonumber(h[4])
local decreased = 0
if not ld or now - ld >= hold then
  eff = math.max(eff * decrease, rate * minfrac)
  ld = now
  decreased = 1
end
local bu = tonumber(h[5]) or 0
if retry > 0 and now + retry > bu then bu = now + retry end
redis.call('HSET', KEYS[1], 'base', eff, 'lt', now, 'ld', ld, 'code', ARGV[7], 'bu', bu)
redis.call('HINCRBY', KEYS[1], 'n', 1)
local horizon = math.max(tonumber(h[1]) or 0, bu, now + recovery) - now
redis.call('PEXPIRE', KEYS[1], math.ceil(horizon / 1000) + keep)
return decreased
`)

// statusScript: KEYS state, lanes, day-1, day, day+1. ARGV rate, minfrac,
// recovery_us, 4 day starts. Returns {now, effective, bu, lt, code, n,
// used, held}: held is how far (µs) the sends made ahead of time reach
// past now.
var statusScript = redis.NewScript(luaCommon + `
local now = clock()
local rate, minfrac, recovery = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local starts = {tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])}
local h = redis.call('HMGET', KEYS[1], 'base', 'lt', 'bu', 'code', 'n', 'tat')
local eff = effective(rate, minfrac, recovery, h[1], h[2], now)
local di = pick_day(now, starts)
local used = tonumber(redis.call('GET', KEYS[2 + di]) or '0')
local held = math.max(0, (tonumber(h[6]) or now) - now)
return {now, string.format('%.17g', eff), tonumber(h[3]) or 0, tonumber(h[2]) or 0, h[4] or '', tonumber(h[5]) or 0, used, math.floor(held)}
`)

// Reserve takes capacity for r on its sender, or refuses and says how long
// to wait before asking again (taking no capacity). Requests for senders
// that are not configured are always allowed.
//
// Waits are already spread (see Senders): re-schedule the request for
// exactly Wait, without adding jitter. A request that comes back more than
// headroom×interval after its Wait may find its slot taken and be refused
// again, so the scheduler's delay granularity (Asynq's
// DelayedTaskCheckInterval) should be small against the sender's interval,
// or Burst large enough to absorb it.
func (s *Senders) Reserve(ctx context.Context, r Request) (Decision, error) {
	i, ok := s.byKey[r.Sender]
	if !ok {
		return Decision{Allowed: true}, nil
	}
	c := s.cfgs[i]
	level := priorityLevel(r.Priority)
	keys, starts := senderKeys(c, time.Now())
	keys = append(keys, waitKey(c.Key, level))
	res, err := reserveScript.Run(ctx, s.rdb, keys,
		c.PerSecond, c.Burst, max(r.Cost, 1), level, levelNames[level]+"|"+r.Tenant,
		s.opts.MinFraction, s.opts.Recovery.Microseconds(), c.PerDay, stateKeep.Milliseconds(),
		starts[0], starts[1], starts[2], starts[3], r.ID, lineStale.Microseconds(), s.opts.ReturnEarly.Microseconds()).Int64Slice()
	if err != nil {
		return Decision{}, fmt.Errorf("ratelimit: reserve %q: %w", r.Sender, err)
	}
	if len(res) != 3 {
		return Decision{}, fmt.Errorf("ratelimit: reserve %q: unexpected reply %v", r.Sender, res)
	}
	if res[0] == 1 {
		return Decision{Allowed: true}, nil
	}
	d := Decision{Wait: time.Duration(res[1]) * time.Microsecond}
	switch res[2] {
	case 2:
		d.Reason = ReasonDailyQuota
	case 3:
		d.Reason = ReasonProviderBackoff
	default:
		d.Reason = ReasonRate
	}
	return d, nil
}

// Throttled reports that the provider throttled the sender (HTTP 429,
// Twilio 20429, 30001 or 45009, WeChat 45009 and the like): the effective
// rate is lowered (at most once per Options.Hold) and, when retryAfter is
// positive, every request is refused until it has passed. code is kept for
// Status. Unknown senders are ignored.
func (s *Senders) Throttled(ctx context.Context, sender string, retryAfter time.Duration, code string) error {
	i, ok := s.byKey[sender]
	if !ok {
		return nil
	}
	c := s.cfgs[i]
	err := throttleScript.Run(ctx, s.rdb, []string{stateKey(c.Key)},
		c.PerSecond, s.opts.Decrease, s.opts.MinFraction, s.opts.Recovery.Microseconds(),
		s.opts.Hold.Microseconds(), max(retryAfter, 0).Microseconds(), code, stateKeep.Milliseconds()).Err()
	if err != nil {
		return fmt.Errorf("ratelimit: throttled %q: %w", sender, err)
	}
	return nil
}

// Status returns the state of every configured sender, in configuration
// order.
func (s *Senders) Status(ctx context.Context) ([]SenderStatus, error) {
	out := make([]SenderStatus, 0, len(s.cfgs))
	for _, c := range s.cfgs {
		keys, starts := senderKeys(c, time.Now())
		res, err := statusScript.Run(ctx, s.rdb, keys, c.PerSecond, s.opts.MinFraction, s.opts.Recovery.Microseconds(),
			starts[0], starts[1], starts[2], starts[3]).Slice()
		if err != nil {
			return nil, fmt.Errorf("ratelimit: status %q: %w", c.Key, err)
		}
		st, err := parseStatus(c, res)
		if err != nil {
			return nil, fmt.Errorf("ratelimit: status %q: %w", c.Key, err)
		}
		out = append(out, st)
	}
	return out, nil
}

func parseStatus(c SenderConfig, res []any) (SenderStatus, error) {
	if len(res) != 8 {
		return SenderStatus{}, fmt.Errorf("unexpected reply %v", res)
	}
	ints := make([]int64, 0, 6)
	for _, j := range []int{0, 2, 3, 5, 6, 7} {
		n, ok := res[j].(int64)
		if !ok {
			return SenderStatus{}, fmt.Errorf("unexpected reply %v", res)
		}
		ints = append(ints, n)
	}
	effStr, _ := res[1].(string)
	eff, err := strconv.ParseFloat(effStr, 64)
	if err != nil {
		return SenderStatus{}, fmt.Errorf("unexpected effective rate %q", effStr)
	}
	code, _ := res[4].(string)
	now, bu, lt := ints[0], ints[1], ints[2]
	st := SenderStatus{
		Key: c.Key, Channel: c.Channel, ConfiguredPerSecond: c.PerSecond, EffectivePerSecond: eff,
		PerDay: c.PerDay, UsedToday: ints[4], LastThrottleCode: code, Throttles: ints[3],
	}
	if eff > 0 {
		held := float64(ints[5]) * eff / 1e6 // µs of sends at the effective interval
		st.Tokens = max(0, float64(c.Burst)-held)
	}
	if bu > now {
		t := time.UnixMicro(bu)
		st.BackoffUntil = &t
	}
	if lt > 0 {
		t := time.UnixMicro(lt)
		st.LastThrottleAt = &t
	}
	return st, nil
}
