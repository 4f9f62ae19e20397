package ledger_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/redistest"
)

var ctx = context.Background()

func newLedger(t *testing.T) (*ledger.Ledger, *redistest.Server) {
	srv := redistest.Start(t)
	return ledger.New(srv.Client(), 24*time.Hour), srv
}

func create(t *testing.T, l *ledger.Ledger, tenant string) string {
	t.Helper()
	id := ledger.NewID()
	ok, err := l.Create(ctx, id, ledger.Request{Tenant: tenant, Channel: "sms", To: ledger.Recipient{Phone: "+14155550100"}, Body: "hi", Priority: "normal"})
	if err != nil || !ok {
		t.Fatalf("Create = %v, %v", ok, err)
	}
	return id
}

func status(t *testing.T, l *ledger.Ledger, id string) *ledger.Message {
	t.Helper()
	m, err := l.Get(ctx, "", id)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestARecordIsCreatedOnceAndOnlyItsTenantSeesIt(t *testing.T) {
	l, _ := newLedger(t)
	id := create(t, l, "clinic-a")
	again, err := l.Create(ctx, id, ledger.Request{Tenant: "clinic-a", Channel: "sms"})
	if err != nil || again {
		t.Fatalf("second Create = %v, %v; want false", again, err)
	}
	if _, err := l.Get(ctx, "clinic-b", id); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("another tenant got %v, want ErrNotFound", err)
	}
	m, err := l.Get(ctx, "clinic-a", id)
	if err != nil || m.Status != ledger.StatusQueued || len(m.Events) != 1 {
		t.Fatalf("Get = %+v, %v", m, err)
	}
	if _, err := l.Get(ctx, "clinic-a", "not-an-id"); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("malformed id: %v", err)
	}
}

func TestRecordsExpireAfterTheRetention(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	l := ledger.New(rdb, 2*time.Hour)
	id := create(t, l, "c")
	ttl, err := rdb.PTTL(ctx, "gw:m:{"+id+"}").Result()
	if err != nil || ttl <= time.Hour || ttl > 2*time.Hour {
		t.Fatalf("record TTL %s, %v; want about 2h", ttl, err)
	}
	// The history is in the record and expires with it: no key of its own.
	if n := rdb.Exists(ctx, "gw:m:{"+id+"}:ev").Val(); n != 0 || rdb.HExists(ctx, "gw:m:{"+id+"}", "ev").Val() != true {
		t.Fatalf("the history is not in the record")
	}
	sendAt := time.Now().Add(48 * time.Hour)
	id2 := ledger.NewID()
	if _, err := l.Create(ctx, id2, ledger.Request{Tenant: "c", Channel: "sms", SendAt: &sendAt}); err != nil {
		t.Fatal(err)
	}
	ttl2, _ := rdb.PTTL(ctx, "gw:m:{"+id2+"}").Result()
	if ttl2 < 49*time.Hour {
		t.Fatalf("a scheduled record must outlive its send time by the retention; TTL %s", ttl2)
	}
}

func TestStatusNeverMovesBackwards(t *testing.T) {
	l, _ := newLedger(t)
	id := create(t, l, "c")
	if c, err := l.Claim(ctx, id, time.Minute); err != nil || c.Outcome != ledger.ClaimSend {
		t.Fatalf("claim %+v %v", c, err)
	}
	if err := l.RecordAccepted(ctx, id, "sms", "SM1"); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name    string
		status  ledger.Status
		ps      string
		want    ledger.Status
		applied ledger.Applied
	}{
		{"delivered moves sent forward", ledger.StatusDelivered, "delivered", ledger.StatusDelivered, ledger.AppliedChanged},
		{"a late sent after delivered is only an event", ledger.StatusSent, "sent", ledger.StatusDelivered, ledger.AppliedEventOnly},
		{"a replayed delivered is ignored", ledger.StatusDelivered, "delivered", ledger.StatusDelivered, ledger.AppliedDuplicate},
		{"undelivered after delivered does not change a final status", ledger.StatusUndelivered, "undelivered", ledger.StatusDelivered, ledger.AppliedEventOnly},
	}
	for _, s := range steps {
		a, _, err := l.ApplyProviderUpdateLinked(ctx, id, ledger.ProviderUpdate{Channel: "sms", ProviderID: "SM1", Status: s.status, ProviderStatus: s.ps})
		if err != nil || a != s.applied {
			t.Fatalf("%s: applied %d, %v; want %d", s.name, a, err, s.applied)
		}
		if got := status(t, l, id).Status; got != s.want {
			t.Fatalf("%s: status %s, want %s", s.name, got, s.want)
		}
	}
	if _, _, err := l.ApplyProviderUpdateLinked(ctx, id, ledger.ProviderUpdate{Channel: "sms", ProviderID: "SM2", Status: ledger.StatusFailed, ProviderStatus: "failed"}); !errors.Is(err, ledger.ErrProviderMismatch) {
		t.Fatalf("an update for another provider id: %v", err)
	}
	m := status(t, l, id)
	if len(m.Events) != 6 { // queued, sending, sent, delivered, late sent, late undelivered
		t.Fatalf("events %d: %+v", len(m.Events), m.Events)
	}
}

func TestAReportsDetailIsItsHistoryEventsDetailAndNoError(t *testing.T) {
	l, _ := newLedger(t)
	id := create(t, l, "c")
	if c, err := l.Claim(ctx, id, time.Minute); err != nil || c.Outcome != ledger.ClaimSend {
		t.Fatalf("claim %+v %v", c, err)
	}
	if err := l.RecordAccepted(ctx, id, "email", "mid@example-clinic.test"); err != nil {
		t.Fatal(err)
	}
	u := ledger.ProviderUpdate{Channel: "email", ProviderID: "mid@example-clinic.test", Status: ledger.StatusDelivered,
		ProviderStatus: "delivered", Detail: "delivery status notification 2.0.0"}
	if a, _, err := l.ApplyProviderUpdateLinked(ctx, id, u); err != nil || a != ledger.AppliedChanged {
		t.Fatalf("applied %d, %v", a, err)
	}
	m := status(t, l, id)
	last := m.Events[len(m.Events)-1]
	if m.Status != ledger.StatusDelivered || m.Error != nil || last.ProviderStatus != "delivered" || last.Detail != u.Detail || last.Error != nil {
		t.Fatalf("status %s, error %+v, last event %+v", m.Status, m.Error, last)
	}
}

func TestClaimProtectsAgainstSendingTwice(t *testing.T) {
	l, _ := newLedger(t)

	t.Run("a message the provider accepted is never claimed again", func(t *testing.T) {
		id := create(t, l, "c")
		_, _ = l.Claim(ctx, id, time.Minute)
		_ = l.RecordAccepted(ctx, id, "sms", "SM1")
		c, _ := l.Claim(ctx, id, time.Minute)
		if c.Outcome != ledger.ClaimAccepted || c.ProviderID != "SM1" {
			t.Fatalf("claim %+v", c)
		}
	})
	t.Run("an attempt with unknown outcome blocks the next one for the grace period", func(t *testing.T) {
		id := create(t, l, "c")
		_, _ = l.Claim(ctx, id, time.Minute)
		c, _ := l.Claim(ctx, id, time.Minute)
		if c.Outcome != ledger.ClaimUnconfirmed || c.Wait <= 0 || c.Wait > time.Minute {
			t.Fatalf("claim %+v", c)
		}
	})
	t.Run("the provider's callback reveals the acceptance of a crashed attempt", func(t *testing.T) {
		id := create(t, l, "c")
		_, _ = l.Claim(ctx, id, time.Minute)
		if a, _, err := l.ApplyProviderUpdateLinked(ctx, id, ledger.ProviderUpdate{Channel: "sms", ProviderID: "SM9", Status: ledger.StatusSent, ProviderStatus: "sent"}); err != nil || a != ledger.AppliedChanged {
			t.Fatalf("apply %d %v", a, err)
		}
		c, _ := l.Claim(ctx, id, time.Minute)
		if c.Outcome != ledger.ClaimAccepted || c.ProviderID != "SM9" {
			t.Fatalf("claim %+v", c)
		}
		if got, _ := l.MessageIDByProvider(ctx, "sms", "SM9"); got != id {
			t.Fatalf("provider index %q", got)
		}
	})
	t.Run("after the grace period without a callback it may be sent again", func(t *testing.T) {
		id := create(t, l, "c")
		_, _ = l.Claim(ctx, id, 0)
		c, _ := l.Claim(ctx, id, 0)
		if c.Outcome != ledger.ClaimSend || c.Attempt != 2 {
			t.Fatalf("claim %+v", c)
		}
	})
	t.Run("a failed attempt known not to have reached the provider releases the claim", func(t *testing.T) {
		id := create(t, l, "c")
		_, _ = l.Claim(ctx, id, time.Minute)
		_ = l.RecordFailure(ctx, id, ledger.Failure{Code: "connect", Message: "refused", RetryAt: time.Now()})
		c, _ := l.Claim(ctx, id, time.Minute)
		if c.Outcome != ledger.ClaimSend || c.Attempt != 2 || c.Message.Body != "hi" {
			t.Fatalf("claim %+v", c)
		}
		m := status(t, l, id)
		if m.Error == nil || m.Error.Code != "connect" || m.Attempts != 2 {
			t.Fatalf("record %+v", m)
		}
	})
	t.Run("a final failure ends the message", func(t *testing.T) {
		id := create(t, l, "c")
		_, _ = l.Claim(ctx, id, time.Minute)
		_ = l.RecordFailure(ctx, id, ledger.Failure{Code: "21211", Message: "invalid", Final: true})
		c, _ := l.Claim(ctx, id, time.Minute)
		if c.Outcome != ledger.ClaimFinal || c.Status != ledger.StatusFailed {
			t.Fatalf("claim %+v", c)
		}
	})
	t.Run("a missing record is reported", func(t *testing.T) {
		c, _ := l.Claim(ctx, ledger.NewID(), time.Minute)
		if c.Outcome != ledger.ClaimMissing {
			t.Fatalf("claim %+v", c)
		}
	})
}

func TestCancel(t *testing.T) {
	l, _ := newLedger(t)
	t.Run("a queued message is canceled and never claimed", func(t *testing.T) {
		id := create(t, l, "c")
		if err := l.Cancel(ctx, "c", id, ledger.CanceledByAPI); err != nil {
			t.Fatal(err)
		}
		if c, _ := l.Claim(ctx, id, time.Minute); c.Outcome != ledger.ClaimFinal || c.Status != ledger.StatusCanceled {
			t.Fatalf("claim %+v", c)
		}
	})
	t.Run("another tenant's message is not found", func(t *testing.T) {
		id := create(t, l, "c")
		if err := l.Cancel(ctx, "other", id, ledger.CanceledByAPI); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("a message being handed to the provider right now conflicts", func(t *testing.T) {
		id := create(t, l, "c")
		_, _ = l.Claim(ctx, id, time.Minute)
		var ce *ledger.ConflictError
		if err := l.Cancel(ctx, "c", id, ledger.CanceledByAPI); !errors.As(err, &ce) || ce.Reason != "inflight" {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("a message the provider has conflicts", func(t *testing.T) {
		id := create(t, l, "c")
		_, _ = l.Claim(ctx, id, time.Minute)
		_ = l.RecordAccepted(ctx, id, "sms", "SM1")
		if err := l.Cancel(ctx, "c", id, ledger.CanceledByAPI); !errors.Is(err, ledger.ErrConflict) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("a message waiting for a retry can be canceled", func(t *testing.T) {
		id := create(t, l, "c")
		_, _ = l.Claim(ctx, id, time.Minute)
		_ = l.RecordFailure(ctx, id, ledger.Failure{Code: "20500", RetryAt: time.Now().Add(time.Minute)})
		if err := l.Cancel(ctx, "c", id, ledger.CanceledByAPI); err != nil {
			t.Fatal(err)
		}
	})
}

func TestIdempotencyKeys(t *testing.T) {
	l, _ := newLedger(t)
	first, err := l.ClaimIdempotencyKey(ctx, "c", "k1", "hash-a", "ID1", time.Hour)
	if err != nil || first != "ID1" {
		t.Fatalf("first claim %q %v", first, err)
	}
	again, err := l.ClaimIdempotencyKey(ctx, "c", "k1", "hash-a", "ID2", time.Hour)
	if err != nil || again != "ID1" {
		t.Fatalf("replay %q %v; want ID1", again, err)
	}
	if _, err := l.ClaimIdempotencyKey(ctx, "c", "k1", "hash-b", "ID3", time.Hour); !errors.Is(err, ledger.ErrIdempotencyMismatch) {
		t.Fatalf("different body: %v", err)
	}
	other, _ := l.ClaimIdempotencyKey(ctx, "other-tenant", "k1", "hash-b", "ID4", time.Hour)
	if other != "ID4" {
		t.Fatalf("keys are per tenant; got %q", other)
	}
}

func TestFindIsPerTenantNewestFirst(t *testing.T) {
	l, _ := newLedger(t)
	var ids []string
	for i := 0; i < 3; i++ {
		ids = append(ids, create(t, l, "a")) // same millisecond ties are kept in order too
	}
	create(t, l, "b")
	got, err := l.Find(ctx, "a", ledger.Query{Limit: 10})
	if err != nil || !slices.Equal(idsOf(got), []string{ids[2], ids[1], ids[0]}) {
		t.Fatalf("Find = %v, %v (ids %v)", idsOf(got), err, ids)
	}
	page2, _ := l.Find(ctx, "a", ledger.Query{Before: ids[2], Limit: 10})
	if !slices.Equal(idsOf(page2), []string{ids[1], ids[0]}) {
		t.Fatalf("page after %s = %v", ids[2], idsOf(page2))
	}
}

func TestStatusOrder(t *testing.T) {
	order := []ledger.Status{ledger.StatusQueued, ledger.StatusSending, ledger.StatusSent, ledger.StatusDelivered}
	for i := 1; i < len(order); i++ {
		if order[i].Rank() <= order[i-1].Rank() {
			t.Fatalf("%s must rank above %s", order[i], order[i-1])
		}
	}
	for _, s := range []ledger.Status{ledger.StatusDelivered, ledger.StatusUndelivered, ledger.StatusFailed, ledger.StatusCanceled, ledger.StatusSuppressed} {
		if !s.Final() {
			t.Fatalf("%s must be final", s)
		}
	}
	if ledger.Status("bogus").Valid() {
		t.Fatal("unknown status must be invalid")
	}
}

func TestScriptsSurviveARedisThatForgotThem(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	l := ledger.New(rdb, time.Hour)
	create(t, l, "c") // caches the scripts
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	id := create(t, l, "c")
	if _, err := l.Claim(ctx, id, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := l.RecordAccepted(ctx, id, "sms", "SM7"); err != nil {
		t.Fatalf("RecordAccepted after SCRIPT FLUSH: %v", err)
	}
	if got, _ := l.MessageIDByProvider(ctx, "sms", "SM7"); got != id || status(t, l, id).Status != ledger.StatusSent {
		t.Fatalf("provider index %q, status %s", got, status(t, l, id).Status)
	}
	if p, _ := l.Find(ctx, "c", ledger.Query{Limit: 10}); len(p.Messages) != 2 {
		t.Fatalf("tenant index %v", idsOf(p))
	}
}

func TestScheduledAndDeferredMessagesSayWhyTheyWait(t *testing.T) {
	l, _ := newLedger(t)
	at := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	id := ledger.NewID()
	if _, err := l.Create(ctx, id, ledger.Request{Tenant: "clinic-a", Channel: "sms", SendAt: &at,
		Deferred: "quiet hours 21:00-08:00 in Asia/Shanghai: deferred to 08:00"}); err != nil {
		t.Fatal(err)
	}
	m := status(t, l, id)
	if m.Status != ledger.StatusScheduled || m.Events[0].Detail == "" || !m.Events[0].RetryAt.Equal(at) {
		t.Fatalf("scheduled record = %s %+v", m.Status, m.Events)
	}
	// A queued message that a worker holds back becomes scheduled, once per deferral.
	q := create(t, l, "clinic-a")
	until := time.Now().Add(9 * time.Hour).UTC().Truncate(time.Millisecond)
	for i := 0; i < 2; i++ {
		if ok, err := l.Defer(ctx, q, until, "quiet hours"); !ok || err != nil {
			t.Fatalf("Defer = %v, %v", ok, err)
		}
	}
	if m := status(t, l, q); m.Status != ledger.StatusScheduled || len(m.Events) != 2 || !m.Events[1].RetryAt.Equal(until) {
		t.Fatalf("deferred record = %s %+v", m.Status, m.Events)
	}
	// The claim moves it on; a message the provider has is never deferred.
	if c, err := l.Claim(ctx, q, time.Minute); err != nil || c.Outcome != ledger.ClaimSend {
		t.Fatalf("Claim = %+v, %v", c, err)
	}
	if ok, _ := l.Defer(ctx, q, until.Add(time.Hour), "quiet hours"); ok {
		t.Fatal("a message with an attempt in flight was deferred")
	}
	// A retry that would fall into quiet hours waits, its status kept.
	if err := l.RecordFailure(ctx, q, ledger.Failure{Code: "20500", Attempt: 1, RetryAt: time.Now().Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if ok, err := l.Defer(ctx, q, until.Add(time.Hour), "quiet hours"); !ok || err != nil {
		t.Fatalf("Defer of a retry = %v, %v", ok, err)
	}
	if m := status(t, l, q); m.Status != ledger.StatusSending || m.Events[len(m.Events)-1].Status != ledger.StatusSending {
		t.Fatalf("a deferred retry = %s %+v", m.Status, m.Events[len(m.Events)-1])
	}
	if err := l.RecordAccepted(ctx, q, "sms", "SM1"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := l.Defer(ctx, q, until.Add(time.Hour), "quiet hours"); ok {
		t.Fatal("a message the provider has was deferred")
	}
	if err := l.Cancel(ctx, "clinic-a", id, ledger.CanceledByAPI); err != nil {
		t.Fatalf("a scheduled message could not be canceled: %v", err)
	}
}

func TestWaitingTellsMessagesStillToSendFromTheRest(t *testing.T) {
	l, _ := newLedger(t)
	queued := create(t, l, "c")
	retrying := create(t, l, "c")
	_, _ = l.Claim(ctx, retrying, time.Minute)
	_ = l.RecordFailure(ctx, retrying, ledger.Failure{Code: "20500", RetryAt: time.Now().Add(time.Minute)})
	sent := create(t, l, "c")
	_, _ = l.Claim(ctx, sent, time.Minute)
	_ = l.RecordAccepted(ctx, sent, "sms", "SM-waiting-1")
	canceled := create(t, l, "c")
	_ = l.Cancel(ctx, "c", canceled, ledger.CanceledByAPI)
	gone := ledger.NewID()
	got, err := l.Waiting(ctx, []string{queued, retrying, sent, canceled, gone})
	if err != nil {
		t.Fatal(err)
	}
	want := []bool{true, true, false, false, false}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("Waiting = %v, want %v (queued, retrying, sent, canceled, gone)", got, want)
		}
	}
}

// TestAFinalReportLeavesTheWaitForItInItsOwnRoundTrip: applying a final
// report takes the message out of the wait for its final status and
// names its tenant, in one round trip; a report about another provider
// id (a redialled call's) leaves the message waiting.
func TestAFinalReportLeavesTheWaitForItInItsOwnRoundTrip(t *testing.T) {
	l, _ := newLedger(t)
	id := create(t, l, "clinic-a")
	if c, err := l.Claim(ctx, id, time.Minute); err != nil || c.Outcome != ledger.ClaimSend {
		t.Fatalf("claim %+v %v", c, err)
	}
	if err := l.RecordAccepted(ctx, id, "sms", "SM1"); err != nil {
		t.Fatal(err)
	}
	waiting := func() bool {
		t.Helper()
		ids, err := l.Awaiting(ctx, "sms", time.Now().Add(time.Hour), 10)
		if err != nil {
			t.Fatal(err)
		}
		return len(ids) == 1 && ids[0] == id
	}
	if !waiting() {
		t.Fatal("an accepted SMS is not waiting for its final report")
	}
	_, err := l.ApplyReport(ctx, id, ledger.ProviderUpdate{Channel: "sms", ProviderID: "SM0", Status: ledger.StatusDelivered, ProviderStatus: "delivered"})
	if !errors.Is(err, ledger.ErrProviderMismatch) || !waiting() {
		t.Fatalf("another provider id's final report: %v, still waiting %v", err, waiting())
	}
	r, err := l.ApplyReport(ctx, id, ledger.ProviderUpdate{Channel: "sms", ProviderID: "SM1", Status: ledger.StatusDelivered, ProviderStatus: "delivered"})
	if err != nil || r.Applied != ledger.AppliedChanged || r.Tenant != "clinic-a" || waiting() {
		t.Fatalf("the final report: %+v %v, still waiting %v", r, err, waiting())
	}
}

// A record made when its id was may leave out its creation time (a later
// version will, for such records): it is the id's time, and the record
// reads, claims and keeps its history's times as with it.
func TestARecordWithoutItsCreationTimeTakesItsIDs(t *testing.T) {
	l, srv := newLedger(t)
	id := ledger.NewID()
	made := ledger.MadeAt(id)
	if _, err := l.Create(ctx, id, ledger.Request{Tenant: "clinic-a", Channel: "sms", To: ledger.Recipient{Phone: "+14155550100"},
		Body: "hi", Priority: "normal", CreatedAt: made}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Client().HDel(ctx, "gw:m:{"+id+"}", "created_at").Err(); err != nil {
		t.Fatal(err)
	}
	m := status(t, l, id)
	if !m.CreatedAt.Equal(made) || !m.UpdatedAt.Equal(made) || len(m.Events) != 1 || !m.Events[0].At.Equal(made) {
		t.Fatalf("read created %v, updated %v, events %+v; want the id's time %v", m.CreatedAt, m.UpdatedAt, m.Events, made)
	}
	c, err := l.Claim(ctx, id, time.Minute)
	if err != nil || c.Outcome != ledger.ClaimSend || !c.Message.CreatedAt.Equal(made) || c.Message.Tenant != "clinic-a" {
		t.Fatalf("claim %+v, %v; want the message made at the id's time", c, err)
	}
}

// A new record leaves out the fields it would only set to their starting
// values (attempts 0, updated_at = created_at): it reads, claims and
// updates as a record with them (an earlier version's) does.
func TestARecordWithoutItsStartingFieldsIsReadAndClaimed(t *testing.T) {
	l, srv := newLedger(t)
	id := create(t, l, "c")
	if n := srv.Client().HExists(ctx, "gw:m:{"+id+"}", "attempts").Val(); n {
		t.Fatal("a new record holds attempts")
	}
	if n := srv.Client().HExists(ctx, "gw:m:{"+id+"}", "updated_at").Val(); n {
		t.Fatal("a new record holds updated_at")
	}
	m := status(t, l, id)
	if m.Attempts != 0 || m.UpdatedAt.IsZero() || !m.UpdatedAt.Equal(m.CreatedAt) {
		t.Fatalf("read attempts %d, updated %v, created %v; want 0 and the creation time", m.Attempts, m.UpdatedAt, m.CreatedAt)
	}
	c, err := l.Claim(ctx, id, time.Minute)
	if err != nil || c.Outcome != ledger.ClaimSend || c.Attempt != 1 {
		t.Fatalf("claim %+v, %v; want the first attempt", c, err)
	}
	if m := status(t, l, id); m.Attempts != 1 || m.Status != ledger.StatusSending {
		t.Fatalf("after the claim: attempts %d, status %s", m.Attempts, m.Status)
	}
}
