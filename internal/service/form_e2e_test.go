package service_test

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/workers"
)

var formLinkRE = regexp.MustCompile(`https?://[^\s)]+/f/[A-Za-z0-9_-]{43}`)

// formPath is the path of the form link in a message.
func formPath(t *testing.T, msg string) string {
	t.Helper()
	link := formLinkRE.FindString(msg)
	if link == "" {
		t.Fatalf("no form link in %q", msg)
	}
	u, err := url.Parse(link)
	if err != nil {
		t.Fatal(err)
	}
	return u.Path
}

// post submits a form as a browser does.
func (e *env) postForm(path string, v url.Values) answer {
	e.t.Helper()
	return e.do("POST", path, "", v.Encode(), "Content-Type", "application/x-www-form-urlencoded")
}

// kneeCheckWithOnCall defines the knee check and an on-call nurse its
// high risks page, and returns the nurse's number.
func (e *env) kneeCheckWithOnCall() string {
	e.t.Helper()
	const nurse = "+14155550177"
	if a := e.do("PUT", "/v1/escalation-rules", keyA, `{"keywords":["chest pain"],"on_call":[{"channel":"sms","phone":"`+nurse+`"}],"ack_timeout_seconds":60}`); a.Status != 200 {
		e.t.Fatalf("PUT rules = %d %s", a.Status, a.Raw)
	}
	if a := e.do("PUT", "/v1/questionnaires/knee", keyA, kneeCheck); a.Status != 201 {
		e.t.Fatalf("PUT knee = %d %s", a.Status, a.Raw)
	}
	return nurse
}

func TestAWebFormSentBySMSIsAnsweredOnceThenItsLinkSaysSo(t *testing.T) {
	e := start(t, config.RoleAll)
	nurse := e.kneeCheckWithOnCall()
	if a := e.do("POST", "/v1/questionnaires/knee/responses", keyA, `{"channel":"web","to":{"phone":"`+patientPhone+`"}}`); a.Status != 422 || !strings.Contains(a.Raw, `"via"`) {
		t.Fatalf("a web form without via = %d %s, want 422 naming via", a.Status, a.Raw)
	}
	if a := e.do("POST", "/v1/questionnaires/knee/responses", keyA, `{"channel":"sms","via":"email","to":{"phone":"`+patientPhone+`"}}`); a.Status != 422 || !strings.Contains(a.Raw, `"via"`) {
		t.Fatalf("via on sms = %d %s, want 422 naming via", a.Status, a.Raw)
	}
	start := e.do("POST", "/v1/questionnaires/knee/responses", keyA, `{"channel":"web","via":"sms","to":{"phone":"`+patientPhone+`"}}`)
	if start.Status != 201 || start.Body["channel"] != "web" || start.Body["via"] != "sms" {
		t.Fatalf("POST responses = %d %s", start.Status, start.Raw)
	}
	id := start.Body["id"].(string)
	invite := e.nextSMS(patientPhone, 1)
	path := formPath(t, invite)
	if !containsAll(invite, "Knee check", "Please answer here") || start.Body["form_url"] != formLinkRE.FindString(invite) {
		t.Fatalf("the invitation: %q (form_url %v)", invite, start.Body["form_url"])
	}
	if got := e.questionnaireResponse(id); strings.Contains(got.Raw, path) {
		t.Fatal("the response as the API shows it later carries the link")
	}

	page := e.do("GET", path, "", "")
	if page.Status != 200 || !containsAll(page.Raw, `lang="en"`, "How bad is your pain", "Any fever?", `name="fever" value="Y"`, "Send my answers") {
		t.Fatalf("the form = %d %s", page.Status, page.Raw)
	}
	for h, want := range map[string]string{"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"} {
		if got := page.Header.Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
	if csp := page.Header.Get("Content-Security-Policy"); !containsAll(csp, "default-src 'none'", "form-action 'self'") || strings.Contains(csp, "script-src") {
		t.Errorf("CSP %q", csp)
	}
	if strings.Contains(page.Raw, "<script") {
		t.Error("the form carries a script: it must work without one")
	}

	// Answers that do not fit: shown again with why, nothing recorded.
	bad := e.postForm(path, url.Values{"pain": {"eleven"}, "fever": {"Y"}, "temp": {""}})
	if bad.Status != 422 || !containsAll(bad.Raw, `id="problems"`, "Please enter a number from 0 to 10", "from 34 to 43", "Please write a few words", `value="eleven"`) {
		t.Fatalf("answers that do not fit = %d %s", bad.Status, bad.Raw)
	}
	if got := answers(e.questionnaireResponse(id)); len(got) != 0 {
		t.Fatalf("answers recorded from a refused form: %v", got)
	}
	if a := e.do("POST", path, "", `{"pain":"7"}`, "Content-Type", "application/json"); a.Status != 415 {
		t.Fatalf("a JSON body = %d, want 415", a.Status)
	}

	// Answers that fit (the branch of Y, a high temperature): recorded once.
	good := url.Values{"pain": {"７"}, "fever": {"Y"}, "temp": {"39.2"}, "notes": {"a little bleeding at night"}}
	done := e.postForm(path, good)
	if done.Status != 200 || !strings.Contains(done.Raw, `id="done"`) {
		t.Fatalf("the answered form = %d %s", done.Status, done.Raw)
	}
	r := e.questionnaireResponse(id)
	got := answers(r)
	if r.Body["state"] != "completed" || got["pain"] != "7" || got["temp"] != "39.2" || got["notes"] != "a little bleeding at night" || r.Body["risk_level"] != "high" {
		t.Fatalf("the response: %s", r.Raw)
	}
	waitUntil(t, 10*time.Second, "the on-call page", func() bool { return e.sim.MessagesTo(nurse) == 1 })
	if again := e.postForm(path, url.Values{"pain": {"1"}, "fever": {"N"}}); again.Status != 200 || !strings.Contains(again.Raw, "cannot be used again") {
		t.Fatalf("the link used again = %d %s", again.Status, again.Raw)
	}
	if got := answers(e.questionnaireResponse(id)); len(got) != 4 || got["pain"] != "7" {
		t.Fatalf("a second submission changed the answers: %v", got)
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(e.smsTo(patientPhone)); n != 1 {
		t.Fatalf("%d SMS to the patient, want the invitation only (the page says thank you)", n)
	}

	// Unknown, malformed and other links.
	for _, p := range []string{"/f/" + strings.Repeat("A", 43), "/f/short", "/f/" + strings.Repeat("%ff", 43)} {
		if a := e.do("GET", p, "", "", "Accept-Language", "zh-CN,zh;q=0.9"); a.Status != 404 || !containsAll(a.Raw, "此链接无效或已过期", `lang="zh-Hans"`) {
			t.Fatalf("GET %s = %d %s", p, a.Status, a.Raw)
		}
	}
	e.assertNoPatientDataLogged("a little bleeding at night", "eleven", "39.2", strings.TrimPrefix(path, "/f/"))
}

func TestAnExpiredWebFormIsRefusedWithAClearPageAndARemindedOneStillWorks(t *testing.T) {
	e := start(t, config.RoleAll)
	ctx := context.Background()
	start := e.do("POST", "/v1/questionnaires/phq9/responses", keyA, `{"channel":"web","via":"email","locale":"zh-CN","to":{"email":"patient@example.org"}}`)
	if start.Status != 201 {
		t.Fatalf("POST responses = %d %s", start.Status, start.Raw)
	}
	id := start.Body["id"].(string)
	var invite string
	waitUntil(t, 10*time.Second, "the invitation email", func() bool {
		for _, m := range e.smtp.Messages() {
			if strings.Contains(m.Text, "/f/") {
				invite = m.Text
				return true
			}
		}
		return false
	})
	path := formPath(t, invite)
	if page := e.do("GET", path, "", ""); page.Status != 200 || !containsAll(page.Raw, `lang="zh-Hans"`, "提交我的回答") {
		t.Fatalf("the form in Chinese = %d %s", page.Status, page.Raw)
	}
	timer := func(kind string) {
		t.Helper()
		if err := e.svc.Questionnaires.Timer(ctx, workers.QuestionnaireTimer{Tenant: "clinic-a", Response: id, Seq: 0, Kind: kind}); err != nil {
			t.Fatal(err)
		}
	}
	timer(workers.TimerRemind)
	waitUntil(t, 10*time.Second, "the reminder email", func() bool {
		n := 0
		for _, m := range e.smtp.Messages() {
			if strings.Contains(m.Text, path) {
				n++
			}
		}
		return n == 2
	})
	timer(workers.TimerExpire)
	if a := e.do("GET", path, "", ""); a.Status != http.StatusGone || !strings.Contains(a.Raw, "此问卷已关闭") {
		t.Fatalf("an expired form = %d %s", a.Status, a.Raw)
	}
	if a := e.postForm(path, url.Values{"q1": {"0"}}); a.Status != http.StatusGone {
		t.Fatalf("answering an expired form = %d %s", a.Status, a.Raw)
	}
	if r := e.questionnaireResponse(id); r.Body["state"] != "expired" || len(answers(r)) != 0 {
		t.Fatalf("the expired response: %s", r.Raw)
	}
}
