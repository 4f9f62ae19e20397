package service_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/channels/wechat"
	"github.com/patientmsg/gateway/channels/wechat/wechatsim"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/ledger"
)

// push posts a safe-mode WeChat push and opens the answer.
func (e *env) push(xml []byte, openid string) (int, wechatsim.Reply) {
	e.t.Helper()
	p := wechatsim.Pusher{Token: wechatToken, EncodingAESKey: wechatAESKey, AppID: e.wsim.AppID()}
	q, body, err := p.Push(xml, openid)
	if err != nil {
		e.t.Fatal(err)
	}
	resp, err := e.http.Post(e.base+wechat.InboundPath+"?"+q.Encode(), "text/xml", bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, wechatsim.Reply{}
	}
	r, err := p.OpenReply(raw)
	if err != nil {
		e.t.Fatalf("reply: %v (%q)", err, raw)
	}
	return resp.StatusCode, r
}

// userWrites is a WeChat user's message to the clinic's official account:
// WeChat opens its customer-service window for the user (5 messages within
// 48 hours) and pushes the message to the gateway.
func (e *env) userWrites(account, openid, text string, msgID int64) (int, wechatsim.Reply) {
	e.t.Helper()
	e.wsim.Interact(openid, 5, 48*time.Hour)
	return e.push(wechatsim.TextMessage(account, openid, text, msgID, time.Now()), openid)
}

func TestAWeChatUserWhoWritesOpensTheWindowAndUnfollowingOptsOut(t *testing.T) {
	e := start(t, config.RoleAll)
	const openid = "oPatientWritesBack0000000001"
	const account = "gh_clinic"

	// The clinic wrote first (a template), then the patient answers.
	asked := e.send(keyA, `{"channel":"wechat","to":{"wechat_openid":"`+openid+`"},"body":"复诊提醒",
		"wechat":{"template_id":"TPL-followup","data":{"time":"明天"}}}`)
	e.waitFor(asked, ledger.StatusSent, 10*time.Second)
	code, r := e.userWrites(account, openid, "好的，我明天去", 24000000001)
	if code != 200 || r.XML != nil {
		t.Fatalf("text push answered %d %+v", code, r)
	}
	if feed := e.waitFeed(keyA, "好的，我明天去"); !strings.Contains(feed.Raw, asked) {
		t.Fatalf("the WeChat answer does not point at the question: %s", feed.Raw)
	}
	// Inside the 48 h window an auto message goes as customer-service text.
	id := e.send(keyA, `{"channel":"wechat","to":{"wechat_openid":"`+openid+`"},"body":"收到，明天见"}`)
	if m := e.waitFor(id, ledger.StatusSent, 10*time.Second); !strings.HasPrefix(m.ProviderID, "cs:") {
		t.Fatalf("after the patient wrote, the customer-service text must be used: %q", m.ProviderID)
	}

	// 退订 gets its confirmation as an encrypted passive reply.
	_, r = e.userWrites(account, openid, "退订", 24000000002)
	if !r.Encrypted || !strings.Contains(string(r.XML), "您已退订") {
		t.Fatalf("opt-out reply %+v %s", r, r.XML)
	}
	e.userWrites(account, "oOtherPatient00000000000001", "hi", 24000000003)

	// Unfollowing is an opt-out too, with the event as evidence.
	const other = "oUnfollows000000000000000001"
	if code, _ := e.push(wechatsim.Event(account, other, "unsubscribe", "", time.Now()), other); code != 200 {
		t.Fatalf("unsubscribe answered %d", code)
	}
	st, _ := e.svc.Consent.Get(context.Background(), "clinic-b", consent.Identity{Kind: consent.WeChat, Value: other})
	if !st.OptedOut || st.Changes[0].Source != consent.SourceUnsubscribe {
		t.Fatalf("consent after unsubscribe %+v", st)
	}
	sup := e.send(keyB, `{"channel":"wechat","to":{"wechat_openid":"`+other+`"},"body":"x","wechat":{"template_id":"T"}}`)
	e.waitFor(sup, ledger.StatusSuppressed, 10*time.Second)

	// A forged push changes nothing.
	p := wechatsim.Pusher{Token: "not-the-token", EncodingAESKey: wechatAESKey, AppID: e.wsim.AppID()}
	q, body, _ := p.Push(wechatsim.Event(account, openid, "subscribe", "", time.Now()), openid)
	resp, _ := e.http.Post(e.base+wechat.InboundPath+"?"+q.Encode(), "text/xml", bytes.NewReader(body))
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Fatalf("forged push answered %d", resp.StatusCode)
	}
	for _, secret := range []string{openid, other, "好的，我明天去"} {
		if strings.Contains(e.logs.String(), secret) {
			t.Fatalf("logs contain %q", secret)
		}
	}
}
