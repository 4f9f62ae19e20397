package ledger

import (
	"context"
	"encoding/json"
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
// messages made before `before` that have reached a final status, among
// the scan oldest of its messages.
func (l *Ledger) ArchiveCandidates(ctx context.Context, tenant string, before time.Time, scan, limit int) ([]string, error) {
	var cutoff ulid.ULID
	_ = cutoff.SetTime(ulid.Timestamp(before))
	ids, err := l.rdb.ZRangeByLex(ctx, tenantIndexKey(tenant), &redis.ZRangeBy{Min: "-", Max: "(" + cutoff.String(),
		Count: int64(scan)}).Result()
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	pipe := l.rdb.Pipeline()
	ranks := make([]*redis.StringCmd, len(ids))
	for i, id := range ids {
		ranks[i] = pipe.HGet(ctx, msgKey(id), "rank")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	var out []string
	for i, id := range ids {
		if r, err := strconv.Atoi(ranks[i].Val()); err == nil && r >= 3 {
			out = append(out, id)
			if len(out) == limit {
				break
			}
		}
	}
	return out, nil
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
		for _, raw := range evs[i].Val() {
			var e Event
			if json.Unmarshal([]byte(raw), &e) == nil {
				m.Events = append(m.Events, e)
			}
		}
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
