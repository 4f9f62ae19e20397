package followups_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/followups"
	"github.com/patientmsg/gateway/internal/redistest"
)

var (
	patient = consent.Identity{Kind: consent.Phone, Value: "+14155550123"}
	other   = consent.Identity{Kind: consent.Phone, Value: "+8613800138000"}
	mailbox = consent.Identity{Kind: consent.Email, Value: "Pat.Doe@Example.ORG"}
)

// testCtx bounds every Redis call of a test.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// plan returns a plan with the given steps' states; scheduled and sent_now
// steps get message ids m0, m1… prefixed with the plan's id.
func plan(tenant string, ids []consent.Identity, stopOn []string, states ...string) *followups.Plan {
	id := followups.NewID()
	anchor := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	p := &followups.Plan{
		ID: id, Tenant: tenant, ContactID: "mrn-1", Identities: ids, Anchor: anchor,
		TimeZone: "Asia/Shanghai", StopOn: stopOn, PastDue: followups.PastDueSkip,
	}
	for i, st := range states {
		s := followups.Step{
			Offset: fmt.Sprintf("P%dD", i), At: "10:00", Channel: "sms", Template: "post_discharge",
			DueAt: anchor.Add(time.Duration(i) * 24 * time.Hour), State: st,
		}
		if st != followups.StepSkipped {
			s.MessageID = fmt.Sprintf("%s-m%d", id, i)
		} else {
			s.Detail = "due " + s.DueAt.Format(time.RFC3339) + ", past due when the plan was created"
		}
		p.Steps = append(p.Steps, s)
	}
	return p
}

func create(t *testing.T, s *followups.Store, p *followups.Plan) *followups.Plan {
	t.Helper()
	if err := s.Create(testCtx(t), p); err != nil {
		t.Fatalf("Create: %v", err)
	}
	return p
}

// canceler records cancel calls and answers with the errors it is given.
type canceler struct {
	mu      sync.Mutex
	calls   map[string]int
	answers map[string]error
	reasons map[string]string // the reason each message was canceled with
	delay   time.Duration
}

func newCanceler() *canceler {
	return &canceler{calls: map[string]int{}, answers: map[string]error{}, reasons: map[string]string{}}
}

func (c *canceler) cancel(ctx context.Context, tenant, messageID, reason string) error {
	if c.delay > 0 {
		time.Sleep(c.delay)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls[messageID]++
	c.reasons[messageID] = reason
	return c.answers[messageID]
}

func (c *canceler) count(messageID string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[messageID]
}

func (c *canceler) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.calls {
		n += v
	}
	return n
}

func states(p *followups.Plan) string {
	var b []string
	for _, s := range p.Steps {
		b = append(b, s.State)
	}
	return strings.Join(b, ",")
}

func TestNewID(t *testing.T) {
	a, b := followups.NewID(), followups.NewID()
	if !strings.HasPrefix(a, "fu_") || len(a) != 3+26 || a == b || a >= b {
		t.Fatalf("ids %q %q", a, b)
	}
}

func TestValidStopOn(t *testing.T) {
	for _, s := range []string{"opt_out", "reply:urgent", "reply:any"} {
		if !followups.ValidStopOn(s) {
			t.Errorf("%q refused", s)
		}
	}
	for _, s := range []string{"", "reply", "reply:", "OPT_OUT", "stop", "reply:other"} {
		if followups.ValidStopOn(s) {
			t.Errorf("%q accepted", s)
		}
	}
}

func TestCreateGetListAndTenantIsolation(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	s := followups.NewStore(rdb, time.Hour)
	ctx := testCtx(t)

	base := time.Now().Add(-time.Minute).UTC().Truncate(time.Millisecond)
	var a []*followups.Plan
	for i := range 3 {
		p := plan("clinic-a", []consent.Identity{patient, mailbox}, []string{"opt_out"}, followups.StepScheduled, followups.StepSkipped, followups.StepScheduled)
		p.CreatedAt = base.Add(time.Duration(i) * time.Second)
		a = append(a, create(t, s, p))
	}
	b := create(t, s, plan("clinic-b", []consent.Identity{patient}, nil, followups.StepScheduled))

	got, err := s.Get(ctx, "clinic-a", a[1].ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != a[1].ID || got.Tenant != "clinic-a" || got.State != followups.PlanActive || got.ContactID != "mrn-1" ||
		!got.Anchor.Equal(a[1].Anchor) || got.TimeZone != "Asia/Shanghai" || len(got.StopOn) != 1 || got.PastDue != "skip" ||
		!got.CreatedAt.Equal(a[1].CreatedAt) || !got.UpdatedAt.Equal(a[1].CreatedAt) || states(got) != "scheduled,skipped,scheduled" {
		t.Fatalf("Get = %+v", got)
	}
	for i, st := range got.Steps {
		want := a[1].Steps[i]
		if st.Index != i || st.MessageID != want.MessageID || !st.DueAt.Equal(want.DueAt) || st.Offset != want.Offset ||
			st.At != "10:00" || st.Channel != "sms" || st.Template != "post_discharge" || st.Detail != want.Detail {
			t.Fatalf("step %d = %+v, want %+v", i, st, want)
		}
	}
	if got.Identities[1].Value != "Pat.Doe@example.org" {
		t.Fatalf("identities are normalised as the consent ledger does: %+v", got.Identities)
	}

	list, err := s.List(ctx, "clinic-a", 0)
	if err != nil || len(list) != 3 || list[0].ID != a[2].ID || list[1].ID != a[1].ID || list[2].ID != a[0].ID {
		t.Fatalf("List = %v, %v", ids(list), err)
	}
	if list, _ := s.List(ctx, "clinic-a", 2); len(list) != 2 || list[0].ID != a[2].ID {
		t.Fatalf("List(2) = %v", ids(list))
	}

	// Tenants see only their own plans.
	if _, err := s.Get(ctx, "clinic-b", a[0].ID); !errors.Is(err, followups.ErrNotFound) {
		t.Fatalf("another tenant's plan: %v", err)
	}
	if list, _ := s.List(ctx, "clinic-b", 10); len(list) != 1 || list[0].ID != b.ID {
		t.Fatalf("clinic-b lists %v", ids(list))
	}
	c := newCanceler()
	if _, err := s.Stop(ctx, "clinic-b", a[0].ID, followups.PlanCanceled, "", c.cancel); !errors.Is(err, followups.ErrNotFound) || c.total() != 0 {
		t.Fatalf("another tenant canceled a plan: %v (%d cancels)", err, c.total())
	}
	for _, id := range []string{followups.NewID(), "", "fu_", "fu_01j0000000000000000000000", "gw:fu:{x}", a[0].ID[3:]} {
		if _, err := s.Get(ctx, "clinic-a", id); !errors.Is(err, followups.ErrNotFound) {
			t.Fatalf("Get(%q): %v", id, err)
		}
	}

	// The plan lives until its last step is due plus the retention.
	last := a[0].Steps[2].DueAt
	if ttl := rdb.PTTL(ctx, "gw:fu:{"+a[0].ID+"}").Val(); ttl < time.Until(last)+time.Hour-time.Minute || ttl > time.Until(last)+time.Hour+time.Second {
		t.Fatalf("TTL %s, want about %s", ttl, time.Until(last)+time.Hour)
	}
	// Phone numbers and addresses never appear in key names.
	keys, _ := rdb.Keys(ctx, "gw:fu:*").Result()
	if len(keys) == 0 {
		t.Fatal("no keys")
	}
	for _, k := range keys {
		if strings.Contains(k, "4155550123") || strings.Contains(strings.ToLower(k), "example.org") {
			t.Fatalf("an identity appears in a key name: %s", k)
		}
	}

	if err := s.Create(ctx, &followups.Plan{ID: a[0].ID, Tenant: "clinic-a", Steps: a[0].Steps}); !errors.Is(err, followups.ErrExists) {
		t.Fatalf("a second Create with the same id: %v", err)
	}
}

func ids(ps []*followups.Plan) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.ID)
	}
	return out
}

func TestCreateRefusesBadPlansAndCompletesEmptyOnes(t *testing.T) {
	srv := redistest.Start(t)
	s := followups.NewStore(srv.Client(), time.Hour)
	ctx := testCtx(t)
	bad := map[string]func(p *followups.Plan){
		"no tenant":                   func(p *followups.Plan) { p.Tenant = "" },
		"no steps":                    func(p *followups.Plan) { p.Steps = nil },
		"unknown stop_on":             func(p *followups.Plan) { p.StopOn = []string{"reply:maybe"} },
		"unknown past_due":            func(p *followups.Plan) { p.PastDue = "later" },
		"unknown step state":          func(p *followups.Plan) { p.Steps[0].State = "pending" },
		"scheduled without message":   func(p *followups.Plan) { p.Steps[0].MessageID = "" },
		"invalid identity":            func(p *followups.Plan) { p.Identities = []consent.Identity{{Kind: "fax", Value: "1"}} },
		"foreign id":                  func(p *followups.Plan) { p.ID = "plan-1" },
		"unknown plan state":          func(p *followups.Plan) { p.State = "paused" },
		"more steps than MaxSteps":    func(p *followups.Plan) { p.Steps = make([]followups.Step, followups.MaxSteps+1) },
		"an id with a hash tag in it": func(p *followups.Plan) { p.ID = "fu_{x}" },
	}
	for name, mutate := range bad {
		p := plan("clinic-a", []consent.Identity{patient}, nil, followups.StepScheduled)
		mutate(p)
		if err := s.Create(ctx, p); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	p := plan("clinic-a", []consent.Identity{patient}, []string{"opt_out"}, followups.StepSkipped, followups.StepSentNow)
	p.ID = ""
	create(t, s, p)
	if !strings.HasPrefix(p.ID, "fu_") || p.State != followups.PlanCompleted {
		t.Fatalf("a plan with nothing scheduled: %s %s", p.ID, p.State)
	}
	c := newCanceler()
	if _, err := s.Stop(ctx, "clinic-a", p.ID, followups.PlanCanceled, "", c.cancel); !errors.Is(err, followups.ErrNotActive) {
		t.Fatalf("canceling a completed plan: %v", err)
	}
	if n, err := s.StopFor(ctx, patient, "opt_out", "STOP", c.cancel); n != 0 || err != nil || c.total() != 0 {
		t.Fatalf("a completed plan is not indexed for its identities: %d %v", n, err)
	}
}

func TestCancelCancelsScheduledStepsOnly(t *testing.T) {
	srv := redistest.Start(t)
	s := followups.NewStore(srv.Client(), time.Hour)
	ctx := testCtx(t)
	p := create(t, s, plan("clinic-a", []consent.Identity{patient}, []string{"opt_out"},
		followups.StepScheduled, followups.StepSkipped, followups.StepSentNow, followups.StepScheduled, followups.StepScheduled))
	m := func(i int) string { return p.Steps[i].MessageID }
	c := newCanceler()
	c.answers[m(3)] = fmt.Errorf("ledger: %w", followups.ErrAlreadySent)

	got, err := s.Stop(ctx, "clinic-a", p.ID, followups.PlanCanceled, "canceled by the clinic", c.cancel)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{1, 0, 0, 1, 1} {
		if n := c.count(m(i)); n != want {
			t.Errorf("step %d (%s): %d cancel calls, want %d", i, p.Steps[i].State, n, want)
		}
		if want > 0 && c.reasons[m(i)] != "canceled by the clinic" {
			t.Errorf("step %d's message was canceled with the reason %q, not the plan's", i, c.reasons[m(i)])
		}
	}
	check := func(got *followups.Plan) {
		t.Helper()
		if got.State != followups.PlanCanceled || got.StopReason != "canceled by the clinic" || !got.UpdatedAt.After(got.CreatedAt) {
			t.Fatalf("plan %s %q updated %s", got.State, got.StopReason, got.UpdatedAt)
		}
		if s := states(got); s != "canceled,skipped,sent_now,scheduled,canceled" {
			t.Fatalf("states %s", s)
		}
		details := []string{"canceled by the clinic", p.Steps[1].Detail, "", followups.DetailAlreadySent, "canceled by the clinic"}
		for i, st := range got.Steps {
			if st.Detail != details[i] {
				t.Errorf("step %d detail %q, want %q", i, st.Detail, details[i])
			}
		}
	}
	check(got)
	stored, err := s.Get(ctx, "clinic-a", p.ID)
	if err != nil {
		t.Fatal(err)
	}
	check(stored)

	if _, err := s.Stop(ctx, "clinic-a", p.ID, followups.PlanCanceled, "again", c.cancel); !errors.Is(err, followups.ErrNotActive) {
		t.Fatalf("a second cancel: %v", err)
	}
	if n, err := s.StopFor(ctx, patient, "opt_out", "STOP", c.cancel); n != 0 || err != nil {
		t.Fatalf("a canceled plan must not be stopped again: %d %v", n, err)
	}
	if c.total() != 3 {
		t.Fatalf("%d cancel calls, want 3", c.total())
	}
	if _, err := s.Stop(ctx, "clinic-a", p.ID, followups.PlanActive, "", c.cancel); err == nil || errors.Is(err, followups.ErrNotActive) {
		t.Fatalf("stopping into an unknown state: %v", err)
	}
}

func TestAFailedCancelKeepsThePlanActiveForARetry(t *testing.T) {
	srv := redistest.Start(t)
	s := followups.NewStore(srv.Client(), time.Hour)
	ctx := testCtx(t)
	p := create(t, s, plan("clinic-a", []consent.Identity{patient}, []string{"opt_out"},
		followups.StepScheduled, followups.StepScheduled, followups.StepScheduled))
	m := func(i int) string { return p.Steps[i].MessageID }
	c := newCanceler()
	c.answers[m(1)] = errors.New("connection reset")
	c.answers[m(2)] = followups.ErrAlreadySent

	if _, err := s.Stop(ctx, "clinic-a", p.ID, followups.PlanStopped, "opted out", c.cancel); err == nil || errors.Is(err, followups.ErrNotActive) || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("Stop with a failing cancel: %v", err)
	}
	got, _ := s.Get(ctx, "clinic-a", p.ID)
	if got.State != followups.PlanActive || states(got) != "stopped,scheduled,scheduled" ||
		!strings.Contains(got.Steps[1].Detail, "connection reset") || got.Steps[2].Detail != followups.DetailAlreadySent {
		t.Fatalf("after a failure: %s %s %+v", got.State, states(got), got.Steps)
	}

	delete(c.answers, m(1))
	got, err := s.Stop(ctx, "clinic-a", p.ID, followups.PlanStopped, "opted out", c.cancel)
	if err != nil || got.State != followups.PlanStopped || states(got) != "stopped,stopped,scheduled" || got.Steps[1].Detail != "opted out" {
		t.Fatalf("the retry: %v %+v", err, got)
	}
	// Each step was canceled once; the failed one twice; the sent one not again.
	for i, want := range []int{1, 2, 1} {
		if n := c.count(m(i)); n != want {
			t.Errorf("step %d: %d cancel calls, want %d", i, n, want)
		}
	}
}

func TestStopForFindsTheIdentitysPlansInEveryTenant(t *testing.T) {
	srv := redistest.Start(t)
	s := followups.NewStore(srv.Client(), time.Hour)
	ctx := testCtx(t)
	sched := followups.StepScheduled
	optOutA := create(t, s, plan("clinic-a", []consent.Identity{patient}, []string{"opt_out"}, sched, sched))
	optOutB := create(t, s, plan("clinic-b", []consent.Identity{mailbox, patient}, []string{"reply:urgent", "opt_out"}, sched))
	anyReply := create(t, s, plan("clinic-a", []consent.Identity{patient}, []string{"reply:any"}, sched))
	urgentOnly := create(t, s, plan("clinic-b", []consent.Identity{patient}, []string{"reply:urgent"}, sched))
	never := create(t, s, plan("clinic-b", []consent.Identity{patient}, nil, sched))
	someoneElse := create(t, s, plan("clinic-a", []consent.Identity{other}, []string{"opt_out", "reply:any"}, sched))
	c := newCanceler()

	state := func(p *followups.Plan) string {
		t.Helper()
		got, err := s.Get(ctx, p.Tenant, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got.State
	}

	n, err := s.StopFor(ctx, patient, "opt_out", "patient replied STOP", c.cancel)
	if err != nil || n != 2 {
		t.Fatalf("StopFor(opt_out) = %d, %v", n, err)
	}
	for _, p := range []*followups.Plan{optOutA, optOutB} {
		got, _ := s.Get(ctx, p.Tenant, p.ID)
		if got.State != followups.PlanStopped || got.StopReason != "patient replied STOP" || strings.Count(states(got), "stopped") != len(got.Steps) {
			t.Fatalf("%s: %s %q %s", p.Tenant, got.State, got.StopReason, states(got))
		}
		for _, st := range p.Steps {
			if c.count(st.MessageID) != 1 {
				t.Fatalf("message %s canceled %d times", st.MessageID, c.count(st.MessageID))
			}
		}
	}
	for _, p := range []*followups.Plan{anyReply, urgentOnly, never, someoneElse} {
		if st := state(p); st != followups.PlanActive {
			t.Fatalf("a plan not stopping on opt_out is %s", st)
		}
	}

	// A non-urgent reply stops only plans stopping on any reply.
	if n, err := s.StopFor(ctx, patient, "reply:any", "patient replied", c.cancel); err != nil || n != 1 || state(anyReply) != followups.PlanStopped || state(urgentOnly) != followups.PlanActive {
		t.Fatalf("StopFor(reply:any) = %d, %v", n, err)
	}
	// An urgent reply is a reply too.
	if n, err := s.StopFor(ctx, patient, "reply:urgent", "chest pain", c.cancel); err != nil || n != 1 || state(urgentOnly) != followups.PlanStopped {
		t.Fatalf("StopFor(reply:urgent) = %d, %v", n, err)
	}
	if state(never) != followups.PlanActive || state(someoneElse) != followups.PlanActive {
		t.Fatal("plans without the condition or of someone else were stopped")
	}
	if n, err := s.StopFor(ctx, patient, "opt_out", "again", c.cancel); n != 0 || err != nil {
		t.Fatalf("nothing left to stop: %d %v", n, err)
	}

	// The identity is matched as the consent ledger normalises it.
	byMail := create(t, s, plan("clinic-a", []consent.Identity{mailbox}, []string{"opt_out"}, sched))
	if n, err := s.StopFor(ctx, consent.Identity{Kind: consent.Email, Value: "Pat.Doe@example.org"}, "opt_out", "unsubscribed", c.cancel); n != 1 || err != nil || state(byMail) != followups.PlanStopped {
		t.Fatalf("StopFor(email) = %d %v", n, err)
	}
	if _, err := s.StopFor(ctx, patient, "reply", "", c.cancel); err == nil {
		t.Fatal("an unknown condition must be refused")
	}
	if _, err := s.StopFor(ctx, consent.Identity{Kind: "fax", Value: "1"}, "opt_out", "", c.cancel); err == nil {
		t.Fatal("an invalid identity must be refused")
	}
}

func TestConcurrentStopsProcessEachStepOnce(t *testing.T) {
	srv := redistest.Start(t)
	s := followups.NewStore(srv.Client(), time.Hour)
	ctx := testCtx(t)
	for round := range 10 {
		sched := followups.StepScheduled
		p := create(t, s, plan("clinic-a", []consent.Identity{patient}, []string{"opt_out"}, sched, sched, sched, sched))
		c := newCanceler()
		c.delay = 2 * time.Millisecond // widen the window in which both could act

		var wg sync.WaitGroup
		start := make(chan struct{})
		var apiErr, stopErr error
		var stopped int
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-start
			_, apiErr = s.Stop(ctx, "clinic-a", p.ID, followups.PlanCanceled, "canceled by the clinic", c.cancel)
		}()
		go func() {
			defer wg.Done()
			<-start
			stopped, stopErr = s.StopFor(ctx, patient, "opt_out", "opted out", c.cancel)
		}()
		close(start)
		wg.Wait()

		if stopErr != nil {
			t.Fatalf("round %d: StopFor: %v", round, stopErr)
		}
		if (apiErr == nil) == (stopped == 1) || (apiErr != nil && !errors.Is(apiErr, followups.ErrNotActive)) {
			t.Fatalf("round %d: exactly one stopper must win: cancel %v, StopFor stopped %d", round, apiErr, stopped)
		}
		for _, st := range p.Steps {
			if n := c.count(st.MessageID); n != 1 {
				t.Fatalf("round %d: message %s canceled %d times", round, st.MessageID, n)
			}
		}
		got, _ := s.Get(ctx, "clinic-a", p.ID)
		want := followups.PlanCanceled
		if stopped == 1 {
			want = followups.PlanStopped
		}
		if got.State != want || strings.Count(states(got), want) != len(got.Steps) {
			t.Fatalf("round %d: %s %s, want %s", round, got.State, states(got), want)
		}
	}

	// Two API cancels at once.
	sched := followups.StepScheduled
	p := create(t, s, plan("clinic-a", []consent.Identity{patient}, nil, sched, sched, sched))
	c := newCanceler()
	c.delay = 5 * time.Millisecond
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			_, err := s.Stop(ctx, "clinic-a", p.ID, followups.PlanCanceled, "", c.cancel)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	wins := 0
	for err := range errs {
		if err == nil {
			wins++
		} else if !errors.Is(err, followups.ErrNotActive) {
			t.Fatal(err)
		}
	}
	if wins != 1 || c.total() != 3 {
		t.Fatalf("%d stoppers won, %d cancel calls", wins, c.total())
	}
}

func TestAnExpiredPlanIsNotFound(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client()
	s := followups.NewStore(rdb, 300*time.Millisecond)
	ctx := testCtx(t)
	// Every step is past due: the plan lives for the retention from now.
	p := plan("clinic-a", []consent.Identity{patient}, []string{"opt_out"}, followups.StepScheduled)
	p.Steps[0].DueAt = time.Now().Add(-time.Hour)
	create(t, s, p)
	if _, err := s.Get(ctx, "clinic-a", p.ID); err != nil {
		t.Fatalf("a fresh plan: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		srv.FastForward(time.Second)
		_, err := s.Get(ctx, "clinic-a", p.ID)
		if errors.Is(err, followups.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the plan did not expire: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c := newCanceler()
	if _, err := s.Stop(ctx, "clinic-a", p.ID, followups.PlanCanceled, "", c.cancel); !errors.Is(err, followups.ErrNotFound) {
		t.Fatalf("Stop of an expired plan: %v", err)
	}
	if n, err := s.StopFor(ctx, patient, "opt_out", "", c.cancel); n != 0 || err != nil || c.total() != 0 {
		t.Fatalf("StopFor with an expired plan: %d %v", n, err)
	}
	if list, err := s.List(ctx, "clinic-a", 10); len(list) != 0 || err != nil {
		t.Fatalf("List with an expired plan: %v %v", ids(list), err)
	}
	// The expired plan left the tenant's index as List met it.
	if n := rdb.ZCard(ctx, "gw:fu:t:{clinic-a}").Val(); n != 0 {
		t.Fatalf("%d index entries left", n)
	}
}

func TestTheStoreRunsOnRedisCluster(t *testing.T) {
	srv := redistest.StartCluster(t)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{srv.Addr}})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := testCtx(t)
	if err := rdb.Eval(ctx, "return 1", []string{"a", "b"}).Err(); err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
		t.Fatalf("the test cluster does not refuse a cross-slot script: %v", err)
	}
	s := followups.NewStore(rdb, time.Hour)
	sched := followups.StepScheduled
	a := create(t, s, plan("clinic-a", []consent.Identity{patient, mailbox}, []string{"opt_out"}, sched, sched))
	b := create(t, s, plan("clinic-b", []consent.Identity{patient}, []string{"opt_out"}, sched))
	c := create(t, s, plan("clinic-a", []consent.Identity{patient}, nil, sched))
	if list, err := s.List(ctx, "clinic-a", 10); err != nil || len(list) != 2 {
		t.Fatalf("List: %v %v", ids(list), err)
	}
	cn := newCanceler()
	if got, err := s.Stop(ctx, "clinic-a", c.ID, followups.PlanCanceled, "", cn.cancel); err != nil || got.State != followups.PlanCanceled {
		t.Fatalf("Stop: %v", err)
	}
	if n, err := s.StopFor(ctx, patient, "opt_out", "STOP", cn.cancel); err != nil || n != 2 {
		t.Fatalf("StopFor: %d %v", n, err)
	}
	for _, p := range []*followups.Plan{a, b} {
		if got, err := s.Get(ctx, p.Tenant, p.ID); err != nil || got.State != followups.PlanStopped {
			t.Fatalf("Get: %v", err)
		}
	}
}

func TestActiveForListsATenantsActivePlansToAnyOfTheIdentities(t *testing.T) {
	srv := redistest.Start(t)
	s := followups.NewStore(srv.Client(), time.Hour)
	ctx := testCtx(t)
	sched := followups.StepScheduled
	older := create(t, s, plan("clinic-a", []consent.Identity{patient}, nil, sched))
	both := create(t, s, plan("clinic-a", []consent.Identity{mailbox, patient}, nil, sched))
	create(t, s, plan("clinic-b", []consent.Identity{patient}, nil, sched)) // another tenant's
	create(t, s, plan("clinic-a", []consent.Identity{other}, nil, sched))   // someone else's
	stopped := create(t, s, plan("clinic-a", []consent.Identity{patient}, nil, sched))
	if _, err := s.Stop(ctx, "clinic-a", stopped.ID, followups.PlanCanceled, "staff", newCanceler().cancel); err != nil {
		t.Fatal(err)
	}
	got, err := s.ActiveFor(ctx, "clinic-a", []consent.Identity{patient, {Kind: consent.Email, Value: "Pat.Doe@example.org"}})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, p := range got {
		ids = append(ids, p.ID)
	}
	if want := []string{both.ID, older.ID}; !slices.Equal(ids, want) {
		t.Fatalf("ActiveFor = %v, want %v (newest first, each once, active, clinic-a's only)", ids, want)
	}
}
