package ledger

import (
	"context"
)

// unclaimScript gives back an attempt a worker claimed but never began.
// KEYS msg, events  ARGV attempt, now, event
// Returns 1 given back, 0 when the attempt is no longer the message's
// current, unanswered one (another worker's, or the provider answered).
var unclaimScript = historyScript(`
local h = redis.call('HMGET', KEYS[1], 'attempts', 'provider_id', 'inflight_at')
if not h[1] or tonumber(h[1]) ~= tonumber(ARGV[1]) then return 0 end
if (h[2] and h[2] ~= '') or not h[3] or h[3] == '' then return 0 end
redis.call('HSET', KEYS[1], 'attempts', tonumber(ARGV[1]) - 1, 'updated_at', ARGV[2])
redis.call('HDEL', KEYS[1], 'inflight_at')
push(KEYS[1], ARGV[3])
return 1
`)

// Unclaim gives back the attempt a Claim started when the worker did not
// call the provider after all (its claim could not be confirmed on the
// replicas): the attempt is not counted, and the next claim needs no
// grace period. reason goes into the message's history.
func (l *Ledger) Unclaim(ctx context.Context, id string, attempt int, reason string) error {
	now := l.now().UTC()
	ev := eventJSON(id, Event{Status: StatusSending, At: now, Attempt: attempt, Detail: reason})
	return unclaimScript.Run(ctx, l.rdb, []string{msgKey(id), eventsKey(id)}, attempt, ms(now), ev).Err()
}
