package service_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/channels/wechat"
	"github.com/patientmsg/gateway/channels/wechat/wechatsim"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/ledger"
)

// TestWeChatTemplateMessagesAreDeliveredOrUndeliveredAsWeChatReports: the
// simulator pushes TEMPLATESENDJOBFINISH after each template message, as
// WeChat does, through the signed, encrypted inbound webhook: success
// makes the message delivered; a user who blocked the account's template
// messages makes it undelivered with the reason; a report pushed again
// changes nothing; a forged one is refused.
// message reads a message's record.
func (e *env) message(id string) *ledger.Message {
	e.t.Helper()
	m, err := e.svc.Ledger.Get(context.Background(), "", id)
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

func TestWeChatTemplateMessagesAreDeliveredOrUndeliveredAsWeChatReports(t *testing.T) {
	e := start(t, config.RoleAll)
	const account = "gh_clinic"
	e.wsim.ReportTo(e.base+wechat.InboundPath, wechatsim.Pusher{Token: wechatToken, EncodingAESKey: wechatAESKey, AppID: e.wsim.AppID()}, account)
	const reached, blocker = "oTemplateReached000000000001", "oTemplateBlocker000000000001"
	e.wsim.BlockTemplates(blocker)
	send := func(openid string) string {
		return e.send(keyA, `{"channel":"wechat","to":{"wechat_openid":"`+openid+`"},"body":"复诊提醒",
			"wechat":{"kind":"template","template_id":"TPL-followup","data":{"time":"明天上午10点"}}}`)
	}
	ok, blocked := send(reached), send(blocker)
	e.waitFor(ok, ledger.StatusDelivered, 10*time.Second)
	m := e.waitFor(blocked, ledger.StatusUndelivered, 10*time.Second)
	if m.Error == nil || m.Error.Code != "user_block" || !strings.Contains(m.Error.Message, "blocked") {
		t.Fatalf("the undelivered message's reason: %+v", m.Error)
	}
	// The simulator notes a push once it has the gateway's answer, which
	// can come just after the status the push applied.
	reports := e.wsim.Reports()
	for deadline := time.Now().Add(5 * time.Second); len(reports) < 2 && time.Now().Before(deadline); reports = e.wsim.Reports() {
		time.Sleep(10 * time.Millisecond)
	}
	if len(reports) != 2 || reports[0].HTTPStatus != 200 || reports[1].HTTPStatus != 200 {
		t.Fatalf("reports: %+v", reports)
	}
	// WeChat pushes a report again when it got no answer in time: nothing changes.
	before := len(e.message(blocked).Events)
	if code, _ := e.push(wechatsim.TemplateFinish(account, blocker, reports[1].MsgID, "success", time.Now()), blocker); code != 200 {
		t.Fatalf("a repeated report = %d", code)
	}
	if m := e.message(blocked); m.Status != ledger.StatusUndelivered || len(m.Events) != before {
		t.Fatalf("a repeated report changed the message: %s, %d events (was %d)", m.Status, len(m.Events), before)
	}
	// A forged report (signed with another token) is refused and changes nothing.
	forged := wechatsim.Pusher{Token: "not-the-token", EncodingAESKey: wechatAESKey, AppID: e.wsim.AppID()}
	q, body, _ := forged.Push(wechatsim.TemplateFinish(account, reached, reports[0].MsgID, "failed:user block", time.Now()), reached)
	resp, err := e.http.Post(e.base+wechat.InboundPath+"?"+q.Encode(), "text/xml", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 || e.message(ok).Status != ledger.StatusDelivered {
		t.Fatalf("a forged report = %d, message %s", resp.StatusCode, e.message(ok).Status)
	}
	// A report of a message the gateway does not know is taken and dropped.
	if code, _ := e.push(wechatsim.TemplateFinish(account, reached, 123456789, "success", time.Now()), reached); code != 200 {
		t.Fatalf("an unknown message's report = %d", code)
	}
	e.assertNoPatientDataLogged(reached, blocker, "复诊提醒")
}

// TestWeChatSubscribeMessagesFollowTheUsersSubscriptions: a user accepts
// the account's subscribe template in WeChat's pop-up (the simulator
// pushes subscribe_msg_popup_event through the signed, encrypted
// webhook); an auto message outside the window then goes as the
// subscribe message and is delivered when WeChat reports it
// (subscribe_msg_sent_event). The user turns the template off
// (subscribe_msg_change_event): the next message goes as the template
// message. A subscribe-only message to a user who never subscribed fails
// with WeChat's 43101; a forged pop-up is refused and subscribes no one.
func TestWeChatSubscribeMessagesFollowTheUsersSubscriptions(t *testing.T) {
	e := start(t, config.RoleAll)
	const account = "gh_clinic"
	pusher := wechatsim.Pusher{Token: wechatToken, EncodingAESKey: wechatAESKey, AppID: e.wsim.AppID()}
	e.wsim.ReportTo(e.base+wechat.InboundPath, pusher, account)
	const patient, stranger = "oSubscriber00000000000000001", "oStranger000000000000000001"
	const subTpl = "SUB-followup-reminder"
	send := func(openid, kind string) string {
		body := `{"channel":"wechat","to":{"wechat_openid":"` + openid + `"},"body":"复诊提醒",
			"wechat":{"kind":"` + kind + `","subscribe":{"template_id":"` + subTpl + `","data":{"thing1":"复诊提醒"},"page":"https://clinic.example/f/1"}`
		if kind == "auto" {
			body += `,"template_id":"TPL-followup","data":{"time":"明天上午10点"}`
		}
		return e.send(keyA, body+`}}`)
	}
	if code := e.wsim.Popup(patient, true, subTpl); code != 200 {
		t.Fatalf("the pop-up push = %d", code)
	}
	first := send(patient, "auto")
	m := e.waitFor(first, ledger.StatusDelivered, 10*time.Second)
	if !strings.HasPrefix(m.ProviderID, "sub:") {
		t.Fatalf("the subscribed patient's message went as %s", m.ProviderID)
	}
	got := e.wsim.SentTo(patient)
	if len(got) != 1 || !got[0].Subscribe || got[0].TemplateID != subTpl || got[0].URL != "https://clinic.example/f/1" {
		t.Fatalf("WeChat got %+v", got)
	}
	if code := e.wsim.TurnOff(patient, subTpl); code != 200 {
		t.Fatalf("the change push = %d", code)
	}
	second := send(patient, "auto")
	m = e.waitFor(second, ledger.StatusDelivered, 10*time.Second)
	if !strings.HasPrefix(m.ProviderID, "tmpl:") {
		t.Fatalf("after turning it off the message went as %s", m.ProviderID)
	}
	if got := e.wsim.SentTo(patient); len(got) != 2 || !got[1].Template {
		t.Fatalf("WeChat got %+v (the refused subscribe message must not even be tried)", got)
	}
	// A forged pop-up (another token) is refused and subscribes no one.
	forged := wechatsim.Pusher{Token: "not-the-token", EncodingAESKey: wechatAESKey, AppID: e.wsim.AppID()}
	q, body, _ := forged.Push(wechatsim.SubscribePopup(account, stranger, "accept", time.Now(), subTpl), stranger)
	resp, err := e.http.Post(e.base+wechat.InboundPath+"?"+q.Encode(), "text/xml", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Fatalf("a forged pop-up = %d", resp.StatusCode)
	}
	refused := send(stranger, "subscribe")
	m = e.waitFor(refused, ledger.StatusFailed, 10*time.Second)
	if m.Error == nil || m.Error.Code != "43101" {
		t.Fatalf("a subscribe message to a stranger: %+v", m.Error)
	}
	e.assertNoPatientDataLogged(patient, stranger, "复诊提醒")
}
