package consent

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// SourceErasure is the source of an opt-out recorded by an erasure: a
// possible opt-out still unresolved when its reply was erased.
const SourceErasure = "erasure"

// eraseStateScript keeps an identity's consent under its hashed key only:
// the identity in clear goes, the state and the time of each change stay,
// and the evidence of each change loses the patient's quoted words.
// KEYS state, state log ARGV erased_ms, scrubbed log entries… (the first n
// of the log, n = #ARGV - 1).
var eraseStateScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[1], 'identity')
redis.call('HSET', KEYS[1], 'erased', ARGV[1])
for i = 2, #ARGV do redis.call('LSET', KEYS[2], i - 2, ARGV[i]) end
return 1
`)

// scrubEvidence keeps what identifies the proof of a change (the inbound
// message's provider id, the provider's error code, staff's note) and
// drops the patient's own words quoted after it.
func scrubEvidence(e string) string {
	if i := strings.Index(e, `: "`); i >= 0 {
		return e[:i] + ": [erased]"
	}
	return e
}

// Erase forgets the tenant's identities while keeping their consent: each
// state stays under its hashed key (opted out or in, since when, each
// change's time, source and evidence without the patient's words), so an
// opt-out given before is still honoured for the same address after the
// erasure, but the address itself is no longer stored, and the state is
// no longer in Export. A possible opt-out of the identities still
// unresolved is taken as an opt-out (staff can no longer read the erased
// reply, and a wish to stop must not be lost); every possible opt-out of
// theirs is then removed. Erasing again changes nothing more.
func (l *Ledger) Erase(ctx context.Context, tenant string, ids []Identity) error {
	want := map[Identity]bool{}
	for _, id := range ids {
		want[Normalise(id)] = true
	}
	// Possible opt-outs first: an unresolved one becomes an opt-out.
	all, err := l.rdb.HGetAll(ctx, possibleKey(tenant)).Result()
	if err != nil {
		return err
	}
	for rid, raw := range all {
		var p PossibleOptOut
		if json.Unmarshal([]byte(raw), &p) != nil || !want[Normalise(p.From)] {
			continue
		}
		if p.Outcome == "" {
			if _, err := l.Set(ctx, tenant, p.From, true, SourceErasure, "possible opt-out "+rid+" unresolved when the patient's data was erased"); err != nil {
				return err
			}
		}
		pipe := l.rdb.TxPipeline()
		pipe.ZRem(ctx, openKey(tenant), rid)
		pipe.HDel(ctx, possibleKey(tenant), rid)
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
	}
	now := strconv.FormatInt(l.now().UnixMilli(), 10)
	for id := range want {
		key := stateKey(tenant, id)
		raw, err := l.rdb.LRange(ctx, key+":log", 0, -1).Result()
		if err != nil {
			return err
		}
		args := []any{now}
		for _, r := range raw {
			var c Change
			if json.Unmarshal([]byte(r), &c) != nil {
				c = Change{At: time.Time{}, Evidence: "[erased]"}
			}
			c.Evidence = scrubEvidence(c.Evidence)
			b, _ := json.Marshal(c)
			args = append(args, string(b))
		}
		if err := eraseStateScript.Run(ctx, l.rdb, []string{key, key + ":log"}, args...).Err(); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
	}
	return nil
}
