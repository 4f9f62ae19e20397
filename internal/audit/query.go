package audit

import (
	"context"
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

// Find returns a tenant's events in time order, from Since, and whether
// more match after the last one returned. Events that have left Redis
// (GATEWAY_AUDIT_RETENTION) are read from the export first, in the log's
// order (its time order but for a batch committed a moment late), then
// those in Redis.
func (l *Log) Find(ctx context.Context, tenant string, q Query) ([]Event, bool, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, MaxLimit)
	var out []Event
	if l.Export != nil {
		below, err := l.trimmed(ctx, tenant)
		if err != nil {
			return nil, false, err
		}
		if below > 0 {
			if out, err = l.findCold(ctx, tenant, q, below, limit); err != nil {
				return nil, false, err
			}
			if len(out) > limit {
				return out[:limit], true, nil
			}
		}
	}
	lo, hi := "-inf", "+inf"
	if !q.Since.IsZero() {
		lo = strconv.FormatInt(q.Since.UnixMilli(), 10)
	}
	if !q.Until.IsZero() {
		hi = "(" + strconv.FormatInt(q.Until.UnixMilli(), 10)
	}
	const page = 500
	for offset := int64(0); ; offset += page {
		ids, err := l.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{Key: timesKey(tenant), Start: lo, Stop: hi, ByScore: true,
			Offset: offset, Count: page}).Result()
		if err != nil {
			return nil, false, err
		}
		if len(ids) == 0 {
			return out, false, nil
		}
		vals, err := l.rdb.HMGet(ctx, recordsKey(tenant), ids...).Result()
		if err != nil {
			return nil, false, err
		}
		for _, v := range vals {
			s, ok := v.(string)
			if !ok {
				continue // trimmed after its retention
			}
			e, err := Decode([]byte(s))
			if err != nil || (q.Action != "" && e.Action != q.Action) {
				continue
			}
			if len(out) == limit {
				return out, true, nil
			}
			out = append(out, e)
		}
		if len(ids) < page {
			return out, false, nil
		}
	}
}
