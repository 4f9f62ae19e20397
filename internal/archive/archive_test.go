package archive

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"gocloud.dev/blob"
	_ "gocloud.dev/blob/fileblob"

	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/recordings"
	"github.com/patientmsg/gateway/internal/redistest"
)

const (
	tenant  = "clinic-a"
	patient = "+14155550142"
	body    = "Your biopsy results are ready"
)

var ctx = context.Background()

type env struct {
	t      *testing.T
	ledger *ledger.Ledger
	arch   *Archive
	bucket *blob.Bucket
}

func newEnv(t *testing.T) *env {
	t.Helper()
	rdb := redistest.Start(t).Client()
	l := ledger.New(rdb, 30*24*time.Hour)
	b, err := blob.OpenBucket(ctx, "file://"+t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	a := &Archive{Redis: rdb, Ledger: l, Bucket: b, Hot: 48 * time.Hour, Batch: 2,
		Tenants: func() []string { return []string{tenant, "clinic-b"} },
		Logger:  slog.New(slog.DiscardHandler)}
	l.SetCold(a)
	return &env{t: t, ledger: l, arch: a, bucket: b}
}

// message makes a message `age` ago, to phone, and takes it as far as
// final says: delivered, or left at sent.
func (e *env) message(age time.Duration, phone string, final bool) string {
	e.t.Helper()
	at := time.Now().Add(-age)
	id := ulid.MustNew(ulid.Timestamp(at), ulid.DefaultEntropy()).String()
	ok, err := e.ledger.Create(ctx, id, ledger.Request{Tenant: tenant, Channel: "sms", To: ledger.Recipient{Phone: phone},
		Body: body, Priority: "normal", CreatedAt: at})
	if err != nil || !ok {
		e.t.Fatalf("create: %v %v", ok, err)
	}
	if c, err := e.ledger.Claim(ctx, id, time.Minute); err != nil || c.Outcome != ledger.ClaimSend {
		e.t.Fatalf("claim %+v %v", c, err)
	}
	if err := e.ledger.RecordAccepted(ctx, id, "sms", "SM"+id); err != nil {
		e.t.Fatal(err)
	}
	if final {
		u := ledger.ProviderUpdate{Channel: "sms", ProviderID: "SM" + id, Status: ledger.StatusDelivered, ProviderStatus: "delivered"}
		if _, err := e.ledger.ApplyReport(ctx, id, u); err != nil {
			e.t.Fatal(err)
		}
	}
	return id
}

// inRedis says whether a message's record is still in Redis.
func (e *env) inRedis(id string) bool {
	n, err := e.arch.Redis.Exists(ctx, "gw:m:{"+id+"}", "gw:m:{"+id+"}:ev").Result()
	if err != nil {
		e.t.Fatal(err)
	}
	return n > 0
}

// archived counts, per message id, the objects holding it.
func (e *env) archived() map[string]int {
	e.t.Helper()
	out := map[string]int{}
	it := e.bucket.List(&blob.ListOptions{Prefix: prefix(tenant)})
	for {
		o, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			e.t.Fatal(err)
		}
		msgs, err := e.arch.read(ctx, o.Key)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, m := range msgs {
			out[m.ID]++
		}
	}
}

func TestFinalMessagesOlderThanTheHotWindowMoveToTheBlobStoreAndAreStillFound(t *testing.T) {
	e := newEnv(t)
	var old []string
	for i := 0; i < 3; i++ {
		old = append(old, e.message(96*time.Hour, patient, true))
	}
	for i := 0; i < 2; i++ {
		old = append(old, e.message(72*time.Hour, patient, true))
	}
	waiting := e.message(72*time.Hour, patient, false) // sent, not final
	fresh := e.message(time.Hour, patient, true)       // final, but hot
	before, err := e.ledger.Get(ctx, tenant, old[0])
	if err != nil {
		t.Fatal(err)
	}

	res, err := e.arch.Pass(ctx)
	if err != nil || res.Archived != len(old) || res.Objects != 3 { // batches of 2 within a day: 2+1, 2
		t.Fatalf("pass: %+v %v", res, err)
	}
	got := e.archived()
	for _, id := range old {
		if e.inRedis(id) || got[id] != 1 {
			t.Fatalf("message %s: in Redis %v, in %d objects", id, e.inRedis(id), got[id])
		}
	}
	for _, id := range []string{waiting, fresh} {
		if !e.inRedis(id) || got[id] != 0 {
			t.Fatalf("message %s moved: in Redis %v, in %d objects", id, e.inRedis(id), got[id])
		}
	}
	after, err := e.ledger.Get(ctx, tenant, old[0])
	if err != nil || after.Status != ledger.StatusDelivered || after.To.Phone != patient || after.Body != body ||
		len(after.Events) != len(before.Events) || after.ProviderID != before.ProviderID || !after.CreatedAt.Equal(before.CreatedAt) {
		t.Fatalf("the archived message reads back as %+v, %v; was %+v", after, err, before)
	}
	if known, err := e.ledger.Known(ctx, tenant, old[0]); !known || err != nil {
		t.Fatalf("an archived message is not known (a broadcast would make it again): %v", err)
	}
	if known, _ := e.ledger.Known(ctx, tenant, ulid.Make().String()); known {
		t.Fatal("a new id is known")
	}
	// A patient's late reply or unsubscription names only the message.
	if m, err := e.ledger.Get(ctx, "", old[0]); err != nil || m.Tenant != tenant || m.To.Phone != patient {
		t.Fatalf("an archived message found without its tenant: %+v %v", m, err)
	}
	if _, err := e.ledger.Get(ctx, "clinic-b", old[0]); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("another tenant reads an archived message: %v", err)
	}
	// A pass with nothing due changes nothing.
	if res, err := e.arch.Pass(ctx); err != nil || res.Archived != 0 {
		t.Fatalf("a second pass: %+v %v", res, err)
	}
}

// TestAnArchiverKilledMidBatchLosesAndDuplicatesNothing: the pass dies
// after writing a batch's object and before removing its messages from
// Redis; more messages become due meanwhile; the next pass (another
// worker's) finishes the journaled batch with the same object and goes
// on. Every message is then readable exactly once: in one object, and no
// longer in Redis.
func TestAnArchiverKilledMidBatchLosesAndDuplicatesNothing(t *testing.T) {
	e := newEnv(t)
	// The oldest message is not final yet when the pass dies.
	late := e.message(73*time.Hour, patient, false)
	var ids []string
	for i := 0; i < 3; i++ {
		ids = append(ids, e.message(72*time.Hour, patient, true))
	}
	killed := errors.New("killed")
	e.arch.afterWrite = func() error { return killed }
	if _, err := e.arch.Pass(ctx); !errors.Is(err, killed) {
		t.Fatalf("the killed pass: %v", err)
	}
	if got := e.archived(); got[ids[0]] != 1 || !e.inRedis(ids[0]) {
		t.Fatalf("after the kill: objects %v, in Redis %v", got, e.inRedis(ids[0]))
	}
	// The lease of the dead pass is gone with it (its process died).
	e.arch.Redis.Del(ctx, leaseKey(tenant))
	// Meanwhile the older message becomes final: it is due first now, so
	// a pass that chose its batch afresh would put ids[0] in a second object.
	u := ledger.ProviderUpdate{Channel: "sms", ProviderID: "SM" + late, Status: ledger.StatusDelivered, ProviderStatus: "delivered"}
	if _, err := e.ledger.ApplyReport(ctx, late, u); err != nil {
		t.Fatal(err)
	}
	e.arch.afterWrite = nil
	if _, err := e.arch.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	got := e.archived()
	for _, id := range append(ids, late) {
		if got[id] != 1 || e.inRedis(id) {
			t.Fatalf("message %s is in %d objects, in Redis %v", id, got[id], e.inRedis(id))
		}
		if m, err := e.ledger.Get(ctx, tenant, id); err != nil || m.Status != ledger.StatusDelivered {
			t.Fatalf("message %s reads %+v %v", id, m, err)
		}
	}
}

func TestArchiversOnManyWorkersMoveEachMessageOnce(t *testing.T) {
	e := newEnv(t)
	var ids []string
	for i := 0; i < 20; i++ {
		ids = append(ids, e.message(72*time.Hour, patient, true))
	}
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := *e.arch
			for i := 0; i < 5; i++ {
				if _, err := a.Pass(ctx); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	got := e.archived()
	for _, id := range ids {
		if got[id] != 1 || e.inRedis(id) {
			t.Fatalf("message %s is in %d objects, in Redis %v", id, got[id], e.inRedis(id))
		}
	}
}

func TestErasureScrubsArchivedMessagesAndRetentionDeletesOldDays(t *testing.T) {
	e := newEnv(t)
	keys, err := recordings.ParseKeyring("k1:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	e.arch.Keys = keys
	const other = "+14155550199"
	mine := e.message(72*time.Hour, patient, true)
	theirs := e.message(72*time.Hour, other, true)
	if _, err := e.arch.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	// Sealed: no phone or text in the stored bytes, not even compressed.
	it := e.bucket.List(&blob.ListOptions{Prefix: prefix(tenant)})
	for {
		o, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		raw, err := e.bucket.ReadAll(ctx, o.Key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := gzip.NewReader(bytes.NewReader(raw)); err == nil || bytes.Contains(raw, []byte(patient)) {
			t.Fatalf("object %s is stored readable", o.Key)
		}
	}
	isPatient := func(m *ledger.Message) bool { return m.To.Phone == patient }
	// A step before the scrub that fails leaves the object as it was.
	if _, err := e.arch.Erase(ctx, tenant, isPatient, func(*ledger.Message) error { return errors.New("recording store down") }); err == nil {
		t.Fatal("a failed step before the scrub went unnoticed")
	}
	if m, _ := e.ledger.Get(ctx, tenant, mine); m == nil || m.To.Phone != patient {
		t.Fatalf("a failed erasure scrubbed the message: %+v", m)
	}
	var seen []string
	n, err := e.arch.Erase(ctx, tenant, isPatient, func(m *ledger.Message) error { seen = append(seen, m.ID); return nil })
	if err != nil || n != 1 || len(seen) != 1 || seen[0] != mine {
		t.Fatalf("erase: %d %v, before ran for %v", n, err, seen)
	}
	m, err := e.ledger.Get(ctx, tenant, mine)
	if err != nil || m.To.Phone != "" || m.Body != "" || m.ErasedAt == nil || m.Status != ledger.StatusDelivered {
		t.Fatalf("the erased message reads %+v %v", m, err)
	}
	if m, err := e.ledger.Get(ctx, tenant, theirs); err != nil || m.To.Phone != other || m.Body != body {
		t.Fatalf("another patient's message reads %+v %v", m, err)
	}
	if n, err := e.arch.Erase(ctx, tenant, isPatient, nil); err != nil || n != 0 {
		t.Fatalf("erasing again: %d %v", n, err)
	}
	// Retention: a day wholly past it goes.
	e.arch.RetentionOf = func(context.Context, string) time.Duration { return 24 * time.Hour }
	res, err := e.arch.Pass(ctx)
	if err != nil || res.DaysDeleted != 1 || len(e.archived()) != 0 {
		t.Fatalf("retention: %+v %v, left %v", res, err, e.archived())
	}
	if _, err := e.ledger.Get(ctx, tenant, theirs); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("a message past the retention: %v", err)
	}
}

func TestObjectNamesCoverTheirIDs(t *testing.T) {
	obj := objectKey("clinic a/b", time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), "01A", "01C")
	if !strings.HasPrefix(obj, "archive/messages/clinic%20a%2Fb/2026-12-01/") || !covers(obj, "01B") || covers(obj, "01D") {
		t.Fatalf("object %s", obj)
	}
}

// TestUnsettledMessagesDoNotHoldTheArchiveBack: more old messages than one
// look covers are still waiting (sent, not yet settled); the settled ones
// after them are archived all the same, and a message left at sent past
// SentSettled (a channel that reports nothing more) counts as settled.
func TestUnsettledMessagesDoNotHoldTheArchiveBack(t *testing.T) {
	e := newEnv(t)
	leftAtSent := e.message(SentSettled+time.Hour, patient, false)
	var waiting []string
	for i := 0; i < 4*e.arch.Batch+3; i++ {
		waiting = append(waiting, e.message(80*time.Hour, patient, false))
	}
	var settled []string
	for i := 0; i < 3; i++ {
		settled = append(settled, e.message(79*time.Hour, patient, true))
	}
	if res, err := e.arch.Pass(ctx); err != nil || res.Archived != len(settled)+1 {
		t.Fatalf("pass: %+v %v", res, err)
	}
	got := e.archived()
	for _, id := range append(settled, leftAtSent) {
		if got[id] != 1 || e.inRedis(id) {
			t.Fatalf("settled message %s: in %d objects, in Redis %v", id, got[id], e.inRedis(id))
		}
	}
	for _, id := range waiting {
		if got[id] != 0 || !e.inRedis(id) {
			t.Fatalf("waiting message %s moved", id)
		}
	}
}

// TestTheMessageLogGoesOnIntoTheArchiveInOrder: a tenant's history listed
// page by page (ledger.Find, the API's message log) is every message once,
// newest first, whether it is still in Redis (the hot ones, and an old
// one not final yet) or archived on one of two days; a filter applies to
// both.
func TestTheMessageLogGoesOnIntoTheArchiveInOrder(t *testing.T) {
	e := newEnv(t)
	const other = "+14155550199"
	stuck := e.message(90*time.Hour, patient, false) // among the archived, still sent (not yet settled): stays in Redis
	var all []string
	all = append(all, stuck)
	for i := 0; i < 5; i++ {
		all = append(all, e.message(96*time.Hour, patient, true))
	}
	for i := 0; i < 4; i++ {
		all = append(all, e.message(72*time.Hour, other, true))
	}
	for i := 0; i < 3; i++ {
		all = append(all, e.message(time.Hour, patient, true))
	}
	if res, err := e.arch.Pass(ctx); err != nil || res.Archived != 9 {
		t.Fatalf("pass: %+v %v", res, err)
	}
	list := func(f ledger.Filter, limit, scan int) []string {
		t.Helper()
		var got []string
		q := ledger.Query{Filter: f, Limit: limit, Scan: scan}
		for pages := 0; ; pages++ {
			if pages > 50 {
				t.Fatal("the listing does not end")
			}
			p, err := e.ledger.Find(ctx, tenant, q)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range p.Messages {
				got = append(got, m.ID)
			}
			if p.Next == "" {
				return got
			}
			q.Before = p.Next
		}
	}
	want := slices.Clone(all)
	slices.Sort(want)
	slices.Reverse(want)
	for _, size := range [][2]int{{2, 3}, {3, 500}, {100, 500}} {
		if got := list(ledger.Filter{}, size[0], size[1]); !slices.Equal(got, want) {
			t.Fatalf("limit %d scan %d: listed\n%v\nwant\n%v", size[0], size[1], got, want)
		}
	}
	var theirs []string
	for _, id := range want {
		if m, _ := e.ledger.Get(ctx, tenant, id); m != nil && m.To.Phone == other {
			theirs = append(theirs, id)
		}
	}
	if got := list(ledger.Filter{To: ledger.Recipient{Phone: other}}, 2, 500); len(theirs) != 4 || !slices.Equal(got, theirs) {
		t.Fatalf("filtered: %v, want %v", got, theirs)
	}
}
