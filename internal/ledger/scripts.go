package ledger

import "github.com/redis/go-redis/v9"

// pushLua appends an event to a message's history: the record's ev field,
// one event a line (JSON never holds a raw newline), so the history costs
// no key of its own and stays inside the record's listpack.
const pushLua = `
local function push(k, e)
  local cur = redis.call('HGET', k, 'ev')
  if cur then redis.call('HSET', k, 'ev', cur .. '\n' .. e) else redis.call('HSET', k, 'ev', e) end
end
`

// historyScript is a script that may append to a history (push).
func historyScript(src string) *redis.Script { return redis.NewScript(pushLua + src) }

// All keys of one message share the hash tag {id}, so every script below
// touches one Redis Cluster slot; the provider-id index (keyed by the
// provider's id) and the tenant index are written by separate commands. Fields of the message hash:
//   doc         JSON of the immutable request (channel, to, body, …; the
//               tenant and created_at are the fields of those names)
//   tenant      owning tenant
//   created_at  ms timestamp of creation (absent: its id's time, which it
//               is for most records; this version still always writes it)
//   status      current Status; rank its Rank()
//   attempts    provider attempts started (absent: none; a new record
//               has none)
//   provider_id the provider's id once it accepted the message
//   inflight_at ms timestamp of an attempt whose outcome is not yet known
//   err_code, err_msg  the last error
//   ps:<status> "1": a provider status of the current provider id already
//               applied (callback replays); a redial clears them (records of
//               earlier versions have ps:<provider id>:<status>, still checked)
//   updated_at  ms timestamp of the last change (absent: created_at, as in
//               a new record)
//   ev          the history: its events' JSON (storedEvent), one a line,
//               oldest first
//               (messages of earlier versions may still have theirs in a
//               list, KEYS[2], read before it; no script writes there now)

// createScript: KEYS msg, events ARGV doc, tenant, status, rank, now, ttlms, event, broadcast link ("" none)
var createScript = historyScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'doc', ARGV[1], 'tenant', ARGV[2], 'status', ARGV[3], 'rank', ARGV[4],
  'created_at', ARGV[5])
if ARGV[8] and ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'bc', ARGV[8]) end
push(KEYS[1], ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
`)

// claimScript decides whether a worker may call the provider now.
// KEYS msg, events  ARGV now, grace_ms, event_json_prefix
// Returns {outcome, a, b, doc}:
//
//	{"missing"}                      the record expired or never existed
//	{"final", status}                nothing to do
//	{"accepted", provider_id}        the provider already has it: never send again
//	{"unconfirmed", wait_ms}         an earlier attempt's outcome is unknown: wait for its callback
//	{"go", attempts, status, doc, redials, throttles, inflight_at, tenant, created_at}
//	                                 the caller owns this attempt
var claimScript = historyScript(`
local h = redis.call('HMGET', KEYS[1], 'status', 'rank', 'provider_id', 'inflight_at', 'attempts', 'doc', 'redials', 'throttles',
  'tenant', 'created_at')
if not h[1] then return {'missing'} end
if tonumber(h[2]) >= 3 then return {'final', h[1]} end
if h[3] and h[3] ~= '' then return {'accepted', h[3]} end
local now = tonumber(ARGV[1])
if h[4] and h[4] ~= '' then
  local waited = now - tonumber(h[4])
  if waited < tonumber(ARGV[2]) then return {'unconfirmed', tostring(tonumber(ARGV[2]) - waited)} end
end
local attempts = (tonumber(h[5]) or 0) + 1
redis.call('HSET', KEYS[1], 'attempts', attempts, 'inflight_at', ARGV[1], 'updated_at', ARGV[1])
if tonumber(h[2]) < 1 then redis.call('HSET', KEYS[1], 'status', 'sending', 'rank', 1) end
local ev = cjson.decode(ARGV[3])
ev['n'] = attempts
if h[4] and h[4] ~= '' then ev['d'] = 'previous attempt unconfirmed after grace period; sending again' end
push(KEYS[1], cjson.encode(ev))
return {'go', tostring(attempts), h[1], h[6], h[7] or '0', h[8] or '0', h[4] or '', h[9] or '', h[10] or ''}
`)

// acceptedScript records the provider's id. KEYS msg, events
// ARGV provider_id, now, event
// Returns 0 unknown message, -1 another provider id is recorded, 1 recorded.
var acceptedScript = historyScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local h = redis.call('HMGET', KEYS[1], 'rank', 'provider_id')
if h[2] and h[2] ~= '' and h[2] ~= ARGV[1] then return -1 end
redis.call('HSET', KEYS[1], 'provider_id', ARGV[1], 'updated_at', ARGV[2])
redis.call('HDEL', KEYS[1], 'inflight_at')
if tonumber(h[1]) < 2 then redis.call('HSET', KEYS[1], 'status', 'sent', 'rank', 2) end
if not h[2] or h[2] == '' then push(KEYS[1], ARGV[3]) end
return 1
`)

// attemptFailedScript records a failed attempt. KEYS msg, events
// ARGV now, code, message, final_status (” while retries remain), keep_inflight(0/1), event, throttled(0/1)
var attemptFailedScript = historyScript(`
local h = redis.call('HMGET', KEYS[1], 'rank', 'provider_id')
if not h[1] then return 0 end
if tonumber(h[1]) >= 3 or (h[2] and h[2] ~= '') then return 0 end
redis.call('HSET', KEYS[1], 'err_code', ARGV[2], 'err_msg', ARGV[3], 'updated_at', ARGV[1])
if ARGV[5] == '0' or ARGV[4] ~= '' then redis.call('HDEL', KEYS[1], 'inflight_at') end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'status', ARGV[4], 'rank', 3) end
push(KEYS[1], ARGV[6])
if ARGV[7] == '1' then redis.call('HINCRBY', KEYS[1], 'throttles', 1) end
return 1
`)

// providerStatusScript applies a provider's status report. KEYS msg, events
// ARGV provider_id, status, rank, provider_status, code, message, now, event
// Returns {outcome, ttl, bc, tenant, rank}: outcome 0 unknown message, -1
// provider id mismatch, 1 status changed, 2 recorded as an event only
// (late or out of order), 3 duplicate ignored; ttl > 0 when this report
// revealed the provider id (the caller then writes the provider index);
// bc the broadcast link, tenant the message's tenant and rank its status
// rank after the report.
var providerStatusScript = historyScript(`
local h = redis.call('HMGET', KEYS[1], 'rank', 'provider_id', 'bc', 'tenant')
if not h[1] then return {0, 0} end
local bc, tenant, rank = h[3] or '', h[4] or '', tonumber(h[1])
if h[2] and h[2] ~= '' and h[2] ~= ARGV[1] then return {-1, 0, bc, tenant, rank} end
if redis.call('HEXISTS', KEYS[1], 'retired:' .. ARGV[1]) == 1 then
  -- a late report about an earlier call that was redialled: history only
  push(KEYS[1], ARGV[8])
  return {2, 0, bc, tenant, rank}
end
if redis.call('HEXISTS', KEYS[1], 'ps:' .. ARGV[1] .. ':' .. ARGV[4]) == 1 then return {3, 0, bc, tenant, rank} end
local mark = 'ps:' .. ARGV[4]
if redis.call('HSETNX', KEYS[1], mark, 1) == 0 then return {3, 0, bc, tenant, rank} end
local ttl = 0
if not h[2] or h[2] == '' then
  redis.call('HSET', KEYS[1], 'provider_id', ARGV[1])
  redis.call('HDEL', KEYS[1], 'inflight_at')
  ttl = math.max(redis.call('PTTL', KEYS[1]), 1)
end
push(KEYS[1], ARGV[8])
redis.call('HSET', KEYS[1], 'updated_at', ARGV[7])
if rank < 3 and tonumber(ARGV[3]) > rank then
  redis.call('HSET', KEYS[1], 'status', ARGV[2], 'rank', ARGV[3])
  if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'err_code', ARGV[5], 'err_msg', ARGV[6]) end
  return {1, ttl, bc, tenant, tonumber(ARGV[3])}
end
return {2, ttl, bc, tenant, rank}
`)

// cancelScript cancels a tenant's message the provider does not have.
// KEYS msg, events  ARGV tenant, now, event
// Returns {"ok"}, {"missing"} or {"conflict", status, reason}.
var cancelScript = historyScript(`
local h = redis.call('HMGET', KEYS[1], 'tenant', 'status', 'rank', 'provider_id', 'inflight_at')
if not h[1] or h[1] ~= ARGV[1] then return {'missing'} end
if tonumber(h[3]) >= 3 then return {'conflict', h[2], 'final'} end
if h[4] and h[4] ~= '' then return {'conflict', h[2], 'handed'} end
if h[5] and h[5] ~= '' then return {'conflict', h[2], 'inflight'} end
redis.call('HSET', KEYS[1], 'status', 'canceled', 'rank', 3, 'updated_at', ARGV[2])
push(KEYS[1], ARGV[3])
return {'ok'}
`)

// deferScript holds back a message no provider has (or a call to be
// placed again): KEYS msg, events
// ARGV now, until, event. Returns 1 deferred, 0 final, handed over or unknown.
var deferScript = historyScript(`
local h = redis.call('HMGET', KEYS[1], 'rank', 'provider_id', 'inflight_at', 'deferred_until', 'status')
if not h[1] then return 0 end
if tonumber(h[1]) >= 3 or (h[2] and h[2] ~= '') or (h[3] and h[3] ~= '') then return 0 end
if h[4] == ARGV[2] then return 1 end
-- a queued message becomes scheduled; a retry, or a call to be placed
-- again after no answer, keeps its status: the event says why it waits
local ev = ARGV[3]
if tonumber(h[1]) == 0 then
  redis.call('HSET', KEYS[1], 'status', 'scheduled')
else
  local e = cjson.decode(ev)
  e['s'] = h[5]
  ev = cjson.encode(e)
end
redis.call('HSET', KEYS[1], 'deferred_until', ARGV[2], 'updated_at', ARGV[1])
push(KEYS[1], ev)
return 1
`)

// redialScript retires the provider attempt of a message whose call was
// not answered, so the message can be sent again (a new call). KEYS msg,
// events  ARGV provider_id, max_redials, now, event_retry, event_final, err_code, err_msg
// Returns 1 redial scheduled, 0 no redials left (the message is now
// undelivered), -1 unknown message or another provider id, 2 duplicate.
var redialScript = historyScript(`
local h = redis.call('HMGET', KEYS[1], 'rank', 'provider_id', 'redials')
if not h[1] then return -1 end
if redis.call('HEXISTS', KEYS[1], 'retired:' .. ARGV[1]) == 1 then return 2 end
if h[2] ~= ARGV[1] then return -1 end
if tonumber(h[1]) >= 3 then return 2 end
local n = tonumber(h[3] or '0')
redis.call('HSET', KEYS[1], 'err_code', ARGV[6], 'err_msg', ARGV[7])
if n >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'status', 'undelivered', 'rank', 3, 'updated_at', ARGV[3])
  push(KEYS[1], ARGV[5])
  return 0
end
redis.call('HSET', KEYS[1], 'redials', n + 1, 'provider_id', '', 'retired:' .. ARGV[1], 1, 'updated_at', ARGV[3])
-- the next call's reports are marked afresh
for _, k in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(k, 1, 3) == 'ps:' then redis.call('HDEL', KEYS[1], k) end
end
push(KEYS[1], ARGV[4])
return 1
`)

// noteScript appends an event, and stores a field when given. KEYS msg, events
// ARGV event, field, value. Returns 0 for an unknown message.
var noteScript = historyScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
push(KEYS[1], ARGV[1])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], ARGV[2], ARGV[3]) end
return 1
`)

// idemScript claims an idempotency key. KEYS idem ARGV id, body_hash, ttl_ms
// Returns {id, hash} of the first claim (which may be this one).
var idemScript = redis.NewScript(`
local cur = redis.call('HMGET', KEYS[1], 'id', 'hash')
if cur[1] then return cur end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'hash', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {ARGV[1], ARGV[2]}
`)
