package audit

import (
	"bytes"
	"compress/flate"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"

	"github.com/redis/go-redis/v9"
)

// A tenant's records and tree hashes are kept in Redis in buckets of
// bucketSize: hashes whose field is the record's (or stored hash's) index.
// A bucket that small stays a listpack (hash-max-listpack-entries is 128
// by default; hash-max-listpack-value 1024 where the gateway runs), about
// a record's own length an event where one hash field each took about
// three times as much. A search by time finds its first bucket in
// startsKey: each bucket's number scored by the time of its first event.
const bucketSize = 64

func bucketOf(i int64) int64 { return i / bucketSize }

func recordBucketKey(tenant string, b int64) string {
	return "gw:audit:{" + tenant + "}:r:" + strconv.FormatInt(b, 10)
}

// packedBucketKey holds a full record bucket once packed: its records in
// index order, one a line, deflated into one string. The records of an
// event log differ in little more than their ids and times, so a packed
// bucket takes about a fifth of the listpack it replaces.
func packedBucketKey(tenant string, b int64) string {
	return "gw:audit:{" + tenant + "}:z:" + strconv.FormatInt(b, 10)
}

func hashBucketKey(tenant string, b int64) string {
	return "gw:audit:{" + tenant + "}:h:" + strconv.FormatInt(b, 10)
}

// startsKey scores each record bucket by its first event's time (ms).
func startsKey(tenant string) string { return "gw:audit:{" + tenant + "}:starts" }

// The layout before the buckets: one hash of every record, one of every
// tree hash, and a sorted set of every event's time. Reads fall back to
// them and upgrade moves what they hold into buckets.
func legacyRecordsKey(tenant string) string { return "gw:audit:{" + tenant + "}:records" }
func legacyHashesKey(tenant string) string  { return "gw:audit:{" + tenant + "}:hashes" }
func legacyTimesKey(tenant string) string   { return "gw:audit:{" + tenant + "}:times" }

// store names one of the two kinds of bucketed fields.
type store struct {
	bucket  func(tenant string, b int64) string
	legacy  func(tenant string) string
	records bool // the records (values are events), not the tree hashes
	// packed names a full bucket's packed form (records only: tree
	// hashes do not compress).
	packed func(tenant string, b int64) string
}

var (
	recordStore = store{recordBucketKey, legacyRecordsKey, true, packedBucketKey}
	hashStore   = store{hashBucketKey, legacyHashesKey, false, nil}
)

// read reads fields idx of a tenant's store, one HMGET a bucket in one
// round trip; a field not found is nil. A field still in the legacy hash
// is read from there; one read neither place is read from its bucket once
// more, as upgrade may have moved it in between (it writes the bucket
// before it removes the legacy field, in one transaction).
func (s store) read(ctx context.Context, rdb redis.UniversalClient, tenant string, idx []int64) ([]*string, error) {
	out := make([]*string, len(idx))
	if err := s.readBuckets(ctx, rdb, tenant, idx, out); err != nil {
		return nil, err
	}
	missing := missingOf(out)
	if len(missing) == 0 {
		return out, nil
	}
	fields := make([]string, len(missing))
	for i, at := range missing {
		fields[i] = strconv.FormatInt(idx[at], 10)
	}
	vals, err := rdb.HMGet(ctx, s.legacy(tenant), fields...).Result()
	if err != nil {
		return nil, err
	}
	for i, v := range vals {
		if str, ok := v.(string); ok {
			out[missing[i]] = &str
		}
	}
	if missing = missingOf(out); len(missing) == 0 {
		return out, nil
	}
	again := make([]int64, len(missing))
	for i, at := range missing {
		again[i] = idx[at]
	}
	found := make([]*string, len(again))
	if err := s.readBuckets(ctx, rdb, tenant, again, found); err != nil {
		return nil, err
	}
	for i, v := range found {
		out[missing[i]] = v
	}
	return out, nil
}

func (s store) readBuckets(ctx context.Context, rdb redis.UniversalClient, tenant string, idx []int64, out []*string) error {
	type group struct {
		b      int64
		at     []int
		cmd    *redis.SliceCmd
		packed *redis.StringCmd
	}
	var groups []*group
	byBucket := map[int64]*group{}
	fields := map[*group][]string{}
	for i, x := range idx {
		g := byBucket[bucketOf(x)]
		if g == nil {
			g = &group{b: bucketOf(x)}
			byBucket[bucketOf(x)] = g
			groups = append(groups, g)
		}
		g.at = append(g.at, i)
		fields[g] = append(fields[g], strconv.FormatInt(x, 10))
	}
	if len(groups) == 0 {
		return nil
	}
	// A bucket is read in both its forms in the same round trip: pack
	// writes the packed form before it removes the bucket, in one script,
	// so one of the two holds every record the bucket held.
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for b, g := range byBucket {
			g.cmd = p.HMGet(ctx, s.bucket(tenant, b), fields[g]...)
			if s.packed != nil {
				g.packed = p.Get(ctx, s.packed(tenant, b))
			}
		}
		return nil
	})
	if err != nil && !isNil(err) {
		return err
	}
	for _, g := range groups {
		if err := g.cmd.Err(); err != nil {
			return err
		}
		var unpacked []string
		for j, v := range g.cmd.Val() {
			if str, ok := v.(string); ok {
				out[g.at[j]] = &str
				continue
			}
			if g.packed == nil || isNil(g.packed.Err()) {
				continue
			}
			if unpacked == nil {
				raw, err := g.packed.Bytes()
				if err != nil {
					return err
				}
				if unpacked, err = unpack(raw); err != nil {
					return fmt.Errorf("packed bucket %d of tenant %s: %w", g.b, tenant, err)
				}
			}
			rec := unpacked[idx[g.at[j]]-g.b*bucketSize]
			out[g.at[j]] = &rec
		}
	}
	return nil
}

// pack packs full record buckets [from, to) of a tenant's log that are
// still listpacks. A bucket with a record missing (trimmed) is left as it
// is. Failing leaves a bucket unpacked, which only takes more memory: the
// export packs it later (packFull).
func (l *Log) pack(ctx context.Context, tenant string, from, to int64) error {
	var errs []error
	for b := from; b < to; b++ {
		all, err := l.rdb.HGetAll(ctx, recordBucketKey(tenant, b)).Result()
		if err != nil {
			return err
		}
		if len(all) != bucketSize {
			continue
		}
		recs := make([][]byte, bucketSize)
		for f, v := range all {
			x, err := strconv.ParseInt(f, 10, 64)
			if err != nil || bucketOf(x) != b || recs[x-b*bucketSize] != nil {
				return fmt.Errorf("record bucket %d of tenant %s has a field %q", b, tenant, f)
			}
			recs[x-b*bucketSize] = []byte(v)
		}
		packed, err := packRecords(recs)
		if err != nil {
			return err
		}
		errs = append(errs, packScript.Run(ctx, l.rdb, []string{recordBucketKey(tenant, b), packedBucketKey(tenant, b)},
			packed, bucketSize).Err())
	}
	return errors.Join(errs...)
}

// packScript replaces a record bucket by its packed form while it still
// holds all its records (a trim may have removed some since they were
// read; records are written once and never change): KEYS the bucket and
// its packed key, ARGV the packed records and the bucket size.
var packScript = newScript(`
if redis.call('HLEN', KEYS[1]) ~= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1])
return 1
`)

// packFull packs the record buckets whose last record is in [from, to)
// that are not packed yet (their append's process stopped before it
// packed them).
func (l *Log) packFull(ctx context.Context, tenant string, from, to int64) error {
	first, end := bucketOf(from), bucketOf(to)
	if first >= end {
		return nil
	}
	lens := make([]*redis.IntCmd, 0, end-first)
	if _, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for b := first; b < end; b++ {
			lens = append(lens, p.HLen(ctx, recordBucketKey(tenant, b)))
		}
		return nil
	}); err != nil {
		return err
	}
	var errs []error
	for i, n := range lens {
		if n.Val() == bucketSize {
			b := first + int64(i)
			errs = append(errs, l.pack(ctx, tenant, b, b+1))
		}
	}
	return errors.Join(errs...)
}

// maxPacked bounds a packed bucket unpacked (records are at most a few
// hundred bytes: Check bounds each field).
const maxPacked = bucketSize << 12

// packers keeps deflate writers for reuse: making one allocates far more
// than a bucket's records. The fastest level packs a bucket of events as
// small as the best (they differ in ids and times only) in a tenth of
// the time.
var packers = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(io.Discard, flate.BestSpeed)
	return w
}}

func packRecords(recs [][]byte) ([]byte, error) {
	var buf bytes.Buffer
	w := packers.Get().(*flate.Writer)
	defer packers.Put(w)
	w.Reset(&buf)
	for i, r := range recs {
		if bytes.IndexByte(r, '\n') >= 0 {
			return nil, fmt.Errorf("record %d of a bucket spans lines", i)
		}
		if i > 0 {
			_, _ = w.Write([]byte{'\n'})
		}
		_, _ = w.Write(r)
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func unpack(packed []byte) ([]string, error) {
	raw, err := io.ReadAll(io.LimitReader(flate.NewReader(bytes.NewReader(packed)), maxPacked+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > maxPacked {
		return nil, errors.New("larger than a bucket of records can be")
	}
	recs := bytes.Split(raw, []byte{'\n'})
	if len(recs) != bucketSize {
		return nil, fmt.Errorf("%d records, want %d", len(recs), bucketSize)
	}
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = string(r)
	}
	return out, nil
}

func missingOf(vals []*string) []int {
	var out []int
	for i, v := range vals {
		if v == nil {
			out = append(out, i)
		}
	}
	return out
}

// deleteFields removes fields idx of a tenant's store from their buckets
// (a bucket left empty is gone: Redis removes empty hashes).
func (s store) deleteFields(ctx context.Context, p redis.Pipeliner, tenant string, idx []int64) {
	byBucket := map[int64][]string{}
	var order []int64
	for _, x := range idx {
		b := bucketOf(x)
		if _, ok := byBucket[b]; !ok {
			order = append(order, b)
		}
		byBucket[b] = append(byBucket[b], strconv.FormatInt(x, 10))
	}
	for _, b := range order {
		p.HDel(ctx, s.bucket(tenant, b), byBucket[b]...)
	}
}

// upgradeStep bounds the fields one upgrade transaction moves.
const upgradeStep = 2000

// Upgrade moves every tenant's records and tree hashes still in the
// layout before buckets into buckets (the workers run it at start; each
// export runs it for its tenant first). It is safe on any number of
// processes at once and resumes where a crash left it: each step copies
// fields into their buckets and removes them from the old hash in one
// transaction.
func (l *Log) Upgrade(ctx context.Context) error {
	tenants, err := l.Tenants(ctx)
	if err != nil {
		return err
	}
	for _, t := range tenants {
		if err := l.upgrade(ctx, t); err != nil {
			return fmt.Errorf("audit log of tenant %s: %w", t, err)
		}
	}
	return nil
}

func (l *Log) upgrade(ctx context.Context, tenant string) error {
	n, err := l.rdb.Exists(ctx, legacyRecordsKey(tenant), legacyHashesKey(tenant), legacyTimesKey(tenant)).Result()
	if err != nil || n == 0 {
		return err
	}
	for _, s := range []store{recordStore, hashStore} {
		if err := l.upgradeStore(ctx, tenant, s); err != nil {
			return err
		}
	}
	// Every event's time is in its record, and each bucket's first in
	// startsKey: the old time index has nothing left to say.
	return l.rdb.Del(ctx, legacyTimesKey(tenant)).Err()
}

func (l *Log) upgradeStore(ctx context.Context, tenant string, s store) error {
	var cursor uint64
	for {
		kv, next, err := l.rdb.HScan(ctx, s.legacy(tenant), cursor, "*", upgradeStep).Result()
		if err != nil {
			return err
		}
		if len(kv) > 0 {
			byBucket := map[int64][]any{}
			starts := map[int64]int64{} // bucket → its earliest event's time
			fields := make([]string, 0, len(kv)/2)
			for i := 0; i+1 < len(kv); i += 2 {
				x, err := strconv.ParseInt(kv[i], 10, 64)
				if err != nil {
					return fmt.Errorf("field %q of %s is not an index", kv[i], s.legacy(tenant))
				}
				b := bucketOf(x)
				byBucket[b] = append(byBucket[b], kv[i], kv[i+1])
				fields = append(fields, kv[i])
				if s.records {
					e, err := Decode([]byte(kv[i+1]))
					if err != nil {
						return fmt.Errorf("record %d of tenant %s is unreadable: %w", x, tenant, err)
					}
					if t, ok := starts[b]; !ok || e.Time.UnixMilli() < t {
						starts[b] = e.Time.UnixMilli()
					}
				}
			}
			if _, err := l.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
				for b, kvs := range byBucket {
					p.HSet(ctx, s.bucket(tenant, b), kvs...)
				}
				for b, t := range starts {
					p.ZAddLT(ctx, startsKey(tenant), redis.Z{Score: float64(t), Member: b})
				}
				p.HDel(ctx, s.legacy(tenant), fields...)
				return nil
			}); err != nil {
				return err
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}
