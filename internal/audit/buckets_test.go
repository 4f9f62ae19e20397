package audit_test

import (
	"bytes"
	"compress/flate"
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/audit"
	"github.com/patientmsg/gateway/internal/redistest"
)

// fieldsOf counts the fields of a tenant's audit buckets of one kind ("r"
// records, "h" tree hashes).
func fieldsOf(t *testing.T, rdb redis.UniversalClient, tenant, kind string) int64 {
	t.Helper()
	ctx := context.Background()
	var n int64
	iter := rdb.Scan(ctx, 0, "gw:audit:{"+tenant+"}:"+kind+":*", 1000).Iterator()
	for iter.Next(ctx) {
		n += rdb.HLen(ctx, iter.Val()).Val()
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// recordFields counts the records of a tenant's audit buckets, those of
// full buckets packed into one string included.
func recordFields(t *testing.T, rdb redis.UniversalClient, tenant string) int64 {
	t.Helper()
	ctx := context.Background()
	packed, err := rdb.Keys(ctx, "gw:audit:{"+tenant+"}:z:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	return fieldsOf(t, rdb, tenant, "r") + 64*int64(len(packed))
}

func hashFields(t *testing.T, rdb redis.UniversalClient, tenant string) int64 {
	return fieldsOf(t, rdb, tenant, "h")
}

// Records and tree hashes are kept in buckets small enough to stay
// listpacks: an event costs Redis little more than its record.
func TestTheLogIsKeptInCompactBuckets(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	rdb := srv.Client()
	l := audit.New(rdb, nil)
	const n = 1000
	for i := range n {
		if _, err := l.Append(ctx, event("clinic-a", "message.read", fmt.Sprintf("message:m%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if got := recordFields(t, rdb, "clinic-a"); got != n {
		t.Fatalf("%d records in buckets, want %d", got, n)
	}
	// Every full bucket of records is packed; the last, not full, is not.
	if got := fieldsOf(t, rdb, "clinic-a", "r"); got != n%64 {
		t.Fatalf("%d records in unpacked buckets, want %d (the last bucket's)", got, n%64)
	}
	if srv.Kind == redistest.KindMiniredis {
		t.Skip("miniredis has no encodings or MEMORY USAGE to measure")
	}
	var bytes, recs, packedBytes int64
	iter := rdb.Scan(ctx, 0, "gw:audit:{clinic-a}:*", 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		if strings.Contains(k, "}:r:") || strings.Contains(k, "}:h:") {
			if enc := rdb.ObjectEncoding(ctx, k).Val(); enc != "listpack" {
				t.Errorf("%s is a %s, want a listpack", k, enc)
			}
		}
		use := rdb.MemoryUsage(ctx, k, 0).Val()
		bytes += use
		if strings.Contains(k, "}:z:") {
			packedBytes += use
		}
	}
	recs1, err := l.Records(ctx, "clinic-a", 0, n)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs1 {
		recs += int64(len(r))
	}
	// A record here is about 200 bytes; the tree hashes two 32-byte
	// hashes an event. The layout of one hash field a record and a time
	// index took about 1,150 bytes an event.
	if per, want := bytes/n, recs/n+150; per > want {
		t.Fatalf("the log takes %d bytes an event in Redis (records of %d bytes), want at most %d", per, recs/n, want)
	}
	// A packed record takes a fraction of its length.
	per := packedBytes / (n / 64 * 64)
	t.Logf("a packed record takes %d bytes in Redis (records of %d bytes); the log %d bytes an event", per, recs/n, bytes/n)
	if want := recs / n / 3; per > want {
		t.Fatalf("a packed record takes %d bytes in Redis (records of %d bytes), want at most %d", per, recs/n, want)
	}
}

// A full bucket of records is packed; one its process did not pack (it
// stopped first) is packed by the export; a packed bucket is read like
// the others and leaves Redis with its last event's retention.
func TestFullBucketsArePackedAndLeaveRedisWithTheirLastEvent(t *testing.T) {
	ctx := context.Background()
	b, _ := bucket(t)
	rdb := redistest.Start(t).Client()
	l := audit.New(rdb, nil)
	const n, old = 150, 100 // buckets 0 and 1 full, 2 not; events 0–99 past their retention
	for i := range n {
		e := event("clinic-a", "message.read", fmt.Sprintf("message:m%d", i))
		if i < old {
			e.Time = time.Now().Add(-100 * 24 * time.Hour)
		}
		if _, err := l.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	packedKey := func(b int) string { return fmt.Sprintf("gw:audit:{clinic-a}:z:%d", b) }
	for b, want := range []int64{1, 1, 0} {
		if got := rdb.Exists(ctx, packedKey(b)).Val(); got != want {
			t.Fatalf("bucket %d packed: %v, want %v", b, got == 1, want == 1)
		}
	}
	if got := fieldsOf(t, rdb, "clinic-a", "r"); got != n-128 {
		t.Fatalf("%d records left in unpacked buckets, want %d", got, n-128)
	}
	recs, err := l.Records(ctx, "clinic-a", 0, n)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		if e, err := audit.Decode(r); err != nil || e.Index != int64(i) || e.Object != fmt.Sprintf("message:m%d", i) {
			t.Fatalf("record %d reads as %q (%v)", i, r, err)
		}
	}
	// Bucket 1 as a process that stopped before packing it leaves it.
	for f, v := range unpacked(t, rdb, packedKey(1)) {
		rdb.HSet(ctx, "gw:audit:{clinic-a}:r:1", f, v)
	}
	rdb.Del(ctx, packedKey(1))

	skey, vkey := keys(t)
	x := &audit.Exporter{Log: l, Bucket: b, Signer: newSigner(t, skey), Batch: 100, Retention: 90 * 24 * time.Hour}
	for range 2 { // the second pass, caught up, trims
		if _, err := x.Export(ctx, "clinic-a"); err != nil {
			t.Fatal(err)
		}
	}
	// Bucket 0 is all past its retention: gone. Bucket 1 holds events
	// 100–127 still: packed again by the export, and kept.
	for b, want := range []int64{0, 1, 0} {
		if got := rdb.Exists(ctx, packedKey(b)).Val(); got != want {
			t.Fatalf("after the export, bucket %d packed: %v, want %v", b, got == 1, want == 1)
		}
	}
	if got := rdb.Exists(ctx, "gw:audit:{clinic-a}:r:0", "gw:audit:{clinic-a}:r:1").Val(); got != 0 {
		t.Fatalf("%d of buckets 0 and 1 still unpacked", got)
	}
	got, _, err := l.Find(ctx, "clinic-a", audit.Query{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n-old || got[0].Index != old || got[len(got)-1].Index != n-1 {
		t.Fatalf("Find after the retention: %d events from %d, want %d from %d", len(got), got[0].Index, n-old, old)
	}
	if r := verify(t, b, audit.VerifyOptions{}, vkey); r.Finding != nil || r.Checked != n {
		t.Fatalf("report %+v (%v)", r, r.Finding)
	}
}

// A log written in the layout before buckets (one hash of records, one of
// tree hashes, a sorted set of times) is read and appended to as it is,
// and Upgrade moves it into buckets, after which it still exports and
// verifies, and Find still searches it by time.
func TestALogInTheOldLayoutIsReadAndUpgraded(t *testing.T) {
	ctx := context.Background()
	b, _ := bucket(t)
	rdb := redistest.Start(t).Client()
	l := audit.New(rdb, nil)
	t0 := time.Now().UTC().Truncate(time.Millisecond).Add(-time.Hour)
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Second) }
	add := func(from, to int) {
		for i := from; i < to; i++ {
			e := event("clinic-a", "message.read", fmt.Sprintf("message:m%d", i))
			e.Time = at(i)
			if _, err := l.Append(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
	}
	const old = 300
	add(0, old)
	toOldLayout(t, rdb, "clinic-a")
	if n := recordFields(t, rdb, "clinic-a") + hashFields(t, rdb, "clinic-a"); n != 0 {
		t.Fatalf("%d fields left in buckets", n)
	}
	check := func(name string, q audit.Query, from, to int) {
		t.Helper()
		got, _, err := l.Find(ctx, "clinic-a", q)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var idx []int
		for _, e := range got {
			idx = append(idx, int(e.Index))
		}
		var want []int
		for i := from; i < to; i++ {
			want = append(want, i)
		}
		if !slices.Equal(idx, want) {
			t.Fatalf("%s: events %v, want %v", name, idx, want)
		}
	}
	check("old layout", audit.Query{Since: at(100), Until: at(110)}, 100, 110)
	add(old, old+100) // builds on the tree hashes of the old layout
	check("both layouts", audit.Query{Since: at(295), Until: at(305)}, 295, 305)
	if err := l.Upgrade(ctx); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"records", "hashes", "times"} {
		if n := rdb.Exists(ctx, "gw:audit:{clinic-a}:"+k).Val(); n != 0 {
			t.Fatalf("gw:audit:{clinic-a}:%s is still there after Upgrade", k)
		}
	}
	if got := recordFields(t, rdb, "clinic-a"); got != old+100 {
		t.Fatalf("%d records in buckets after Upgrade, want %d", got, old+100)
	}
	check("upgraded", audit.Query{Since: at(200), Until: at(203)}, 200, 203)
	add(old+100, old+150)
	skey, vkey := keys(t)
	if _, err := (&audit.Exporter{Log: l, Bucket: b, Signer: newSigner(t, skey), Batch: 100}).Export(ctx, "clinic-a"); err != nil {
		t.Fatal(err)
	}
	if r := verify(t, b, audit.VerifyOptions{}, vkey); r.Finding != nil || r.Checked != old+150 {
		t.Fatalf("report %+v (%v)", r, r.Finding)
	}
}

// toOldLayout moves a tenant's buckets into the layout before them.
func toOldLayout(t *testing.T, rdb redis.UniversalClient, tenant string) {
	t.Helper()
	ctx := context.Background()
	pre := "gw:audit:{" + tenant + "}:"
	iter := rdb.Scan(ctx, 0, pre+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	for _, k := range keys {
		kind := ""
		var kv map[string]string
		switch {
		case strings.HasPrefix(k, pre+"r:"):
			kind = "records"
		case strings.HasPrefix(k, pre+"h:"):
			kind = "hashes"
		case strings.HasPrefix(k, pre+"z:"): // a full bucket of records, packed
			kind, kv = "records", unpacked(t, rdb, k)
		default:
			continue
		}
		if kv == nil {
			kv = rdb.HGetAll(ctx, k).Val()
		}
		for f, v := range kv {
			rdb.HSet(ctx, pre+kind, f, v)
			if kind == "records" {
				e, err := audit.Decode([]byte(v))
				if err != nil {
					t.Fatal(err)
				}
				rdb.ZAdd(ctx, pre+"times", redis.Z{Score: float64(e.Time.UnixMilli()), Member: strconv.FormatInt(e.Index, 10)})
			}
		}
		rdb.Del(ctx, k)
	}
	rdb.Del(ctx, pre+"starts")
}

// unpacked reads a packed bucket of records (their lines, deflated) as
// its index → record.
func unpacked(t *testing.T, rdb redis.UniversalClient, key string) map[string]string {
	t.Helper()
	packed, err := rdb.Get(context.Background(), key).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(flate.NewReader(bytes.NewReader(packed)))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(raw), "\n") {
		e, err := audit.Decode([]byte(line))
		if err != nil {
			t.Fatal(err)
		}
		out[strconv.FormatInt(e.Index, 10)] = line
	}
	if len(out) != 64 {
		t.Fatalf("%s holds %d records, want 64", key, len(out))
	}
	return out
}

// hashReads counts the commands that read tree hashes from Redis.
type hashReads struct{ n atomic.Int64 }

func (h *hashReads) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *hashReads) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.count(cmd)
		return next(ctx, cmd)
	}
}
func (h *hashReads) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			h.count(c)
		}
		return next(ctx, cmds)
	}
}
func (h *hashReads) count(c redis.Cmder) {
	if c.Name() == "hmget" && strings.Contains(fmt.Sprint(c.Args()[1]), "}:h:") {
		h.n.Add(1)
	}
}

// A process appending alone keeps the tree hashes its next append needs:
// it reads none from Redis. After another process appended, it reads
// them again, and the tree stays one.
func TestAnAppendReadsNoTreeHashWrittenByItsOwnProcess(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	reads := &hashReads{}
	rdb := srv.Client()
	rdb.AddHook(reads)
	a, other := audit.New(rdb, nil), audit.New(srv.Client(), nil)
	for i := range 300 {
		if _, err := a.Append(ctx, event("clinic-a", "message.read", fmt.Sprintf("message:m%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if n := reads.n.Load(); n != 0 {
		t.Fatalf("300 appends of one process read tree hashes from Redis %d times", n)
	}
	if _, err := other.Append(ctx, event("clinic-a", "message.read", "message:other")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Append(ctx, event("clinic-a", "message.read", "message:n0")); err != nil {
		t.Fatal(err)
	}
	after := reads.n.Load()
	if after == 0 {
		t.Fatal("an append after another process's read no tree hash from Redis")
	}
	// Having read the frontier once, it knows it again.
	for i := 1; i < 5; i++ {
		if _, err := a.Append(ctx, event("clinic-a", "message.read", fmt.Sprintf("message:n%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if n := reads.n.Load(); n != after {
		t.Fatalf("appends after the one that read the tree hashes read %d more times", n-after)
	}
	b, _ := bucket(t)
	skey, vkey := keys(t)
	if _, err := (&audit.Exporter{Log: a, Bucket: b, Signer: newSigner(t, skey)}).Export(ctx, "clinic-a"); err != nil {
		t.Fatal(err)
	}
	if r := verify(t, b, audit.VerifyOptions{}, vkey); r.Finding != nil || r.Checked != 306 {
		t.Fatalf("report %+v (%v)", r, r.Finding)
	}
}
