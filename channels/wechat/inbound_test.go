package wechat_test

import (
	"context"
	"encoding/xml"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/channels/channeltest"
	"github.com/patientmsg/gateway/channels/wechat"
	"github.com/patientmsg/gateway/channels/wechat/wechatsim"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/redistest"
)

const (
	testToken   = "pmgwPushToken2026"
	testAESKey  = "TJQS9/pEyOkFctH3KIcnLdmY6j6As6V1+VEHkVRsKT8"
	otherAESKey = "KqULR8kjQt3aHcy3dOUOSX11ljLbLDqLhrManXN/gVE"
	testAccount = "gh_3f2a1b0c9d8e"
	testPublic  = "https://gw.clinic.example"
	optOutReply = "您已退订本诊所的微信消息。回复 START 可重新订阅。"
)

// openid returns a distinct, valid openid per label.
func openid(label string) string { return "oPush" + label + "Xq7pQ2rS9tU4vW1xY6z" }

// inboundChannel is a channel that takes pushes: plaintext mode, or safe
// mode with aesKey.
func (e *env) inboundChannel(t *testing.T, aesKey string, mutate ...func(*wechat.Config)) *wechat.Channel {
	t.Helper()
	return e.channel(t, "http://127.0.0.1:9", channeltest.LoopbackOnly(nil), append([]func(*wechat.Config){func(c *wechat.Config) {
		c.Token, c.EncodingAESKey = testToken, aesKey
	}}, mutate...)...)
}

func (e *env) pusher(aesKey string) wechatsim.Pusher {
	return wechatsim.Pusher{Token: testToken, EncodingAESKey: aesKey, AppID: testAppID, Now: e.clock.Now}
}

// pushed is a push as WeChat would send it.
type pushed struct {
	q    url.Values
	body []byte
}

func (p pushed) path() string { return wechat.InboundPath + "?" + p.q.Encode() }

// with returns the push with query parameters changed.
func (p pushed) with(kv ...string) pushed {
	q := url.Values{}
	for k, v := range p.q {
		q[k] = append([]string(nil), v...)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			q.Del(kv[i])
		} else {
			q.Set(kv[i], kv[i+1])
		}
	}
	return pushed{q: q, body: p.body}
}

func push(t *testing.T, p wechatsim.Pusher, xml []byte, user string) pushed {
	t.Helper()
	q, body, err := p.Push(xml, user)
	if err != nil {
		t.Fatal(err)
	}
	return pushed{q: q, body: body}
}

// post is a RunInbound case of a push.
func post(label string, p pushed) channeltest.InboundCase {
	return channeltest.InboundCase{Label: label, Method: http.MethodPost, Path: p.path(), Body: p.body}
}

func text(user, content string, msgID int64, at time.Time) []byte {
	return wechatsim.TextMessage(testAccount, openid(user), content, msgID, at)
}

func event(user, ev, key string, at time.Time) []byte {
	return wechatsim.Event(testAccount, openid(user), ev, key, at)
}

func inboundOf(user, content, msgID string) channels.InboundMessage {
	return channels.InboundMessage{Channel: "wechat", ProviderID: msgID, From: ledger.Recipient{WeChatOpenID: openid(user)},
		To: testAccount, Body: content}
}

// windowWant is the window a user should have after the pushes.
type windowWant struct {
	user      string
	remaining int // 0: no window
	by        wechat.Interaction
	length    time.Duration
}

func checkWindows(t *testing.T, ch *wechat.Channel, at time.Time, wants []windowWant) {
	t.Helper()
	for _, w := range wants {
		st, err := ch.Window().State(context.Background(), openid(w.user))
		if err != nil {
			t.Fatal(err)
		}
		want := wechat.WindowState{}
		if w.remaining > 0 {
			want = wechat.WindowState{Open: true, Remaining: w.remaining, Expires: at.Add(w.length), OpenedBy: w.by}
		}
		if !st.Expires.Equal(want.Expires) || st.Open != want.Open || st.Remaining != want.Remaining || st.OpenedBy != want.OpenedBy {
			t.Errorf("window of %s = %+v, want %+v", w.user, st, want)
		}
	}
}

// handle calls the channel's route directly (to read an encrypted answer).
func handle(t *testing.T, ch *wechat.Channel, rcv channels.Receiver, method string, p pushed) channels.WebhookResponse {
	t.Helper()
	for _, r := range ch.Routes(rcv) {
		if r.Method == method && r.Path == wechat.InboundPath {
			return r.Handle(context.Background(), channels.WebhookRequest{URL: testPublic + p.path(), Header: http.Header{},
				Query: p.q, Form: url.Values{}, Body: p.body})
		}
	}
	t.Fatalf("no route %s %s", method, wechat.InboundPath)
	return channels.WebhookResponse{}
}

// replyText is a passive text reply.
type replyText struct {
	ToUserName, FromUserName, MsgType, Content string
	CreateTime                                 int64
}

func readReply(t *testing.T, b []byte) replyText {
	t.Helper()
	var r replyText
	if err := xml.Unmarshal(b, &r); err != nil {
		t.Fatalf("reply %q: %v", b, err)
	}
	return r
}

func TestURLVerification(t *testing.T) {
	e := newEnv(t)
	ch := e.inboundChannel(t, "")
	p := e.pusher("")
	good := pushed{q: p.Verification("1616140317555161061")}
	stale := p
	stale.Now = func() time.Time { return e.clock.Now().Add(-wechat.MaxClockSkew - time.Second) }
	get := func(label string, p pushed, status int, body string) channeltest.InboundCase {
		return channeltest.InboundCase{Label: label, Method: http.MethodGet, Path: p.path(), ExpectedStatus: status, ExpectedBody: body}
	}
	channeltest.RunInbound(t, ch, testPublic, nil, []channeltest.InboundCase{
		get("a signed verification is answered with echostr", good, 200, "1616140317555161061"),
		get("a forged signature is forbidden", good.with("signature", strings.Repeat("0", 40)), 403, ""),
		get("a signature made with another token is forbidden",
			good.with("signature", wechatsim.Signature("other", good.q.Get("timestamp"), good.q.Get("nonce"))), 403, ""),
		get("no signature is forbidden", good.with("signature", ""), 403, ""),
		get("a stale timestamp is forbidden", pushed{q: stale.Verification("42")}, 403, ""),
		get("an echostr that could be markup is not reflected", pushed{q: p.Verification("<script>alert(1)</script>")}, 400, ""),
	})
	if routes := e.channel(t, "http://127.0.0.1:9", nil).Routes(&channeltest.RecordingReceiver{}); routes != nil {
		t.Fatalf("a channel without Token declares %d routes, want none", len(routes))
	}
}

func TestPlaintextPushes(t *testing.T) {
	e := newEnv(t)
	ch := e.inboundChannel(t, "")
	p := e.pusher("")
	now := e.clock.Now()
	stale := p
	stale.Now = func() time.Time { return now.Add(-wechat.MaxClockSkew - time.Second) }
	ask := push(t, p, text("A", "复诊时间可以改吗", 24001, now), openid("A"))
	stop := push(t, p, text("B", "退订", 24002, now), openid("B"))
	forged := push(t, p, text("C", "hello", 24003, now), openid("C")).with("signature", wechatsim.Signature("guess", "1", "2"))
	outage := push(t, p, text("E", "hello", 24005, now), openid("E"))

	channeltest.RunInbound(t, ch, testPublic, nil, []channeltest.InboundCase{
		func() channeltest.InboundCase {
			c := post("a text message goes to the receiver and is acknowledged", ask)
			c.ExpectedStatus, c.ExpectedBody = 200, "success"
			c.ExpectedInbounds = []channels.InboundMessage{inboundOf("A", "复诊时间可以改吗", "24001")}
			return c
		}(),
		func() channeltest.InboundCase {
			c := post("the receiver's confirmation is the passive text reply", stop)
			c.InboundReply, c.ExpectedStatus = optOutReply, 200
			c.ExpectedBodyContains = []string{"<ToUserName><![CDATA[" + openid("B") + "]]></ToUserName>",
				"<FromUserName><![CDATA[" + testAccount + "]]></FromUserName>", "<MsgType>text</MsgType>",
				"<Content><![CDATA[" + optOutReply + "]]></Content>"}
			c.ExpectedInbounds = []channels.InboundMessage{inboundOf("B", "退订", "24002")}
			return c
		}(),
		func() channeltest.InboundCase {
			c := post("a forged signature is forbidden and nothing is recorded", forged)
			c.ExpectedStatus = 403
			return c
		}(),
		func() channeltest.InboundCase {
			c := post("no signature is forbidden", ask.with("signature", ""))
			c.ExpectedStatus = 403
			return c
		}(),
		func() channeltest.InboundCase {
			c := post("a stale timestamp is forbidden", push(t, stale, text("C", "hello", 24006, now), openid("C")))
			c.ExpectedStatus = 403
			return c
		}(),
		func() channeltest.InboundCase {
			c := post("a timestamp from the future is forbidden", ask.with("timestamp", "99999999999"))
			c.ExpectedStatus = 403
			return c
		}(),
		func() channeltest.InboundCase {
			c := post("a seen signature with another body is forbidden", pushed{q: ask.q, body: text("C", "STOP", 24007, now)})
			c.ExpectedStatus = 403
			return c
		}(),
		func() channeltest.InboundCase {
			c := post("another kind of message opens the window and is acknowledged",
				push(t, p, wechatsim.Message(testAccount, openid("D"), "image", 24004, now), openid("D")))
			c.ExpectedStatus, c.ExpectedBody = 200, "success"
			return c
		}(),
		func() channeltest.InboundCase {
			c := post("an authentic push that is not understood is acknowledged", push(t, p, []byte("<xml><MsgType>text</MsgType></xml>"), ""))
			c.ExpectedStatus, c.ExpectedBody = 200, "success"
			return c
		}(),
		func() channeltest.InboundCase {
			c := post("a storage outage answers 503 so WeChat retries", outage)
			c.ReceiverErr, c.ExpectedStatus = errors.New("redis down"), 503
			return c
		}(),
		func() channeltest.InboundCase {
			c := post("the retry after the outage is recorded", outage)
			c.ExpectedStatus, c.ExpectedBody = 200, "success"
			c.ExpectedInbounds = []channels.InboundMessage{inboundOf("E", "hello", "24005")}
			return c
		}(),
	})
	checkWindows(t, ch, now, []windowWant{
		{user: "A", remaining: 5, by: wechat.UserMessage, length: 48 * time.Hour},
		{user: "B", remaining: 5, by: wechat.UserMessage, length: 48 * time.Hour},
		{user: "C"},
		{user: "D", remaining: 5, by: wechat.UserMessage, length: 48 * time.Hour},
		{user: "E", remaining: 5, by: wechat.UserMessage, length: 48 * time.Hour},
	})
	e.logs.assertClean(t, openid("A"), openid("B"), openid("C"), openid("D"), openid("E"), "复诊时间可以改吗", "退订", optOutReply)
}

func TestEventPushes(t *testing.T) {
	e := newEnv(t)
	ch := e.inboundChannel(t, "")
	p := e.pusher("")
	now := e.clock.Now()
	unfollow := push(t, p, event("U", "unsubscribe", "", now), openid("U"))
	failing := push(t, p, event("R", "unsubscribe", "", now), openid("R"))
	click := push(t, p, event("C", "CLICK", "MENU_BOOKING", now), openid("C"))
	ev := func(label string, pu pushed) channeltest.InboundCase {
		c := post(label, pu)
		c.ExpectedStatus, c.ExpectedBody = 200, "success"
		return c
	}
	optOut := func(user string) []channeltest.OptOutCall {
		return []channeltest.OptOutCall{{Channel: "wechat", Who: ledger.Recipient{WeChatOpenID: openid(user)},
			Evidence: "wechat unsubscribe event at 2026-03-10T14:30:00Z"}}
	}
	cases := []channeltest.InboundCase{
		ev("a follow opens the event window", push(t, p, event("F", "subscribe", "", now), openid("F"))),
		ev("a follow through a parametric QR code is a follow", push(t, p, event("Q", "subscribe", "qrscene_clinic42", now), openid("Q"))),
		ev("a follower's scan opens the event window", push(t, p, event("S", "SCAN", "clinic42", now), openid("S"))),
		ev("a menu click opens the event window", click),
		ev("the same click again is a duplicate", click),
		ev("a scan-code menu opens the event window", push(t, p, event("P", "scancode_push", "MENU_SCAN", now), openid("P"))),
		ev("a link menu (VIEW) opens no window", push(t, p, event("V", "VIEW", "https://clinic.example", now), openid("V"))),
		ev("a template delivery report is acknowledged", push(t, p, event("T", "TEMPLATESENDJOBFINISH", "", now), openid("T"))),
		func() channeltest.InboundCase {
			c := ev("an unfollow is an opt-out", unfollow)
			c.ExpectedOptOuts = optOut("U")
			return c
		}(),
		ev("WeChat's retry of the unfollow is processed once", unfollow),
		func() channeltest.InboundCase {
			c := post("an unfollow the receiver cannot record answers 503", failing)
			c.ReceiverErr, c.ExpectedStatus = errors.New("redis down"), 503
			return c
		}(),
		func() channeltest.InboundCase {
			c := ev("its retry is recorded", failing)
			c.ExpectedOptOuts = optOut("R")
			return c
		}(),
	}
	channeltest.RunInbound(t, ch, testPublic, nil, cases)
	checkWindows(t, ch, now, []windowWant{
		{user: "F", remaining: 3, by: wechat.Follow, length: time.Minute},
		{user: "Q", remaining: 3, by: wechat.Follow, length: time.Minute},
		{user: "S", remaining: 3, by: wechat.Scan, length: time.Minute},
		{user: "C", remaining: 3, by: wechat.MenuClick, length: time.Minute},
		{user: "P", remaining: 3, by: wechat.MenuClick, length: time.Minute},
		{user: "V"}, {user: "T"}, {user: "U"},
	})
	e.logs.assertClean(t, openid("F"), openid("Q"), openid("S"), openid("C"), openid("U"), openid("R"), "qrscene_clinic42")
}

func TestARetriedMessageTouchesTheWindowOnceAndReachesTheReceiverOnce(t *testing.T) {
	e := newEnv(t)
	sim, ch := e.simChannel(t, wechatsim.Options{}, func(c *wechat.Config) { c.Token = testToken })
	p := e.pusher("")
	stop := push(t, p, text("A", "STOP", 31001, e.clock.Now()), openid("A"))
	sim.Interact(openid("A"), 5, 48*time.Hour) // WeChat opens the window it pushes the message for
	rcv := &channeltest.RecordingReceiver{InboundReply: "You are unsubscribed."}
	if r := handle(t, ch, rcv, http.MethodPost, stop); r.Status != 200 || readReply(t, r.Body).Content != "You are unsubscribed." {
		t.Fatalf("first delivery: %d %q", r.Status, r.Body)
	}
	// A customer-service message uses one of the window's five.
	m := msg(&ledger.WeChatOptions{Kind: wechat.KindCustom})
	m.To.WeChatOpenID = openid("A")
	if _, err := ch.Send(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(5 * time.Second)
	// WeChat did not get the answer in time and pushes again.
	if r := handle(t, ch, rcv, http.MethodPost, stop); r.Status != 200 || string(r.Body) != "success" {
		t.Fatalf("retry: %d %q, want a bare success (the confirmation is given once)", r.Status, r.Body)
	}
	if len(rcv.Inbounds) != 1 {
		t.Fatalf("the receiver got %d messages, want 1", len(rcv.Inbounds))
	}
	if st, _ := ch.Window().State(context.Background(), openid("A")); st.Remaining != 4 {
		t.Fatalf("window %+v: the retry renewed the quota, want 4 left", st)
	}
}

func TestSafeModePushes(t *testing.T) {
	e := newEnv(t)
	ch := e.inboundChannel(t, testAESKey)
	p := e.pusher(testAESKey)
	now := e.clock.Now()

	// A STOP in safe mode: decrypted, recorded, and answered with an
	// encrypted, signed reply that WeChat can open.
	stop := push(t, p, text("A", "退订", 41001, now), openid("A"))
	if strings.Contains(string(stop.body), "退订") || stop.q.Get("encrypt_type") != "aes" {
		t.Fatalf("the test push is not encrypted: %s", stop.body)
	}
	rcv := &channeltest.RecordingReceiver{InboundReply: optOutReply}
	resp := handle(t, ch, rcv, http.MethodPost, stop)
	if resp.Status != 200 {
		t.Fatalf("status %d (%q)", resp.Status, resp.Body)
	}
	if strings.Contains(string(resp.Body), optOutReply) {
		t.Fatalf("the reply is in clear: %s", resp.Body)
	}
	opened, err := p.OpenReply(resp.Body)
	if err != nil || !opened.Encrypted {
		t.Fatalf("the reply does not open as WeChat would: %+v, %v (%s)", opened, err, resp.Body)
	}
	got := readReply(t, opened.XML)
	want := replyText{ToUserName: openid("A"), FromUserName: testAccount, MsgType: "text", Content: optOutReply, CreateTime: now.Unix()}
	if got != want {
		t.Fatalf("reply %+v, want %+v", got, want)
	}
	if len(rcv.Inbounds) != 1 || rcv.Inbounds[0] != inboundOf("A", "退订", "41001") {
		t.Fatalf("inbound %+v", rcv.Inbounds)
	}

	other := push(t, p, text("B", "hello", 41002, now), openid("B"))
	stale := p
	stale.Now = func() time.Time { return now.Add(wechat.MaxClockSkew + time.Second) }
	foreign := p
	foreign.AppID = "wx0000000000000000"
	wrongKey := p
	wrongKey.EncodingAESKey = otherAESKey
	plain := e.pusher("")
	forbidden := func(label string, pu pushed) channeltest.InboundCase {
		c := post(label, pu)
		c.ExpectedStatus = 403
		return c
	}
	channeltest.RunInbound(t, ch, testPublic, nil, []channeltest.InboundCase{
		func() channeltest.InboundCase {
			c := post("a message without a reply is acknowledged with success", other)
			c.ExpectedStatus, c.ExpectedBody = 200, "success"
			c.ExpectedInbounds = []channels.InboundMessage{inboundOf("B", "hello", "41002")}
			return c
		}(),
		func() channeltest.InboundCase {
			c := post("an encrypted follow opens the event window", push(t, p, event("F", "subscribe", "", now), openid("F")))
			c.ExpectedStatus, c.ExpectedBody = 200, "success"
			return c
		}(),
		forbidden("a forged msg_signature is forbidden", other.with("msg_signature", strings.Repeat("a", 40))),
		forbidden("no msg_signature is forbidden", other.with("msg_signature", "")),
		forbidden("another push's ciphertext under this signature is forbidden", pushed{q: other.q, body: stop.body}),
		forbidden("a stale timestamp is forbidden", push(t, stale, text("C", "hello", 41003, now), openid("C"))),
		forbidden("a plaintext push is refused once safe mode is configured", push(t, plain, text("C", "hello", 41004, now), openid("C"))),
		forbidden("an envelope without Encrypt is forbidden", pushed{q: other.q, body: []byte("<xml><ToUserName>gh_x</ToUserName></xml>")}),
		func() channeltest.InboundCase {
			c := post("a signed push sealed for another app id is a configuration error (500, not acknowledged)",
				push(t, foreign, text("C", "hello", 41005, now), openid("C")))
			c.ExpectedStatus = 500
			return c
		}(),
		func() channeltest.InboundCase {
			c := post("a signed push under another EncodingAESKey is a configuration error",
				push(t, wrongKey, text("C", "hello", 41006, now), openid("C")))
			c.ExpectedStatus = 500
			return c
		}(),
	})
	checkWindows(t, ch, now, []windowWant{
		{user: "A", remaining: 5, by: wechat.UserMessage, length: 48 * time.Hour},
		{user: "B", remaining: 5, by: wechat.UserMessage, length: 48 * time.Hour},
		{user: "F", remaining: 3, by: wechat.Follow, length: time.Minute},
		{user: "C"},
	})
	e.logs.assertClean(t, openid("A"), openid("B"), openid("C"), openid("F"), "退订", optOutReply)
}

// WeChat's own compatible-mode sample push (the Python WXBizMsgCrypt
// sample): both plaintext fields and Encrypt; only the encrypted copy counts.
func TestWeChatsSamplePushDecrypts(t *testing.T) {
	const (
		sampleBody = `<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName><FromUserName><![CDATA[oyORnuP8q7ou2gfYjqLzSIWZf0rs]]></FromUserName><CreateTime>1409735668</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[abcdteT]]></Content><MsgId>6054768590064713728</MsgId><Encrypt><![CDATA[hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE=]]></Encrypt></xml>`
		samplePath = wechat.InboundPath + "?timestamp=1409735669&nonce=1320562132&encrypt_type=aes&msg_signature=5d197aaffba7e9b25a30732f161a50dee96bd5fa"
	)
	e := newEnv(t)
	e.clock = newClock(time.Unix(1409735669, 0))
	ch := e.channel(t, "http://127.0.0.1:9", nil, func(c *wechat.Config) {
		c.AppID, c.Token, c.EncodingAESKey = "wx2c2769f8efd9abc2", "spamtest", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	})
	want := []channels.InboundMessage{{Channel: "wechat", ProviderID: "6054768590064713728",
		From: ledger.Recipient{WeChatOpenID: "oyORnuP8q7ou2gfYjqLzSIWZf0rs"}, To: "gh_10f6c3c3ac5a", Body: "abcdteT"}}
	channeltest.RunInbound(t, ch, testPublic, nil, []channeltest.InboundCase{
		{Label: "WeChat's sample push", Method: "POST", Path: samplePath, Body: []byte(sampleBody),
			ExpectedStatus: 200, ExpectedBody: "success", ExpectedInbounds: want},
		{Label: "the plaintext copy is ignored: a changed one changes nothing", Method: "POST", Path: samplePath,
			Body:           []byte(strings.Replace(sampleBody, "<Content><![CDATA[abcdteT]]>", "<Content><![CDATA[STOP]]>", 1)),
			ExpectedStatus: 200, ExpectedBody: "success", ExpectedInbounds: want},
	})
	st, err := ch.Window().State(context.Background(), "oyORnuP8q7ou2gfYjqLzSIWZf0rs")
	if err != nil || st.Remaining != 5 || !st.Expires.Equal(time.Unix(1409735668, 0).Add(48*time.Hour)) {
		t.Fatalf("window %+v, %v", st, err)
	}
}

func TestARedisOutageIsNotAcknowledged(t *testing.T) {
	srv := redistest.Start(t)
	if !srv.CanRestart() {
		t.Skip("needs a redis-server it can stop")
	}
	ch, err := wechat.New(wechat.Config{AppID: testAppID, AppSecret: testSecret, Token: testToken, Redis: srv.Client(),
		APIURL: "http://127.0.0.1:9", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	p := wechatsim.Pusher{Token: testToken, AppID: testAppID}
	now := time.Now()
	follow := push(t, p, event("F", "subscribe", "", now), openid("F"))
	message := push(t, p, text("M", "hello", 51001, now), openid("M"))
	srv.Stop()
	rcv := &channeltest.RecordingReceiver{}
	for _, pu := range []pushed{follow, message} {
		if r := handle(t, ch, rcv, http.MethodPost, pu); r.Status != http.StatusServiceUnavailable {
			t.Fatalf("status %d (%q), want 503", r.Status, r.Body)
		}
	}
	if len(rcv.Inbounds) != 0 {
		t.Fatalf("recorded %+v while the window could not be opened", rcv.Inbounds)
	}
	srv.Restart()
	for _, pu := range []pushed{follow, message} {
		if r := handle(t, ch, rcv, http.MethodPost, pu); r.Status != 200 {
			t.Fatalf("after the outage: status %d (%q)", r.Status, r.Body)
		}
	}
	if st, _ := ch.Window().State(context.Background(), openid("F")); st.OpenedBy != wechat.Follow {
		t.Fatalf("the follow's retry did not open the window: %+v", st)
	}
	if len(rcv.Inbounds) != 1 {
		t.Fatalf("the message's retry: %d recorded, want 1", len(rcv.Inbounds))
	}
}

func TestTemplateReportsAreParsedAndMapped(t *testing.T) {
	at := time.Unix(1_773_153_000, 0)
	p, err := wechat.ParsePush(wechatsim.TemplateFinish(testAccount, openid("A"), 200163836, "failed: system failed", at))
	if err != nil || p.JobMsgID != "200163836" || p.Status != "failed: system failed" {
		t.Fatalf("ParsePush = %+v, %v", p, err)
	}
	for status, want := range map[string]string{"success": "delivered/", "failed:user block": "undelivered/user_block",
		"failed: user block": "undelivered/user_block", "failed: system failed": "undelivered/system_failed", "odd": "undelivered/system_failed"} {
		st, code, _ := wechat.TemplateReport(status)
		if got := string(st) + "/" + code; got != want {
			t.Errorf("%q → %s, want %s", status, got, want)
		}
	}
	bad := "<xml><ToUserName>gh_1</ToUserName><FromUserName>o1</FromUserName><CreateTime>1</CreateTime><MsgType>event</MsgType><Event>TEMPLATESENDJOBFINISH</Event><MsgID>12</MsgID></xml>"
	if _, err := wechat.ParsePush([]byte(bad)); !errors.Is(err, wechat.ErrMalformedPush) {
		t.Errorf("a report without a Status: %v", err)
	}
}

func TestSubscribeEventsAreParsedAndChecked(t *testing.T) {
	at := time.Unix(1_773_153_000, 0)
	p, err := wechat.ParsePush(wechatsim.SubscribePopup(testAccount, openid("A"), "accept", at, "TPL-sub-1", "TPL-sub-2"))
	if err != nil || p.Event != wechat.EventSubscribePopup || len(p.Subscribe) != 2 ||
		p.Subscribe[0].TemplateID != "TPL-sub-1" || p.Subscribe[1].Status != "accept" {
		t.Fatalf("pop-up: %+v, %v", p, err)
	}
	p, err = wechat.ParsePush(wechatsim.SubscribeChange(testAccount, openid("A"), at, "TPL-sub-1"))
	if err != nil || len(p.Subscribe) != 1 || p.Subscribe[0].Status != "reject" {
		t.Fatalf("change: %+v, %v", p, err)
	}
	p, err = wechat.ParsePush(wechatsim.SubscribeSent(testAccount, openid("A"), "TPL-sub-1", 1700827132819554304, 0, "success", at))
	if err != nil || len(p.Subscribe) != 1 || p.Subscribe[0].MsgID != "1700827132819554304" || p.Subscribe[0].ErrorStatus != "success" {
		t.Fatalf("sent: %+v, %v", p, err)
	}
	if st, code, _ := wechat.SubscribeReport(p.Subscribe[0]); st != ledger.StatusDelivered || code != "" {
		t.Fatalf("a success report → %s %s", st, code)
	}
	if st, code, _ := wechat.SubscribeReport(wechat.SubscribeItem{ErrorCode: 43107, ErrorStatus: "failed: system failed"}); st != ledger.StatusUndelivered || code != "system_failed" {
		t.Fatalf("a failure report → %s %s", st, code)
	}
	head := "<xml><ToUserName>gh_1</ToUserName><FromUserName>o1</FromUserName><CreateTime>1</CreateTime><MsgType>event</MsgType>"
	for name, body := range map[string]string{
		"no list":              head + "<Event>subscribe_msg_popup_event</Event></xml>",
		"no template":          head + "<Event>subscribe_msg_popup_event</Event><SubscribeMsgPopupEvent><List><SubscribeStatusString>accept</SubscribeStatusString></List></SubscribeMsgPopupEvent></xml>",
		"odd status":           head + "<Event>subscribe_msg_change_event</Event><SubscribeMsgChangeEvent><List><TemplateId>T</TemplateId><SubscribeStatusString>maybe</SubscribeStatusString></List></SubscribeMsgChangeEvent></xml>",
		"markup in template":   head + "<Event>subscribe_msg_popup_event</Event><SubscribeMsgPopupEvent><List><TemplateId>&lt;b&gt;</TemplateId><SubscribeStatusString>accept</SubscribeStatusString></List></SubscribeMsgPopupEvent></xml>",
		"report without msgid": head + "<Event>subscribe_msg_sent_event</Event><SubscribeMsgSentEvent><List><TemplateId>T</TemplateId><ErrorCode>0</ErrorCode></List></SubscribeMsgSentEvent></xml>",
		"report without code":  head + "<Event>subscribe_msg_sent_event</Event><SubscribeMsgSentEvent><List><TemplateId>T</TemplateId><MsgID>1</MsgID></List></SubscribeMsgSentEvent></xml>",
		"too many templates": head + "<Event>subscribe_msg_popup_event</Event><SubscribeMsgPopupEvent>" +
			strings.Repeat("<List><TemplateId>T</TemplateId><SubscribeStatusString>accept</SubscribeStatusString></List>", 21) + "</SubscribeMsgPopupEvent></xml>",
	} {
		if _, err := wechat.ParsePush([]byte(body)); !errors.Is(err, wechat.ErrMalformedPush) {
			t.Errorf("%s: %v, want ErrMalformedPush", name, err)
		}
	}
}

func FuzzParsePush(f *testing.F) {
	at := time.Unix(1_773_153_000, 0)
	f.Add(wechatsim.TextMessage(testAccount, openid("A"), "退订", 1234567890123456789, at))
	f.Add(wechatsim.Event(testAccount, openid("A"), "subscribe", "qrscene_1", at))
	f.Add(wechatsim.Message(testAccount, openid("A"), "voice", 1, at))
	f.Add(wechatsim.TemplateFinish(testAccount, openid("A"), 200163836, "failed:user block", at))
	f.Add([]byte("<xml><ToUserName>gh_1</ToUserName><FromUserName>o1</FromUserName><CreateTime>1</CreateTime><MsgType>event</MsgType><Event>TEMPLATESENDJOBFINISH</Event><MsgID>x</MsgID></xml>"))
	f.Add([]byte("<xml><ToUserName>gh_1</ToUserName><FromUserName>o1</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType></xml>"))
	f.Add(wechatsim.SubscribePopup(testAccount, openid("A"), "accept", at, "TPL-sub-1", "TPL-sub-2"))
	f.Add(wechatsim.SubscribeChange(testAccount, openid("A"), at, "TPL-sub-1"))
	f.Add(wechatsim.SubscribeSent(testAccount, openid("A"), "TPL-sub-1", 1700827132819554304, 0, "success", at))
	f.Add([]byte(`<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><Content>&e;</Content></xml>`))
	f.Add([]byte("<xml><Content><![CDATA[a]]]]><![CDATA[>b]]></Content></xml>"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := wechat.ParsePush(b)
		if err != nil {
			if !errors.Is(err, wechat.ErrMalformedPush) {
				t.Fatalf("error %v is not ErrMalformedPush", err)
			}
			return
		}
		ids := func(s string) bool {
			if s == "" || len(s) > 64 {
				return false
			}
			return strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") == ""
		}
		switch {
		case !ids(p.FromUserName) || !ids(p.ToUserName):
			t.Fatalf("accepted ids %q %q", p.FromUserName, p.ToUserName)
		case p.CreateTime <= 0 || p.MsgType == "" || strings.ContainsAny(p.MsgType, " \n<>&\"'"):
			t.Fatalf("accepted %+v", p)
		case p.MsgType == "text" && p.MsgID == "", p.MsgType == "event" && p.Event == "":
			t.Fatalf("accepted %+v", p)
		case strings.Trim(p.MsgID, "0123456789") != "":
			t.Fatalf("accepted MsgId %q", p.MsgID)
		case !utf8.ValidString(p.Content) || !utf8.ValidString(p.EventKey):
			t.Fatalf("accepted invalid UTF-8 %+v", p)
		case p.MsgType == "event" && strings.EqualFold(p.Event, wechat.EventTemplateFinished) && (p.JobMsgID == "" || strings.Trim(p.JobMsgID, "0123456789") != "" || p.Status == "" || !utf8.ValidString(p.Status)):
			t.Fatalf("accepted a template report %+v", p)
		}
		for _, it := range p.Subscribe {
			if it.TemplateID == "" || len(it.TemplateID) > 128 ||
				strings.Trim(it.TemplateID, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != "" ||
				strings.Trim(it.MsgID, "0123456789") != "" || !utf8.ValidString(it.ErrorStatus) {
				t.Fatalf("accepted a subscribe event entry %+v", it)
			}
		}
	})
}

// TestAnUnfollowLostWithRedisMidwayIsTakenOnTheRetry: the unfollow's key
// was claimed, the opt-out failed, and the key could not be dropped;
// WeChat's retry must record the opt-out, not skip it as a duplicate.
func TestAnUnfollowLostWithRedisMidwayIsTakenOnTheRetry(t *testing.T) {
	e := newEnv(t)
	hook := &redistest.FailCommand{Name: "del"}
	e.rdb.AddHook(hook)
	ch := e.inboundChannel(t, "")
	unfollow := push(t, e.pusher(""), event("U", "unsubscribe", "", e.clock.Now()), openid("U"))
	rcv := &channeltest.RecordingReceiver{Err: errors.New("redis down")}
	hook.Arm(true)
	if r := handle(t, ch, rcv, http.MethodPost, unfollow); r.Status != 503 {
		t.Fatalf("an unfollow the receiver cannot record = %d", r.Status)
	}
	hook.Arm(false)
	rcv.Err = nil
	if r := handle(t, ch, rcv, http.MethodPost, unfollow); r.Status != 200 || len(rcv.OptOuts) != 1 {
		t.Fatalf("WeChat's retry = %d with opt-outs %v, want the opt-out recorded", r.Status, rcv.OptOuts)
	}
	if r := handle(t, ch, rcv, http.MethodPost, unfollow); r.Status != 200 || len(rcv.OptOuts) != 1 {
		t.Fatalf("a further retry = %d with opt-outs %v, want a duplicate", r.Status, rcv.OptOuts)
	}
}
