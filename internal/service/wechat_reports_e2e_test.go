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
	reports := e.wsim.Reports()
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
