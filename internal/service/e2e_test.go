package service_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/patientmsg/gateway/channels/twilio"
	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/workers"
)

const (
	patientPhone = "+14155550123"
	secretBody   = "Dear patient, your biopsy results are ready: call 0800 CLINIC"
)

func TestAMessageTravelsFromTheAPIToDeliveredAndNothingPersonalIsLogged(t *testing.T) {
	e := start(t, config.RoleAll)
	id := e.send(keyA, smsBody(patientPhone, secretBody, "priority", "high"))
	m := e.waitFor(id, ledger.StatusDelivered, 10*time.Second)

	reqs := e.sim.Requests()
	if len(reqs) != 1 {
		t.Fatalf("Twilio got %d requests, want exactly 1", len(reqs))
	}
	f := reqs[0].Form
	if f.Get("To") != patientPhone || f.Get("Body") != secretBody || f.Get("From") != "+15005550006" ||
		f.Get("StatusCallback") != e.base+twilio.StatusPath+"?m="+id {
		t.Fatalf("Twilio got form %v", f)
	}
	if !strings.HasPrefix(m.ProviderID, "SM") || m.Attempts != 1 {
		t.Fatalf("record %+v", m)
	}
	var seen []string
	for _, ev := range m.Events {
		seen = append(seen, string(ev.Status))
	}
	if got := strings.Join(seen, ","); got != "queued,sending,sent,sent,delivered" {
		t.Fatalf("events %s", got)
	}

	a := e.do("GET", "/v1/messages/"+id, keyA, "")
	if a.Status != 200 || a.Body["status"] != "delivered" || a.Body["provider_id"] != m.ProviderID || a.Body["error"] != nil {
		t.Fatalf("GET = %d %s", a.Status, a.Raw)
	}
	if strings.Contains(a.Raw, "4155550123") || strings.Contains(a.Raw, "biopsy") {
		t.Fatalf("the API view must mask the phone and omit the body: %s", a.Raw)
	}
	if to := a.Body["to"].(map[string]any)["phone"]; to != "+1••••••••23" {
		t.Fatalf("masked phone %v", to)
	}

	// A late "sent" callback after delivered is kept as an event; the status stays.
	form := url.Values{"MessageSid": {m.ProviderID}, "MessageStatus": {"queued"}, "AccountSid": {e.sim.AccountSID()}}
	if code := e.postCallback(id, form, e.sim.AuthToken()); code != 200 {
		t.Fatalf("late callback answered %d", code)
	}
	late, _ := e.svc.Ledger.Get(context.Background(), "", id)
	if late.Status != ledger.StatusDelivered || len(late.Events) != len(m.Events)+1 {
		t.Fatalf("after a late callback: status %s, %d events", late.Status, len(late.Events))
	}

	// Privacy: no phone number or message body appears in any log line.
	logs := e.logs.String()
	if !strings.Contains(logs, id) {
		t.Fatalf("logs should mention the message id; the scan would prove nothing:\n%s", logs)
	}
	for _, secret := range []string{"4155550123", "biopsy", "CLINIC", e.sim.AuthToken(), keyA} {
		if strings.Contains(logs, secret) {
			t.Fatalf("logs contain %q:\n%s", secret, logs)
		}
	}
}

// postCallback posts a status callback signed with token ("" for none).
func (e *env) postCallback(id string, form url.Values, token string) int {
	e.t.Helper()
	u := e.base + twilio.StatusPath + "?m=" + id
	req, _ := http.NewRequest("POST", u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if token != "" {
		req.Header.Set("X-Twilio-Signature", twiliosim.Sign(token, u, form))
	}
	resp, err := e.http.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestAForgedStatusCallbackIsRefusedAndChangesNothing(t *testing.T) {
	e := start(t, config.RoleAPI)
	id := e.send(keyA, smsBody(patientPhone, "hi"))
	form := url.Values{"MessageSid": {"SM0123456789abcdef0123456789abcdef"}, "MessageStatus": {"delivered"}}
	if code := e.postCallback(id, form, ""); code != 403 {
		t.Fatalf("unsigned callback answered %d, want 403", code)
	}
	if code := e.postCallback(id, form, "00000000000000000000000000000000"); code != 403 {
		t.Fatalf("callback signed with another token answered %d, want 403", code)
	}
	m, _ := e.svc.Ledger.Get(context.Background(), "", id)
	if m.Status != ledger.StatusQueued || len(m.Events) != 1 {
		t.Fatalf("a forged callback changed the record: %+v", m)
	}
	if code := e.postCallback(ledger.NewID(), form, e.sim.AuthToken()); code != 200 {
		t.Fatalf("a signed callback for an unknown message answered %d, want 200", code)
	}
}

func TestAServerErrorIsRetriedThenDelivered(t *testing.T) {
	e := start(t, config.RoleAll)
	e.sim.Script(twiliosim.Fail(500, 20500, "Internal Server Error"))
	id := e.send(keyA, smsBody(patientPhone, "hi"))
	m := e.waitFor(id, ledger.StatusDelivered, 15*time.Second)
	if m.Attempts != 2 || len(e.sim.Requests()) != 2 {
		t.Fatalf("attempts %d, provider requests %d; want 2 and 2", m.Attempts, len(e.sim.Requests()))
	}
	var retryAt *time.Time
	for _, ev := range m.Events {
		if ev.Error != nil && ev.Error.Code == "20500" {
			retryAt = ev.RetryAt
		}
	}
	if retryAt == nil {
		t.Fatalf("no retry event in %+v", m.Events)
	}
	// The history tells the truth about when the retry happens.
	second := e.sim.Requests()[1].At
	if second.Before(*retryAt) || second.After(retryAt.Add(time.Second)) {
		t.Fatalf("retry_at %s but the retry reached Twilio at %s", retryAt, second)
	}
}

func TestRetryAfterFromTwilioIsHonoured(t *testing.T) {
	e := start(t, config.RoleAll)
	// Backoff for a first retry is at most 2 s; a 3 s Retry-After must win.
	e.sim.Script(twiliosim.Throttle("3"))
	id := e.send(keyA, smsBody(patientPhone, "hi"))
	e.waitFor(id, ledger.StatusDelivered, 15*time.Second)
	reqs := e.sim.Requests()
	if len(reqs) != 2 {
		t.Fatalf("provider requests %d, want 2", len(reqs))
	}
	if gap := reqs[1].At.Sub(reqs[0].At); gap < 3*time.Second {
		t.Fatalf("retried after %s, before Twilio's Retry-After of 3s", gap)
	}
}

func TestAPermanentErrorFailsAtOnceWithTheProviderCode(t *testing.T) {
	e := start(t, config.RoleAll)
	e.sim.Script(twiliosim.Fail(400, 21614, "The 'To' number +14155550123 is not a mobile number"))
	id := e.send(keyA, smsBody(patientPhone, "hi"))
	m := e.waitFor(id, ledger.StatusFailed, 10*time.Second)
	time.Sleep(300 * time.Millisecond) // a wrongly scheduled retry would show up here
	if len(e.sim.Requests()) != 1 || m.Attempts != 1 {
		t.Fatalf("a permanent error was retried: %d requests", len(e.sim.Requests()))
	}
	if m.Error == nil || m.Error.Code != "21614" || strings.Contains(m.Error.Message, "4155550123") {
		t.Fatalf("error %+v", m.Error)
	}
	a := e.do("GET", "/v1/messages/"+id, keyA, "")
	if errObj, _ := a.Body["error"].(map[string]any); errObj["code"] != "21614" {
		t.Fatalf("API error %s", a.Raw)
	}
}

func TestARecipientWhoOptedOutAtTwilioIsSuppressedNotRetried(t *testing.T) {
	e := start(t, config.RoleAll)
	id := e.send(keyA, smsBody(twiliosim.MagicToUnsubscribed, "hi"))
	m := e.waitFor(id, ledger.StatusSuppressed, 10*time.Second)
	if m.Error == nil || m.Error.Code != "21610" || len(e.sim.Requests()) != 1 {
		t.Fatalf("record %+v, %d requests", m, len(e.sim.Requests()))
	}
}

func TestRetriesStopAtTheAttemptBudget(t *testing.T) {
	e := start(t, config.RoleAll, func(c *config.Config) { c.Worker.MaxAttempts = 2 })
	e.sim.Script(twiliosim.Fail(503, 20503, "busy"), twiliosim.Fail(503, 20503, "busy"), twiliosim.Fail(503, 20503, "busy"))
	id := e.send(keyA, smsBody(patientPhone, "hi"))
	m := e.waitFor(id, ledger.StatusFailed, 15*time.Second)
	if m.Attempts != 2 || len(e.sim.Requests()) != 2 {
		t.Fatalf("attempts %d, requests %d; want 2", m.Attempts, len(e.sim.Requests()))
	}
}

func TestCancel(t *testing.T) {
	e := start(t, config.RoleAll)
	later := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	id := e.send(keyA, smsBody(patientPhone, "reminder", "send_at", later))
	if a := e.do("POST", "/v1/messages/"+id+"/cancel", keyB, ""); a.Status != 404 {
		t.Fatalf("another tenant's cancel = %d", a.Status)
	}
	a := e.do("POST", "/v1/messages/"+id+"/cancel", keyA, "")
	if a.Status != 200 || a.Body["status"] != "canceled" {
		t.Fatalf("cancel = %d %s", a.Status, a.Raw)
	}
	insp := asynq.NewInspectorFromRedisClient(e.svc.Redis)
	if _, err := insp.GetTaskInfo(workers.QueueFor("normal"), id); err == nil {
		t.Fatalf("the scheduled task of a canceled message is still queued")
	}
	if a := e.do("POST", "/v1/messages/"+id+"/cancel", keyA, ""); a.Status != 409 {
		t.Fatalf("second cancel = %d, want 409", a.Status)
	}
	sent := e.send(keyA, smsBody(patientPhone, "now"))
	e.waitFor(sent, ledger.StatusDelivered, 10*time.Second)
	if a := e.do("POST", "/v1/messages/"+sent+"/cancel", keyA, ""); a.Status != 409 || a.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("cancel of a delivered message = %d %s", a.Status, a.Raw)
	}
	if len(e.sim.Requests()) != 1 {
		t.Fatalf("provider requests %d, want 1 (the canceled message must not be sent)", len(e.sim.Requests()))
	}
}

func TestACanceledMessageWhoseTaskStillRunsIsNotSent(t *testing.T) {
	e := start(t, config.RoleAPI)
	id := e.send(keyA, smsBody(patientPhone, "hi"))
	if a := e.do("POST", "/v1/messages/"+id+"/cancel", keyA, ""); a.Status != 200 {
		t.Fatalf("cancel = %d", a.Status)
	}
	// The worker gets the task anyway (as after a lost delete): the ledger wins.
	h := e.handler()
	task := directSendTask(id)
	if err := h.ProcessTask(context.Background(), task); err != nil {
		t.Fatal(err)
	}
	if len(e.sim.Requests()) != 0 {
		t.Fatal("a canceled message reached the provider")
	}
}

// directSendTask is an SMS's send task for a test that hands it to
// ProcessTask itself: outside Asynq no task id names the message, so the
// payload names it, as the tasks of earlier versions did.
func directSendTask(id string) *asynq.Task {
	return asynq.NewTask(workers.TypeSend("sms"), []byte(`{"id":"`+id+`"}`))
}

func (e *env) handler() *workers.SendHandler {
	return &workers.SendHandler{Ledger: e.svc.Ledger, Channels: e.svc.Channels, Grace: e.cfg.Worker.UnconfirmedGrace,
		MaxAttempts: e.cfg.Worker.MaxAttempts, Logger: discardLogger()}
}

func TestIdempotencyKey(t *testing.T) {
	e := start(t, config.RoleAll)
	body := smsBody(patientPhone, "Your appointment is confirmed")
	first := e.do("POST", "/v1/messages", keyA, body, "Idempotency-Key", "appt-42")
	if first.Status != 202 {
		t.Fatalf("first = %d %s", first.Status, first.Raw)
	}
	again := e.do("POST", "/v1/messages", keyA, body, "Idempotency-Key", "appt-42")
	if again.Status != 200 || again.Body["id"] != first.Body["id"] || again.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay = %d %s", again.Status, again.Raw)
	}
	other := e.do("POST", "/v1/messages", keyA, smsBody(patientPhone, "something else"), "Idempotency-Key", "appt-42")
	if other.Status != 422 || other.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("same key, other body = %d %s", other.Status, other.Raw)
	}
	otherTenant := e.do("POST", "/v1/messages", keyB, body, "Idempotency-Key", "appt-42")
	if otherTenant.Status != 202 || otherTenant.Body["id"] == first.Body["id"] {
		t.Fatalf("keys must be per tenant: %d %s", otherTenant.Status, otherTenant.Raw)
	}
	e.waitFor(first.Body["id"].(string), ledger.StatusDelivered, 10*time.Second)
	e.waitFor(otherTenant.Body["id"].(string), ledger.StatusDelivered, 10*time.Second)
	if n := len(e.sim.Requests()); n != 2 {
		t.Fatalf("provider got %d messages, want 2 (one per tenant)", n)
	}
}

func TestTenantsNeverSeeEachOthersMessages(t *testing.T) {
	e := start(t, config.RoleAPI)
	id := e.send(keyA, smsBody(patientPhone, "hi"))
	if a := e.do("GET", "/v1/messages/"+id, keyB, ""); a.Status != 404 || a.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("tenant B read tenant A's message: %d %s", a.Status, a.Raw)
	}
	if a := e.do("GET", "/v1/messages", keyB, ""); a.Status != 200 || strings.Contains(a.Raw, id) {
		t.Fatalf("tenant B's list shows A's message: %s", a.Raw)
	}
	if a := e.do("GET", "/v1/messages", keyA, ""); !strings.Contains(a.Raw, id) {
		t.Fatalf("tenant A's list lacks its message: %s", a.Raw)
	}
	for _, key := range []string{"", "wrong-key-000000000000"} {
		a := e.do("GET", "/v1/messages/"+id, key, "")
		if a.Status != 401 || a.Header.Get("Content-Type") != "application/problem+json" || a.Header.Get("WWW-Authenticate") == "" {
			t.Fatalf("key %q: %d %s", key, a.Status, a.Raw)
		}
	}
}

func TestACrashAfterTwilioAcceptedNeverSendsTwice(t *testing.T) {
	e := start(t, config.RoleAPI)
	h := e.handler()
	ctx := context.Background()

	t.Run("the task is redelivered after the acceptance was recorded", func(t *testing.T) {
		e.sim.Reset()
		id := e.send(keyA, smsBody(patientPhone, "hi"))
		task := directSendTask(id)
		if err := h.ProcessTask(ctx, task); err != nil {
			t.Fatal(err)
		}
		// The worker died before acknowledging: Asynq hands the task out again.
		if err := h.ProcessTask(ctx, task); err != nil {
			t.Fatal(err)
		}
		if n := e.sim.MessagesTo(patientPhone); n != 1 {
			t.Fatalf("Twilio got %d messages, want 1", n)
		}
	})

	t.Run("the worker died between Twilio's answer and the ledger write", func(t *testing.T) {
		e.sim.Reset()
		id := e.send(keyA, smsBody(patientPhone, "hi"))
		claim, err := e.svc.Ledger.Claim(ctx, id, e.cfg.Worker.UnconfirmedGrace)
		if err != nil || claim.Outcome != ledger.ClaimSend {
			t.Fatalf("claim %+v %v", claim, err)
		}
		sms, _ := e.svc.Channels.Get("sms")
		if _, err := sms.Send(ctx, channelsMessage(claim.Message)); err != nil {
			t.Fatal(err)
		}
		// ...crash: RecordAccepted never ran. Asynq redelivers at once:
		task := directSendTask(id)
		if err := h.ProcessTask(ctx, task); err == nil || workers.IsFailure(err) {
			t.Fatalf("an unconfirmed attempt must make the task wait (not a failure), got %v", err)
		}
		// Twilio's status callback reveals the acceptance...
		e.waitFor(id, ledger.StatusDelivered, 10*time.Second)
		// ...so the next delivery of the task sends nothing.
		if err := h.ProcessTask(ctx, task); err != nil {
			t.Fatal(err)
		}
		if n := e.sim.MessagesTo(patientPhone); n != 1 {
			t.Fatalf("Twilio got %d messages, want 1", n)
		}
	})
}

func TestGracefulShutdownFinishesTheSendInFlight(t *testing.T) {
	e := start(t, config.RoleAll)
	e.sim.SetLatency(800 * time.Millisecond)
	id := e.send(keyA, smsBody(patientPhone, "hi"))
	deadline := time.Now().Add(5 * time.Second)
	for e.sim.Stats().InFlight == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if e.sim.Stats().InFlight == 0 {
		t.Fatal("the send never started")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	began := time.Now()
	if err := e.svc.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if took := time.Since(began); took > e.cfg.ShutdownTimeout+2*time.Second {
		t.Fatalf("shutdown took %s", took)
	}
	// Read the record with a fresh client: the service closed its own.
	l := ledger.New(e.redis.Client(), time.Hour)
	m, err := l.Get(context.Background(), "", id)
	if err != nil || m.ProviderID == "" || m.Status.Rank() < ledger.StatusSent.Rank() {
		t.Fatalf("the in-flight send was not finished and recorded: %+v %v", m, err)
	}
	if n := len(e.sim.Requests()); n != 1 {
		t.Fatalf("provider requests %d", n)
	}
}

func TestRedisOutageAnswers503AndRecovers(t *testing.T) {
	e := start(t, config.RoleAPI)
	if !e.redis.CanRestart() {
		t.Skip("needs a redis-server binary to stop and restart")
	}
	e.redis.Stop()
	a := e.do("POST", "/v1/messages", keyA, smsBody(patientPhone, "hi"))
	if a.Status != 503 || a.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("POST during outage = %d %s", a.Status, a.Raw)
	}
	// Redis may have applied a write before it stopped answering: the
	// problem must not promise that nothing was queued.
	if strings.Contains(a.Raw, "nothing was queued") || !strings.Contains(a.Raw, "same Idempotency-Key") || a.Header.Get("Retry-After") == "" {
		t.Fatalf("the outage's problem must say the outcome is unknown and how to retry: %s", a.Raw)
	}
	if r := e.do("GET", "/readyz", "", ""); r.Status != 503 {
		t.Fatalf("readyz during outage = %d", r.Status)
	}
	if r := e.do("GET", "/healthz", "", ""); r.Status != 200 {
		t.Fatalf("healthz during outage = %d", r.Status)
	}
	e.redis.Restart()
	deadline := time.Now().Add(5 * time.Second)
	for e.do("GET", "/readyz", "", "").Status != 200 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	e.send(keyA, smsBody(patientPhone, "hi"))
}
