package service_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/channels/wechat"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/ledger"
)

func TestAFollowUpCallSpeaksAsksRecordsAndKeepsTheAnswer(t *testing.T) {
	e := start(t, config.RoleAll)
	e.sim.SetCallPlan(twiliosim.CallPlan{Digits: []string{"2"}, RecordSeconds: 3})
	body := `{"channel":"voice","to":{"phone":"` + patientPhone + `"},"locale":"zh-CN",
		"body":"您好，这里是第一医院，我们打电话了解您出院后的情况。",
		"gather":{"prompt":"感觉好转请按1，没有好转请按2，需要护士请按3","digits":"123"},
		"record":{"prompt":"请在提示音后说出您的情况","max_length":30}}`
	id := e.send(keyA, body)
	e.waitFor(id, ledger.StatusDelivered, 15*time.Second)

	var m *ledger.Message
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		m, _ = e.svc.Ledger.Get(context.Background(), "", id)
		if m.Recording != nil {
			break
		}
	}
	if m.Recording == nil {
		t.Fatalf("the recording was never stored: %+v", m.Events)
	}
	var digits string
	for _, ev := range m.Events {
		if ev.Answer != nil && ev.Answer.Digits != "" {
			digits = ev.Answer.Digits
		}
	}
	if digits != "2" {
		t.Fatalf("the keypad answer was not recorded: %+v", m.Events)
	}
	if feed := e.do("GET", "/v1/replies", keyA, ""); !strings.Contains(feed.Raw, `"body":"2"`) || !strings.Contains(feed.Raw, `"in_reply_to":"`+id+`"`) {
		t.Fatalf("the keypad answer is not in the reply feed: %s", feed.Raw)
	}
	if feed := e.do("GET", "/v1/replies", keyA, ""); !strings.Contains(feed.Raw, "recorded answer, 3 s") {
		t.Fatalf("the recorded answer is not in the reply feed: %s", feed.Raw)
	}
	calls := e.sim.Calls()
	if len(calls) != 1 || e.sim.MessagesTo(patientPhone) != 0 {
		t.Fatalf("calls %d, SMS %d", len(calls), e.sim.MessagesTo(patientPhone))
	}

	a := e.do("GET", "/v1/messages/"+id+"/recording", keyA, "")
	if a.Status != 200 || !strings.HasPrefix(a.Header.Get("Content-Type"), "audio/") || !bytes.Equal([]byte(a.Raw), twiliosim.ToneWAV(3)) {
		t.Fatalf("recording download: %d %s, %d bytes", a.Status, a.Header.Get("Content-Type"), len(a.Raw))
	}
	if b := e.do("GET", "/v1/messages/"+id+"/recording", keyB, ""); b.Status != 404 {
		t.Fatalf("another tenant got the recording: %d", b.Status)
	}
	view := e.do("GET", "/v1/messages/"+id, keyA, "")
	if rec, _ := view.Body["recording"].(map[string]any); rec["content_type"] == nil {
		t.Fatalf("the message view does not show the recording: %s", view.Raw)
	}
	logs := e.logs.String()
	for _, secret := range []string{"4155550123", "第一医院", "RecordingUrl", "/Recordings/RE"} {
		if strings.Contains(logs, secret) {
			t.Fatalf("logs contain %q", secret)
		}
	}
}

func TestAnUnansweredCallIsRetriedThenEndsUndelivered(t *testing.T) {
	e := start(t, config.RoleAll, func(c *config.Config) {
		c.Voice.MaxCalls = 2
		c.Voice.RedialDelay = time.Second
	})
	e.sim.ScriptCalls(twiliosim.CallPlan{Outcome: twiliosim.CallBusy}, twiliosim.CallPlan{Outcome: twiliosim.CallNoAnswer})
	id := e.send(keyA, `{"channel":"voice","to":{"phone":"`+patientPhone+`"},"body":"Please call the clinic back."}`)
	m := e.waitFor(id, ledger.StatusUndelivered, 20*time.Second)
	if n := len(e.sim.Calls()); n != 2 {
		t.Fatalf("calls placed %d, want 2 (VOICE_MAX_CALLS)", n)
	}
	if m.Error == nil || m.Error.Code != "no-answer" {
		t.Fatalf("error %+v; events %+v", m.Error, m.Events)
	}
	// The second call was placed no earlier than the history said it would be.
	var retryAt *time.Time
	for _, ev := range m.Events {
		if ev.RetryAt != nil {
			retryAt = ev.RetryAt
		}
	}
	if second := e.sim.Calls()[1].Created; retryAt == nil || second.Before(*retryAt) {
		t.Fatalf("second call at %v, retry_at %v", second, retryAt)
	}
}

func TestAWeChatMessageGoesAsATemplateOutsideTheWindow(t *testing.T) {
	e := start(t, config.RoleAll)
	body := `{"channel":"wechat","to":{"wechat_openid":"oPatient0123456789abcdefghij"},"body":"您的复诊时间是明天上午10点",
		"wechat":{"template_id":"TPL-followup","data":{"time":"明天上午10点"}}}`
	id := e.send(keyA, body)
	m := e.waitFor(id, ledger.StatusSent, 10*time.Second)
	if !strings.HasPrefix(m.ProviderID, "tmpl:") {
		t.Fatalf("outside the customer-service window the template message must be used; provider id %q", m.ProviderID)
	}
	custom, template := e.wsim.Accepted()
	if custom != 0 || template != 1 {
		t.Fatalf("custom %d, template %d", custom, template)
	}
	reqs := e.wsim.Requests()
	var sent map[string]any
	for _, r := range reqs {
		if strings.HasSuffix(r.Path, "/template/send") {
			sent = r.JSON
		}
	}
	if sent["touser"] != "oPatient0123456789abcdefghij" || sent["template_id"] != "TPL-followup" {
		t.Fatalf("template request %v", sent)
	}
	if strings.Contains(e.logs.String(), "oPatient0123456789abcdefghij") {
		t.Fatal("the openid appears in the logs")
	}

	// Without a template and outside the window, the message fails clearly.
	noTpl := e.send(keyA, `{"channel":"wechat","to":{"wechat_openid":"oOther"},"body":"hello"}`)
	f := e.waitFor(noTpl, ledger.StatusFailed, 10*time.Second)
	if f.Error == nil || f.Error.Code != "no_window_no_template" {
		t.Fatalf("error %+v", f.Error)
	}
}

func TestAWeChatMessageUsesCustomerServiceTextInsideTheWindow(t *testing.T) {
	e := start(t, config.RoleAll)
	// The patient wrote to the official account: WeChat opened its window,
	// and the inbound webhook reported the message to the channel.
	e.wsim.Interact("oPatientInWindow", 5, 48*time.Hour)
	wc, _ := e.svc.Channels.Get("wechat")
	if err := wc.(*wechat.Channel).Window().Touch(context.Background(), "oPatientInWindow", wechat.UserMessage, time.Now()); err != nil {
		t.Fatal(err)
	}
	id := e.send(keyA, `{"channel":"wechat","to":{"wechat_openid":"oPatientInWindow"},"body":"收到，谢谢"}`)
	m := e.waitFor(id, ledger.StatusSent, 10*time.Second)
	if !strings.HasPrefix(m.ProviderID, "cs:") {
		t.Fatalf("inside the window the customer-service text must be used; provider id %q", m.ProviderID)
	}
}

func TestAnEmailIsSentOverTLSWithItsSubjectAndBothParts(t *testing.T) {
	e := start(t, config.RoleAll)
	body := `{"channel":"email","to":{"email":"patient.wang@example.org"},"subject":"您的检查结果已出","locale":"zh-CN",
		"body":"请登录患者门户查看。","html":"<p>请登录<b>患者门户</b>查看。</p>","priority":"bulk"}`
	id := e.send(keyA, body)
	m := e.waitFor(id, ledger.StatusSent, 10*time.Second)
	got, err := e.smtp.WaitFor(1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r := got[0]
	if !r.TLS || r.User != "gateway" || len(r.To) != 1 || r.To[0] != "patient.wang@example.org" {
		t.Fatalf("envelope: TLS %v, user %q, to %v", r.TLS, r.User, r.To)
	}
	if r.Subject != "您的检查结果已出" || !strings.Contains(r.Text, "患者门户") || !strings.Contains(r.HTML, "<b>患者门户</b>") {
		t.Fatalf("message: subject %q, text %q, html %q", r.Subject, r.Text, r.HTML)
	}
	if !strings.Contains(r.Header.Get("Message-Id"), m.ProviderID) || r.Header.Get("List-Unsubscribe") == "" {
		t.Fatalf("headers: Message-Id %q (provider id %q), List-Unsubscribe %q", r.Header.Get("Message-Id"), m.ProviderID, r.Header.Get("List-Unsubscribe"))
	}
	view := e.do("GET", "/v1/messages/"+id, keyA, "")
	if to := view.Body["to"].(map[string]any)["email"]; to != "p•••@example.org" {
		t.Fatalf("the API must mask the address: %v", to)
	}
	for _, secret := range []string{"patient.wang", "检查结果", "患者门户", smtpPassword} {
		if strings.Contains(e.logs.String(), secret) {
			t.Fatalf("logs contain %q", secret)
		}
	}
}

func TestAnEmailRefusedForTheRecipientFailsAtOnce(t *testing.T) {
	e := start(t, config.RoleAll)
	e.smtp.Reject(550, "5.1.1 mailbox unavailable")
	id := e.send(keyA, `{"channel":"email","to":{"email":"gone@example.org"},"subject":"Reminder","body":"x"}`)
	m := e.waitFor(id, ledger.StatusFailed, 10*time.Second)
	if m.Error == nil || m.Error.Code != "smtp_550" || m.Attempts != 1 || strings.Contains(m.Error.Message, "gone@example.org") {
		t.Fatalf("record %+v", m.Error)
	}
}

func TestCallsFromOneNumberAreSpacedByTheCallRate(t *testing.T) {
	e := start(t, config.RoleAll, func(c *config.Config) { c.Voice.CallsPerSecond = 1 })
	var ids []string
	for i := 0; i < 3; i++ {
		ids = append(ids, e.send(keyA, `{"channel":"voice","to":{"phone":"`+patientPhone+`"},"body":"Reminder: your appointment is tomorrow."}`))
	}
	for _, id := range ids {
		m := e.waitFor(id, ledger.StatusDelivered, 15*time.Second)
		if m.Attempts != 1 {
			t.Fatalf("waiting for the rate limit must not spend attempts: %d", m.Attempts)
		}
	}
	calls := e.sim.Calls()
	if len(calls) != 3 {
		t.Fatalf("calls %d", len(calls))
	}
	// 1 call/s per from-number with a burst of one call: between calls i
	// and j at least j−i−¾ s pass (the limiter's slack of ¾ of an interval
	// lets a call that comes back a little late still keep its slot), less
	// a little for clock reading on two hosts.
	for i := range calls {
		for j := i + 1; j < len(calls); j++ {
			least := time.Duration(j-i)*time.Second - 750*time.Millisecond - 50*time.Millisecond
			if gap := calls[j].Created.Sub(calls[i].Created); gap < least {
				t.Fatalf("calls %d and %d were %s apart at 1 call/s, want at least %s", i, j, gap, least)
			}
		}
	}
	if span := calls[2].Created.Sub(calls[0].Created); span < 1200*time.Millisecond {
		t.Fatalf("three calls within %s at 1 call/s", span)
	}
}
