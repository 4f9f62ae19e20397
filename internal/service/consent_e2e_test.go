package service_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/channels/twilio"
	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/ledger"
)

var sidN int

// inbound posts Twilio's incoming-message webhook signed with token ("" unsigned).
func (e *env) inbound(from, body, token string) (int, string) {
	e.t.Helper()
	sidN++
	sid := "SM" + strings.Repeat("0", 30-len(itoa(sidN))) + itoa(sidN) + "ab"
	return e.inboundSid(sid, from, body, token)
}

func (e *env) inboundSid(sid, from, body, token string) (int, string) {
	e.t.Helper()
	if token == e.sim.AuthToken() {
		// The SMS passes through Twilio, which keeps its own opt-outs.
		e.sim.HandsetReplied(from, body)
	}
	form := url.Values{"MessageSid": {sid}, "SmsSid": {sid}, "AccountSid": {e.sim.AccountSID()}, "From": {from},
		"To": {"+15005550006"}, "Body": {body}, "NumSegments": {"1"}}
	u := e.base + twilio.InboundPath
	req, _ := http.NewRequest("POST", u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if token != "" {
		req.Header.Set("X-Twilio-Signature", twiliosim.Sign(token, u, form))
	}
	resp, err := e.http.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, b.String()
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var d []byte
	for ; n > 0; n /= 10 {
		d = append([]byte{byte('0' + n%10)}, d...)
	}
	return string(d)
}

func TestStopIsHonouredForQueuedMessagesAndStartRestores(t *testing.T) {
	e := start(t, config.RoleAll)
	later := time.Now().Add(2 * time.Second).UTC().Format(time.RFC3339)
	scheduled := e.send(keyA, smsBody(patientPhone, "Your day-7 check-in", "send_at", later))

	code, twiml := e.inbound(patientPhone, " Stop ", e.sim.AuthToken())
	if code != 200 || !strings.Contains(twiml, "<Message>You are unsubscribed") {
		t.Fatalf("STOP answered %d %s", code, twiml)
	}
	code, twiml = e.inbound(patientPhone, "STOP", e.sim.AuthToken())
	if code != 200 || strings.Contains(twiml, "<Message>") {
		t.Fatalf("a second STOP must get no second confirmation: %d %s", code, twiml)
	}

	m := e.waitFor(scheduled, ledger.StatusSuppressed, 10*time.Second)
	now := e.send(keyB, smsBody(patientPhone, "Reminder from another clinic on this number"))
	e.waitFor(now, ledger.StatusSuppressed, 10*time.Second)
	crisis := e.send(keyA, smsBody(patientPhone, "Evacuate", "priority", "crisis"))
	e.waitFor(crisis, ledger.StatusSuppressed, 10*time.Second)
	if n := e.sim.MessagesTo(patientPhone); n != 0 {
		t.Fatalf("Twilio got %d messages for an opted-out patient", n)
	}
	if m.Error == nil || m.Error.Code != "opted_out" {
		t.Fatalf("suppressed message error %+v", m.Error)
	}

	st, _ := e.svc.Consent.Get(context.Background(), "clinic-a", consent.Identity{Kind: consent.Phone, Value: patientPhone})
	if !st.OptedOut || len(st.Changes) != 1 || st.Changes[0].Source != consent.SourceKeyword || !strings.HasPrefix(st.Changes[0].Evidence, "sms inbound message SM") {
		t.Fatalf("consent ledger %+v", st)
	}

	code, twiml = e.inbound(patientPhone, "start", e.sim.AuthToken())
	if code != 200 || !strings.Contains(twiml, "subscribed again") {
		t.Fatalf("START answered %d %s", code, twiml)
	}
	again := e.send(keyA, smsBody(patientPhone, "Welcome back"))
	e.waitFor(again, ledger.StatusDelivered, 10*time.Second)
}

func TestInboundMessagesAreVerifiedAndProcessedOnce(t *testing.T) {
	e := start(t, config.RoleAll)
	if code, _ := e.inbound(patientPhone, "STOP", ""); code != 403 {
		t.Fatalf("unsigned inbound answered %d, want 403", code)
	}
	if code, _ := e.inbound(patientPhone, "STOP", "00000000000000000000000000000000"); code != 403 {
		t.Fatalf("forged inbound answered %d, want 403", code)
	}
	if out, _ := e.svc.Consent.OptedOut(context.Background(), "clinic-a", consent.Identity{Kind: consent.Phone, Value: patientPhone}); out {
		t.Fatal("a forged STOP changed consent")
	}
	sid := "SMffffffffffffffffffffffffffffff01"
	_, first := e.inboundSid(sid, patientPhone, "HELP", e.sim.AuthToken())
	_, retry := e.inboundSid(sid, patientPhone, "HELP", e.sim.AuthToken())
	if !strings.Contains(first, "<Message>") || strings.Contains(retry, "<Message>") {
		t.Fatalf("Twilio's retry of the same MessageSid must be processed once: %s / %s", first, retry)
	}
	// YES from someone who never opted out is an answer, not an opt-in.
	if _, twiml := e.inbound(patientPhone, "YES", e.sim.AuthToken()); strings.Contains(twiml, "<Message>") {
		t.Fatalf("YES got a consent confirmation: %s", twiml)
	}
	if st, _ := e.svc.Consent.Get(context.Background(), "clinic-a", consent.Identity{Kind: consent.Phone, Value: patientPhone}); len(st.Changes) != 0 {
		t.Fatalf("YES recorded a consent change: %+v", st)
	}
	if strings.Contains(e.logs.String(), "4155550123") {
		t.Fatal("the inbound number appears in the logs")
	}
}

func TestAnOptOutReportedByTwilioSuppressesLaterMessagesBeforeTheProvider(t *testing.T) {
	e := start(t, config.RoleAll)
	first := e.send(keyA, smsBody(twiliosim.MagicToUnsubscribed, "hi"))
	e.waitFor(first, ledger.StatusSuppressed, 10*time.Second)
	second := e.send(keyA, smsBody(twiliosim.MagicToUnsubscribed, "hi again"))
	m := e.waitFor(second, ledger.StatusSuppressed, 10*time.Second)
	n := 0
	for _, r := range e.sim.Requests() {
		if r.Form.Get("To") == twiliosim.MagicToUnsubscribed {
			n++
		}
	}
	if n != 1 || m.Error.Code != "opted_out" {
		t.Fatalf("the provider saw %d messages (want 1); second error %+v", n, m.Error)
	}
	st, _ := e.svc.Consent.Get(context.Background(), "clinic-a", consent.Identity{Kind: consent.Phone, Value: twiliosim.MagicToUnsubscribed})
	if !st.OptedOut || st.Changes[0].Source != consent.SourceProvider || !strings.Contains(st.Changes[0].Evidence, "21610") {
		t.Fatalf("consent %+v", st)
	}
}

func TestACrisisExemptionIsExplicitAndAudited(t *testing.T) {
	e := start(t, config.RoleAll, func(c *config.Config) { c.CrisisOptOutExempt = []string{"clinic-a"} })
	id := consent.Identity{Kind: consent.Phone, Value: patientPhone}
	for _, tenant := range []string{"clinic-a", "clinic-b"} {
		if _, err := e.svc.Consent.Set(context.Background(), tenant, id, true, consent.SourceAPI, "test"); err != nil {
			t.Fatal(err)
		}
	}
	exempt := e.send(keyA, smsBody(patientPhone, "Evacuate ward 3", "priority", "crisis"))
	m := e.waitFor(exempt, ledger.StatusDelivered, 10*time.Second)
	audited := false
	for _, ev := range m.Events {
		audited = audited || strings.Contains(ev.Detail, "exemption")
	}
	if !audited {
		t.Fatalf("the exempt send is not noted in the history: %+v", m.Events)
	}
	normal := e.send(keyA, smsBody(patientPhone, "Routine reminder"))
	e.waitFor(normal, ledger.StatusSuppressed, 10*time.Second)
	other := e.send(keyB, smsBody(patientPhone, "Evacuate", "priority", "crisis"))
	e.waitFor(other, ledger.StatusSuppressed, 10*time.Second)
}

func TestARepliedAnswerReachesTheTenantThatAsked(t *testing.T) {
	e := start(t, config.RoleAll)
	asked := e.send(keyA, smsBody(patientPhone, "Day 7 check: reply 1 if you feel better, 2 if not"))
	e.waitFor(asked, ledger.StatusDelivered, 10*time.Second)

	if code, twiml := e.inbound(patientPhone, "2 - still short of breath", e.sim.AuthToken()); code != 200 || strings.Contains(twiml, "<Message>") {
		t.Fatalf("reply answered %d %s", code, twiml)
	}
	e.inbound(patientPhone, "YES", e.sim.AuthToken()) // an answer, not an opt-in
	// The workers file answers concurrently: wait for both, in any order.
	var feed answer
	waitUntil(t, 10*time.Second, "both answers in the feed", func() bool {
		feed = e.do("GET", "/v1/replies", keyA, "")
		list, _ := feed.Body["replies"].([]any)
		return len(list) == 2
	})
	var first map[string]any
	for _, r := range feed.Body["replies"].([]any) {
		if r.(map[string]any)["body"] == "2 - still short of breath" {
			first = r.(map[string]any)
		}
	}
	if first == nil || first["in_reply_to"] != asked || first["channel"] != "sms" {
		t.Fatalf("reply %v in %s", first, feed.Raw)
	}
	next := feed.Body["next"].(string)
	if more := e.do("GET", "/v1/replies?after="+next, keyA, ""); !strings.Contains(more.Raw, `"replies":[]`) {
		t.Fatalf("nothing after the last cursor: %s", more.Raw)
	}
	if other := e.do("GET", "/v1/replies", keyB, ""); !strings.Contains(other.Raw, `"replies":[]`) {
		t.Fatalf("another tenant sees the reply: %s", other.Raw)
	}
	m, _ := e.svc.Ledger.Get(context.Background(), "", asked)
	noted := false
	for _, ev := range m.Events {
		noted = noted || strings.Contains(ev.Detail, "replied")
	}
	if !noted {
		t.Fatalf("the asked message's history does not show the reply: %+v", m.Events)
	}
	if strings.Contains(e.logs.String(), "short of breath") {
		t.Fatal("a reply body appears in the logs")
	}
}

func TestTwoOpenQuestionsGetTheirOwnAnswers(t *testing.T) {
	e := start(t, config.RoleAll)
	day7 := e.send(keyA, `{"channel":"sms","to":{"phone":"`+patientPhone+`"},"body":"Day 7 (D7): reply 1 better, 2 worse",
		"expect_reply":{"options":{"1":"better","2":"worse"},"within":"48h","code":"D7"}}`)
	meds := e.send(keyB, `{"channel":"sms","to":{"phone":"`+patientPhone+`"},"body":"Did you take your tablets? 1 yes, 2 no",
		"expect_reply":{"options":{"1":"taken","2":"missed"},"within":"2h"}}`)
	e.waitFor(day7, ledger.StatusDelivered, 10*time.Second)
	e.waitFor(meds, ledger.StatusDelivered, 10*time.Second)

	e.inbound(patientPhone, "d7 2", e.sim.AuthToken()) // the code picks the day-7 question
	e.inbound(patientPhone, "1", e.sim.AuthToken())    // shared key: the most recent open question
	a := e.waitFeed(keyA, `"option"`)
	b := e.waitFeed(keyB, `"option"`)
	if !strings.Contains(a.Raw, `"option":"worse"`) || !strings.Contains(a.Raw, `"in_reply_to":"`+day7+`"`) {
		t.Fatalf("clinic A's feed: %s", a.Raw)
	}
	if !strings.Contains(b.Raw, `"option":"taken"`) || !strings.Contains(b.Raw, `"in_reply_to":"`+meds+`"`) {
		t.Fatalf("clinic B's feed: %s", b.Raw)
	}
	if strings.Contains(a.Raw, "taken") || strings.Contains(b.Raw, "worse") {
		t.Fatal("an answer reached the other clinic")
	}
	m, _ := e.svc.Ledger.Get(context.Background(), "", day7)
	answered := false
	for _, ev := range m.Events {
		answered = answered || ev.Detail == "the patient answered: worse"
	}
	if !answered {
		t.Fatalf("the day-7 message's history lacks the answer: %+v", m.Events)
	}
	// Both questions are answered and closed: free text now goes to the last message sent.
	e.inbound(patientPhone, "thank you", e.sim.AuthToken())
	e.waitFeed(keyB, "thank you")
	if bad := e.do("POST", "/v1/messages", keyA, `{"channel":"sms","to":{"phone":"`+patientPhone+`"},"body":"x","expect_reply":{"options":{}}}`); bad.Status != 422 {
		t.Fatalf("expect_reply without options = %d", bad.Status)
	}
}

func TestHelpGetsTheTenantsOwnText(t *testing.T) {
	e := start(t, config.RoleAll)
	if a := e.do("PUT", "/v1/help-text", keyA, `{"en":"Riverside Clinic: call 555-0100. Reply STOP to opt out."}`); a.Status != 200 {
		t.Fatalf("PUT help text = %d %s", a.Status, a.Raw)
	}
	if a := e.do("PUT", "/v1/help-text", keyA, `{"fr":"x"}`); a.Status != 422 {
		t.Fatalf("an unknown language = %d", a.Status)
	}
	if _, twiml := e.inbound(patientPhone, "HELP", e.sim.AuthToken()); !strings.Contains(twiml, "care team") {
		t.Fatalf("a stranger gets the default help: %s", twiml)
	}
	id := e.send(keyA, smsBody(patientPhone, "Your results are ready"))
	e.waitFor(id, ledger.StatusDelivered, 10*time.Second)
	if _, twiml := e.inbound(patientPhone, "help", e.sim.AuthToken()); !strings.Contains(twiml, "Riverside Clinic: call 555-0100") {
		t.Fatalf("the patient of clinic A gets its help text: %s", twiml)
	}
}

// waitFeed polls the tenant's reply feed until it contains part (answers
// are filed by the workers, a moment after the webhook).
func (e *env) waitFeed(key, part string) answer {
	e.t.Helper()
	var a answer
	waitUntil(e.t, 10*time.Second, "a reply containing "+part, func() bool {
		a = e.do("GET", "/v1/replies", key, "")
		return strings.Contains(a.Raw, part)
	})
	return a
}
