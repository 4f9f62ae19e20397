package followups

import (
	"context"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/redistest"
	"github.com/patientmsg/gateway/workers"
)

// countingStarter starts nothing real: it counts the starts by key.
type countingStarter struct{ keys map[string]int }

func (c *countingStarter) FirstQuestion(context.Context, string, string, string, string) (string, error) {
	return "Q1?", nil
}

func (c *countingStarter) Start(_ context.Context, in QuestionnaireStart) (QuestionnaireStarted, error) {
	c.keys[in.Key]++
	return QuestionnaireStarted{ResponseID: "qr_1", MessageID: "m_1"}, nil
}

// A questionnaire step's timer never starts it while a stopper holds the
// plan; once a dead stopper's lease has run out, the timer starts it and
// that stopper's late save is refused, so it cannot mark the step
// canceled after its questionnaire started.
func TestAStepsTimerWaitsForAStopperAndOutlivesADeadOne(t *testing.T) {
	srv := redistest.Start(t)
	s := NewStore(srv.Client(), time.Hour)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	now := time.Now().UTC()
	p := &Plan{
		Tenant: "clinic-a", Identities: []consent.Identity{{Kind: consent.Phone, Value: "+14155550123"}}, TimeZone: "UTC",
		Steps: []Step{{Offset: "P7D", Channel: "sms", Questionnaire: "post_discharge", DueAt: now, StartAt: now, State: StepScheduled}},
	}
	if err := s.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	starter := &countingStarter{keys: map[string]int{}}
	pl := &Planner{Store: s, Questionnaires: starter, Now: time.Now}
	timer := workers.FollowupStep{Tenant: "clinic-a", Plan: p.ID, Step: 0}

	claim := func(token string, at time.Time) string {
		t.Helper()
		res, err := claimScript.Run(ctx, s.rdb, []string{planKey(p.ID)}, "clinic-a", token, ms(at), s.lease.Milliseconds()).StringSlice()
		if err != nil || res[0] != "ok" {
			t.Fatalf("claim %v %v", res, err)
		}
		return res[1]
	}
	read := claim("live-stopper", time.Now())
	if err := pl.Due(ctx, timer); err == nil || workers.IsFailure(err) || len(starter.keys) != 0 {
		t.Fatalf("Due while a stopper holds the plan: %v (%d starts)", err, len(starter.keys))
	}
	if n, err := saveScript.Run(ctx, s.rdb, []string{planKey(p.ID)}, "live-stopper", PlanActive, read).Int(); err != nil || n != 1 {
		t.Fatalf("the live stopper's save: %d %v", n, err)
	}

	claim("dead-stopper", time.Now().Add(-time.Hour)) // its lease ran out long ago
	if err := pl.Due(ctx, timer); err != nil {
		t.Fatalf("Due after a dead stopper: %v", err)
	}
	if starter.keys[startKey(p.ID, 0)] != 1 || len(starter.keys) != 1 {
		t.Fatalf("starts: %v", starter.keys)
	}
	if n, err := saveScript.Run(ctx, s.rdb, []string{planKey(p.ID)}, "dead-stopper", PlanCanceled, "{}").Int(); err != nil || n != 0 {
		t.Fatalf("the dead stopper's late save: %d %v", n, err)
	}
	got, err := s.Get(ctx, "clinic-a", p.ID)
	if err != nil || got.State != PlanActive || got.Steps[0].ResponseID != "qr_1" || got.Steps[0].MessageID != "m_1" || got.Steps[0].StartedAt == nil {
		t.Fatalf("the plan: %+v %v", got, err)
	}
	// A stop now leaves the started questionnaire alone.
	calls := 0
	stopped, err := s.Stop(ctx, "clinic-a", p.ID, PlanStopped, "the patient opted out", func(context.Context, string, string, string) error { calls++; return nil })
	if err != nil || calls != 0 || stopped.Steps[0].State != StepScheduled || stopped.Steps[0].Detail != DetailAlreadySent {
		t.Fatalf("a stop after the start: %v (%d cancels) %+v", err, calls, stopped)
	}
	if err := pl.Due(ctx, timer); err != nil || starter.keys[startKey(p.ID, 0)] != 1 {
		t.Fatalf("the timer again: %v %v", err, starter.keys)
	}
}
