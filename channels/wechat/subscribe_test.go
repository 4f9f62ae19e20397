package wechat_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/channels/wechat"
	"github.com/patientmsg/gateway/channels/wechat/wechatsim"
	"github.com/patientmsg/gateway/internal/ledger"
)

const testSubscribeTemplate = "SUB-followup-reminder"

// subscribeOpts is an auto message with a subscribe message and a
// template to fall back on.
func subscribeOpts(kind string) *ledger.WeChatOptions {
	o := template(kind)
	if kind == wechat.KindSubscribe {
		o = &ledger.WeChatOptions{Kind: kind}
	}
	o.Subscribe = &ledger.WeChatSubscribe{TemplateID: testSubscribeTemplate,
		Data: map[string]string{"thing1": "复诊提醒", "time2": "2026-03-11 10:00"}, Page: "https://clinic.example/appt/1"}
	return o
}

// TestAutoSendsTheSubscribeMessageOnlyToAUserWhoAcceptedItsTemplate: the
// window first; then the subscribe message when the user accepted its
// template (as the gateway last heard); the template message otherwise,
// and when WeChat refuses the subscribe message (43101: turned off
// without the gateway hearing) the template goes instead and the
// refusal is remembered, so the next message does not try again.
func TestAutoSendsTheSubscribeMessageOnlyToAUserWhoAcceptedItsTemplate(t *testing.T) {
	e := newEnv(t)
	sim, ch := e.simChannel(t, wechatsim.Options{Now: e.clock.Now})
	ctx := context.Background()
	send := func(id string) string {
		t.Helper()
		m := msg(subscribeOpts(wechat.KindAuto))
		m.ID = id
		res, err := ch.Send(ctx, m)
		if err != nil {
			t.Fatalf("send %s: %v", id, err)
		}
		return strings.SplitN(res.ProviderID, ":", 2)[0]
	}
	// Never subscribed: the template.
	if got := send("m1"); got != "tmpl" {
		t.Fatalf("a user who never subscribed got %s", got)
	}
	// The user accepts in the pop-up (WeChat and the gateway both hear it).
	sim.Popup(testOpenID, true, testSubscribeTemplate)
	accept := wechat.SubscriptionChange{TemplateID: testSubscribeTemplate, Accepted: true, At: e.clock.Now()}
	if err := ch.Subscriptions().Record(ctx, testOpenID, accept); err != nil {
		t.Fatal(err)
	}
	if got := send("m2"); got != "sub" {
		t.Fatalf("a subscribed user got %s", got)
	}
	sent := sim.SentTo(testOpenID)
	last := sent[len(sent)-1]
	if !last.Subscribe || last.TemplateID != testSubscribeTemplate || last.URL != "https://clinic.example/appt/1" ||
		fmt.Sprint(last.Fields) != "[{thing1 复诊提醒} {time2 2026-03-11 10:00}]" {
		t.Fatalf("the subscribe message WeChat got: %+v", last)
	}
	// Inside the window, customer-service text still comes first.
	e.interact(t, sim, ch, testOpenID, wechat.UserMessage)
	if got := send("m3"); got != "cs" {
		t.Fatalf("inside the window: %s", got)
	}
	if err := ch.Window().Touch(ctx, testOpenID, wechat.UserMessage, e.clock.Now().Add(-49*time.Hour)); err != nil {
		t.Fatal(err)
	}
	sim.Interact(testOpenID, 0, 0)
	e.clock.Advance(49 * time.Hour)
	// Turned off at WeChat, unheard by the gateway: 43101, then the template.
	sim.TurnOff(testOpenID, testSubscribeTemplate)
	before := len(sim.Requests())
	if got := send("m4"); got != "tmpl" {
		t.Fatalf("after a refusal: %s", got)
	}
	if got := sends(sim.Requests()[before:]); fmt.Sprint(got) != fmt.Sprint([]string{wechatsim.SubscribeSendPath + "=43101", wechatsim.TemplateSendPath}) {
		t.Fatalf("requests %v", got)
	}
	before = len(sim.Requests())
	if got := send("m5"); got != "tmpl" {
		t.Fatalf("the message after a refusal: %s", got)
	}
	if got := sends(sim.Requests()[before:]); fmt.Sprint(got) != fmt.Sprint([]string{wechatsim.TemplateSendPath}) {
		t.Fatalf("the refusal was not remembered: %v", got)
	}
	// A pop-up accepted after the refusal wins again; an older one does not.
	old := wechat.SubscriptionChange{TemplateID: testSubscribeTemplate, Accepted: true, At: e.clock.Now().Add(-time.Hour)}
	if err := ch.Subscriptions().Record(ctx, testOpenID, old); err != nil {
		t.Fatal(err)
	}
	if ok, _ := ch.Subscriptions().Accepted(ctx, testOpenID, testSubscribeTemplate); ok {
		t.Fatal("an older acceptance replaced a later refusal")
	}
	e.logs.assertClean(t, testOpenID, "复诊提醒")
}

// sends lists the sends among requests, leaving out the token's renewal
// (the clock moved past its lifetime).
func sends(reqs []wechatsim.Request) []string {
	var out []string
	for _, p := range paths(reqs) {
		if !strings.HasPrefix(p, wechatsim.TokenPath) && !strings.HasSuffix(p, "=42001") {
			out = append(out, p)
		}
	}
	return out
}

// TestAnExplicitSubscribeMessageToAUserWhoDidNotSubscribeIsPermanent: kind
// subscribe never falls back; WeChat's 43101 is a permanent failure with
// its reason, and neither the window nor a template is used.
func TestAnExplicitSubscribeMessageToAUserWhoDidNotSubscribeIsPermanent(t *testing.T) {
	e := newEnv(t)
	sim, ch := e.simChannel(t, wechatsim.Options{})
	_, err := ch.Send(context.Background(), msg(subscribeOpts(wechat.KindSubscribe)))
	se := sendErr(t, err)
	if se.Class != channels.Permanent || se.Code != "43101" || !strings.Contains(se.Message, "subscribe") {
		t.Fatalf("error %+v", se)
	}
	if custom, tmpl := sim.Accepted(); custom != 0 || tmpl != 0 || sim.Subscribed() != 0 {
		t.Fatalf("accepted custom %d, template %d, subscribe %d", custom, tmpl, sim.Subscribed())
	}
	sim.Popup(testOpenID, true, testSubscribeTemplate)
	res, err := ch.Send(context.Background(), msg(subscribeOpts(wechat.KindSubscribe)))
	if err != nil || !strings.HasPrefix(res.ProviderID, "sub:") || res.ProviderID == "sub:"+testMsgID {
		t.Fatalf("after subscribing: %+v, %v (want WeChat's msgid)", res, err)
	}
}
