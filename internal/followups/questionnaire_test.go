package followups_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/followups"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/messaging"
	"github.com/patientmsg/gateway/internal/questionnaires"
	"github.com/patientmsg/gateway/internal/redistest"
	"github.com/patientmsg/gateway/internal/tenants"
	"github.com/patientmsg/gateway/workers"
)

// clock is a clock the test moves.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *clock) Set(t time.Time) { c.mu.Lock(); c.now = t; c.mu.Unlock() }

// named is a channel that only has a name: plans queue, workers send.
type named string

func (n named) Name() string { return string(n) }
func (n named) Send(context.Context, channels.Message) (channels.Result, error) {
	return channels.Result{}, nil
}

// flaky fails the first start it passes on, after the start was made: a
// worker that died before it could record the start.
type flaky struct {
	followups.QuestionnaireStarter
	mu     sync.Mutex
	failed bool
	starts int
}

func (f *flaky) Start(ctx context.Context, in followups.QuestionnaireStart) (followups.QuestionnaireStarted, error) {
	out, err := f.QuestionnaireStarter.Start(ctx, in)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.starts++
	if err == nil && !f.failed {
		f.failed = true
		return followups.QuestionnaireStarted{}, errors.New("worker lost")
	}
	return out, err
}

// qrig is a planner whose questionnaire steps start real questionnaires,
// on a throwaway Redis, with a clock the test moves.
type qrig struct {
	clk  *clock
	rdb  redis.UniversalClient
	led  *ledger.Ledger
	qs   *questionnaires.Service
	pl   *followups.Planner
	insp *asynq.Inspector
}

var shanghai, _ = time.LoadLocation("Asia/Shanghai")

func newQRig(t *testing.T, quietHours string) *qrig {
	t.Helper()
	rdb := redistest.Start(t).Client()
	// Monday 2030-03-04 15:30 in Shanghai: the discharge.
	r := &qrig{clk: &clock{now: time.Date(2030, 3, 4, 15, 30, 0, 0, shanghai)}, rdb: rdb, led: ledger.New(rdb, 24*time.Hour),
		insp: asynq.NewInspectorFromRedisClient(rdb)}
	q := asynq.NewClientFromRedisClient(rdb)
	t.Cleanup(func() { _ = q.Close() })
	msgs := &messaging.Service{Ledger: r.led, Queue: q, Channels: channels.NewRegistry(named("sms"), named("wechat"), named("voice")),
		DefaultZone: "UTC", Now: r.clk.Now}
	if quietHours != "" {
		set, err := tenants.NewStore(rdb, tenants.Settings{QuietHours: quietHours, CrisisInQuietHours: tenants.CrisisSend, TimeZone: "UTC"})
		if err != nil {
			t.Fatal(err)
		}
		msgs.Tenants = set
	}
	r.qs = &questionnaires.Service{Redis: rdb, Messages: msgs, Queue: q, Retention: 24 * time.Hour, Now: r.clk.Now}
	r.pl = &followups.Planner{Store: followups.NewStore(rdb, time.Hour), Messages: msgs,
		Questionnaires: questionnaires.PlanStarter{Service: r.qs, TTL: 24 * time.Hour}, Now: r.clk.Now}
	return r
}

// dayPlan is a plan of a day-1 message and a day-7 questionnaire at 10:00.
func (r *qrig) dayPlan(t *testing.T, stopOn ...string) *followups.Plan {
	t.Helper()
	body, name := "How are you today?", "post_discharge"
	phone, tz, locale := "+8613800138000", "Asia/Shanghai", "zh-CN"
	p, err := r.pl.Create(testCtx(t), "clinic-a", &followups.Request{
		Contact: &followups.PlanContact{Phone: &phone, TimeZone: &tz, Locale: &locale},
		Anchor:  r.clk.Now().Format(time.RFC3339),
		Steps: []followups.PlanStep{
			{Offset: "P1D", At: "10:00", Channel: "sms", Body: &body},
			{Offset: "P7D", At: "10:00", Channel: "sms", Questionnaire: &name},
		},
		StopOn: stopOn,
	})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return p
}

func (r *qrig) get(t *testing.T, p *followups.Plan) *followups.Plan {
	t.Helper()
	got, err := r.pl.Store.Get(testCtx(t), p.Tenant, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func (r *qrig) responses(t *testing.T) []*questionnaires.Response {
	t.Helper()
	rs, err := r.qs.Responses(testCtx(t), "clinic-a", "post_discharge", "", 50)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func (r *qrig) due(p *followups.Plan, step int) error {
	return r.pl.Due(context.Background(), workers.FollowupStep{Tenant: p.Tenant, Plan: p.ID, Step: step})
}

// dueAt is 10:00 in Shanghai, days after the rig's discharge.
func dueAt(days int) time.Time { return time.Date(2030, 3, 4+days, 10, 0, 0, 0, shanghai) }

func TestADay7QuestionnaireStepStartsItsQuestionnaireWhenItsTimerRuns(t *testing.T) {
	r := newQRig(t, "")
	ctx := testCtx(t)
	p := r.dayPlan(t, "opt_out")
	st := p.Steps[1]
	if p.State != followups.PlanActive || st.State != followups.StepScheduled || st.Questionnaire != "post_discharge" || st.Template != "" ||
		st.MessageID != "" || st.Locale != "zh-CN" || !st.DueAt.Equal(dueAt(7)) || !st.StartAt.Equal(dueAt(7)) || st.StartedAt != nil {
		t.Fatalf("the questionnaire step as created: %+v", st)
	}
	// Its timer is queued for its time, once.
	info, err := r.insp.GetTaskInfo(workers.QueueFor(workers.PriorityNormal), "fu:"+p.ID+":1")
	if err != nil || info.Type != workers.TypeFollowupStep || !info.NextProcessAt.Equal(dueAt(7)) {
		t.Fatalf("the step's timer: %+v %v", info, err)
	}
	view, err := r.pl.View(ctx, p)
	if err != nil || view.Steps[1].SendAt == nil || !view.Steps[1].SendAt.Equal(dueAt(7)) {
		t.Fatalf("the view of a questionnaire step not started: %+v %v", view, err)
	}

	// A timer that runs early (another process's clock) waits and starts nothing.
	r.clk.Set(dueAt(7).Add(-time.Hour))
	if err := r.due(p, 1); err == nil || workers.IsFailure(err) {
		t.Fatalf("an early timer: %v, want a wait", err)
	}
	if got := r.get(t, p).Steps[1]; got.StartedAt != nil || len(r.responses(t)) != 0 {
		t.Fatalf("an early timer started the step: %+v", got)
	}

	r.clk.Set(dueAt(7))
	if err := r.due(p, 1); err != nil {
		t.Fatalf("Due: %v", err)
	}
	got := r.get(t, p).Steps[1]
	if got.State != followups.StepScheduled || got.StartedAt == nil || !strings.HasPrefix(got.ResponseID, "qr_") || got.MessageID == "" {
		t.Fatalf("the step once started: %+v", got)
	}
	resp, err := r.qs.GetResponse(ctx, "clinic-a", got.ResponseID)
	if err != nil {
		t.Fatal(err)
	}
	var meta map[string]any
	_ = json.Unmarshal(resp.Metadata, &meta)
	if resp.State != questionnaires.StateInProgress || resp.Channel != "sms" || resp.Locale != "zh-Hans" || resp.To.Phone != "+8613800138000" ||
		meta["followup_id"] != p.ID || meta["followup_step"] != float64(1) || len(resp.Messages) != 1 || resp.Messages[0] != got.MessageID {
		t.Fatalf("the response: %+v (metadata %v)", resp, meta)
	}
	// The first question is a message of the ledger, queued like any.
	m, err := r.led.Get(ctx, "clinic-a", got.MessageID)
	if err != nil {
		t.Fatal(err)
	}
	title := questionnaires.Starters()["post_discharge"].Title["zh-Hans"]
	if m.Status != ledger.StatusQueued || m.Channel != "sms" || m.To.Phone != "+8613800138000" || !strings.Contains(m.Body, title) {
		t.Fatalf("the first question: %s %s %q", m.Status, m.Channel, m.Body)
	}
	if _, err := r.insp.GetTaskInfo(workers.QueueFor(workers.PriorityNormal), got.MessageID); err != nil {
		t.Fatalf("the first question's send is not queued: %v", err)
	}
	view, err = r.pl.View(ctx, r.get(t, p))
	if err != nil || view.Steps[1].Status != ledger.StatusQueued {
		t.Fatalf("the view of the started step: %+v %v", view.Steps[1], err)
	}

	// The timer runs again (Asynq delivers at least once): nothing new.
	if err := r.due(p, 1); err != nil {
		t.Fatalf("Due again: %v", err)
	}
	if rs := r.responses(t); len(rs) != 1 || rs[0].ID != got.ResponseID {
		t.Fatalf("%d responses after the timer ran twice", len(rs))
	}
	if again := r.get(t, p).Steps[1]; again.ResponseID != got.ResponseID || again.MessageID != got.MessageID {
		t.Fatalf("the step changed: %+v", again)
	}

	// Canceling the plan now leaves the questionnaire to run its course.
	c, err := r.pl.Cancel(ctx, "clinic-a", p.ID, ledger.CanceledByAPI)
	if err != nil || c.State != followups.PlanCanceled || c.Steps[1].State != followups.StepScheduled || c.Steps[1].Detail != followups.DetailAlreadySent {
		t.Fatalf("cancel after the start: %v %+v", err, c)
	}
	if resp, _ := r.qs.GetResponse(ctx, "clinic-a", got.ResponseID); resp.State != questionnaires.StateInProgress {
		t.Fatalf("the response after the plan's cancel: %s", resp.State)
	}
}

func TestTimersRunTwiceAtOnceOrAfterACrashStartOneQuestionnaire(t *testing.T) {
	r := newQRig(t, "")
	p := r.dayPlan(t)
	r.clk.Set(dueAt(7).Add(time.Minute))
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = r.due(p, 1) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("Due: %v", err)
		}
	}
	rs := r.responses(t)
	if len(rs) != 1 || r.get(t, p).Steps[1].ResponseID != rs[0].ID {
		t.Fatalf("%d responses from four timers at once", len(rs))
	}

	// A worker dies after the start, before recording it: the timer runs
	// again, finds the response it made and records it.
	f := &flaky{QuestionnaireStarter: r.pl.Questionnaires}
	r.pl.Questionnaires = f
	other := "+8613800138001"
	tz := "Asia/Shanghai"
	name := "post_discharge"
	r.clk.Set(dueAt(0).Add(-5 * time.Hour))
	q, err := r.pl.Create(testCtx(t), "clinic-a", &followups.Request{
		Contact: &followups.PlanContact{Phone: &other, TimeZone: &tz}, Anchor: r.clk.Now().Format(time.RFC3339),
		Steps: []followups.PlanStep{{Offset: "P7D", At: "10:00", Channel: "sms", Questionnaire: &name}},
	})
	if err != nil {
		t.Fatal(err)
	}
	r.clk.Set(dueAt(7))
	if err := r.due(q, 0); err == nil {
		t.Fatal("the lost worker's run did not fail")
	}
	if st := r.get(t, q).Steps[0]; st.StartedAt == nil || st.ResponseID != "" {
		t.Fatalf("after the lost run: %+v", st)
	}
	if err := r.due(q, 0); err != nil {
		t.Fatalf("the retry: %v", err)
	}
	st := r.get(t, q).Steps[0]
	if rs := r.responses(t); len(rs) != 2 || f.starts != 2 || st.ResponseID == "" || (st.ResponseID != rs[0].ID && st.ResponseID != rs[1].ID) {
		t.Fatalf("after the retry: %d responses, %d starts, step %+v", len(rs), f.starts, st)
	}
	resp, _ := r.qs.GetResponse(testCtx(t), "clinic-a", st.ResponseID)
	if resp.Locale != "en" || resp.To.Phone != other {
		t.Fatalf("the retried start's response: %+v", resp)
	}
}

func TestACanceledOrStoppedPlanStartsNoQuestionnaire(t *testing.T) {
	r := newQRig(t, "")
	ctx := testCtx(t)
	canceled := r.dayPlan(t)
	stopped := r.dayPlan(t, "opt_out")
	c, err := r.pl.Cancel(ctx, "clinic-a", canceled.ID, ledger.CanceledByAPI)
	if err != nil || c.Steps[1].State != followups.StepCanceled {
		t.Fatalf("cancel: %v %+v", err, c)
	}
	n, err := r.pl.Store.StopFor(ctx, consent.Identity{Kind: consent.Phone, Value: "+8613800138000"}, followups.StopOnOptOut, "the patient opted out", r.pl.CancelStep)
	if err != nil || n != 1 {
		t.Fatalf("StopFor: %d %v", n, err)
	}
	r.clk.Set(dueAt(7))
	for _, p := range []*followups.Plan{canceled, stopped} {
		if err := r.due(p, 1); err != nil {
			t.Fatalf("Due: %v", err)
		}
		st := r.get(t, p).Steps[1]
		if (st.State != followups.StepCanceled && st.State != followups.StepStopped) || st.StartedAt != nil || st.ResponseID != "" {
			t.Fatalf("the step of a %s plan: %+v", r.get(t, p).State, st)
		}
	}
	if rs := r.responses(t); len(rs) != 0 {
		t.Fatalf("%d questionnaires started by plans canceled or stopped", len(rs))
	}
	// A timer naming a step that is a message, or no step, is dropped.
	if err := r.due(canceled, 0); !errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("a timer of a message step: %v", err)
	}
	if err := r.pl.Due(ctx, workers.FollowupStep{Tenant: "clinic-a", Plan: followups.NewID(), Step: 0}); err != nil {
		t.Fatalf("a timer of a plan gone: %v", err)
	}
}

func TestQuestionnaireStepsAreCheckedWithThePlan(t *testing.T) {
	r := newQRig(t, "")
	phone := "+8613800138000"
	str := func(s string) *string { return &s }
	_, err := r.pl.Create(testCtx(t), "clinic-a", &followups.Request{
		Contact: &followups.PlanContact{Phone: &phone},
		Anchor:  r.clk.Now().Format(time.RFC3339),
		Steps: []followups.PlanStep{
			{Offset: "P7D", Channel: "sms", Questionnaire: str("no_such_one")},
			{Offset: "P7D", Channel: "sms", Questionnaire: str("post_discharge"), Template: str("post_discharge_day7")},
			{Offset: "P7D", Channel: "email", Questionnaire: str("post_discharge")},
			{Offset: "P7D", Channel: "wechat", Questionnaire: str("post_discharge")},
			{Offset: "P7D", Channel: "sms", Questionnaire: str("")},
		},
	})
	var invalid *messaging.InvalidError
	if !errors.As(err, &invalid) {
		t.Fatalf("Create: %v, want a validation error", err)
	}
	fields := map[string]string{}
	for _, fe := range invalid.Errors {
		fields[fe.Field] = fe.Detail
	}
	for _, want := range []string{"steps[0].questionnaire", "steps[1].template", "steps[2].channel", "steps[3].channel", "steps[4].questionnaire"} {
		if fields[want] == "" {
			t.Errorf("%s is not named: %v", want, fields)
		}
	}
	if !strings.Contains(fields["steps[0].questionnaire"], "no_such_one") {
		t.Errorf("the unknown questionnaire is not named: %q", fields["steps[0].questionnaire"])
	}
	if list, _ := r.pl.Store.List(testCtx(t), "clinic-a", 10); len(list) != 0 {
		t.Fatalf("a refused plan was stored: %d", len(list))
	}
	// A tenant's own questionnaire is a questionnaire too.
	if _, _, err := r.qs.Put(testCtx(t), "clinic-a", "knee", questionnaires.Starters()["gad7"].Spec); err != nil {
		t.Fatal(err)
	}
	if _, err := r.pl.Create(testCtx(t), "clinic-a", &followups.Request{Contact: &followups.PlanContact{Phone: &phone},
		Anchor: r.clk.Now().Format(time.RFC3339), Steps: []followups.PlanStep{{Offset: "P7D", Channel: "sms", Questionnaire: str("knee")}}}); err != nil {
		t.Fatalf("a tenant's own questionnaire: %v", err)
	}
	if _, err := r.pl.Create(testCtx(t), "clinic-b", &followups.Request{Contact: &followups.PlanContact{Phone: &phone},
		Anchor: r.clk.Now().Format(time.RFC3339), Steps: []followups.PlanStep{{Offset: "P7D", Channel: "sms", Questionnaire: str("knee")}}}); !errors.As(err, &invalid) {
		t.Fatalf("another tenant's questionnaire: %v", err)
	}
}

func TestAQuestionnaireStepInQuietHoursStartsWhenTheyEnd(t *testing.T) {
	r := newQRig(t, "21:00-08:00")
	phone, tz, name := "+8613800138000", "Asia/Shanghai", "post_discharge"
	p, err := r.pl.Create(testCtx(t), "clinic-a", &followups.Request{
		Contact: &followups.PlanContact{Phone: &phone, TimeZone: &tz}, Anchor: r.clk.Now().Format(time.RFC3339),
		Steps: []followups.PlanStep{{Offset: "P7D", At: "22:30", Channel: "sms", Questionnaire: &name}},
	})
	if err != nil {
		t.Fatal(err)
	}
	st := p.Steps[0]
	morning := time.Date(2030, 3, 12, 8, 0, 0, 0, shanghai)
	if !st.DueAt.Equal(time.Date(2030, 3, 11, 22, 30, 0, 0, shanghai)) || !st.StartAt.Equal(morning) || !strings.Contains(st.Deferred, "quiet hours") {
		t.Fatalf("a step at 22:30: due %s, starts %s (%q)", st.DueAt.In(shanghai), st.StartAt.In(shanghai), st.Deferred)
	}
	r.clk.Set(st.DueAt)
	if err := r.due(p, 0); err == nil || workers.IsFailure(err) {
		t.Fatalf("a timer inside quiet hours: %v, want a wait", err)
	}
	r.clk.Set(morning)
	if err := r.due(p, 0); err != nil || r.get(t, p).Steps[0].ResponseID == "" {
		t.Fatalf("at the end of quiet hours: %v %+v", err, r.get(t, p).Steps[0])
	}
}
