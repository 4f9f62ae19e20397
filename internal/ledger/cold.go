package ledger

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"
)

// The hot window and the archive. A message that reached a final status
// and is older than the hot window moves from Redis to the blob store
// (internal/archive); Get then finds it there (Cold), so the API answers
// for it as before.

// Cold is where messages moved out of Redis are found.
type Cold interface {
	// Find returns the tenant's archived message ("" for any tenant's),
	// or ErrNotFound (at once for a message too young to have been moved).
	Find(ctx context.Context, tenant, id string) (*Message, error)
}

// SetCold makes Get look in cold for a tenant's message missing from
// Redis.
func (l *Ledger) SetCold(cold Cold) { l.cold = cold }

// fromCold looks for a message Get did not find in Redis. Without a
// tenant (a patient's late reply or unsubscription names only the
// message) every tenant's archive is looked at.
func (l *Ledger) fromCold(ctx context.Context, tenant, id string) (*Message, error) {
	if l.cold == nil {
		return nil, ErrNotFound
	}
	return l.cold.Find(ctx, tenant, id)
}

// ArchiveCandidates returns, oldest first, up to limit of the tenant's
// messages made before `before` that are settled: final, or `sent` and
// made before sentBefore (a channel that reports nothing more, or a
// report that never came, leaves a message at sent for good). It looks at
// scan messages after the id `after` ("" from the oldest); last is the
// id to go on after when it looked at all of them without finding limit
// ("" once it reached the end): unsettled messages (scheduled far ahead,
// waiting for a report) are stepped over, not stopped at.
func (l *Ledger) ArchiveCandidates(ctx context.Context, tenant, after string, before, sentBefore time.Time, scan, limit int) (ids []string, last string, err error) {
	var cutoff, sentCutoff ulid.ULID
	_ = cutoff.SetTime(ulid.Timestamp(before))
	_ = sentCutoff.SetTime(ulid.Timestamp(sentBefore))
	lower := "-"
	if after != "" {
		lower = "(" + after
	}
	all, err := l.rdb.ZRangeByLex(ctx, tenantIndexKey(tenant), &redis.ZRangeBy{Min: lower, Max: "(" + cutoff.String(),
		Count: int64(scan)}).Result()
	if err != nil || len(all) == 0 {
		return nil, "", err
	}
	pipe := l.rdb.Pipeline()
	states := make([]*redis.SliceCmd, len(all))
	for i, id := range all {
		states[i] = pipe.HMGet(ctx, msgKey(id), "rank", "status")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, "", err
	}
	for i, id := range all {
		v := states[i].Val()
		rank, _ := v[0].(string)
		status, _ := v[1].(string)
		r, err := strconv.Atoi(rank)
		if err == nil && (r >= 3 || Status(status) == StatusSent && id < sentCutoff.String()) {
			ids = append(ids, id)
			if len(ids) == limit {
				return ids, "", nil
			}
		}
	}
	if len(all) == scan {
		last = all[len(all)-1]
	}
	return ids, last, nil
}

// GetMany reads the tenant's messages in one round trip; a message that is
// gone (or another tenant's) is left out.
func (l *Ledger) GetMany(ctx context.Context, tenant string, ids []string) ([]*Message, error) {
	pipe := l.rdb.Pipeline()
	hs := make([]*redis.MapStringStringCmd, len(ids))
	evs := make([]*redis.StringSliceCmd, len(ids))
	for i, id := range ids {
		hs[i] = pipe.HGetAll(ctx, msgKey(id))
		evs[i] = pipe.LRange(ctx, eventsKey(id), 0, -1)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	out := make([]*Message, 0, len(ids))
	for i, id := range ids {
		h := hs[i].Val()
		if len(h) == 0 || h["tenant"] != tenant {
			continue
		}
		m, err := messageOf(id, h)
		if err != nil {
			return nil, err
		}
		m.Events = historyOf(id, h, evs[i].Val())
		out = append(out, m)
	}
	return out, nil
}

// Forget removes archived messages from Redis: their records, histories,
// the tenant's index and the provider index. Forgetting one again changes
// nothing.
func (l *Ledger) Forget(ctx context.Context, tenant string, ms []*Message) error {
	pipe := l.rdb.Pipeline()
	for _, m := range ms {
		pipe.Del(ctx, msgKey(m.ID), eventsKey(m.ID))
		pipe.ZRem(ctx, tenantIndexKey(tenant), m.ID)
		if m.ProviderID != "" {
			pipe.Del(ctx, providerKey(m.Channel, m.ProviderID))
		}
		if AwaitsReport(m.Channel) {
			pipe.ZRem(ctx, awaitKey(m.Channel), m.ID)
		}
	}
	_, err := pipe.Exec(ctx)
	return err
}

// Known says whether a tenant's message exists, in Redis or, once moved,
// in the archive: a message must never be made again under an id whose
// record was archived.
func (l *Ledger) Known(ctx context.Context, tenant, id string) (bool, error) {
	ok, err := l.Exists(ctx, id)
	if err != nil || ok || l.cold == nil {
		return ok, err
	}
	_, err = l.cold.Find(ctx, tenant, id)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}
