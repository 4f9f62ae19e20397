package audit

import (
	"context"
	"fmt"
	"sync"
	"time"

	"gocloud.dev/blob"
)

// An exported event that left Redis (after GATEWAY_AUDIT_RETENTION) is
// read from its records object in the export. The objects follow each
// other by index, and events are appended in time order but for the few
// seconds a batch may wait to be committed: coldSkew is the margin a
// search by time allows for that.
const coldSkew = time.Minute

// coldObjects bounds the objects whose first event's time a Log keeps in
// memory (objects are written once: the time never changes).
const coldObjects = 100000

// coldIndex remembers each records object's first event time, so that a
// search by time reads a handful of objects, once.
type coldIndex struct {
	mu    sync.Mutex
	first map[string]time.Time // object key → its first event's time
}

type coldObject struct {
	key   string
	first int64 // the index of its first record
}

// coldObjectsOf lists a tenant's records objects whose first record is
// below `below`, in index order.
func coldObjectsOf(ctx context.Context, b *blob.Bucket, tenant string, below int64) ([]coldObject, error) {
	names, err := list(ctx, b, prefix+tenant+"/records/")
	if err != nil {
		return nil, err
	}
	var out []coldObject
	for _, name := range names {
		if from, ok := parseIndex(name, ".jsonl"); ok && from < below {
			out = append(out, coldObject{key: prefix + tenant + "/records/" + name, first: from})
		}
	}
	return out, nil
}

func readColdObject(ctx context.Context, b *blob.Bucket, o coldObject) ([]Event, error) {
	data, err := b.ReadAll(ctx, o.key)
	if err != nil {
		return nil, err
	}
	lines := splitLines(data)
	out := make([]Event, 0, len(lines))
	for i, line := range lines {
		e, err := Decode(line)
		if err != nil || e.Index != o.first+int64(i) {
			return nil, fmt.Errorf("exported audit record %d is unreadable", o.first+int64(i))
		}
		out = append(out, e)
	}
	return out, nil
}

// firstTime is the time of an object's first event.
func (l *Log) firstTime(ctx context.Context, o coldObject) (time.Time, error) {
	l.cold.mu.Lock()
	t, ok := l.cold.first[o.key]
	l.cold.mu.Unlock()
	if ok {
		return t, nil
	}
	evs, err := readColdObject(ctx, l.Export, o)
	if err != nil || len(evs) == 0 {
		return time.Time{}, fmt.Errorf("exported audit records %s: %w", o.key, err)
	}
	l.cold.mu.Lock()
	if l.cold.first == nil || len(l.cold.first) >= coldObjects {
		l.cold.first = map[string]time.Time{}
	}
	l.cold.first[o.key] = evs[0].Time
	l.cold.mu.Unlock()
	return evs[0].Time, nil
}

// findCold returns the events of [0, below) that q selects, in log order,
// at most limit+1 of them (one more says more match).
func (l *Log) findCold(ctx context.Context, tenant string, q Query, below int64, limit int) ([]Event, error) {
	objs, err := coldObjectsOf(ctx, l.Export, tenant, below)
	if err != nil || len(objs) == 0 {
		return nil, err
	}
	start := 0
	if !q.Since.IsZero() {
		// The first object that starts at or after Since (less the skew);
		// its predecessor may hold events from Since on.
		from := q.Since.Add(-coldSkew)
		lo, hi := 0, len(objs)
		for lo < hi {
			mid := (lo + hi) / 2
			t, err := l.firstTime(ctx, objs[mid])
			if err != nil {
				return nil, err
			}
			if t.Before(from) {
				lo = mid + 1
			} else {
				hi = mid
			}
		}
		start = max(lo-1, 0)
	}
	var out []Event
	for _, o := range objs[start:] {
		evs, err := readColdObject(ctx, l.Export, o)
		if err != nil {
			return nil, err
		}
		for _, e := range evs {
			if e.Index >= below || (!q.Until.IsZero() && !e.Time.Before(q.Until.Add(coldSkew))) {
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

// selects reports whether q selects e.
func (q Query) selects(e Event) bool {
	return (q.Since.IsZero() || !e.Time.Before(q.Since)) && (q.Until.IsZero() || e.Time.Before(q.Until)) &&
		(q.Action == "" || e.Action == q.Action)
}
