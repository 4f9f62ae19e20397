package service_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/patientmsg/gateway/channels/channeltest"
	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/service"
	"github.com/patientmsg/gateway/workers"
)

// smsSendTimes are when the simulator received each SMS create request.
func smsSendTimes(e *env) []time.Time {
	var out []time.Time
	for _, r := range e.sim.Requests() {
		if r.Method == "POST" && strings.HasSuffix(r.Path, "/Messages.json") && r.Reply < 300 {
			out = append(out, r.At)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
	return out
}

// maxInWindow is the most sends within any window of length w.
func maxInWindow(ts []time.Time, w time.Duration) int {
	most := 0
	for i := range ts {
		n := 0
		for j := i; j < len(ts) && ts[j].Sub(ts[i]) < w; j++ {
			n++
		}
		most = max(most, n)
	}
	return most
}

// sendMany posts n messages concurrently and returns their ids.
func sendMany(t *testing.T, e *env, key string, n int, body func(i int) string) []string {
	t.Helper()
	ids := make([]string, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ids[i] = e.send(key, body(i))
		}()
	}
	wg.Wait()
	return ids
}

func TestASendersLimitHoldsAcrossTwoWorkerProcesses(t *testing.T) {
	const rate, n = 5, 30
	e := start(t, config.RoleAll, func(c *config.Config) { c.Senders.SMSPerSecond = rate })
	// A second worker process on the same Redis and simulator.
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w2, err := service.New(e.cfg, config.RoleWorker, service.Options{Logger: log, Transport: channeltest.LoopbackOnly(nil),
		WebhookGuard: channeltest.LoopbackOnly, EmailTLS: e.smtp.ClientTLSConfig()})
	if err != nil {
		t.Fatal(err)
	}
	if err := w2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w2.Shutdown(ctx)
	})
	ids := sendMany(t, e, keyA, n, func(i int) string { return smsBody(fmt.Sprintf("+1415555%04d", 100+i), "Your results are ready") })
	for _, id := range ids {
		m := e.waitFor(id, ledger.StatusDelivered, 20*time.Second)
		if m.Attempts != 1 {
			t.Errorf("message %s took %d attempts: waiting for the sender must not spend attempts", id, m.Attempts)
		}
	}
	ts := smsSendTimes(e)
	if len(ts) != n {
		t.Fatalf("the simulator got %d messages, want %d (none lost, none twice)", len(ts), n)
	}
	// GCRA: a burst (two seconds' worth), then one every 200 ms: within
	// any window W at most burst + rate×W.
	burst := service.SenderBurst(rate)
	if most := maxInWindow(ts, 2*time.Second); most > burst+2*rate {
		t.Fatalf("%d messages within 2 s at %d/s with a burst of %d", most, rate, burst)
	}
	if span, least := ts[n-1].Sub(ts[0]), time.Duration(n-burst)*time.Second/rate; span < least*9/10 {
		t.Fatalf("%d messages went out in %s; at %d/s after a burst of %d they need %s", n, span, rate, burst, least)
	}
}

func TestA429StormSlowsTheSenderAndItRecovers(t *testing.T) {
	e := start(t, config.RoleAll, func(c *config.Config) {
		c.Senders.SMSPerSecond = 10
		c.Senders.Recovery = 2 * time.Second
	})
	storm := twiliosim.Reply{Status: 429, RetryAfter: "1"}
	e.sim.Script(storm, storm, storm, storm)
	id := e.send(keyA, smsBody("+14155550100", "Your appointment is confirmed"))
	// Four throttled attempts, then success: more than DELIVERY_MAX_ATTEMPTS
	// (3 here), yet the message is delivered — throttles are not failures.
	m := e.waitFor(id, ledger.StatusDelivered, 20*time.Second)
	if m.Attempts < 5 {
		t.Fatalf("attempts = %d, want the 4 throttled ones and the success", m.Attempts)
	}
	snd := sender(t, e, "sms")
	if snd["throttles"].(float64) < 1 || snd["last_throttle_code"] == "" || snd["last_throttle_at"] == nil {
		t.Fatalf("GET /v1/senders does not show the throttles: %v", snd)
	}
	// The effective rate climbs back within SENDER_RECOVERY of the last throttle.
	deadline := time.Now().Add(5 * time.Second)
	for {
		snd = sender(t, e, "sms")
		if snd["slowed"] == false && snd["effective_per_second"].(float64) == 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sender did not recover: %v", snd)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sender returns the channel's sender from GET /v1/senders.
func sender(t *testing.T, e *env, channel string) map[string]any {
	t.Helper()
	a := e.do("GET", "/v1/senders", keyA, "")
	if a.Status != 200 {
		t.Fatalf("GET /v1/senders = %d %s", a.Status, a.Raw)
	}
	for _, s := range a.Body["senders"].([]any) {
		if m := s.(map[string]any); m["channel"] == channel {
			return m
		}
	}
	t.Fatalf("no %s sender in %s", channel, a.Raw)
	return nil
}

func TestThrottledSlowdownIsVisibleWhileItLasts(t *testing.T) {
	e := start(t, config.RoleAll, func(c *config.Config) {
		c.Senders.SMSPerSecond = 10
		c.Senders.Recovery = time.Minute
	})
	e.sim.Script(twiliosim.Reply{Status: 429, Code: 20429})
	id := e.send(keyA, smsBody("+14155550100", "Reminder"))
	e.waitFor(id, ledger.StatusDelivered, 20*time.Second)
	snd := sender(t, e, "sms")
	if snd["slowed"] != true || snd["effective_per_second"].(float64) >= 10 || snd["last_throttle_code"] != "20429" {
		t.Fatalf("after a 20429 the sender should run slower for a while: %v", snd)
	}
}

// delivered counts the messages that reached the provider.
func delivered(e *env, ids []string) int {
	n := 0
	for _, id := range ids {
		if m, err := e.svc.Ledger.Get(context.Background(), "", id); err == nil && m.ProviderID != "" {
			n++
		}
	}
	return n
}

func TestOneTenantsBacklogDoesNotHoldUpAnotherTenant(t *testing.T) {
	const rate = 40
	e := start(t, config.RoleAll, func(c *config.Config) { c.Senders.SMSPerSecond = rate })
	// Clinic A queues 400 bulk messages: ten seconds of this sender.
	backlog := sendMany(t, e, keyA, 400, func(i int) string {
		return smsBody(fmt.Sprintf("+1415556%04d", i), "Flu shots are available", "priority", "bulk")
	})
	time.Sleep(500 * time.Millisecond)
	for _, tc := range []struct{ name, priority string }{{"normal traffic", "normal"}, {"its own bulk", "bulk"}} {
		t.Run("clinic B's "+tc.name+" goes out at its fair share", func(t *testing.T) {
			began := time.Now()
			mine := sendMany(t, e, keyB, 20, func(i int) string {
				return smsBody(fmt.Sprintf("+1415557%04d", i), "Your results are ready", "priority", tc.priority)
			})
			for _, id := range mine {
				e.waitFor(id, ledger.StatusSent, 10*time.Second)
			}
			// Behind A's whole backlog B would wait about 10 s; at half the
			// sender (or more, for normal over bulk) its 20 take about 1 s.
			// What is checked does not depend on the machine's speed: B's
			// messages were all sent while most of A's backlog still waited.
			t.Logf("clinic B's 20 messages took %s", time.Since(began))
			if left := len(backlog) - delivered(e, backlog); left < 100 {
				t.Fatalf("only %d of clinic A's backlog left: the test did not overlap with it", left)
			}
		})
	}
}

// windowAround is a quiet window from an hour before to an hour after now
// in loc, and its end today (or tomorrow) in loc.
func windowAround(loc *time.Location) (string, time.Time) {
	now := time.Now().In(loc)
	start, end := now.Add(-time.Hour), now.Add(time.Hour)
	endAt := time.Date(end.Year(), end.Month(), end.Day(), end.Hour(), end.Minute(), 0, 0, loc)
	return start.Format("15:04") + "-" + end.Format("15:04"), endAt
}

func TestQuietHoursDeferRoutineMessagesInTheRecipientsTimeZone(t *testing.T) {
	e := start(t, config.RoleAll)
	shanghai, _ := time.LoadLocation("Asia/Shanghai")
	newYork, _ := time.LoadLocation("America/New_York")
	for _, tc := range []struct {
		tenant, key string
		loc         *time.Location
		to          string // the recipient; the zone comes from the number or to.timezone
		zoneFrom    string
	}{
		{"clinic-a", keyA, shanghai, `{"phone":"+8613800138000"}`, "phone"},
		{"clinic-b", keyB, newYork, `{"phone":"+447400123456","timezone":"America/New_York"}`, "request"},
	} {
		t.Run(tc.loc.String(), func(t *testing.T) {
			window, end := windowAround(tc.loc)
			if a := e.do("PUT", "/v1/settings", tc.key, `{"quiet_hours":"`+window+`","timezone":"UTC"}`); a.Status != 200 {
				t.Fatalf("PUT /v1/settings = %d %s", a.Status, a.Raw)
			}
			a := e.do("POST", "/v1/messages", tc.key, `{"channel":"sms","to":`+tc.to+`,"body":"Time for your check-up"}`)
			if a.Status != 202 || a.Body["status"] != "scheduled" || !strings.Contains(a.Body["deferred"].(string), "quiet hours") {
				t.Fatalf("a routine message inside quiet hours: %d %s", a.Status, a.Raw)
			}
			at, _ := time.Parse(time.RFC3339, a.Body["send_at"].(string))
			if !at.Equal(end) {
				t.Fatalf("deferred to %s, want the window's end %s", at.In(tc.loc), end)
			}
			m := e.waitFor(a.Body["id"].(string), ledger.StatusScheduled, time.Second)
			if m.TimeZone != tc.loc.String() || m.ZoneSource != tc.zoneFrom {
				t.Fatalf("zone %s from %s, want %s from %s", m.TimeZone, m.ZoneSource, tc.loc, tc.zoneFrom)
			}
			// A follow-up call waits too.
			call := e.do("POST", "/v1/messages", tc.key, `{"channel":"voice","to":`+tc.to+`,"body":"This is your clinic calling"}`)
			if call.Status != 202 || call.Body["status"] != "scheduled" {
				t.Fatalf("a call inside quiet hours: %d %s", call.Status, call.Raw)
			}
			// Crisis traffic passes by default…
			crisis := e.send(tc.key, `{"channel":"sms","to":`+tc.to+`,"body":"The clinic is closed today","priority":"crisis"}`)
			e.waitFor(crisis, ledger.StatusDelivered, 10*time.Second)
			// …unless the tenant says it waits too.
			if a := e.do("PUT", "/v1/settings", tc.key, `{"quiet_hours":"`+window+`","crisis_in_quiet_hours":"defer"}`); a.Status != 200 {
				t.Fatalf("PUT /v1/settings = %d %s", a.Status, a.Raw)
			}
			held := e.do("POST", "/v1/messages", tc.key, `{"channel":"sms","to":`+tc.to+`,"body":"Update","priority":"crisis"}`)
			if held.Body["status"] != "scheduled" {
				t.Fatalf("crisis with crisis_in_quiet_hours=defer: %s", held.Raw)
			}
		})
	}
	if a := e.do("PUT", "/v1/settings", keyA, `{"quiet_hours":"25:00-08:00"}`); a.Status != 422 || !strings.Contains(a.Raw, "quiet_hours") {
		t.Fatalf("a bad window: %d %s", a.Status, a.Raw)
	}
}

func TestAWorkerHoldsBackARetryThatDriftedIntoQuietHours(t *testing.T) {
	e := start(t, config.RoleAll)
	shanghai, _ := time.LoadLocation("Asia/Shanghai")
	window, end := windowAround(shanghai)
	// A message the API accepted outside quiet hours whose retry now falls
	// inside them: the task carries the window and the recipient's zone.
	id := ledger.NewID()
	req := ledger.Request{Tenant: "clinic-a", Channel: "sms", To: ledger.Recipient{Phone: "+8613800138000"}, Body: "Reminder",
		Priority: "normal", TimeZone: "Asia/Shanghai", QuietHours: window}
	if _, err := e.svc.Ledger.Create(context.Background(), id, req); err != nil {
		t.Fatal(err)
	}
	task, _ := workers.NewSendTask(workers.SendOptionsOf(id, req, 3, 10*time.Second))
	if err := e.enqueue(task); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		m, _ := e.svc.Ledger.Get(context.Background(), "", id)
		if m.Status == ledger.StatusScheduled {
			last := m.Events[len(m.Events)-1]
			if last.RetryAt == nil || !last.RetryAt.Equal(end) || !strings.Contains(last.Detail, "quiet hours") || m.Attempts != 0 {
				t.Fatalf("held back as %+v (attempts %d), want until %s", last, m.Attempts, end.UTC())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the worker did not hold the message back: %+v", m)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := e.sim.Accepted(); n != 0 {
		t.Fatalf("%d messages reached the provider during quiet hours", n)
	}
}

func TestTemplatesRenderStrictlyInThePatientsLanguage(t *testing.T) {
	e := start(t, config.RoleAll)
	if a := e.do("PUT", "/v1/contacts/mrn-7", keyA, `{"phone":"+8613800138001","locale":"zh-HK"}`); a.Status != 200 && a.Status != 201 {
		t.Fatalf("PUT contact = %d %s", a.Status, a.Raw)
	}
	vars := `{"clinic_name":"仁济医院","appointment_date":"5月12日（周二）","appointment_time":"上午9:30","clinic_phone":"021-5555-0100"}`
	a := e.do("POST", "/v1/messages", keyA, `{"channel":"sms","to":{"phone":"+8613800138001"},"template":"appointment_reminder","vars":`+vars+`}`)
	if a.Status != 202 || a.Body["template_locale"] != "zh-CN" || a.Body["encoding"] != "UCS-2" {
		t.Fatalf("zh-HK should fall back to zh, then zh-CN: %d %s", a.Status, a.Raw)
	}
	m := e.waitFor(a.Body["id"].(string), ledger.StatusDelivered, 10*time.Second)
	if !strings.Contains(m.Body, "仁济医院") || strings.Contains(m.Body, "{{") || m.ExpectReply == nil || m.ExpectReply.Options["2"] != "reschedule" {
		t.Fatalf("rendered body %q, question %+v", m.Body, m.ExpectReply)
	}
	if got := e.sim.Requests(); !strings.Contains(got[len(got)-1].Form.Get("Body"), "仁济医院") {
		t.Fatal("the provider did not get the rendered text")
	}
	// French falls back to English.
	en := e.do("POST", "/v1/messages", keyA, `{"channel":"sms","to":{"phone":"+14155550100"},"locale":"fr-FR","template":"appointment_reminder","vars":{"clinic_name":"Riverside","appointment_date":"Tuesday 12 May","appointment_time":"9:30 AM","clinic_phone":"555-0100"}}`)
	if en.Status != 202 || en.Body["template_locale"] != "en" || en.Body["encoding"] != "GSM-7" {
		t.Fatalf("fr-FR: %d %s", en.Status, en.Raw)
	}
	// Preview: Chinese costs more segments than English.
	enVars := `{"clinic_name":"Riverside","appointment_date":"Tuesday 12 May","appointment_time":"9:30 AM","clinic_phone":"555-0100"}`
	pv := func(locale, vars string) map[string]any {
		a := e.do("POST", "/v1/templates/appointment_reminder/preview", keyA, `{"locale":"`+locale+`","vars":`+vars+`}`)
		if a.Status != 200 {
			t.Fatalf("preview = %d %s", a.Status, a.Raw)
		}
		return a.Body["channels"].(map[string]any)["sms"].(map[string]any)["sms_stats"].(map[string]any)
	}
	// A Chinese segment holds 70 characters, an English one 160.
	if zh, enStats := pv("zh-CN", vars), pv("en", enVars); zh["encoding"] != "UCS-2" || enStats["encoding"] != "GSM-7" ||
		zh["segment_size"].(float64) != 70 || enStats["segment_size"].(float64) != 160 {
		t.Fatalf("preview zh %v, en %v", zh, enStats)
	}
	// A tenant's own template with a PHI variable in the SMS is refused
	// until the tenant allows PHI there.
	doc := `{"variables":[{"name":"medication","description":"the drug","example":"Warfarin","phi":true}],
	  "locales":{"en":{"sms":"Time to take your {{medication}}."}}}`
	if a := e.do("PUT", "/v1/templates/med_sms", keyA, doc); a.Status != 200 {
		t.Fatalf("PUT template = %d %s", a.Status, a.Raw)
	}
	send := `{"channel":"sms","to":{"phone":"+14155550100"},"template":"med_sms","vars":{"medication":"Warfarin"}}`
	if a := e.do("POST", "/v1/messages", keyA, send); a.Status != 422 || !strings.Contains(a.Raw, "protected health information") {
		t.Fatalf("PHI in an SMS: %d %s", a.Status, a.Raw)
	}
	if a := e.do("POST", "/v1/messages", keyB, send); a.Status != 422 || !strings.Contains(a.Raw, "med_sms") {
		t.Fatalf("another tenant's template must not be found: %d %s", a.Status, a.Raw)
	}
	if a := e.do("PUT", "/v1/settings", keyA, `{"allow_phi_in_sms_wechat":true}`); a.Status != 200 {
		t.Fatalf("PUT settings = %d %s", a.Status, a.Raw)
	}
	time.Sleep(10 * time.Millisecond)
	if a := e.do("POST", "/v1/messages", keyA, send); a.Status != 202 {
		t.Fatalf("PHI allowed by the tenant: %d %s", a.Status, a.Raw)
	}
	if a := e.do("DELETE", "/v1/templates/appointment_reminder", keyA, ""); a.Status != 409 {
		t.Fatalf("deleting a built-in: %d %s", a.Status, a.Raw)
	}
	list := e.do("GET", "/v1/templates", keyA, "")
	if list.Status != 200 || !strings.Contains(list.Raw, `"crisis_safety_check"`) || !strings.Contains(list.Raw, `"med_sms"`) {
		t.Fatalf("GET /v1/templates = %d %s", list.Status, list.Raw)
	}
}

// plan posts a follow-up plan and returns its view.
func plan(t *testing.T, e *env, key, body string) map[string]any {
	t.Helper()
	a := e.do("POST", "/v1/followups", key, body)
	if a.Status != http.StatusCreated {
		t.Fatalf("POST /v1/followups = %d %s", a.Status, a.Raw)
	}
	return a.Body
}

func steps(v map[string]any) []map[string]any {
	var out []map[string]any
	for _, s := range v["steps"].([]any) {
		out = append(out, s.(map[string]any))
	}
	return out
}

func TestFollowupPlansScheduleSkipCancelAndStop(t *testing.T) {
	e := start(t, config.RoleAll)
	anchor := time.Now().Add(-36 * time.Hour).UTC().Format(time.RFC3339)
	vars := `{"clinic_name":"Riverside Clinic","clinic_phone":"555-0100"}`
	body := func(pastDue, stopOn string) string {
		return `{"contact":{"phone":"+14155550123","timezone":"America/New_York","locale":"en"},"anchor":"` + anchor + `",
		  "steps":[{"offset":"P1D","channel":"sms","template":"post_discharge_day1","vars":` + vars + `},
		           {"offset":"P7D","at":"10:00","channel":"sms","template":"post_discharge_day7","vars":` + vars + `},
		           {"offset":"P30D","at":"10:00","channel":"voice","template":"post_discharge_day30","vars":` + vars + `}],
		  "stop_on":[` + stopOn + `],"past_due":"` + pastDue + `"}`
	}
	v := plan(t, e, keyA, body("skip", `"opt_out"`))
	st := steps(v)
	if st[0]["state"] != "skipped" || !strings.Contains(st[0]["detail"].(string), "skip") || st[0]["message_id"] != nil && st[0]["message_id"] != "" {
		t.Fatalf("a past step under skip: %v", st[0])
	}
	ny, _ := time.LoadLocation("America/New_York")
	for _, s := range st[1:] {
		due, _ := time.Parse(time.RFC3339, s["due_at"].(string))
		if s["state"] != "scheduled" || s["message_status"] != "scheduled" || due.In(ny).Format("15:04") != "10:00" {
			t.Fatalf("a future step: %v (due %s local)", s, due.In(ny))
		}
	}
	// GET shows the same; cancel cancels what is left.
	got := e.do("GET", "/v1/followups/"+v["id"].(string), keyA, "")
	if got.Status != 200 || len(steps(got.Body)) != 3 {
		t.Fatalf("GET plan = %d %s", got.Status, got.Raw)
	}
	if a := e.do("GET", "/v1/followups/"+v["id"].(string), keyB, ""); a.Status != 404 {
		t.Fatalf("another tenant's plan: %d", a.Status)
	}
	c := e.do("POST", "/v1/followups/"+v["id"].(string)+"/cancel", keyA, "")
	if c.Status != 200 || c.Body["state"] != "canceled" {
		t.Fatalf("cancel = %d %s", c.Status, c.Raw)
	}
	for _, s := range steps(c.Body)[1:] {
		if s["state"] != "canceled" || s["message_status"] != "canceled" {
			t.Fatalf("a canceled step: %v", s)
		}
	}
	if a := e.do("POST", "/v1/followups/"+v["id"].(string)+"/cancel", keyA, ""); a.Status != 409 {
		t.Fatalf("canceling twice: %d %s", a.Status, a.Raw)
	}

	// send_now: the past step goes out at once.
	v = plan(t, e, keyA, body("send_now", `"opt_out","reply:urgent"`))
	first := steps(v)[0]
	if first["state"] != "sent_now" {
		t.Fatalf("a past step under send_now: %v", first)
	}
	e.waitFor(first["message_id"].(string), ledger.StatusDelivered, 10*time.Second)

	// The patient texts STOP: the plan stops, its remaining steps with it.
	if code, _ := e.inbound("+14155550123", "STOP", e.sim.AuthToken()); code != 200 {
		t.Fatalf("STOP answered %d", code)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := e.do("GET", "/v1/followups/"+v["id"].(string), keyA, "")
		if got.Body["state"] == "stopped" {
			for _, s := range steps(got.Body)[1:] {
				if s["state"] != "stopped" || s["message_status"] != "canceled" {
					t.Fatalf("a step of a stopped plan: %v", s)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the plan did not stop on opt-out: %s", got.Raw)
		}
		time.Sleep(50 * time.Millisecond)
	}

	for name, bad := range map[string]string{
		"an offset that is not ISO 8601": strings.Replace(body("skip", ""), `"P7D"`, `"7 days"`, 1),
		"an unknown stop condition":      body("skip", `"reply:maybe"`),
		"an unknown past-due policy":     body("later", ""),
		"a missing template variable":    strings.ReplaceAll(body("skip", ""), `"clinic_phone":"555-0100"`, `"x":"y"`),
		"a bad variable in a past step":  strings.Replace(body("skip", ""), `"clinic_phone":"555-0100"`, `"x":"y"`, 1),
	} {
		if a := e.do("POST", "/v1/followups", keyA, bad); a.Status != 422 {
			t.Errorf("%s: %d %s", name, a.Status, a.Raw)
		}
	}
}

// enqueue queues a task on the gateway's Redis, as the API would.
func (e *env) enqueue(task *asynq.Task) error {
	c := asynq.NewClientFromRedisClient(e.redis.Client())
	_, err := c.Enqueue(task)
	return err
}
