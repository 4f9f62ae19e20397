package ledger_test

import (
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/ledger"
)

// A report is applied once per provider id: its replay is a duplicate.
// After an unanswered call is placed again, the next call's reports are
// applied afresh, though they repeat the first call's statuses, and a
// late report of the first call goes to the history only. A mark written by an
// earlier version (ps:<provider id>:<status>) still makes a replay a
// duplicate.
func TestReportsAreAppliedOncePerCall(t *testing.T) {
	l, srv := newLedger(t)
	rdb := srv.Client()
	id := create(t, l, "clinic-a")
	apply := func(pid, ps string, st ledger.Status) ledger.Applied {
		t.Helper()
		r, err := l.ApplyReport(ctx, id, ledger.ProviderUpdate{Channel: "voice", ProviderID: pid, Status: st, ProviderStatus: ps})
		if err != nil {
			t.Fatal(err)
		}
		return r.Applied
	}
	call := func(pid string) {
		t.Helper()
		if c, err := l.Claim(ctx, id, time.Minute); err != nil || c.Outcome != ledger.ClaimSend {
			t.Fatalf("Claim = %+v, %v", c, err)
		}
		if err := l.RecordAccepted(ctx, id, "voice", pid); err != nil {
			t.Fatal(err)
		}
	}
	call("CA1")
	if a := apply("CA1", "ringing", ledger.StatusSent); a != ledger.AppliedEventOnly {
		t.Fatalf("first ringing: %v", a)
	}
	if a := apply("CA1", "ringing", ledger.StatusSent); a != ledger.AppliedDuplicate {
		t.Fatalf("ringing replayed: %v", a)
	}
	if again, err := l.Redial(ctx, id, "CA1", 2, time.Now(), ledger.ErrorInfo{Code: "no-answer"}); err != nil || !again {
		t.Fatalf("Redial = %v, %v", again, err)
	}
	if a := apply("CA1", "no-answer", ledger.StatusUndelivered); a != ledger.AppliedEventOnly {
		t.Fatalf("the first call's late report, before the next call: %v, want the history only", a)
	}
	call("CA2")
	if a := apply("CA2", "ringing", ledger.StatusSent); a != ledger.AppliedEventOnly {
		t.Fatalf("the second call's ringing: %v, want applied as the first call's was", a)
	}
	if a := apply("CA2", "completed", ledger.StatusDelivered); a != ledger.AppliedChanged {
		t.Fatalf("the second call's completed: %v", a)
	}
	if a := apply("CA2", "completed", ledger.StatusDelivered); a != ledger.AppliedDuplicate {
		t.Fatalf("completed replayed: %v", a)
	}
	if m := status(t, l, id); m.Status != ledger.StatusDelivered || m.ProviderID != "CA2" {
		t.Fatalf("message %s by %s", m.Status, m.ProviderID)
	}

	// A record an earlier version marked.
	id = create(t, l, "clinic-a")
	call("SM1")
	rdb.HSet(ctx, "gw:m:{"+id+"}", "ps:SM1:delivered", time.Now().UnixMilli())
	if a := apply("SM1", "delivered", ledger.StatusDelivered); a != ledger.AppliedDuplicate {
		t.Fatalf("a report marked by an earlier version: %v, want a duplicate", a)
	}
}
