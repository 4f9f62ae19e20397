package audit_test

import (
	"context"
	"fmt"
	"math/bits"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gocloud.dev/blob"
	_ "gocloud.dev/blob/fileblob"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/patientmsg/gateway/internal/audit"
	"github.com/patientmsg/gateway/internal/redistest"
)

func event(tenant, action, object string) audit.Event {
	return audit.Event{Tenant: tenant, Actor: "apikey:0123456789abcdef", Action: action, Object: object, Outcome: audit.OK, Status: 200,
		RequestID: "01JREQ"}
}

func bucket(t *testing.T) (*blob.Bucket, string) {
	t.Helper()
	dir := t.TempDir()
	b, err := blob.OpenBucket(context.Background(), "file://"+dir+"?no_tmp_dir=true")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, dir
}

func keys(t *testing.T) (skey, vkey string) {
	t.Helper()
	skey, vkey, err := audit.GenerateKey("")
	if err != nil {
		t.Fatal(err)
	}
	return skey, vkey
}

func newSigner(t *testing.T, skey string) note.Signer {
	t.Helper()
	s, err := audit.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// exported appends n events of tenant and exports them in batches of
// batch; it returns the log and the signing and verifier keys.
func exported(t *testing.T, b *blob.Bucket, tenant string, n, batch int) (*audit.Log, string, string) {
	t.Helper()
	ctx := context.Background()
	l := audit.New(redistest.Start(t).Client(), nil)
	for i := range n {
		if _, err := l.Append(ctx, event(tenant, "message.read", fmt.Sprintf("message:m%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	skey, vkey := keys(t)
	x := &audit.Exporter{Log: l, Bucket: b, Signer: newSigner(t, skey), Batch: batch}
	upto, err := x.Export(ctx, tenant)
	if err != nil || upto != int64(n) {
		t.Fatalf("Export = %d, %v; want %d", upto, err, n)
	}
	return l, skey, vkey
}

func verify(t *testing.T, b *blob.Bucket, o audit.VerifyOptions, vkeys ...string) audit.Report {
	t.Helper()
	vs, err := audit.NewVerifiers(vkeys...)
	if err != nil {
		t.Fatal(err)
	}
	r, err := audit.Verify(context.Background(), b, vs, o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestManyProcessesAppendingConcurrentlyBuildOneConsistentTree(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	// Three "processes", each with its own client and in-process batching.
	logs := []*audit.Log{audit.New(srv.Client(), nil), audit.New(srv.Client(), nil), audit.New(srv.Client(), nil)}
	const goroutines, each = 30, 20
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[int64]bool{}
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				idx, err := logs[g%len(logs)].Append(ctx, event("clinic-a", "message.read", fmt.Sprintf("message:g%di%d", g, i)))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[idx] {
					t.Errorf("index %d given twice", idx)
				}
				seen[idx] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	const total = goroutines * each
	n, err := logs[0].Size(ctx, "clinic-a")
	if err != nil || n != total || len(seen) != total {
		t.Fatalf("size %d (%v), %d indexes; want %d", n, err, len(seen), total)
	}
	// Rebuild the tree from the records alone: every stored hash and the
	// root must be what the appends stored.
	recs, err := logs[0].Records(ctx, "clinic-a", 0, total)
	if err != nil {
		t.Fatal(err)
	}
	var mine []tlog.Hash
	reader := tlog.HashReaderFunc(func(ix []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(ix))
		for i, x := range ix {
			out[i] = mine[x]
		}
		return out, nil
	})
	for i, rec := range recs {
		e, err := audit.Decode(rec)
		if err != nil || e.Index != int64(i) {
			t.Fatalf("record %d: index %d, %v", i, e.Index, err)
		}
		hs, err := tlog.StoredHashes(int64(i), rec, reader)
		if err != nil {
			t.Fatal(err)
		}
		mine = append(mine, hs...)
	}
	want, _ := tlog.TreeHash(total, reader)
	got, err := tlog.TreeHash(total, logs[0].HashReader(ctx, "clinic-a"))
	if err != nil || got != want {
		t.Fatalf("stored tree hash %v (%v), rebuilt %v", got, err, want)
	}
	for _, i := range []int64{0, 1, 77, total - 1} {
		p, err := tlog.ProveRecord(total, i, logs[1].HashReader(ctx, "clinic-a"))
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckRecord(p, total, want, i, tlog.RecordHash(recs[i])); err != nil {
			t.Errorf("record %d: %v", i, err)
		}
	}
}

func TestAnExportedLogVerifies(t *testing.T) {
	b, _ := bucket(t)
	_, _, vkey := exported(t, b, "clinic-a", 30, 7)
	r := verify(t, b, audit.VerifyOptions{}, vkey)
	if r.Finding != nil || r.Checked != 30 || r.Checkpoints != 5 || r.Uncovered != 0 {
		t.Fatalf("report %+v (%v)", r, r.Finding)
	}
	r = verify(t, b, audit.VerifyOptions{Tenant: "clinic-a", From: 10, To: 20}, vkey)
	if r.Finding != nil || r.Checked != 10 {
		t.Fatalf("range report %+v (%v)", r, r.Finding)
	}
}

func TestVerifyReportsTheRecordRewrittenAfterItsExport(t *testing.T) {
	ctx := context.Background()
	b, _ := bucket(t)
	_, _, vkey := exported(t, b, "clinic-a", 30, 7)
	key := "audit/clinic-a/records/00000000000000000014.jsonl" // records 14–20
	data, err := b.ReadAll(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	forged := strings.Replace(string(data), `"object":"message:m17"`, `"object":"message:m99"`, 1)
	if forged == string(data) {
		t.Fatal("record 17 not found in the object")
	}
	if err := b.WriteAll(ctx, key, []byte(forged), nil); err != nil {
		t.Fatal(err)
	}
	r := verify(t, b, audit.VerifyOptions{}, vkey)
	if r.Finding == nil || r.Finding.Index != 17 || r.Checked != 17 {
		t.Fatalf("report %+v, finding %v; want record 17", r, r.Finding)
	}
	// Outside the range, the forged record is not read.
	if r := verify(t, b, audit.VerifyOptions{From: 0, To: 17}, vkey); r.Finding != nil {
		t.Fatalf("records 0–16: %v", r.Finding)
	}
}

func TestVerifyReportsARemovedBatch(t *testing.T) {
	ctx := context.Background()
	b, _ := bucket(t)
	_, _, vkey := exported(t, b, "clinic-a", 20, 5)
	if err := b.Delete(ctx, "audit/clinic-a/records/00000000000000000005.jsonl"); err != nil {
		t.Fatal(err)
	}
	r := verify(t, b, audit.VerifyOptions{}, vkey)
	if r.Finding == nil || r.Finding.Index != 5 {
		t.Fatalf("finding %v; want records from 5 missing", r.Finding)
	}
}

func TestACheckpointSignedByAnotherKeyIsRefused(t *testing.T) {
	b, _ := bucket(t)
	exported(t, b, "clinic-a", 5, 10)
	_, other := keys(t)
	r := verify(t, b, audit.VerifyOptions{}, other)
	if r.Finding == nil || !strings.Contains(r.Finding.Reason, "refused") {
		t.Fatalf("finding %v; want the checkpoint refused", r.Finding)
	}
}

func TestAnExportThatCrashedAfterWritingABatchResumes(t *testing.T) {
	ctx := context.Background()
	b, _ := bucket(t)
	l, skey, vkey := exported(t, b, "clinic-a", 4, 10)
	// More events; then a worker writes the next batch's records and
	// crashes before anything else.
	for i := range 6 {
		if _, err := l.Append(ctx, event("clinic-a", "contact.read", fmt.Sprintf("contact:c%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := l.Records(ctx, "clinic-a", 4, 7)
	if err != nil {
		t.Fatal(err)
	}
	var data []byte
	for _, r := range recs {
		data = append(append(data, r...), '\n')
	}
	if err := b.WriteAll(ctx, "audit/clinic-a/records/00000000000000000004.jsonl", data, nil); err != nil {
		t.Fatal(err)
	}
	x := &audit.Exporter{Log: l, Bucket: b, Signer: newSigner(t, skey), Batch: 10}
	if upto, err := x.Export(ctx, "clinic-a"); err != nil || upto != 10 {
		t.Fatalf("Export = %d, %v; want 10", upto, err)
	}
	r := verify(t, b, audit.VerifyOptions{}, vkey)
	if r.Finding != nil || r.Checked != 10 {
		t.Fatalf("report %+v (%v)", r, r.Finding)
	}
}

func TestFindReadsATenantsEventsByTimeAndAction(t *testing.T) {
	ctx := context.Background()
	l := audit.New(redistest.Start(t).Client(), nil)
	t0 := time.Date(2031, 3, 1, 9, 0, 0, 0, time.UTC)
	for i := range 10 {
		e := event("clinic-a", "message.read", fmt.Sprintf("message:m%d", i))
		if i%2 == 1 {
			e.Action = "contact.read"
		}
		e.Time = t0.Add(time.Duration(i) * time.Minute)
		if _, err := l.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Append(ctx, event("clinic-b", "message.read", "message:other")); err != nil {
		t.Fatal(err)
	}
	got, more, err := l.Find(ctx, "clinic-a", audit.Query{Since: t0.Add(2 * time.Minute), Until: t0.Add(8 * time.Minute), Action: "contact.read", Limit: 2})
	if err != nil || !more || len(got) != 2 || got[0].Object != "contact:m3" && got[0].Object != "message:m3" || got[1].Index != 5 {
		t.Fatalf("Find = %+v, more %v, %v", got, more, err)
	}
	all, more, _ := l.Find(ctx, "clinic-a", audit.Query{})
	if len(all) != 10 || more {
		t.Fatalf("all: %d events, more %v", len(all), more)
	}
}

func TestAnEventHoldsIdsOnly(t *testing.T) {
	cases := map[string]audit.Event{
		"a phone number as object":   event("clinic-a", "contact.read", "+14155550100"),
		"an e-mail address as actor": {Tenant: "clinic-a", Actor: "nurse@example.org", Action: "message.read", Outcome: audit.OK},
		"a body with spaces":         event("clinic-a", "message.read", "message:hello there"),
		"no actor":                   {Tenant: "clinic-a", Action: "message.read", Outcome: audit.OK},
		"an unknown outcome":         {Tenant: "clinic-a", Actor: "user:1", Action: "message.read", Outcome: "maybe"},
	}
	l := audit.New(redistest.Start(t).Client(), nil)
	for name, e := range cases {
		if _, err := l.Append(context.Background(), e); err == nil {
			t.Errorf("%s: appended", name)
		}
	}
	if l.Failures() != int64(len(cases)) {
		t.Errorf("Failures = %d, want %d", l.Failures(), len(cases))
	}
}

func TestExportedEventsPastTheirRetentionLeaveRedisButStayVerifiable(t *testing.T) {
	ctx := context.Background()
	b, _ := bucket(t)
	l := audit.New(redistest.Start(t).Client(), nil)
	for i := range 6 {
		e := event("clinic-a", "message.read", fmt.Sprintf("message:m%d", i))
		if i < 4 {
			e.Time = time.Now().Add(-100 * 24 * time.Hour)
		}
		if _, err := l.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	skey, vkey := keys(t)
	x := &audit.Exporter{Log: l, Bucket: b, Signer: newSigner(t, skey), Retention: 90 * 24 * time.Hour}
	if _, err := x.Export(ctx, "clinic-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := x.Export(ctx, "clinic-a"); err != nil { // caught up: trims
		t.Fatal(err)
	}
	got, _, err := l.Find(ctx, "clinic-a", audit.Query{})
	if err != nil || len(got) != 2 || got[0].Index != 4 {
		t.Fatalf("Find after the retention = %+v, %v", got, err)
	}
	if _, err := l.Append(ctx, event("clinic-a", "message.read", "message:m6")); err != nil {
		t.Fatal(err) // the tree hashes stay: appends go on
	}
	if r := verify(t, b, audit.VerifyOptions{}, vkey); r.Finding != nil || r.Checked != 6 {
		t.Fatalf("report %+v (%v)", r, r.Finding)
	}
}

func TestEveryGeneratedKeyGivesItsVerifierKey(t *testing.T) {
	for range 200 { // base64 keys hold "+" often enough
		skey, vkey, err := audit.GenerateKey("")
		if err != nil {
			t.Fatal(err)
		}
		if got, err := audit.VerifierKey(skey); err != nil || got != vkey {
			t.Fatalf("VerifierKey(%s) = %s, %v; want %s", skey, got, err, vkey)
		}
	}
}

// The tree hashes of exported events leave Redis but for the few later
// appends read, in passes of bounded size: the log grows on, and every
// checkpoint, old and new, still verifies from the blob store.
func TestExportedTreeHashesLeaveRedisButAppendsAndProofsGoOn(t *testing.T) {
	ctx := context.Background()
	b, _ := bucket(t)
	srv := redistest.Start(t)
	rdb := srv.Client()
	l := audit.New(rdb, nil)
	appendN := func(from, n int) {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 64)
		for i := from; i < from+n; i++ {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				if _, err := l.Append(ctx, event("clinic-a", "message.read", fmt.Sprintf("message:m%d", i))); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	skey, vkey := keys(t)
	x := &audit.Exporter{Log: l, Bucket: b, Signer: newSigner(t, skey), Batch: 5000}
	hashes := func() int64 { return hashFields(t, rdb, "clinic-a") }
	// More than one trimming pass (20,000 records each), and sizes whose
	// frontiers differ: 25,000 = 0b110000110101000, then 33,333.
	for _, step := range []struct{ n, size int }{{25000, 25000}, {8333, 33333}} {
		appendN(step.size-step.n, step.n)
		if t.Failed() {
			t.FailNow()
		}
		before := hashes()
		for range 2 { // the second run, caught up, trims
			if upto, err := x.Export(ctx, "clinic-a"); err != nil || upto != int64(step.size) {
				t.Fatalf("Export = %d, %v; want %d", upto, err, step.size)
			}
		}
		ones := int64(bits.OnesCount64(uint64(step.size)))
		if got := hashes(); got != ones {
			t.Fatalf("size %d: %d tree hashes left in Redis (were %d), want the frontier's %d", step.size, got, before, ones)
		}
	}
	appendN(33333, 100) // appends still build on what stayed
	if _, err := x.Export(ctx, "clinic-a"); err != nil {
		t.Fatal(err)
	}
	if r := verify(t, b, audit.VerifyOptions{}, vkey); r.Finding != nil || r.Checked != 33433 {
		t.Fatalf("report %+v (%v)", r, r.Finding)
	}
}

// Events older than the retention leave Redis once exported, from the
// start of the log on; Find reads them from the export, by time, action
// and limit, and goes on into those still in Redis.
func TestFindReadsEventsThatLeftRedisFromTheExport(t *testing.T) {
	ctx := context.Background()
	b, _ := bucket(t)
	rdb := redistest.Start(t).Client()
	l := audit.New(rdb, nil)
	now := time.Now().UTC().Truncate(time.Millisecond)
	t0 := now.Add(-10 * 24 * time.Hour)
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Minute) }
	const old, young = 2500, 30
	for i := range old + young {
		e := event("clinic-a", "message.read", fmt.Sprintf("message:m%d", i))
		if i%10 == 0 {
			e.Action = "consent.change"
		}
		e.Time = at(i)
		if i >= old {
			e.Time = now.Add(-time.Duration(old+young-i) * time.Second)
		}
		if _, err := l.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	skey, _ := keys(t)
	x := &audit.Exporter{Log: l, Bucket: b, Signer: newSigner(t, skey), Batch: 100, Retention: 48 * time.Hour}
	for range 2 {
		if _, err := x.Export(ctx, "clinic-a"); err != nil {
			t.Fatal(err)
		}
	}
	if n := recordFields(t, rdb, "clinic-a"); n != young {
		t.Fatalf("%d events left in Redis, want the %d younger than the retention", n, young)
	}
	// Without the export, Find sees Redis only.
	if got, _, err := l.Find(ctx, "clinic-a", audit.Query{Limit: 1000}); err != nil || len(got) != young {
		t.Fatalf("Find on Redis alone: %d events, %v", len(got), err)
	}
	l.Export = b
	check := func(name string, q audit.Query, want []int, more bool) {
		t.Helper()
		got, gotMore, err := l.Find(ctx, "clinic-a", q)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		idx := make([]int, len(got))
		for i, e := range got {
			idx[i] = int(e.Index)
		}
		if !slices.Equal(idx, want) || gotMore != more {
			t.Fatalf("%s: %d events %v…, more %v; want %d %v…, more %v", name, len(idx), idx[:min(5, len(idx))], gotMore,
				len(want), want[:min(5, len(want))], more)
		}
	}
	span := func(from, to, step int) []int {
		var out []int
		for i := from; i < to; i += step {
			out = append(out, i)
		}
		return out
	}
	check("a window of old events", audit.Query{Since: at(1200), Until: at(1300), Limit: 1000}, span(1200, 1300, 1), false)
	check("by action, across objects", audit.Query{Since: at(995), Until: at(1405), Action: "consent.change", Limit: 1000},
		span(1000, 1401, 10), false)
	check("a limit inside the export", audit.Query{Since: at(2000), Limit: 50}, span(2000, 2050, 1), true)
	check("from the export into Redis", audit.Query{Since: at(old - 20), Limit: 1000}, span(old-20, old+young, 1), false)
	check("the whole log", audit.Query{Limit: 1000}, span(0, 1000, 1), true)
	check("Redis only", audit.Query{Since: now.Add(-time.Hour), Limit: 1000}, span(old, old+young, 1), false)
}
