package service_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/erasure"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/redistest"
	"github.com/patientmsg/gateway/internal/replies"
	"github.com/patientmsg/gateway/workers"
)

// The patient to erase, and what they were sent and said.
const (
	erasePhone  = "+14155550177"
	eraseEmail  = "erase.me@example.org"
	eraseOpenID = "oErasePatient0000000000001"
)

// eraseTexts are texts only the patient's messages and replies hold.
var eraseTexts = []string{"secret-sms-text", "secret-email-subject", "secret-email-body", "secret-wechat-text",
	"secret-wechat-reply", "secret-call-text", "secret-reply-text", "secret-plan-text", "secret-scheduled-text"}

// leak is one place a patient's data was found.
type leak struct{ key, what string }

// redisLeaks reads every key of Redis, of every type, and returns where
// any needle appears in a key's name or content, skipping keys allowed.
func redisLeaks(t *testing.T, rdb *redis.Client, needles []string, allowed func(key string, content string) bool) []leak {
	t.Helper()
	ctx := context.Background()
	var out []leak
	it := rdb.Scan(ctx, 0, "*", 1000).Iterator()
	for it.Next(ctx) {
		k := it.Val()
		var b strings.Builder
		b.WriteString(k + "\n")
		typ, err := rdb.Type(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		switch typ {
		case "string":
			b.WriteString(rdb.Get(ctx, k).Val())
		case "hash":
			for f, v := range rdb.HGetAll(ctx, k).Val() {
				b.WriteString(f + "=" + v + "\n")
			}
		case "list":
			b.WriteString(strings.Join(rdb.LRange(ctx, k, 0, -1).Val(), "\n"))
		case "set":
			b.WriteString(strings.Join(rdb.SMembers(ctx, k).Val(), "\n"))
		case "zset":
			b.WriteString(strings.Join(rdb.ZRange(ctx, k, 0, -1).Val(), "\n"))
		case "stream":
			for _, m := range rdb.XRange(ctx, k, "-", "+").Val() {
				fmt.Fprintf(&b, "%v\n", m.Values)
			}
		case "none":
			continue
		default:
			t.Fatalf("key %s has type %s, which the test cannot read", k, typ)
		}
		content := b.String()
		if allowed(k, content) {
			continue
		}
		for _, n := range needles {
			if strings.Contains(content, n) {
				out = append(out, leak{k, n})
			}
		}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// blobLeaks walks the blob store's directory and returns the files that
// hold a needle, or are a recording of the tenant.
func blobLeaks(t *testing.T, blobURL string, needles []string, recordingsOf string) []leak {
	t.Helper()
	u, err := url.Parse(blobURL)
	if err != nil || u.Scheme != "file" {
		t.Fatalf("the blob store %q is not a directory", blobURL)
	}
	var out []leak
	err = filepath.Walk(u.Path, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(u.Path, path)
		if strings.HasPrefix(filepath.ToSlash(rel), "recordings/"+recordingsOf+"/") {
			out = append(out, leak{rel, "a recording"})
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, n := range needles {
			if strings.Contains(rel+"\n"+string(b), n) {
				out = append(out, leak{rel, n})
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A patient sent SMS, an email, a WeChat message and a call that recorded
// their answer, who replied, answered a questionnaire, was in a broadcast
// from an uploaded audience, had a follow-up plan and a message scheduled,
// and opted out by SMS, is erased: then no Redis key of any type (Asynq's
// tasks included) and no file of the blob store holds their phone number,
// email, openid or the text of their messages and replies. Another clinic's
// data on the same number is untouched, and the opt-out still holds.
func TestAnErasedPatientIsNowhereInRedisOrTheBlobStore(t *testing.T) {
	e := start(t, config.RoleAll, func(cfg *config.Config) { cfg.WebhookAttempts = 1 })
	ctx := context.Background()
	// The clinic's endpoint is down: its events about the patient are dead-lettered.
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "down", 500) }))
	defer down.Close()
	e.registerWebhook(down.URL)

	if a := e.do("PUT", "/v1/contacts/mrn-erase-1", keyA, `{"phone":"`+erasePhone+`","email":"`+eraseEmail+`","wechat_openid":"`+eraseOpenID+`","locale":"en"}`); a.Status != 200 {
		t.Fatalf("PUT contact = %d %s", a.Status, a.Raw)
	}
	sms := e.send(keyA, smsBody(erasePhone, "Your knee results: secret-sms-text"))
	email := e.send(keyA, `{"channel":"email","to":{"email":"`+eraseEmail+`"},"subject":"Your secret-email-subject","body":"secret-email-body"}`)
	// A WeChat template message, then the patient writes back.
	wechat := e.send(keyA, `{"channel":"wechat","to":{"wechat_openid":"`+eraseOpenID+`"},"body":"secret-wechat-text",
		"wechat":{"template_id":"TPL-followup","data":{"note":"secret-wechat-text"}}}`)
	e.waitFor(wechat, ledger.StatusSent, 10*time.Second)
	if code, _ := e.userWrites("gh_clinic", eraseOpenID, "secret-wechat-reply", 24100000077); code != 200 {
		t.Fatalf("wechat push = %d", code)
	}
	waitUntil(t, 10*time.Second, "the WeChat reply in the feed", func() bool {
		return strings.Contains(e.do("GET", "/v1/replies", keyA, "").Raw, "secret-wechat-reply")
	})
	e.sim.SetCallPlan(twiliosim.CallPlan{Digits: []string{"2"}, RecordSeconds: 3})
	call := e.send(keyA, `{"channel":"voice","to":{"phone":"`+erasePhone+`"},"body":"secret-call-text",
		"gather":{"prompt":"Press 1 if better, 2 if not","digits":"12"},"record":{"prompt":"Tell us after the tone","max_length":30}}`)
	for _, id := range []string{sms, call} {
		e.waitFor(id, ledger.StatusDelivered, 15*time.Second)
	}
	e.waitFor(email, ledger.StatusSent, 10*time.Second)
	waitUntil(t, 10*time.Second, "the recording to be stored", func() bool {
		m, _ := e.svc.Ledger.Get(ctx, "", call)
		return m != nil && m.Recording != nil
	})
	if code, _ := e.inbound(erasePhone, "secret-reply-text: my knee hurts", e.sim.AuthToken()); code != 200 {
		t.Fatalf("inbound = %d", code)
	}
	waitUntil(t, 10*time.Second, "the reply in the feed", func() bool {
		return strings.Contains(e.do("GET", "/v1/replies", keyA, "").Raw, "secret-reply-text")
	})
	// A questionnaire, its first question answered.
	response := e.startQuestionnaire("post_discharge", erasePhone)
	e.nextSMS(erasePhone, 2)
	e.inbound(erasePhone, "7", e.sim.AuthToken())
	waitUntil(t, 10*time.Second, "the answer", func() bool { return len(answers(e.questionnaireResponse(response))) == 1 })
	// A broadcast from an uploaded audience.
	up := e.upload(keyA, "", []byte("phone,external_id\n"+erasePhone+",MRN-ERASE-1\n+14155550188,MRN-OTHER\n"))
	if up.Status != 201 {
		t.Fatalf("upload = %d %s", up.Status, up.Raw)
	}
	bc := e.do("POST", "/v1/broadcasts", keyA, `{"name":"Closed","channels":["sms"],"body":{"en":"secret-broadcast-text"},"audience_csv_upload_id":"`+up.Body["id"].(string)+`"}`)
	if bc.Status != 202 {
		t.Fatalf("POST broadcast = %d %s", bc.Status, bc.Raw)
	}
	e.waitRoster(bc.Body["id"].(string), 10*time.Second, "the broadcast delivered", func(r map[string]any) bool {
		return count(r, "by_channel", "sms", "delivered") == 2
	})
	// A follow-up plan and a message, both still to be sent.
	plan := e.do("POST", "/v1/followups", keyA, `{"contact":{"phone":"`+erasePhone+`"},"anchor":"`+time.Now().UTC().Format(time.RFC3339)+`",
	  "steps":[{"offset":"P30D","channel":"sms","body":"secret-plan-text"}]}`)
	if plan.Status != 201 {
		t.Fatalf("POST followups = %d %s", plan.Status, plan.Raw)
	}
	scheduled := e.send(keyA, smsBody(erasePhone, "secret-scheduled-text", "send_at", time.Now().Add(24*time.Hour).UTC().Format(time.RFC3339)))
	// Another clinic writes to the same number.
	other := e.send(keyB, smsBody(erasePhone, "clinic-b-text"))
	e.waitFor(other, ledger.StatusDelivered, 10*time.Second)
	// The patient opts out by SMS.
	if code, twiml := e.inbound(erasePhone, "STOP", e.sim.AuthToken()); code != 200 || !strings.Contains(twiml, "unsubscribed") {
		t.Fatalf("STOP = %d %s", code, twiml)
	}
	// Their data is there before the erasure (the test finds it).
	needles := append([]string{erasePhone, strings.TrimPrefix(erasePhone, "+"), eraseEmail, eraseOpenID}, eraseTexts...)
	opt, err := redis.ParseURL(e.redis.URL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	clinicB := func(key, content string) bool {
		return strings.Contains(key, "{clinic-b}") || strings.HasPrefix(key, "gw:m:{"+other+"}")
	}
	if before := redisLeaks(t, rdb, needles, clinicB); len(before) < 10 {
		t.Fatalf("before the erasure the patient's data is in only %d places: %v", len(before), before)
	}

	a := e.do("DELETE", "/v1/contacts/mrn-erase-1", keyA, "")
	if a.Status != 202 || a.Body["state"] != "in_progress" || !strings.HasPrefix(a.Header.Get("Location"), "/v1/erasures/er_") {
		t.Fatalf("DELETE contact = %d %s", a.Status, a.Raw)
	}
	loc := a.Header.Get("Location")
	var done answer
	waitUntil(t, 20*time.Second, "the erasure to complete", func() bool {
		done = e.do("GET", loc, keyA, "")
		return done.Body["state"] == "completed"
	})
	if strings.Contains(done.Raw, erasePhone) || strings.Contains(done.Raw, "mrn-erase-1") || !strings.Contains(done.Raw, `"requested_by":"apikey:`) {
		t.Fatalf("the tombstone: %s", done.Raw)
	}
	if b := e.do("GET", loc, keyB, ""); b.Status != 404 {
		t.Fatalf("another tenant reads the erasure: %d", b.Status)
	}
	erasureID := strings.TrimPrefix(loc, "/v1/erasures/")
	if trail := e.do("GET", "/v1/audit?action=patient.erase", keyA, ""); !strings.Contains(trail.Raw, `"object":"erasure:`+erasureID+`"`) {
		t.Fatalf("the audit log does not record the completed erasure: %s", trail.Raw)
	}

	for _, l := range redisLeaks(t, rdb, needles, clinicB) {
		t.Errorf("Redis key %s still holds %q", l.key, l.what)
	}
	for _, l := range blobLeaks(t, e.cfg.BlobURL, needles, "clinic-a") {
		t.Errorf("blob %s still holds %s", l.key, l.what)
	}

	// What stays: the messages' statuses, the scheduled ones canceled;
	// nothing is left to send.
	for id, want := range map[string]ledger.Status{sms: ledger.StatusDelivered, call: ledger.StatusDelivered, scheduled: ledger.StatusCanceled} {
		m := e.do("GET", "/v1/messages/"+id, keyA, "")
		if m.Status != 200 || m.Body["status"] != string(want) {
			t.Errorf("message %s after the erasure: %d %s, want %s", id, m.Status, m.Raw, want)
		}
	}
	if g := e.do("GET", "/v1/contacts/mrn-erase-1", keyA, ""); g.Status != 404 {
		t.Errorf("the contact after the erasure: %d %s", g.Status, g.Raw)
	}
	if g := e.do("GET", "/v1/questionnaire-responses/"+response, keyA, ""); g.Status != 404 {
		t.Errorf("the response after the erasure: %d", g.Status)
	}
	// The other clinic's data on the same number is untouched.
	if m, err := e.svc.Ledger.Get(ctx, "clinic-b", other); err != nil || m.To.Phone != erasePhone || m.Body != "clinic-b-text" {
		t.Errorf("the other clinic's message: %+v %v", m, err)
	}
	if st, _ := e.svc.Consent.Get(ctx, "clinic-b", consent.Identity{Kind: consent.Phone, Value: erasePhone}); !st.OptedOut {
		t.Errorf("the other clinic's consent: %+v", st)
	}
	// The opt-out given before the erasure still holds for the number.
	later := e.send(keyA, smsBody(erasePhone, "After the erasure"))
	e.waitFor(later, ledger.StatusSuppressed, 10*time.Second)
	// Erased again: nothing more to do, and it completes.
	again := e.do("DELETE", "/v1/contacts?phone="+url.QueryEscape(erasePhone), keyA, "")
	if again.Status != 202 {
		t.Fatalf("DELETE by phone = %d %s", again.Status, again.Raw)
	}
	waitUntil(t, 20*time.Second, "the second erasure to complete", func() bool {
		return e.do("GET", again.Header.Get("Location"), keyA, "").Body["state"] == "completed"
	})
	e.assertNoPatientDataLogged(append([]string{erasePhone, eraseEmail, eraseOpenID}, eraseTexts...)...)
}

// noQueue queues nothing: the test runs the erasure itself.
type noQueue struct{}

func (noQueue) EnqueueContext(context.Context, *asynq.Task, ...asynq.Option) (*asynq.TaskInfo, error) {
	return &asynq.TaskInfo{}, nil
}

// An erasure that fails half-way (Redis drops the connection while the
// replies are erased) records how far it got; run again, it finishes
// without doing the steps done twice.
func TestAnErasureInterruptedHalfWayFinishesWhenRunAgain(t *testing.T) {
	e := start(t, config.RoleAll)
	ctx := context.Background()
	id := e.send(keyA, smsBody(erasePhone, "secret-sms-text"))
	e.waitFor(id, ledger.StatusDelivered, 10*time.Second)
	e.inbound(erasePhone, "secret-reply-text", e.sim.AuthToken())
	waitUntil(t, 10*time.Second, "the reply in the feed", func() bool {
		return strings.Contains(e.do("GET", "/v1/replies", keyA, "").Raw, "secret-reply-text")
	})

	opt, err := redis.ParseURL(e.redis.URL)
	if err != nil {
		t.Fatal(err)
	}
	flaky := redis.NewClient(opt)
	defer flaky.Close()
	drop := &redistest.FailCommand{Name: "xdel"}
	flaky.AddHook(drop)
	es := *e.svc.Erasures
	es.Queue = noQueue{}
	es.Replies = replies.New(flaky, e.cfg.Retention)
	er, err := es.Start(ctx, "clinic-a", erasure.Request{Identities: []consent.Identity{{Kind: consent.Phone, Value: erasePhone}}, Actor: "apikey:test"})
	if err != nil {
		t.Fatal(err)
	}
	run := workers.ErasureRun{Tenant: "clinic-a", ID: er.ID}
	drop.Arm(true)
	if err := es.Run(ctx, run); err == nil {
		t.Fatal("the erasure ran through a dropped connection")
	}
	half, _ := es.Get(ctx, "clinic-a", er.ID)
	if half.State != erasure.StateInProgress || !slices.Contains(half.Done, erasure.StepMessages) || slices.Contains(half.Done, erasure.StepReplies) || half.Erased[erasure.StepMessages] != 1 {
		t.Fatalf("half-way: %+v", half)
	}
	if m, _ := e.svc.Ledger.Get(ctx, "clinic-a", id); m.To.Phone != "" || m.Body != "" || m.ErasedAt == nil || m.Status != ledger.StatusDelivered {
		t.Fatalf("the message half-way: %+v", m)
	}
	drop.Arm(false)
	if err := es.Run(ctx, run); err != nil {
		t.Fatal(err)
	}
	done, _ := es.Get(ctx, "clinic-a", er.ID)
	if done.State != erasure.StateCompleted || done.Erased[erasure.StepMessages] != 1 || done.Erased[erasure.StepReplies] != 1 || done.CompletedAt == nil {
		t.Fatalf("run again: %+v", done)
	}
	if feed := e.do("GET", "/v1/replies", keyA, ""); strings.Contains(feed.Raw, "secret-reply-text") {
		t.Fatalf("the reply is still in the feed: %s", feed.Raw)
	}
	if err := es.Run(ctx, run); err != nil {
		t.Fatalf("a completed erasure run again: %v", err)
	}
}
