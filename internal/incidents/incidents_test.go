package incidents_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/patientmsg/gateway/internal/incidents"
	"github.com/patientmsg/gateway/internal/invalid"
	"github.com/patientmsg/gateway/internal/redistest"
	"github.com/patientmsg/gateway/internal/webhooks"
	"github.com/patientmsg/gateway/workers"
)

func TestOpeningAnIncidentChecksItsNameAndCadence(t *testing.T) {
	cases := []struct {
		name, cadence, field string
	}{
		{"", "6h", "name"},
		{strings.Repeat("洪", incidents.MaxName+1), "", "name"},
		{"River flood", "5m", "cadence"},
		{"River flood", "8d", "cadence"},
		{"River flood", "six hours", "cadence"},
	}
	for _, c := range cases {
		_, err := incidents.Check(c.name, c.cadence)
		var inv *invalid.Error
		if !errors.As(err, &inv) || inv.Errors[0].Field != c.field {
			t.Errorf("Check(%q, %q) = %v, want an error of %s", c.name, c.cadence, err, c.field)
		}
	}
	if d, err := incidents.Check("  River flood  ", "6h"); err != nil || d != 6*time.Hour {
		t.Fatalf("Check = %s, %v", d, err)
	}
	if d, err := incidents.Check("Heat wave", ""); err != nil || d != 0 {
		t.Fatalf("no cadence: %s, %v", d, err)
	}
}

// TestAnIncidentGroupsItsBroadcastsAndIsDueACadenceAfterTheLast: the
// next update is due a cadence after the latest broadcast linked; another
// tenant can neither read nor link it; once closed nothing is due and
// nothing more is linked.
func TestAnIncidentGroupsItsBroadcastsAndIsDueACadenceAfterTheLast(t *testing.T) {
	s := incidents.NewStore(redistest.Start(t).Client(), time.Hour)
	now := time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC)
	s.Now = func() time.Time { return now }
	ctx := t.Context()
	inc, err := s.Open(ctx, "clinic-a", "River flood", "6h")
	if err != nil {
		t.Fatal(err)
	}
	if !inc.NextDue().Equal(now.Add(6*time.Hour)) || inc.Overdue(now.Add(5*time.Hour)) || !inc.Overdue(now.Add(7*time.Hour)) {
		t.Fatalf("opened: due %s", inc.NextDue())
	}
	if err := s.Link(ctx, "clinic-b", inc.ID, "bc_1", now); !errors.Is(err, incidents.ErrNotFound) {
		t.Fatalf("another tenant's link: %v", err)
	}
	if _, err := s.Get(ctx, "clinic-b", inc.ID); !errors.Is(err, incidents.ErrNotFound) {
		t.Fatalf("another tenant's read: %v", err)
	}
	for i, bc := range []string{"bc_alert", "bc_followup"} {
		if err := s.Link(ctx, "clinic-a", inc.ID, bc, now.Add(time.Duration(i+1)*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Get(ctx, "clinic-a", inc.ID)
	if err != nil || strings.Join(got.Broadcasts, ",") != "bc_alert,bc_followup" || !got.NextDue().Equal(now.Add(8*time.Hour)) {
		t.Fatalf("after two updates: %+v, %v", got, err)
	}
	second, _ := s.Open(ctx, "clinic-a", "Heat wave", "")
	// Newest activity first: the flood's last update is after the heat
	// wave's opening.
	if list, _ := s.List(ctx, "clinic-a", 10); len(list) != 2 || list[0].ID != inc.ID {
		t.Fatalf("List = %v", list)
	}
	if !second.NextDue().IsZero() || second.Overdue(now.Add(1000*time.Hour)) {
		t.Fatal("an incident without a cadence is never due")
	}
	closed, err := s.Close(ctx, "clinic-a", inc.ID)
	if err != nil || closed.State != incidents.StateClosed || !closed.NextDue().IsZero() {
		t.Fatalf("Close = %+v, %v", closed, err)
	}
	if err := s.Link(ctx, "clinic-a", inc.ID, "bc_late", now); !errors.Is(err, incidents.ErrClosed) {
		t.Fatalf("a link to a closed incident: %v", err)
	}
	if _, err := s.Close(ctx, "clinic-a", inc.ID); !errors.Is(err, incidents.ErrClosed) {
		t.Fatalf("closing twice: %v", err)
	}
	if why, refused := s.Refused(s.Check(ctx, "clinic-a", inc.ID)); !refused || !strings.Contains(why, "closed") {
		t.Fatalf("Refused(closed) = %q %v", why, refused)
	}
	if _, refused := s.Refused(errors.New("dial tcp: connection refused")); refused {
		t.Fatal("a store error was taken for the incident's refusal")
	}
}

// TestAMissedUpdateIsToldOnceAndTheTimerGoesOn: the timer of an update
// not sent publishes incident.update_overdue once, whoever runs it, and
// is set again a cadence later; an update sent meanwhile silences it.
func TestAMissedUpdateIsToldOnceAndTheTimerGoesOn(t *testing.T) {
	rdb := redistest.Start(t).Client()
	q := asynq.NewClientFromRedisClient(rdb)
	now := time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC)
	store := incidents.NewStore(rdb, 24*time.Hour)
	store.Now = func() time.Time { return now }
	hooks := webhooks.NewStore(rdb)
	if _, err := hooks.Put(t.Context(), "clinic-a", "https://integration.example-clinic.org/events", false); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc := &incidents.Service{Store: store, Queue: q, Events: &webhooks.Publisher{Store: hooks, Queue: q, Log: log}, Logger: log}
	ctx := t.Context()
	inc, err := svc.Open(ctx, "clinic-a", "River flood", "6h")
	if err != nil {
		t.Fatal(err)
	}
	in := asynq.NewInspectorFromRedisClient(rdb)
	timers := func() []string {
		tasks, _ := in.ListScheduledTasks(workers.QueueFor(workers.PriorityHigh))
		var ids []string
		for _, task := range tasks {
			if task.Type == workers.TypeIncidentDue {
				ids = append(ids, task.ID)
			}
		}
		return ids
	}
	due := now.Add(6 * time.Hour)
	if ids := timers(); len(ids) != 1 || !strings.HasSuffix(ids[0], ":"+itoa(due.UnixMilli())) {
		t.Fatalf("timers after opening: %v", ids)
	}
	events := func() []string {
		tasks, _ := in.ListPendingTasks("gw:high")
		var out []string
		for _, task := range tasks {
			if task.Type != webhooks.TypeDeliver {
				continue
			}
			var p struct{ Event webhooks.Event }
			_ = json.Unmarshal(task.Payload, &p)
			out = append(out, p.Event.Type)
		}
		return out
	}
	timer := workers.IncidentDue{Tenant: "clinic-a", Incident: inc.ID, DueMS: due.UnixMilli()}
	now = due.Add(time.Minute)
	// The event cannot be queued: the timer fails (Asynq runs it again)
	// and the missed update is not recorded as told.
	working := svc.Events
	svc.Events = &webhooks.Publisher{Store: hooks, Queue: refusingQueue{}, Log: log}
	if err := svc.Due(ctx, timer); err == nil {
		t.Fatal("a reminder that could not be queued must fail its timer")
	}
	svc.Events = working
	for range 2 { // a timer run again (a retry, two workers) tells once
		if err := svc.Due(ctx, timer); err != nil {
			t.Fatal(err)
		}
	}
	if got := events(); len(got) != 1 || got[0] != incidents.EventOverdue {
		t.Fatalf("events after the missed update: %v", got)
	}
	next := ":" + itoa(due.Add(6*time.Hour).UnixMilli())
	if ids := timers(); !slices.ContainsFunc(ids, func(id string) bool { return strings.HasSuffix(id, next) }) {
		t.Fatalf("the next timer is not set a cadence later: %v", ids)
	}
	// An update is sent: the timer of the missed one after it stays quiet.
	if err := svc.Link(ctx, "clinic-a", inc.ID, "bc_update", now); err != nil {
		t.Fatal(err)
	}
	now = due.Add(6*time.Hour + time.Minute)
	if err := svc.Due(ctx, workers.IncidentDue{Tenant: "clinic-a", Incident: inc.ID, DueMS: due.Add(6 * time.Hour).UnixMilli()}); err != nil {
		t.Fatal(err)
	}
	if got := events(); len(got) != 1 {
		t.Fatalf("an update was sent, yet the clinic was told again: %v", got)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// refusingQueue refuses every task, as a Redis gone away does.
type refusingQueue struct{}

func (refusingQueue) EnqueueContext(context.Context, *asynq.Task, ...asynq.Option) (*asynq.TaskInfo, error) {
	return nil, errors.New("dial tcp: connection refused")
}
