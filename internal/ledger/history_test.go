package ledger_test

import (
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/ledger"
)

// A message's history lives in its record (the ev field). A message of an
// earlier version keeps the first part of its history in a list of its
// own: it is read before the field, and an erasure scrubs both.
func TestAHistoryStartedInAListReadsOnAndIsErased(t *testing.T) {
	l, srv := newLedger(t)
	rdb := srv.Client()
	id := create(t, l, "clinic-a")
	if _, err := l.Claim(ctx, id, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := l.RecordFailure(ctx, id, ledger.Failure{Code: "30003", Message: "the patient's handset is off", Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	// As an earlier version kept it: the history in a list.
	rec, ev := "gw:m:{"+id+"}", "gw:m:{"+id+"}:ev"
	for _, e := range strings.Split(rdb.HGet(ctx, rec, "ev").Val(), "\n") {
		rdb.RPush(ctx, ev, e)
	}
	rdb.HDel(ctx, rec, "ev")
	if err := l.RecordFailure(ctx, id, ledger.Failure{Code: "30005", Message: "unknown handset of the patient", Attempt: 2}); err != nil {
		t.Fatal(err)
	}
	m := status(t, l, id)
	var codes []string
	for _, e := range m.Events {
		if e.Error != nil {
			codes = append(codes, e.Error.Code+":"+e.Error.Message)
		}
	}
	if len(m.Events) != 4 || strings.Join(codes, "|") != "30003:the patient's handset is off|30005:unknown handset of the patient" {
		t.Fatalf("history %+v", m.Events)
	}
	if err := l.Erase(ctx, "clinic-a", id); err != nil {
		t.Fatal(err)
	}
	m = status(t, l, id)
	if len(m.Events) != 4 {
		t.Fatalf("%d events after the erasure, want 4", len(m.Events))
	}
	for _, e := range m.Events {
		if e.Error != nil && e.Error.Message != "" {
			t.Fatalf("an error text stayed after the erasure: %+v", e)
		}
	}
	if m.Events[2].Error == nil || m.Events[2].Error.Code != "30003" || m.Events[3].Error == nil || m.Events[3].Error.Code != "30005" {
		t.Fatalf("the erasure changed the history's order or codes: %+v", m.Events)
	}
}

// TestAHistoryOfEveryFormReadsInOrder: events a script rewrote (the
// claim's attempt number, with its time to the millisecond) and events an
// earlier version stored in the API's form read back in order.
func TestAHistoryOfEveryFormReadsInOrder(t *testing.T) {
	l, srv := newLedger(t)
	rdb := srv.Client()
	id := create(t, l, "clinic-a")
	rec := "gw:m:{" + id + "}"
	// As an earlier version would have written its first event.
	first := strings.Split(rdb.HGet(ctx, rec, "ev").Val(), "\n")[0]
	old := `{"status":"queued","at":"2026-12-07T13:33:40.123456789Z","detail":"from an earlier version"}`
	rdb.HSet(ctx, rec, "ev", old+"\n"+first)
	before := time.Now().Truncate(time.Millisecond)
	if _, err := l.Claim(ctx, id, time.Minute); err != nil {
		t.Fatal(err)
	}
	m := status(t, l, id)
	if len(m.Events) != 3 || m.Events[0].Detail != "from an earlier version" || m.Events[1].Status != ledger.StatusQueued {
		t.Fatalf("history %+v", m.Events)
	}
	claim := m.Events[2]
	if claim.Status != ledger.StatusSending || claim.Attempt != 1 || claim.At.Before(before) || claim.At.After(time.Now()) ||
		!claim.At.Equal(claim.At.Truncate(time.Millisecond)) {
		t.Fatalf("the claim's event %+v (the script rewrote it; its time must stay to the millisecond)", claim)
	}
}

// TestARecordsDocLeavesOutWhatItsFieldsHold: the tenant and the creation
// time are fields of the record, not repeated in its doc, nor is the
// usual SMS encoding; Get and Claim give them back, and a doc of an
// earlier version that has them reads as before.
func TestARecordsDocLeavesOutWhatItsFieldsHold(t *testing.T) {
	l, srv := newLedger(t)
	rdb := srv.Client()
	before := time.Now().Truncate(time.Millisecond)
	id := create(t, l, "clinic-a")
	rec := "gw:m:{" + id + "}"
	if doc := rdb.HGet(ctx, rec, "doc").Val(); strings.Contains(doc, "clinic-a") || strings.Contains(doc, "created_at") {
		t.Fatalf("doc %s", doc)
	}
	m := status(t, l, id)
	if m.Tenant != "clinic-a" || m.CreatedAt.Before(before) || m.CreatedAt.After(time.Now()) {
		t.Fatalf("read back: tenant %q, created %v", m.Tenant, m.CreatedAt)
	}
	c, err := l.Claim(ctx, id, time.Minute)
	if err != nil || c.Message == nil || c.Message.Tenant != "clinic-a" || !c.Message.CreatedAt.Equal(m.CreatedAt) {
		t.Fatalf("claimed: %+v %v", c.Message, err)
	}
	// An SMS in GSM-7 leaves its usual encoding out; in UCS-2 it keeps it.
	for _, enc := range []string{"GSM-7", "UCS-2"} {
		sid := ledger.NewID()
		if _, err := l.Create(ctx, sid, ledger.Request{Tenant: "clinic-a", Channel: "sms", To: ledger.Recipient{Phone: "+14155550100"},
			Body: "hi", Priority: "normal", Segments: 2, Encoding: enc}); err != nil {
			t.Fatal(err)
		}
		if doc := rdb.HGet(ctx, "gw:m:{"+sid+"}", "doc").Val(); strings.Contains(doc, "GSM-7") || strings.Contains(doc, "UCS-2") != (enc == "UCS-2") {
			t.Fatalf("%s: doc %s", enc, doc)
		}
		if sm := status(t, l, sid); sm.Segments != 2 || sm.Encoding != enc {
			t.Fatalf("%s: read back %d segments in %q", enc, sm.Segments, sm.Encoding)
		}
	}
	// A record of an earlier version.
	old := ledger.NewID()
	orec := "gw:m:{" + old + "}"
	rdb.HSet(ctx, orec, "doc", `{"tenant":"clinic-b","channel":"sms","to":{"phone":"+14155550100"},"body":"hi","priority":"normal","created_at":"2026-12-07T13:33:40.123456789Z"}`,
		"tenant", "clinic-b", "status", "queued", "rank", 0, "attempts", 0, "created_at", 1796650420123, "updated_at", 1796650420123)
	om, err := l.Get(ctx, "clinic-b", old)
	if err != nil || om.Tenant != "clinic-b" || om.CreatedAt.Nanosecond() != 123456789 {
		t.Fatalf("an earlier version's record: %+v %v", om, err)
	}
}
