package ledger_test

import (
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/ledger"
)

func TestAnAttemptGivenBackIsNotCountedAndNeedsNoGracePeriod(t *testing.T) {
	l, _ := newLedger(t)
	id := create(t, l, "clinic-a")
	c, err := l.Claim(ctx, id, time.Hour)
	if err != nil || c.Outcome != ledger.ClaimSend || c.Attempt != 1 {
		t.Fatalf("Claim = %+v, %v", c, err)
	}
	if err := l.Unclaim(ctx, id, c.Attempt, "not sent: the claim did not reach the replicas; will retry"); err != nil {
		t.Fatal(err)
	}
	m := status(t, l, id)
	if m.Attempts != 0 || m.Events[len(m.Events)-1].Detail == "" {
		t.Fatalf("after giving the attempt back: %+v", m)
	}
	// Without the hour's grace for an attempt of unknown outcome.
	again, err := l.Claim(ctx, id, time.Hour)
	if err != nil || again.Outcome != ledger.ClaimSend || again.Attempt != 1 {
		t.Fatalf("the next claim = %+v, %v", again, err)
	}
	// An attempt the provider answered is not given back, nor one that is
	// no longer the current one.
	if err := l.RecordAccepted(ctx, id, "sms", "SM0123456789abcdef0123456789abcdef"); err != nil {
		t.Fatal(err)
	}
	if err := l.Unclaim(ctx, id, again.Attempt, "late"); err != nil {
		t.Fatal(err)
	}
	if err := l.Unclaim(ctx, id, again.Attempt+1, "not ours"); err != nil {
		t.Fatal(err)
	}
	if m := status(t, l, id); m.Attempts != 1 || m.Status != ledger.StatusSent {
		t.Fatalf("an answered attempt was given back: %+v", m)
	}
}
