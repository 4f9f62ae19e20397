package patientsim

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/smtp"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/channels/email/smtpsim"
	"github.com/patientmsg/gateway/channels/twilio"
	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/channels/wechat/wechatsim"
)

func TestListensOnLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "localhost:0"} {
		if err := New(Options{}).Listen(addr); err == nil {
			t.Fatalf("Listen(%q) was allowed", addr)
		}
	}
}

func TestRefusesNonLoopbackRequests(t *testing.T) {
	h := New(Options{}).Handler()
	for _, c := range []struct{ remote, host string }{
		{"192.0.2.7:5000", "127.0.0.1:9"},
		{"127.0.0.1:5000", "evil.example:9"},
	} {
		for _, r := range []struct{ method, path string }{
			{"GET", "/dev/patients/+14155550100/messages"},
			{"POST", "/dev/patients/+14155550100/keypad"},
			{"GET", "/dev/patients/oDevPatient1/wechat/messages"},
			{"GET", "/dev/patients/jane@example.org/mail"},
		} {
			req := httptest.NewRequest(r.method, r.path, strings.NewReader(`{"digits":"1"}`))
			req.RemoteAddr, req.Host = c.remote, c.host
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusForbidden {
				t.Fatalf("%s %s from %s to %s: %d, want 403", r.method, r.path, c.remote, c.host, rec.Code)
			}
		}
	}
}

func TestValidatesInput(t *testing.T) {
	h := New(Options{Region: "US"}).Handler()
	for _, c := range []struct{ path, body string }{
		{"/dev/patients/12/sms", `{"body":"1"}`},
		{"/dev/patients/+14155550100/sms", `{}`},
		{"/dev/patients/+14155550100/sms", `{"body":"` + strings.Repeat("x", MaxBody+1) + `"}`},
	} {
		req := httptest.NewRequest("POST", c.path, strings.NewReader(c.body))
		req.RemoteAddr, req.Host = "127.0.0.1:5000", "127.0.0.1:9"
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusBadRequest {
			t.Fatalf("POST %s: %d, want 400", c.path, rec.Code)
		}
	}
}

func TestTwimlReply(t *testing.T) {
	b := []byte(`<?xml version="1.0" encoding="UTF-8"?><Response><Message>You are unsubscribed.</Message></Response>`)
	if got := twimlReply(b); got != "You are unsubscribed." {
		t.Fatalf("got %q", got)
	}
	if got := twimlReply([]byte(`<Response></Response>`)); got != "" {
		t.Fatalf("got %q", got)
	}
}

// apiDo sends a request to the simulator's API and decodes its JSON answer
// into v (when v is not nil); it returns the status.
func apiDo(t *testing.T, method, u, body string, v any) int {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s %s answered %d, not JSON: %s", method, u, resp.StatusCode, b)
		}
	}
	return resp.StatusCode
}

func TestKeypadPressesKeysInThePhonesLatestCallThroughTheSignedGatherWebhook(t *testing.T) {
	rig := newPageRig(t)
	rig.call(t, pagePhone, "MSG-first")
	latest := rig.call(t, pagePhone, "MSG-latest")
	rig.call(t, "+14155550199", "MSG-someone-else")

	var res KeypadResult
	if code := apiDo(t, "POST", rig.srv.URL+"/dev/patients/"+pagePhone+"/keypad", `{"digits":" 21 "}`, &res); code != http.StatusOK {
		t.Fatalf("the press answered %d: %+v", code, res)
	}
	got := rig.gathered()
	if len(got) != 1 {
		t.Fatalf("the gateway's gather webhook took %d signed presses, want 1", len(got))
	}
	g := got[0]
	want := map[string]string{"CallSid": latest, "Digits": "2", "From": pageTwilioNr, "To": pagePhone, "Called": pagePhone,
		"Caller": pageTwilioNr, "AccountSid": rig.sim.AccountSID(), "CallStatus": "in-progress", "Direction": "outbound-api",
		"ApiVersion": twiliosim.APIVersion}
	for k, v := range want {
		if g.Get(k) != v {
			t.Fatalf("the press's %s is %q, want %q (%v)", k, g.Get(k), v, g)
		}
	}
	if res.Status != http.StatusOK || res.CallSID != latest || res.Digits != "2" || res.CallStatus != twiliosim.CallCompleted ||
		res.Says != "Thank you <b>." {
		t.Fatalf("the press's answer: %+v", res)
	}
	// The receiver checks signatures: the same press, forged, is refused.
	form := url.Values{}
	for k, v := range g {
		form[k] = v
	}
	req, _ := http.NewRequest("POST", rig.gw.URL+twilio.VoiceGatherPath+"?m=MSG-latest", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", twiliosim.Sign("not-the-auth-token", rig.gw.URL+twilio.VoiceGatherPath+"?m=MSG-latest", form))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || len(rig.gathered()) != 1 {
		t.Fatalf("a forged press answered %d", resp.StatusCode)
	}
	if logs := rig.logs.String(); strings.Contains(logs, pagePhone) || strings.Contains(logs, "4155550100") ||
		strings.Contains(strings.ToLower(logs), "digits") || !strings.Contains(logs, "pressed keys") {
		t.Fatalf("the logs name the phone or the keys, or not the press:\n%s", logs)
	}
}

func TestKeypadRefusals(t *testing.T) {
	rig := newPageRig(t)
	rig.call(t, "+14155550122", "no-question")
	for _, c := range []struct {
		name, phone, body string
		status            int
		says              string
	}{
		{"a number that is not one", "12", `{"digits":"1"}`, http.StatusBadRequest, "not valid"},
		{"no digits", pagePhone, `{}`, http.StatusBadRequest, `{\"digits\":\"...\"}`},
		{"a key a phone does not have", pagePhone, `{"digits":"1a"}`, http.StatusBadRequest, "0-9, * and #"},
		{"too many keys", pagePhone, `{"digits":"` + strings.Repeat("1", MaxDigits+1) + `"}`, http.StatusBadRequest, "1 to 32"},
		{"a number no call was placed to", pagePhone, `{"digits":"1"}`, http.StatusNotFound, errNoCall},
		{"a call that asked no question", "+14155550122", `{"digits":"1"}`, http.StatusConflict, "no <Gather>"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var res map[string]string
			if code := apiDo(t, "POST", rig.srv.URL+"/dev/patients/"+c.phone+"/keypad", c.body, &res); code != c.status || !strings.Contains(res["error"], strings.ReplaceAll(c.says, `\"`, `"`)) {
				t.Fatalf("answered %d %q, want %d saying %q", code, res["error"], c.status, c.says)
			}
		})
	}
	if got := rig.gathered(); len(got) != 0 {
		t.Fatalf("a refused press reached the gateway: %v", got)
	}
}

func TestKeypadPostsToTheGatewayOnly(t *testing.T) {
	rig := newPageRig(t, func(o *Options) { o.Gateway = "http://127.0.0.1:1" })
	rig.call(t, pagePhone, "MSG1") // its <Gather> acts on rig.gw, not on this gateway
	var res map[string]string
	if code := apiDo(t, "POST", rig.srv.URL+"/dev/patients/"+pagePhone+"/keypad", `{"digits":"1"}`, &res); code != http.StatusConflict || res["error"] != errNotOurs {
		t.Fatalf("answered %d %q", code, res["error"])
	}
	if got := rig.gathered(); len(got) != 0 {
		t.Fatalf("the press went to another host: %v", got)
	}
}

// wechatSend sends v to the WeChat simulator's path as the gateway's
// WeChat client does, with a fresh access token.
func wechatSend(t *testing.T, sim *wechatsim.Server, path string, v any) {
	t.Helper()
	resp, err := http.Get(sim.URL() + wechatsim.TokenPath + "?grant_type=client_credential&appid=" + sim.AppID() + "&secret=" + sim.AppSecret())
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	b, _ := json.Marshal(v)
	resp, err = http.Post(sim.URL()+path+"?access_token="+tok.AccessToken, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

func TestWeChatMessagesListWhatTheUserReceivedNewestFirst(t *testing.T) {
	wsim := wechatsim.New(wechatsim.Options{})
	t.Cleanup(wsim.Close)
	rig := newPageRig(t, func(o *Options) { o.WeChat = wsim })
	const openid = "oDevPatient000000000000001"
	text := func(to, content string) map[string]any {
		return map[string]any{"touser": to, "msgtype": "text", "text": map[string]any{"content": content}}
	}
	wechatSend(t, wsim, wechatsim.CustomSendPath, text(openid, "no window yet"))
	wsim.Interact(openid, 5, 48*time.Hour)
	wechatSend(t, wsim, wechatsim.CustomSendPath, text(openid, "How are you feeling today?"))
	wechatSend(t, wsim, wechatsim.CustomSendPath, text("oSomeoneElse", "not for this user"))
	wechatSend(t, wsim, wechatsim.TemplateSendPath, map[string]any{"touser": openid, "template_id": "TPL-followup",
		"url": "https://clinic.example/visit", "data": map[string]any{"time": map[string]any{"value": "明天上午10点"}}})

	var got struct {
		OpenID   string
		Messages []WeChatReceived
	}
	if code := apiDo(t, "GET", rig.srv.URL+"/dev/patients/"+openid+"/wechat/messages", "", &got); code != http.StatusOK || got.OpenID != openid {
		t.Fatalf("answered %d: %+v", code, got)
	}
	if len(got.Messages) != 3 {
		t.Fatalf("want 3 messages, newest first: %+v", got.Messages)
	}
	if m := got.Messages[0]; m.Kind != "template" || m.TemplateID != "TPL-followup" || m.Body != "time: 明天上午10点" ||
		m.URL != "https://clinic.example/visit" || m.Status != "sent" || m.At.IsZero() {
		t.Fatalf("the template message: %+v", m)
	}
	if m := got.Messages[1]; m.Kind != "custom" || m.MsgType != "text" || m.Body != "How are you feeling today?" || m.Status != "sent" {
		t.Fatalf("the text message: %+v", m)
	}
	if m := got.Messages[2]; m.Body != "no window yet" || m.Status != "refused" || m.ErrorCode != wechatsim.CodeOutOfTimeLimit {
		t.Fatalf("the refused message: %+v", m)
	}
	var res map[string]string
	if code := apiDo(t, "GET", rig.srv.URL+"/dev/patients/bad%20openid/wechat/messages", "", &res); code != http.StatusBadRequest || res["error"] != errBadOpenID {
		t.Fatalf("a bad openid: %d %q", code, res["error"])
	}
	if logs := rig.logs.String(); strings.Contains(logs, openid) {
		t.Fatalf("the logs name the openid:\n%s", logs)
	}

	off := newPageRig(t)
	if code := apiDo(t, "GET", off.srv.URL+"/dev/patients/"+openid+"/wechat/messages", "", &res); code != http.StatusNotFound || res["error"] != errWeChatSimOff {
		t.Fatalf("without a WeChat simulator: %d %q", code, res["error"])
	}
}

// mailTo sends a mail to the SMTP simulator, as the gateway's email
// channel does.
func mailTo(t *testing.T, sim *smtpsim.Server, to, subject, text string) {
	t.Helper()
	msg := "From: Dev Clinic <noreply@dev-clinic.test>\r\nTo: " + to + "\r\nSubject: " + subject +
		"\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n" + text + "\r\n"
	if err := smtp.SendMail(sim.Addr(), nil, "noreply@dev-clinic.test", []string{to}, []byte(msg)); err != nil {
		t.Fatal(err)
	}
}

func TestMailListsWhatTheMailboxReceivedNewestFirst(t *testing.T) {
	mail := smtpsim.New(smtpsim.Options{})
	t.Cleanup(func() { _ = mail.Close() })
	rig := newPageRig(t, func(o *Options) { o.SMTP = mail })
	mailTo(t, mail, "Jane.Doe@Example.org", "Your results are ready", "Please sign in to the patient portal.")
	mailTo(t, mail, "someone@example.org", "Not Jane's", "x")
	mailTo(t, mail, "jane.doe@example.org", "Your appointment", "Tuesday 9:30.\r\nRiverside Clinic")

	var got struct {
		Email    string
		Messages []Mail
	}
	if code := apiDo(t, "GET", rig.srv.URL+"/dev/patients/JANE.DOE@example.org/mail", "", &got); code != http.StatusOK || got.Email != "JANE.DOE@example.org" {
		t.Fatalf("answered %d: %+v", code, got)
	}
	if len(got.Messages) != 2 || got.Messages[0].Subject != "Your appointment" || got.Messages[0].Text != "Tuesday 9:30.\nRiverside Clinic\n" ||
		got.Messages[1].Subject != "Your results are ready" || got.Messages[1].At.IsZero() || got.Messages[0].At.Before(got.Messages[1].At) {
		t.Fatalf("the mailbox, newest first: %+v", got.Messages)
	}
	var res map[string]string
	for _, bad := range []string{"jane", "Jane%20%3Cjane@example.org%3E", "jane@localhost"} {
		if code := apiDo(t, "GET", rig.srv.URL+"/dev/patients/"+bad+"/mail", "", &res); code != http.StatusBadRequest || res["error"] != errBadEmail {
			t.Fatalf("%s: %d %q", bad, code, res["error"])
		}
	}
	if logs := rig.logs.String(); strings.Contains(strings.ToLower(logs), "jane") {
		t.Fatalf("the logs name the address:\n%s", logs)
	}

	off := newPageRig(t)
	if code := apiDo(t, "GET", off.srv.URL+"/dev/patients/jane.doe@example.org/mail", "", &res); code != http.StatusNotFound || res["error"] != errMailOff {
		t.Fatalf("without an SMTP simulator: %d %q", code, res["error"])
	}
}
