package service_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/config"
)

// moodCheck is a one-question questionnaire: a reply completes it, scored
// and banded, "3" firing a moderate risk.
const moodCheck = `{"title":{"en":"Mood check"},"code":"MD",
 "questions":[{"id":"mood","type":"choice","text":{"en":"Your mood today? 0 good, 1 fair, 3 bad"},
  "options":[{"key":"0","text":{"en":"Good"},"points":0},{"key":"1","text":{"en":"Fair"},"points":1},{"key":"3","text":{"en":"Bad"},"points":3}]}],
 "bands":[{"min":0,"label":"fine"},{"min":2,"label":"low"}],
 "risk":[{"name":"low_mood","level":"moderate","total_at_least":3}]}`

// answerMood starts the mood check for a phone, replies and waits for the
// response to be completed; it returns the response.
func (e *env) answerMood(phone, reply string) answer {
	e.t.Helper()
	id := e.startQuestionnaire("mood", phone)
	waitUntil(e.t, 10*time.Second, "the mood question", func() bool { return strings.Contains(strings.Join(e.smsTo(phone), "\n"), "Your mood today") })
	sent := len(e.smsTo(phone))
	e.inbound(phone, reply, e.sim.AuthToken())
	e.nextSMS(phone, sent+1) // the thanks
	var r answer
	waitUntil(e.t, 10*time.Second, "the response completed", func() bool {
		r = e.questionnaireResponse(id)
		return r.Body["state"] == "completed"
	})
	return r
}

func listed(a answer) []string {
	var out []string
	list, _ := a.Body["responses"].([]any)
	for _, x := range list {
		out = append(out, x.(map[string]any)["id"].(string))
	}
	return out
}

// TestQuestionnaireResponsesAreFilteredAndAPatientsHistoryListed: each
// filter of a questionnaire's responses (JSON and CSV), a patient's
// responses across questionnaires, bad filters refused with 422 naming
// each parameter, and another clinic's responses never listed.
func TestQuestionnaireResponsesAreFilteredAndAPatientsHistoryListed(t *testing.T) {
	e := start(t, config.RoleAll)
	const joe = "+14155550188"
	if a := e.do("PUT", "/v1/questionnaires/mood", keyA, moodCheck); a.Status != 201 {
		t.Fatalf("PUT mood = %d %s", a.Status, a.Raw)
	}
	r1 := e.answerMood(patientPhone, "0")
	r2 := e.answerMood(patientPhone, "3")
	if r2.Body["risk_level"] != "moderate" || r2.Body["scores"].(map[string]any)["band"] != "low" {
		t.Fatalf("the second mood check: %s", r2.Raw)
	}
	id1, id2 := r1.Body["id"].(string), r2.Body["id"].(string)
	id3 := e.startQuestionnaire("mood", joe)
	id4 := e.startQuestionnaire("phq9", patientPhone)
	other := e.do("POST", "/v1/questionnaires/phq9/responses", keyB, `{"channel":"sms","to":{"phone":"`+patientPhone+`"}}`)
	if other.Status != 201 {
		t.Fatalf("clinic-b's PHQ-9 = %d %s", other.Status, other.Raw)
	}
	id5 := other.Body["id"].(string)
	at2 := r2.Body["created_at"].(string)

	q := func(v url.Values) string { return v.Encode() }
	jane := url.Values{"to": {patientPhone}, "channel": {"sms"}}
	for _, c := range []struct {
		name, key, path string
		want            []string
	}{
		{"every mood check", keyA, "/v1/questionnaires/mood/responses", []string{id3, id2, id1}},
		{"the completed", keyA, "/v1/questionnaires/mood/responses?state=completed", []string{id2, id1}},
		{"in progress", keyA, "/v1/questionnaires/mood/responses?state=in_progress", []string{id3}},
		{"low risk or higher", keyA, "/v1/questionnaires/mood/responses?risk_level=low", []string{id2}},
		{"high risk or higher", keyA, "/v1/questionnaires/mood/responses?risk_level=high", nil},
		{"a patient's", keyA, "/v1/questionnaires/mood/responses?" + q(jane), []string{id2, id1}},
		{"since", keyA, "/v1/questionnaires/mood/responses?" + q(url.Values{"since": {at2}}), []string{id3, id2}},
		{"until", keyA, "/v1/questionnaires/mood/responses?" + q(url.Values{"until": {at2}}), []string{id1}},
		{"a page", keyA, "/v1/questionnaires/mood/responses?state=completed&limit=1&before=" + id2, []string{id1}},
		{"a patient's history", keyA, "/v1/questionnaire-responses?" + q(jane), []string{id4, id2, id1}},
		{"a patient's completed", keyA, "/v1/questionnaire-responses?state=completed&" + q(jane), []string{id2, id1}},
		{"another clinic's patient", keyB, "/v1/questionnaire-responses?" + q(jane), []string{id5}},
		{"another clinic's mood checks", keyB, "/v1/questionnaires/mood/responses", nil},
	} {
		a := e.do("GET", c.path, c.key, "")
		if got := listed(a); a.Status != 200 || strings.Join(got, " ") != strings.Join(c.want, " ") {
			t.Errorf("%s: %d %v, want %v\n%s", c.name, a.Status, got, c.want, a.Raw)
		}
		if strings.Contains(a.Raw, "4155550123") {
			t.Errorf("%s: the address in clear: %s", c.name, a.Raw)
		}
	}
	if a := e.do("GET", "/v1/questionnaire-responses?before="+id2+"&"+q(jane), keyB, ""); a.Status != 400 {
		t.Errorf("clinic-b reading on from clinic-a's response = %d %s", a.Status, a.Raw)
	}
	csv := e.do("GET", "/v1/questionnaires/mood/responses?format=csv&state=completed&"+q(jane), keyA, "")
	if csv.Status != 200 || !containsAll(csv.Raw, "answer:mood", id1, id2) || strings.Contains(csv.Raw, id3) {
		t.Errorf("the filtered CSV = %d %s", csv.Status, csv.Raw)
	}

	for _, c := range []struct {
		name, path string
		fields     []string
	}{
		{"a state that is none", "/v1/questionnaires/mood/responses?state=done", []string{"state"}},
		{"a level that is none", "/v1/questionnaires/mood/responses?risk_level=severe", []string{"risk_level"}},
		{"a phone without its country code", "/v1/questionnaires/mood/responses?to=415+555+0123&channel=sms", []string{"to"}},
		{"an address without its channel", "/v1/questionnaires/mood/responses?" + q(url.Values{"to": {patientPhone}}), []string{"channel"}},
		{"a channel that is none", "/v1/questionnaires/mood/responses?channel=fax", []string{"channel"}},
		{"an address on the web form", "/v1/questionnaire-responses?" + q(url.Values{"to": {patientPhone}, "channel": {"web"}}), []string{"channel"}},
		{"a phone on WeChat", "/v1/questionnaire-responses?" + q(url.Values{"to": {patientPhone}, "channel": {"wechat"}}), []string{"to"}},
		{"times that do not read", "/v1/questionnaires/mood/responses?since=yesterday&until=today", []string{"since", "until"}},
		{"since after until", "/v1/questionnaires/mood/responses?since=2026-12-02T00:00:00Z&until=2026-12-01T00:00:00Z", []string{"since"}},
		{"a history of no one", "/v1/questionnaire-responses?state=completed", []string{"to"}},
	} {
		a := e.do("GET", c.path, keyA, "")
		var got []string
		errs, _ := a.Body["errors"].([]any)
		for _, x := range errs {
			got = append(got, x.(map[string]any)["field"].(string))
		}
		if a.Status != 422 || a.Header.Get("Content-Type") != "application/problem+json" || strings.Join(got, " ") != strings.Join(c.fields, " ") {
			t.Errorf("%s: %d %v, want 422 naming %v\n%s", c.name, a.Status, got, c.fields, a.Raw)
		}
	}
}
