package audit

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Query selects a tenant's events.
type Query struct {
	// Since and Until bound the events' time: Since ≤ time < Until (zero:
	// unbounded).
	Since, Until time.Time
	// Action keeps only events of that action ("" for all).
	Action string
	// Limit is the most events returned (0: 100).
	Limit int
}

// MaxLimit bounds Query.Limit.
const MaxLimit = 1000

// Find returns a tenant's events from Since in the log's order (its time
// order but for a batch committed a moment late), and whether more match
// after the last one returned. Events that have left Redis
// (GATEWAY_AUDIT_RETENTION) are read from the export first, then those in
// Redis.
func (l *Log) Find(ctx context.Context, tenant string, q Query) ([]Event, bool, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, MaxLimit)
	below, err := l.trimmed(ctx, tenant)
	if err != nil {
		return nil, false, err
	}
	var out []Event
	if l.Export != nil {
		if below > 0 {
			if out, err = l.findCold(ctx, tenant, q, below, limit); err != nil {
				return nil, false, err
			}
			if len(out) > limit {
				return out[:limit], true, nil
			}
		}
	}
	hot, err := l.findHot(ctx, tenant, q, below, limit-len(out))
	if err != nil {
		return nil, false, err
	}
	out = append(out, hot...)
	if len(out) > limit {
		return out[:limit], true, nil
	}
	return out, false, nil
}

// findPage is how many events Find reads from Redis at a time.
const findPage = 8 * bucketSize

// findHot returns the events still in Redis that q selects, in log
// order, at most limit+1 of them (one more says more match). A search
// from a time starts at the last bucket whose first event is older than
// it by more than coldSkew; from is the trim mark.
func (l *Log) findHot(ctx context.Context, tenant string, q Query, from int64, limit int) ([]Event, error) {
	size, err := l.Size(ctx, tenant)
	if err != nil {
		return nil, err
	}
	if !q.Since.IsZero() {
		bs, err := l.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{Key: startsKey(tenant), ByScore: true, Rev: true,
			Start: "(" + strconv.FormatInt(q.Since.Add(-coldSkew).UnixMilli(), 10), Stop: "-inf", Count: 1}).Result()
		if err != nil {
			return nil, err
		}
		if len(bs) == 1 {
			b, err := strconv.ParseInt(bs[0], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("bucket %q of tenant %s's audit log is not a number", bs[0], tenant)
			}
			from = max(from, b*bucketSize)
		}
	}
	var out []Event
	for ; from < size; from += findPage {
		idx := make([]int64, 0, findPage)
		for i := from; i < min(size, from+findPage); i++ {
			idx = append(idx, i)
		}
		recs, err := recordStore.read(ctx, l.rdb, tenant, idx)
		if err != nil {
			return nil, err
		}
		for _, r := range recs {
			if r == nil {
				continue // trimmed after its retention meanwhile
			}
			e, err := Decode([]byte(*r))
			if err != nil {
				continue
			}
			if !q.Until.IsZero() && !e.Time.Before(q.Until.Add(coldSkew)) {
				return out, nil
			}
			if q.selects(e) {
				if out = append(out, e); len(out) > limit {
					return out, nil
				}
			}
		}
	}
	return out, nil
}
