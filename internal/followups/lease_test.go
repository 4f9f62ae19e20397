package followups

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/redistest"
)

// A stopper that dies holding its claim blocks others only until its lease
// runs out; if it comes back late, its save is refused.
func TestAnAbandonedClaimIsTakenOverAfterItsLease(t *testing.T) {
	srv := redistest.Start(t)
	s := NewStore(srv.Client(), time.Hour)
	s.lease = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	p := &Plan{
		Tenant: "clinic-a", Identities: []consent.Identity{{Kind: consent.Phone, Value: "+14155550123"}},
		Steps: []Step{{Offset: "P1D", Channel: "sms", Template: "t", DueAt: time.Now().Add(time.Hour), MessageID: "m0", State: StepScheduled}},
	}
	if err := s.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	res, err := claimScript.Run(ctx, s.rdb, []string{planKey(p.ID)}, "clinic-a", "dead-stopper", ms(s.now()), s.lease.Milliseconds()).StringSlice()
	if err != nil || res[0] != "ok" {
		t.Fatalf("claim %v %v", res, err)
	}
	calls := 0
	cancelFn := func(context.Context, string, string, string) error { calls++; return nil }
	if _, err := s.Stop(ctx, "clinic-a", p.ID, PlanCanceled, "", cancelFn); !errors.Is(err, ErrNotActive) || calls != 0 {
		t.Fatalf("Stop during another's claim: %v (%d calls)", err, calls)
	}
	time.Sleep(s.lease + 50*time.Millisecond)
	got, err := s.Stop(ctx, "clinic-a", p.ID, PlanCanceled, "", cancelFn)
	if err != nil || got.State != PlanCanceled || calls != 1 {
		t.Fatalf("Stop after the lease: %v %+v (%d calls)", err, got, calls)
	}
	if n, err := saveScript.Run(ctx, s.rdb, []string{planKey(p.ID)}, "dead-stopper", PlanActive, "{}").Int(); err != nil || n != 0 {
		t.Fatalf("a late save of the dead stopper: %d %v", n, err)
	}
	if again, err := s.Get(ctx, "clinic-a", p.ID); err != nil || again.State != PlanCanceled {
		t.Fatalf("after the late save: %+v %v", again, err)
	}
}
