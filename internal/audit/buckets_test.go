package audit_test

import (
	"context"
	"fmt"
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

func recordFields(t *testing.T, rdb redis.UniversalClient, tenant string) int64 {
	return fieldsOf(t, rdb, tenant, "r")
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
	if srv.Kind == redistest.KindMiniredis {
		t.Skip("miniredis has no encodings or MEMORY USAGE to measure")
	}
	var bytes, recs int64
	iter := rdb.Scan(ctx, 0, "gw:audit:{clinic-a}:*", 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		if strings.Contains(k, "}:r:") || strings.Contains(k, "}:h:") {
			if enc := rdb.ObjectEncoding(ctx, k).Val(); enc != "listpack" {
				t.Errorf("%s is a %s, want a listpack", k, enc)
			}
		}
		bytes += rdb.MemoryUsage(ctx, k, 0).Val()
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
		switch {
		case strings.HasPrefix(k, pre+"r:"):
			kind = "records"
		case strings.HasPrefix(k, pre+"h:"):
			kind = "hashes"
		default:
			continue
		}
		kv := rdb.HGetAll(ctx, k).Val()
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
