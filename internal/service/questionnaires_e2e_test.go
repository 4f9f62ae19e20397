package service_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/workers"
)

// smsTo returns the bodies of the SMS the simulator accepted for a number,
// oldest first.
func (e *env) smsTo(phone string) []string {
	var out []string
	for _, r := range e.sim.Requests() {
		if r.Reply == http.StatusCreated && strings.HasPrefix(r.SID, "SM") && r.Form.Get("To") == phone {
			out = append(out, r.Form.Get("Body"))
		}
	}
	return out
}

// nextSMS waits for the n-th SMS (1-based) to a number and returns it.
func (e *env) nextSMS(phone string, n int) string {
	e.t.Helper()
	waitUntil(e.t, 10*time.Second, "SMS number "+itoa(n)+" to the patient", func() bool { return len(e.smsTo(phone)) >= n })
	return e.smsTo(phone)[n-1]
}

func (e *env) questionnaireResponse(id string) answer {
	e.t.Helper()
	a := e.do("GET", "/v1/questionnaire-responses/"+id, keyA, "")
	if a.Status != 200 {
		e.t.Fatalf("GET response = %d %s", a.Status, a.Raw)
	}
	return a
}

func (e *env) startQuestionnaire(name, phone string) string {
	e.t.Helper()
	a := e.do("POST", "/v1/questionnaires/"+name+"/responses", keyA, `{"channel":"sms","to":{"phone":"`+phone+`"}}`)
	if a.Status != 201 {
		e.t.Fatalf("POST responses = %d %s", a.Status, a.Raw)
	}
	return a.Body["id"].(string)
}

// answers maps question → answer of a response as the API shows it.
func answers(a answer) map[string]string {
	out := map[string]string{}
	list, _ := a.Body["answers"].([]any)
	for _, x := range list {
		m := x.(map[string]any)
		v := ""
		switch {
		case m["key"] != nil:
			v = m["key"].(string)
		case m["number"] != nil:
			v = strconv.FormatFloat(m["number"].(float64), 'f', -1, 64)
		default:
			v, _ = m["text"].(string)
		}
		out[m["question"].(string)] = v
	}
	return out
}

const kneeCheck = `{"title":{"en":"Knee check","zh-Hans":"膝关节随访"},"code":"KN",
 "questions":[
  {"id":"pain","type":"number","min":0,"max":10,"text":{"en":"How bad is your pain, 0 to 10?"}},
  {"id":"fever","type":"choice","text":{"en":"Any fever?"},
   "options":[{"key":"Y","text":{"en":"Yes"},"next":"temp"},{"key":"N","text":{"en":"No"},"next":"end"}]},
  {"id":"temp","type":"number","min":34,"max":43,"text":{"en":"Your highest temperature in °C?"}},
  {"id":"notes","type":"text","text":{"en":"Anything else we should know?"}}
 ],
 "risk":[{"name":"high_fever","level":"high","question":"temp","at_least":38.5},
         {"name":"bleeding","level":"moderate","words":["bleeding"]}],
 "remind_after":"1h","expire_after":"24h"}`

func TestAnSMSQuestionnaireBranchesAsksAgainAndPagesOnCallForARisk(t *testing.T) {
	e := start(t, config.RoleAll)
	const nurse = "+14155550177"
	if a := e.do("PUT", "/v1/escalation-rules", keyA, `{"keywords":["chest pain"],"on_call":[{"channel":"sms","phone":"`+nurse+`"}],"ack_timeout_seconds":60}`); a.Status != 200 {
		t.Fatalf("PUT rules = %d %s", a.Status, a.Raw)
	}
	clinic := &clinicEndpoint{}
	srv := httptest.NewServer(clinic)
	defer srv.Close()
	clinic.mu.Lock()
	clinic.secret = e.registerWebhook(srv.URL)
	clinic.mu.Unlock()
	if a := e.do("PUT", "/v1/questionnaires/knee", keyA, `{"title":{},"code":"a b","questions":[{"id":"x","type":"scale"}]}`); a.Status != 422 || !containsAll(a.Raw, `"title.en"`, `"code"`, `"questions[0].type"`, `"questions[0].text.en"`) {
		t.Fatalf("a bad definition = %d %s, want 422 naming every bad field", a.Status, a.Raw)
	}
	if a := e.do("PUT", "/v1/questionnaires/knee", keyA, kneeCheck); a.Status != 201 || a.Body["version"] != float64(1) {
		t.Fatalf("PUT knee = %d %s", a.Status, a.Raw)
	}
	if a := e.do("PUT", "/v1/questionnaires/knee", keyA, kneeCheck); a.Status != 200 || a.Body["version"] != float64(1) {
		t.Fatalf("PUT of the same definition = %d %s, want 200 and version 1", a.Status, a.Raw)
	}
	if a := e.do("GET", "/v1/questionnaires/knee", keyB, ""); a.Status != 404 {
		t.Fatalf("another tenant sees the questionnaire: %d", a.Status)
	}
	body := `{"channel":"sms","to":{"phone":"` + patientPhone + `"},"metadata":{"episode":"E-7"}}`
	first := e.do("POST", "/v1/questionnaires/knee/responses", keyA, body, "Idempotency-Key", "knee-E-7")
	if first.Status != 201 {
		t.Fatalf("POST responses = %d %s", first.Status, first.Raw)
	}
	id := first.Body["id"].(string)
	if again := e.do("POST", "/v1/questionnaires/knee/responses", keyA, body, "Idempotency-Key", "knee-E-7"); again.Status != 200 || again.Body["id"] != id {
		t.Fatalf("the same request again = %d %s, want 200 and the same response", again.Status, again.Raw)
	}
	if q1 := e.nextSMS(patientPhone, 1); !containsAll(q1, "Knee check", "[KN 1/4]", "How bad is your pain") {
		t.Fatalf("first question: %q", q1)
	}

	e.inbound(patientPhone, "eleven", e.sim.AuthToken())
	if again := e.nextSMS(patientPhone, 2); !containsAll(again, "number from 0 to 10", "[KN 1/4]") {
		t.Fatalf("an answer that does not fit is asked again with a hint: %q", again)
	}
	e.inbound(patientPhone, "７", e.sim.AuthToken()) // a full-width digit
	if q := e.nextSMS(patientPhone, 3); !strings.Contains(q, "Any fever?") {
		t.Fatalf("second question: %q", q)
	}
	// The definition changes while the response is in progress: it keeps its version.
	changed := strings.Replace(kneeCheck, "Any fever?", "Any fever since discharge?", 1)
	if a := e.do("PUT", "/v1/questionnaires/knee", keyA, changed); a.Status != 201 || a.Body["version"] != float64(2) {
		t.Fatalf("PUT of a changed definition = %d %s, want 201 and version 2", a.Status, a.Raw)
	}
	e.inbound(patientPhone, "y", e.sim.AuthToken()) // Y leads to the temperature
	if q := e.nextSMS(patientPhone, 4); !strings.Contains(q, "highest temperature") {
		t.Fatalf("the branch of Y: %q", q)
	}
	e.inbound(patientPhone, "39.2", e.sim.AuthToken())
	waitUntil(t, 10*time.Second, "the on-call page", func() bool { return e.sim.MessagesTo(nurse) == 1 })
	if q := e.nextSMS(patientPhone, 5); !strings.Contains(q, "Anything else") {
		t.Fatalf("last question: %q", q)
	}
	e.inbound(patientPhone, "a little bleeding at night", e.sim.AuthToken())
	if thanks := e.nextSMS(patientPhone, 6); !strings.Contains(thanks, "Thank you") {
		t.Fatalf("closing message: %q", thanks)
	}

	r := e.questionnaireResponse(id)
	got := answers(r)
	if r.Body["state"] != "completed" || r.Body["version"] != float64(1) || got["pain"] != "7" || got["fever"] != "Y" ||
		got["notes"] != "a little bleeding at night" || r.Body["risk_level"] != "high" {
		t.Fatalf("response: %s", r.Raw)
	}
	risks, _ := r.Body["risks"].([]any)
	if len(risks) != 2 {
		t.Fatalf("risks: %s", r.Raw)
	}
	escID, _ := risks[0].(map[string]any)["escalation_id"].(string)
	if escID == "" || risks[1].(map[string]any)["escalation_id"] != nil {
		t.Fatalf("only the high rule is escalated: %s", r.Raw)
	}
	open := e.do("GET", "/v1/escalations", keyA, "")
	if !containsAll(open.Raw, escID, `"questionnaire":"knee"`, `"rule":"high_fever"`) {
		t.Fatalf("open escalations: %s", open.Raw)
	}
	if ack := e.do("POST", "/v1/escalations/"+escID+"/ack", keyA, `{"by":"Nurse Li"}`); ack.Status != 200 || ack.Body["state"] != "acknowledged" {
		t.Fatalf("ack = %d %s", ack.Status, ack.Raw)
	}
	page := e.smsTo(nurse)[0]
	if !containsAll(page, "knee", "high_fever") || containsAny(page, "39", "temperature", "bleeding") {
		t.Fatalf("the page names the questionnaire and the rule, never the answers: %q", page)
	}
	csv := e.do("GET", "/v1/questionnaires/knee/responses?format=csv", keyA, "")
	if csv.Status != 200 || !containsAll(csv.Raw, "answer:pain", id, "a little bleeding at night") {
		t.Fatalf("CSV = %d %s", csv.Status, csv.Raw)
	}
	waitUntil(t, 10*time.Second, "the clinic's questionnaire events", func() bool {
		return len(clinic.eventsOf("questionnaire.risk")) == 2 && len(clinic.eventsOf("questionnaire.completed")) == 1
	})
	for _, ev := range clinic.eventsOf("questionnaire.risk") {
		// Its time is left out of the search: "…T18:17:39.227Z" holds "39.2".
		var fields map[string]any
		if err := json.Unmarshal([]byte(ev), &fields); err != nil {
			t.Fatalf("a risk event: %v: %s", err, ev)
		}
		delete(fields, "at")
		rest, _ := json.Marshal(fields)
		if containsAny(string(rest), "39.2", "bleeding at night", `"answers"`) || !strings.Contains(ev, id) {
			t.Fatalf("a risk event names the response and the rule, never the answers: %s", ev)
		}
	}
	if done := clinic.eventsOf("questionnaire.completed")[0]; !containsAll(done, "a little bleeding at night", `"E-7"`, `"risk_level":"high"`) {
		t.Fatalf("the completed event carries the answers: %s", done)
	}
	e.assertNoPatientDataLogged("a little bleeding at night", "eleven", "39.2")
}

func (c *clinicEndpoint) eventsOf(typ string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, ev := range c.events {
		if ev.Type == typ {
			out = append(out, string(ev.Data))
		}
	}
	return out
}

func TestASilentPatientIsRemindedOnceThenTheResponseExpires(t *testing.T) {
	e := start(t, config.RoleAll)
	id := e.startQuestionnaire("phq9", patientPhone)
	e.nextSMS(patientPhone, 1)
	ctx := context.Background()
	timer := func(seq int, kind string) {
		t.Helper()
		if err := e.svc.Questionnaires.Timer(ctx, workers.QuestionnaireTimer{Tenant: "clinic-a", Response: id, Seq: seq, Kind: kind}); err != nil {
			t.Fatal(err)
		}
	}
	timer(0, workers.TimerRemind)
	if r := e.nextSMS(patientPhone, 2); !containsAll(r, "Reminder: ", "[PHQ9 1/9]") {
		t.Fatalf("reminder: %q", r)
	}
	timer(0, workers.TimerRemind) // a timer run twice reminds once
	e.inbound(patientPhone, "1", e.sim.AuthToken())
	e.nextSMS(patientPhone, 3)
	timer(0, workers.TimerExpire) // the timers of a question answered do nothing
	if st := e.questionnaireResponse(id).Body["state"]; st != "in_progress" {
		t.Fatalf("a stale expiry ended the response: %v", st)
	}
	timer(1, workers.TimerExpire)
	if st := e.questionnaireResponse(id).Body["state"]; st != "expired" {
		t.Fatalf("state after the expiry: %v", st)
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(e.smsTo(patientPhone)); n != 3 {
		t.Fatalf("%d messages, want the question, its reminder and the next question", n)
	}
	e.inbound(patientPhone, "2", e.sim.AuthToken()) // an answer after the expiry is an ordinary reply
	time.Sleep(300 * time.Millisecond)
	if got := answers(e.questionnaireResponse(id)); len(got) != 1 {
		t.Fatalf("answers after the expiry: %v", got)
	}
}

func TestHELPKeepsWorkingAndSTOPEndsAQuestionnaireInTheMiddle(t *testing.T) {
	e := start(t, config.RoleAll)
	id := e.startQuestionnaire("post_discharge", patientPhone)
	e.nextSMS(patientPhone, 1)
	e.inbound(patientPhone, "3", e.sim.AuthToken())
	e.nextSMS(patientPhone, 2)
	if _, reply := e.inbound(patientPhone, "HELP", e.sim.AuthToken()); !strings.Contains(reply, "<Message>") {
		t.Fatalf("HELP mid-questionnaire is answered as always: %q", reply)
	}
	if r := e.questionnaireResponse(id); r.Body["state"] != "in_progress" || r.Body["reasks"] != float64(0) {
		t.Fatalf("HELP is not an answer: %s", r.Raw)
	}
	if _, reply := e.inbound(patientPhone, "STOP", e.sim.AuthToken()); !strings.Contains(reply, "unsubscribed") {
		t.Fatalf("STOP confirmation: %q", reply)
	}
	waitUntil(t, 5*time.Second, "the response to stop", func() bool { return e.questionnaireResponse(id).Body["state"] == "stopped" })
	sent := len(e.smsTo(patientPhone))
	e.inbound(patientPhone, "N", e.sim.AuthToken())
	time.Sleep(time.Second)
	if n := len(e.smsTo(patientPhone)); n != sent {
		t.Fatalf("a question went out after STOP: %d then %d messages", sent, n)
	}
	if got := answers(e.questionnaireResponse(id)); len(got) != 1 || got["pain"] != "3" {
		t.Fatalf("answers after STOP: %v", got)
	}
	e.assertNoPatientDataLogged()
}

func TestTwoQuestionnairesAndAQuestionOpenAtOnceEachGetTheirAnswers(t *testing.T) {
	e := start(t, config.RoleAll)
	phq := e.startQuestionnaire("phq9", patientPhone)
	if q := e.nextSMS(patientPhone, 1); !containsAll(q, "PHQ-9", "[PHQ9 1/9]", "Little interest or pleasure", "0 Not at all") {
		t.Fatalf("PHQ-9's first question: %q", q)
	}
	pd := e.startQuestionnaire("post_discharge", patientPhone)
	e.nextSMS(patientPhone, 2)
	if a := e.do("POST", "/v1/questionnaires/post_discharge/responses", keyA, `{"channel":"sms","to":{"phone":"`+patientPhone+`"}}`); a.Status != 409 {
		t.Fatalf("the same questionnaire twice at once = %d %s", a.Status, a.Raw)
	}
	e.send(keyA, `{"channel":"sms","to":{"phone":"`+patientPhone+`"},"body":"Your appointment is on Monday. Reply C to confirm or R to reschedule.",
		"expect_reply":{"options":{"C":"confirm","R":"reschedule"}}}`)
	e.nextSMS(patientPhone, 3)

	e.inbound(patientPhone, "c", e.sim.AuthToken()) // the appointment's question
	waitUntil(t, 10*time.Second, "the confirmation in the reply feed", func() bool {
		return strings.Contains(e.do("GET", "/v1/replies", keyA, "").Raw, `"option":"confirm"`)
	})
	e.inbound(patientPhone, "5", e.sim.AuthToken()) // the most recent questionnaire that takes it: pain
	e.nextSMS(patientPhone, 4)
	e.inbound(patientPhone, "PHQ9 2", e.sim.AuthToken()) // the code sends it to PHQ-9
	e.nextSMS(patientPhone, 5)
	e.inbound(patientPhone, "n", e.sim.AuthToken()) // only the fever question takes N
	e.nextSMS(patientPhone, 6)
	e.inbound(patientPhone, "1", e.sim.AuthToken()) // the wound question takes Y or N: PHQ-9 item 2 takes 1
	e.nextSMS(patientPhone, 7)

	if got := answers(e.questionnaireResponse(phq)); len(got) != 2 || got["q1"] != "2" || got["q2"] != "1" {
		t.Fatalf("PHQ-9 answers: %v", got)
	}
	if got := answers(e.questionnaireResponse(pd)); len(got) != 2 || got["pain"] != "5" || got["fever"] != "N" {
		t.Fatalf("post-discharge answers: %v", got)
	}
	e.assertNoPatientDataLogged()
}

func TestPHQ9Item9EscalatesAtOnceWhateverTheTotal(t *testing.T) {
	e := start(t, config.RoleAll)
	const nurse = "+14155550177"
	if a := e.do("PUT", "/v1/escalation-rules", keyA, `{"keywords":["chest pain"],"on_call":[{"channel":"sms","phone":"`+nurse+`"}]}`); a.Status != 200 {
		t.Fatalf("PUT rules = %d %s", a.Status, a.Raw)
	}
	id := e.startQuestionnaire("phq9", patientPhone)
	for i := 1; i <= 8; i++ {
		e.nextSMS(patientPhone, i)
		e.inbound(patientPhone, "0", e.sim.AuthToken())
	}
	if q9 := e.nextSMS(patientPhone, 9); !strings.Contains(q9, "better off dead") {
		t.Fatalf("item 9: %q", q9)
	}
	e.inbound(patientPhone, "1", e.sim.AuthToken())
	waitUntil(t, 10*time.Second, "the on-call page", func() bool { return e.sim.MessagesTo(nurse) == 1 })
	r := e.questionnaireResponse(id)
	scores, _ := r.Body["scores"].(map[string]any)
	if r.Body["risk_level"] != "urgent" || scores["total"] != float64(1) || scores["band"] != "minimal" {
		t.Fatalf("a total of 1 with item 9 answered: %s", r.Raw)
	}
}

// assertNoPatientDataLogged checks that the logs hold no phone number and
// none of the given answers.
var numeric = regexp.MustCompile(`^[0-9.]+$`)

func (e *env) assertNoPatientDataLogged(answers ...string) {
	e.t.Helper()
	logs := e.logs.String()
	for _, s := range []string{patientPhone, strings.TrimPrefix(patientPhone, "+1")} {
		if strings.Contains(logs, s) {
			e.t.Fatalf("the logs hold %q", s)
		}
	}
	// A number counts where it stands on its own: "39.2" is the patient's
	// temperature, not part of a duration such as "139.2ms"; anything
	// else counts wherever it appears.
	for _, s := range answers {
		held := strings.Contains(logs, s)
		if numeric.MatchString(s) {
			held = regexp.MustCompile(`(^|[^0-9A-Za-z.])` + regexp.QuoteMeta(s) + `($|[^0-9A-Za-z])`).MatchString(logs)
		}
		if held {
			e.t.Fatalf("the logs hold %q", s)
		}
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

func TestAWeChatQuestionnaireIsAnsweredInTheCustomerServiceWindow(t *testing.T) {
	e := start(t, config.RoleAll)
	const openid, account = "oQuestionnaire000000000000001", "gh_clinic"
	invite := e.send(keyA, `{"channel":"wechat","to":{"wechat_openid":"`+openid+`"},"body":"x","wechat":{"kind":"template","template_id":"TPL-invite"}}`)
	e.waitFor(invite, ledger.StatusSent, 10*time.Second)
	e.userWrites(account, openid, "你好", 25000000001) // opens WeChat's window
	e.waitFeed(keyA, "你好")                           // filed before the questionnaire starts
	a := e.do("POST", "/v1/questionnaires/gad7/responses", keyA,
		`{"channel":"wechat","to":{"wechat_openid":"`+openid+`"},"locale":"zh-CN","wechat":{"template_id":"TPL-survey"}}`)
	if a.Status != 201 {
		t.Fatalf("POST = %d %s", a.Status, a.Raw)
	}
	id := a.Body["id"].(string)
	texts := func() []string {
		var out []string
		for _, r := range e.wsim.Requests() {
			if text, ok := r.JSON["text"].(map[string]any); ok && r.ErrCode == 0 && r.JSON["touser"] == openid {
				out = append(out, text["content"].(string))
			}
		}
		return out
	}
	waitUntil(t, 10*time.Second, "the first question", func() bool { return len(texts()) == 1 })
	if q := texts()[0]; !containsAll(q, "GAD-7", "[GAD7 1/7]", "感觉紧张、焦虑或急切", "0 完全不会") {
		t.Fatalf("the first question in Chinese: %q", q)
	}
	e.userWrites(account, openid, "３", 25000000002)
	waitUntil(t, 10*time.Second, "the second question", func() bool { return len(texts()) == 2 })
	if q := texts()[1]; !strings.Contains(q, "[GAD7 2/7]") {
		t.Fatalf("the second question: %q", q)
	}
	if got := answers(e.questionnaireResponse(id)); got["q1"] != "3" {
		t.Fatalf("answers: %v", got)
	}
	if logs := e.logs.String(); strings.Contains(logs, openid) {
		t.Fatal("the logs hold the openid")
	}
}

func TestAQuestionIsAskedAgainTwiceAtMostThenTheResponseIsIncomplete(t *testing.T) {
	e := start(t, config.RoleAll)
	id := e.startQuestionnaire("post_discharge", patientPhone)
	e.nextSMS(patientPhone, 1)
	for i, reply := range []string{"bad", "very bad"} {
		e.inbound(patientPhone, reply, e.sim.AuthToken())
		if again := e.nextSMS(patientPhone, i+2); !containsAll(again, "number from 0 to 10", "[PD 1/6]") {
			t.Fatalf("asked again (%d): %q", i+1, again)
		}
	}
	e.inbound(patientPhone, "terrible", e.sim.AuthToken())
	if bye := e.nextSMS(patientPhone, 4); !strings.Contains(bye, "could not read your answers") {
		t.Fatalf("closing message: %q", bye)
	}
	if r := e.questionnaireResponse(id); r.Body["state"] != "incomplete" || r.Body["reasks"] != float64(2) {
		t.Fatalf("response: %s", r.Raw)
	}
	e.assertNoPatientDataLogged("very bad", "terrible")
}
