package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"gocloud.dev/blob"
	"golang.org/x/mod/sumdb/tlog"
)

// Redis keys of a tenant's log (its records and tree hashes are in
// buckets: buckets.go). The tenant is the hash tag: the append script
// touches one slot on a Redis Cluster.
func sizeKey(tenant string) string     { return "gw:audit:{" + tenant + "}:size" }
func exportedKey(tenant string) string { return "gw:audit:{" + tenant + "}:exported" }

// trimmedKey holds the index below which every event has left Redis (it
// is read from the export).
func trimmedKey(tenant string) string { return "gw:audit:{" + tenant + "}:trimmed" }

// hashesTrimmedKey holds the export mark up to which the tree hashes no
// append needs have left Redis.
func hashesTrimmedKey(tenant string) string { return "gw:audit:{" + tenant + "}:hashes-trimmed" }
func exportLockKey(tenant string) string {
	return "gw:audit:{" + tenant + "}:export-lock"
}

// tenantsKey is the set of tenants that have a log.
const tenantsKey = "gw:audit:tenants"

// maxBatch bounds the events one append script writes.
const maxBatch = 256

// commitTimeout bounds the append of one batch, retries included.
const commitTimeout = 5 * time.Second

// appendScript appends a batch of records when the log still has the size
// the caller built its hashes for: KEYS size, starts, then the buckets the
// batch writes; ARGV the expected size, the number of records k, the
// number of bucket writes g and of bucket starts s, then g times a bucket
// (its KEYS index), m and m field-value pairs, then s times a time (ms)
// and a bucket number. It answers {1, new size}, or {0, actual size} when
// another process appended first.
var appendScript = redis.NewScript(`
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n ~= tonumber(ARGV[1]) then return {0, n} end
local k = tonumber(ARGV[2])
local a = 5
for i = 1, tonumber(ARGV[3]) do
  local m = tonumber(ARGV[a + 1])
  redis.call('HSET', KEYS[tonumber(ARGV[a])], unpack(ARGV, a + 2, a + 1 + 2 * m))
  a = a + 2 + 2 * m
end
for i = 1, tonumber(ARGV[4]) do
  redis.call('ZADD', KEYS[2], 'LT', ARGV[a], ARGV[a + 1])
  a = a + 2
end
redis.call('SET', KEYS[1], n + k)
return {1, n + k}
`)

// Log is the tenants' audit logs in Redis. Appends from one process are
// committed together (one script per tenant at a time, with every event
// that arrived meanwhile); appends from many processes are ordered by the
// script, which refuses a batch built on a size that is no longer the
// log's, so a tree is never forked.
type Log struct {
	// Export is the blob store the log is exported to, where Find reads
	// the events that have left Redis (nil: Find reads Redis only).
	Export *blob.Bucket

	cold   coldIndex
	rdb    redis.UniversalClient
	log    *slog.Logger
	now    func() time.Time
	queues sync.Map // tenant → *queue
	known  sync.Map // tenant → true once in tenantsKey
	failed atomic.Int64
}

// New returns the audit logs kept in rdb.
func New(rdb redis.UniversalClient, logger *slog.Logger) *Log {
	if logger == nil {
		logger = slog.Default()
	}
	return &Log{rdb: rdb, log: logger.With("comp", "audit"), now: time.Now}
}

// SetClock replaces time.Now (tests).
func (l *Log) SetClock(now func() time.Time) { l.now = now }

// Failures is how many events could not be appended since the process
// started (for a metric and an alert: each one is also logged as an error).
func (l *Log) Failures() int64 {
	if l == nil {
		return 0
	}
	return l.failed.Load()
}

type queue struct {
	mu      sync.Mutex
	batches []*batch
	running bool
	size    int64 // the log's size as last seen; -1 unknown
	// frontier holds the tree hashes the next append reads (the roots of
	// the complete subtrees of a log of size frontierAt), as this process
	// last wrote them: a process appending alone reads none from Redis.
	frontier   map[int64]tlog.Hash
	frontierAt int64
}

type batch struct {
	events []Event
	done   chan struct{}
	first  int64
	err    error
}

// ErrUnavailable wraps why an event could not be appended.
var ErrUnavailable = errors.New("audit log unavailable")

// Append adds an event to its tenant's log and returns its index once it
// is stored. Time is set when zero. An event that fails Check is refused.
func (l *Log) Append(ctx context.Context, e Event) (int64, error) {
	if err := e.Check(); err != nil {
		l.failed.Add(1)
		return 0, err
	}
	if e.Time.IsZero() {
		e.Time = l.now()
	}
	e.Time = e.Time.UTC().Truncate(time.Millisecond)
	q := l.queueOf(e.Tenant)
	q.mu.Lock()
	var b *batch
	if n := len(q.batches); n > 0 && len(q.batches[n-1].events) < maxBatch {
		b = q.batches[n-1]
	} else {
		b = &batch{done: make(chan struct{})}
		q.batches = append(q.batches, b)
	}
	pos := len(b.events)
	b.events = append(b.events, e)
	if !q.running {
		q.running = true
		go l.drain(e.Tenant, q)
	}
	q.mu.Unlock()
	select {
	case <-b.done:
	case <-ctx.Done():
		l.failed.Add(1)
		return 0, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	}
	if b.err != nil {
		l.failed.Add(1)
		return 0, fmt.Errorf("%w: %w", ErrUnavailable, b.err)
	}
	return b.first + int64(pos), nil
}

// Record appends an event the system made on its own (a send, a consent
// change): it never fails its caller, but an event it could not append is
// logged as an error and counted (Failures). Record on a nil Log does
// nothing.
func (l *Log) Record(ctx context.Context, e Event) {
	if l == nil {
		return
	}
	if _, err := l.Append(context.WithoutCancel(ctx), e); err != nil {
		l.log.Error("audit event not recorded", "tenant", e.Tenant, "action", e.Action, "object", e.Object, "err", err)
	}
}

func (l *Log) queueOf(tenant string) *queue {
	if q, ok := l.queues.Load(tenant); ok {
		return q.(*queue)
	}
	q, _ := l.queues.LoadOrStore(tenant, &queue{size: -1})
	return q.(*queue)
}

// drain commits the tenant's batches, one at a time, until none is left.
func (l *Log) drain(tenant string, q *queue) {
	for {
		q.mu.Lock()
		if len(q.batches) == 0 {
			q.running = false
			q.mu.Unlock()
			return
		}
		b := q.batches[0]
		q.batches = q.batches[1:]
		q.mu.Unlock()
		b.first, b.err = l.commit(tenant, q, b.events)
		close(b.done)
		// The buckets this batch filled are packed once its callers
		// have their answer.
		if from, to := bucketOf(b.first), bucketOf(b.first+int64(len(b.events))); b.err == nil && from < to {
			ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
			if err := l.pack(ctx, tenant, from, to); err != nil {
				l.log.Warn("full audit bucket not packed; the export packs it", "tenant", tenant, "err", err)
			}
			cancel()
		}
	}
}

// commit appends events at the end of the log, building their tree hashes
// on the size last seen and building again when another process appended
// first.
func (l *Log) commit(tenant string, q *queue, events []Event) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	if _, ok := l.known.Load(tenant); !ok {
		if err := l.rdb.SAdd(ctx, tenantsKey, tenant).Err(); err != nil {
			return 0, err
		}
		l.known.Store(tenant, true)
	}
	n := q.size
	// Redis failing over (no primary yet, a connection still on the old
	// one): the append is tried again, from the size Redis has, until
	// commitTimeout, so that a failover does not refuse reads meanwhile.
	warned := false
	again := func(err error) bool {
		q.size, n = -1, -1
		if ctx.Err() != nil {
			return false
		}
		if !warned {
			warned = true
			l.log.Warn("audit append failed; trying again until it can be written", "tenant", tenant, "err", err)
		}
		select {
		case <-time.After(100 * time.Millisecond):
			return true
		case <-ctx.Done():
			return false
		}
	}
	for attempt := 0; ; attempt++ {
		if n < 0 {
			v, err := l.rdb.Get(ctx, sizeKey(tenant)).Int64()
			if err != nil && !errors.Is(err, redis.Nil) {
				if again(err) {
					continue
				}
				return 0, err
			}
			n = v
		}
		var known map[int64]tlog.Hash
		if q.frontierAt == n {
			known = q.frontier
		}
		keys, args, fresh, known, err := l.build(ctx, tenant, n, events, known)
		if err != nil {
			if again(err) {
				continue
			}
			return 0, err
		}
		res, err := appendScript.Run(ctx, l.rdb, keys, args...).Int64Slice()
		if err != nil {
			if again(err) {
				continue
			}
			q.size = -1
			return 0, err
		}
		if res[0] == 1 {
			q.size = res[1]
			q.frontier, q.frontierAt = frontierOf(res[1], fresh, known), res[1]
			return n, nil
		}
		n = res[1]
		// Another process appended: build on its size, after a short
		// random pause so the processes do not collide again.
		select {
		case <-time.After(time.Duration(rand.Int64N(int64(time.Millisecond) * int64(min(attempt+1, 20))))):
		case <-ctx.Done():
			q.size = -1
			return 0, fmt.Errorf("append kept colliding: %w", ctx.Err())
		}
	}
}

// frontierOf is the frontier of a log of size n from the hashes an append
// wrote and those it knew, or nil when one is not among them.
func frontierOf(n int64, fresh, known map[int64]tlog.Hash) map[int64]tlog.Hash {
	out := map[int64]tlog.Hash{}
	for _, i := range frontier(n) {
		h, ok := fresh[i]
		if !ok {
			if h, ok = known[i]; !ok {
				return nil
			}
		}
		out[i] = h
	}
	return out
}

// build encodes events as records n, n+1… and computes the hashes each
// adds to the tree, reading the earlier ones it needs from known (the
// frontier of size n, read from Redis in one go when this process does
// not know it); it returns the append script's keys and arguments, the
// hashes it made and the frontier it built on.
func (l *Log) build(ctx context.Context, tenant string, n int64, events []Event, known map[int64]tlog.Hash) ([]string, []any, map[int64]tlog.Hash, map[int64]tlog.Hash, error) {
	if known == nil {
		idx := frontier(n)
		hs, err := l.readHashes(ctx, tenant, idx)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		known = make(map[int64]tlog.Hash, len(idx))
		for i, x := range idx {
			known[x] = hs[i]
		}
	}
	fresh := map[int64]tlog.Hash{}
	reader := tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(indexes))
		var missing []int64
		var at []int
		for i, x := range indexes {
			if h, ok := fresh[x]; ok {
				out[i] = h
				continue
			}
			if h, ok := known[x]; ok {
				out[i] = h
				continue
			}
			missing = append(missing, x)
			at = append(at, i)
		}
		if len(missing) == 0 {
			return out, nil
		}
		hs, err := l.readHashes(ctx, tenant, missing)
		if err != nil {
			return nil, err
		}
		for j, h := range hs {
			out[at[j]] = h
		}
		return out, nil
	})
	w := bucketWrites{tenant: tenant, keys: []string{sizeKey(tenant), startsKey(tenant)}, at: map[string]int{}}
	var starts []any
	for i, e := range events {
		e.Index = n + int64(i)
		rec := e.encode()
		stored, err := tlog.StoredHashes(e.Index, rec, reader)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		base := tlog.StoredHashIndex(0, e.Index)
		for j, h := range stored {
			fresh[base+int64(j)] = h
			w.add(hashBucketKey(tenant, bucketOf(base+int64(j))), base+int64(j), string(h[:]))
		}
		w.add(recordBucketKey(tenant, bucketOf(e.Index)), e.Index, string(rec))
		if i == 0 || e.Index%bucketSize == 0 {
			starts = append(starts, e.Time.UnixMilli(), bucketOf(e.Index))
		}
	}
	args := make([]any, 0, 4+2*len(w.groups)+len(starts)+4*len(events))
	args = append(args, n, len(events), len(w.groups), len(starts)/2)
	for _, g := range w.groups {
		args = append(args, g.key, len(g.kv)/2)
		args = append(args, g.kv...)
	}
	args = append(args, starts...)
	return w.keys, args, fresh, known, nil
}

// bucketWrites groups an append's fields by bucket, in the order first
// written.
type bucketWrites struct {
	tenant string
	keys   []string
	at     map[string]int // bucket key → its group
	groups []bucketWrite
}

type bucketWrite struct {
	key int // its KEYS index (from 1)
	kv  []any
}

func (w *bucketWrites) add(key string, field int64, value string) {
	g, ok := w.at[key]
	if !ok {
		w.keys = append(w.keys, key)
		g = len(w.groups)
		w.at[key] = g
		w.groups = append(w.groups, bucketWrite{key: len(w.keys)})
	}
	w.groups[g].kv = append(w.groups[g].kv, field, value)
}

// readHashes reads stored tree hashes of a tenant's log from Redis.
func (l *Log) readHashes(ctx context.Context, tenant string, idx []int64) ([]tlog.Hash, error) {
	vals, err := hashStore.read(ctx, l.rdb, tenant, idx)
	if err != nil {
		return nil, err
	}
	out := make([]tlog.Hash, len(vals))
	for i, v := range vals {
		if v == nil || len(*v) != tlog.HashSize {
			return nil, fmt.Errorf("tree hash %d of tenant %s is missing", idx[i], tenant)
		}
		copy(out[i][:], *v)
	}
	return out, nil
}

// trimmed is the index below which the tenant's events have left Redis.
func (l *Log) trimmed(ctx context.Context, tenant string) (int64, error) {
	n, err := l.rdb.Get(ctx, trimmedKey(tenant)).Int64()
	if isNil(err) {
		return 0, nil
	}
	return n, err
}

// Size is the number of events in a tenant's log.
func (l *Log) Size(ctx context.Context, tenant string) (int64, error) {
	n, err := l.rdb.Get(ctx, sizeKey(tenant)).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return n, err
}

// Tenants lists the tenants that have a log.
func (l *Log) Tenants(ctx context.Context) ([]string, error) {
	return l.rdb.SMembers(ctx, tenantsKey).Result()
}

// Records reads records [from, to) of a tenant's log as they were stored.
func (l *Log) Records(ctx context.Context, tenant string, from, to int64) ([][]byte, error) {
	if to <= from {
		return nil, nil
	}
	idx := make([]int64, 0, to-from)
	for i := from; i < to; i++ {
		idx = append(idx, i)
	}
	vals, err := recordStore.read(ctx, l.rdb, tenant, idx)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(vals))
	for i, v := range vals {
		if v == nil {
			return nil, fmt.Errorf("record %d of tenant %s is missing", from+int64(i), tenant)
		}
		out[i] = []byte(*v)
	}
	return out, nil
}

// HashReader reads a tenant's stored tree hashes from Redis.
func (l *Log) HashReader(ctx context.Context, tenant string) tlog.HashReader {
	return tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		if len(indexes) == 0 {
			return nil, nil
		}
		return l.readHashes(ctx, tenant, indexes)
	})
}

func newScript(src string) *redis.Script { return redis.NewScript(src) }

func isNil(err error) bool { return errors.Is(err, redis.Nil) }
