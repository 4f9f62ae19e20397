package patientsim

import (
	"encoding/json"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twilio/twilio-go/client"

	"github.com/patientmsg/gateway/channels/channeltest"
	"github.com/patientmsg/gateway/channels/email/smtpsim"
	"github.com/patientmsg/gateway/channels/twilio"
	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/channels/wechat/wechatsim"
)

const (
	pagePhone    = "+14155550100"
	pageTwilioNr = "+15005550006"
)

// pageRig is a patient simulator in front of a fake gateway that checks
// every Twilio webhook's X-Twilio-Signature as the gateway does, with
// twilio-go's validator: inbound SMS, and a call's TwiML (a question,
// <Gather numDigits="1">, unless the call's message id is "no-question")
// and its gather action.
type pageRig struct {
	sim     *twiliosim.Server
	gw      *httptest.Server
	srv     *httptest.Server
	logs    *channeltest.LogBuffer
	mu      sync.Mutex
	inbound []url.Values // signed inbound SMS the gateway took
	gathers []url.Values // signed gather actions the gateway took
}

func newPageRig(t *testing.T, with ...func(*Options)) *pageRig {
	t.Helper()
	rig := &pageRig{sim: twiliosim.New(twiliosim.Options{Voice: true, CallbackDelay: -1}), logs: &channeltest.LogBuffer{}}
	t.Cleanup(rig.sim.Close)
	validator := client.NewRequestValidator(rig.sim.AuthToken())
	rig.gw = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.ParseForm() != nil {
			http.NotFound(w, r)
			return
		}
		params := map[string]string{}
		for k, v := range r.PostForm {
			params[k] = v[0]
		}
		if !validator.Validate(rig.gw.URL+r.URL.RequestURI(), params, r.Header.Get("X-Twilio-Signature")) {
			http.Error(w, "bad signature", http.StatusForbidden)
			return
		}
		w.Header().Set("Content-Type", "text/xml")
		twiml := `<?xml version="1.0" encoding="UTF-8"?><Response>`
		switch r.URL.Path {
		case twilio.InboundPath:
			rig.mu.Lock()
			rig.inbound = append(rig.inbound, r.PostForm)
			rig.mu.Unlock()
			twiml += `<Message>Thanks &lt;script&gt;x()&lt;/script&gt;</Message>`
		case twilio.VoiceTwiMLPath:
			twiml += `<Say>Riverside Clinic calling.</Say>`
			if m := r.URL.Query().Get("m"); m != "no-question" {
				action := rig.gw.URL + twilio.VoiceGatherPath + "?m=" + url.QueryEscape(m)
				twiml += `<Gather input="dtmf" numDigits="1" action="` + html.EscapeString(action) + `" method="POST"><Say>Press 1 if you feel better, 2 if not.</Say></Gather>`
			}
			twiml += `<Hangup/>`
		case twilio.VoiceGatherPath:
			rig.mu.Lock()
			rig.gathers = append(rig.gathers, r.PostForm)
			rig.mu.Unlock()
			twiml += `<Say>Thank you &lt;b&gt;.</Say><Hangup/>`
		default:
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, twiml+`</Response>`)
	}))
	t.Cleanup(rig.gw.Close)
	opts := Options{Gateway: rig.gw.URL, Twilio: rig.sim, TwilioNumber: pageTwilioNr, Region: "US",
		Logger: slog.New(slog.NewTextHandler(rig.logs, nil))}
	for _, f := range with {
		f(&opts)
	}
	s := New(opts)
	rig.srv = httptest.NewServer(s.Handler())
	t.Cleanup(rig.srv.Close)
	return rig
}

// call places a call to phone through the Twilio simulator, as the
// gateway's voice channel does, for the message id m, and waits until the
// simulator has played it (pressing no key). It returns the call's SID.
func (rig *pageRig) call(t *testing.T, phone, m string) string {
	t.Helper()
	form := url.Values{"To": {phone}, "From": {pageTwilioNr}, "Url": {rig.gw.URL + twilio.VoiceTwiMLPath + "?m=" + m}}
	req, _ := http.NewRequest("POST", rig.sim.URL()+"/"+twiliosim.APIVersion+"/Accounts/"+rig.sim.AccountSID()+"/Calls.json", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(rig.sim.AccountSID(), rig.sim.AuthToken())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var created struct{ SID string }
	_ = json.NewDecoder(resp.Body).Decode(&created)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("the Twilio simulator answered %d", resp.StatusCode)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if c, ok := rig.sim.Call(created.SID); ok && c.Done {
			return created.SID
		}
	}
	t.Fatalf("the call %s did not end", created.SID)
	return ""
}

func (rig *pageRig) gathered() []url.Values {
	rig.mu.Lock()
	defer rig.mu.Unlock()
	return append([]url.Values(nil), rig.gathers...)
}

// deliver sends body to phone through the Twilio simulator, as the
// gateway's Twilio adapter does.
func (rig *pageRig) deliver(t *testing.T, phone, body string) {
	t.Helper()
	req, _ := http.NewRequest("POST", rig.sim.MessagesURL(), strings.NewReader(url.Values{"To": {phone}, "From": {pageTwilioNr}, "Body": {body}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(rig.sim.AccountSID(), rig.sim.AuthToken())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("the Twilio simulator answered %d", resp.StatusCode)
	}
}

func (rig *pageRig) got() []url.Values {
	rig.mu.Lock()
	defer rig.mu.Unlock()
	return append([]url.Values(nil), rig.inbound...)
}

func pageGet(t *testing.T, u string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestPageListsWhatThePhoneReceivedNewestLastAndEscaped(t *testing.T) {
	rig := newPageRig(t)
	rig.deliver(t, pagePhone, "Your appointment is on Monday.")
	rig.deliver(t, pagePhone, `<script>alert("hi")</script> Reply 1 if you are safe.`)
	rig.deliver(t, "+14155550199", "Someone else's message.")

	resp, page := pageGet(t, rig.srv.URL+"/dev/patients?to=%2B14155550100&channel=sms")
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, `src="/dev/patients/inbox?to=%2b14155550100&amp;channel=sms"`) {
		t.Fatalf("the page (%d) frames no received list:\n%s", resp.StatusCode, page)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "script-src") {
		t.Fatalf("the page's CSP allows scripts: %q", csp)
	}

	resp, inbox := pageGet(t, rig.srv.URL+"/dev/patients/inbox?to=%2B14155550100")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the received list answered %d", resp.StatusCode)
	}
	first, second := strings.Index(inbox, "appointment"), strings.Index(inbox, "Reply 1 if you are safe")
	if first < 0 || second < first {
		t.Fatalf("the received list is not the phone's messages, newest last:\n%s", inbox)
	}
	if strings.Contains(inbox, "<script>") || !strings.Contains(inbox, "&lt;script&gt;alert(&#34;hi&#34;)&lt;/script&gt;") {
		t.Fatalf("a received <script> is not shown as text:\n%s", inbox)
	}
	if strings.Contains(inbox, "Someone else") {
		t.Fatal("the list shows another phone's message")
	}
	if !strings.Contains(inbox, `<meta http-equiv="refresh" content="2">`) || !strings.Contains(inbox, "<time datetime=") {
		t.Fatalf("the list neither refreshes nor shows times:\n%s", inbox)
	}
}

func TestPageReplyGoesThroughTheSignedWebhook(t *testing.T) {
	rig := newPageRig(t)
	form := url.Values{"to": {"(415) 555-0100"}, "channel": {"sms"}, "body": {" 2 <b>help</b> "}}
	req, _ := http.NewRequest("POST", rig.srv.URL+"/dev/patients", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", rig.srv.URL)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	page := string(b)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the reply answered %d:\n%s", resp.StatusCode, page)
	}
	got := rig.got()
	if len(got) != 1 || got[0].Get("From") != pagePhone || got[0].Get("To") != pageTwilioNr || got[0].Get("Body") != "2 <b>help</b>" {
		t.Fatalf("the gateway's signed webhook took %v", got)
	}
	if !strings.Contains(page, "the gateway answered HTTP 200") || !strings.Contains(page, "Thanks &lt;script&gt;x()&lt;/script&gt;") || strings.Contains(page, "<script>") {
		t.Fatalf("the page does not show the gateway's answer as text:\n%s", page)
	}
	if logs := rig.logs.String(); strings.Contains(logs, pagePhone) || strings.Contains(logs, "help") {
		t.Fatalf("the logs name the phone or the text:\n%s", logs)
	}
}

func TestPageRefusesCrossSitePosts(t *testing.T) {
	for _, c := range []struct {
		name    string
		headers map[string]string
	}{
		{"a browser that says the request is cross-site", map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example"}},
		{"a browser that says it is same-site but another origin", map[string]string{"Sec-Fetch-Site": "same-site"}},
		{"an older browser sending only another Origin", map[string]string{"Origin": "http://evil.example"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			rig := newPageRig(t)
			for _, path := range []string{"/dev/patients", "/dev/patients/" + pagePhone + "/sms"} {
				form := url.Values{"to": {pagePhone}, "channel": {"sms"}, "body": {"STOP"}}
				req, _ := http.NewRequest("POST", rig.srv.URL+path, strings.NewReader(form.Encode()))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				for k, v := range c.headers {
					req.Header.Set(k, v)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusForbidden {
					t.Fatalf("POST %s answered %d, want 403", path, resp.StatusCode)
				}
			}
			if got := rig.got(); len(got) != 0 {
				t.Fatalf("a cross-site post reached the gateway: %v", got)
			}
		})
	}
}

func TestPageChecksTheAddressAndText(t *testing.T) {
	rig := newPageRig(t)
	for _, c := range []struct {
		name, to, channel, body string
		status                  int
		says                    string
	}{
		{"a number that is not one", "12", "sms", "1", http.StatusBadRequest, "not valid"},
		{"an empty reply", pagePhone, "sms", "  ", http.StatusBadRequest, "body is empty"},
		{"WeChat when WeChat inbound is off", "oDevPatient1", "wechat", "1", http.StatusNotFound, "not on"},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, err := http.PostForm(rig.srv.URL+"/dev/patients", url.Values{"to": {c.to}, "channel": {c.channel}, "body": {c.body}})
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.status || !strings.Contains(string(b), c.says) {
				t.Fatalf("answered %d, want %d saying %q:\n%s", resp.StatusCode, c.status, c.says, b)
			}
		})
	}
	if got := rig.got(); len(got) != 0 {
		t.Fatalf("a refused reply reached the gateway: %v", got)
	}
}

func TestPagePressesKeysInThePhonesLatestCall(t *testing.T) {
	rig := newPageRig(t)
	sid := rig.call(t, pagePhone, "MSG1")
	resp, page := pageGet(t, rig.srv.URL+"/dev/patients?to=%2B14155550100&channel=sms")
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, `name="digits"`) {
		t.Fatalf("the page (%d) has no keypad:\n%s", resp.StatusCode, page)
	}
	form := url.Values{"to": {pagePhone}, "channel": {"sms"}, "digits": {"2"}}
	resp, err := http.PostForm(rig.srv.URL+"/dev/patients", form)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	page = string(b)
	got := rig.gathered()
	if resp.StatusCode != http.StatusOK || len(got) != 1 || got[0].Get("Digits") != "2" || got[0].Get("CallSid") != sid {
		t.Fatalf("the press answered %d; the gateway's gather webhook took %v:\n%s", resp.StatusCode, got, page)
	}
	if !strings.Contains(page, "Pressed 2: the gateway answered HTTP 200.") || !strings.Contains(page, "Thank you &lt;b&gt;.") {
		t.Fatalf("the page does not show the gateway's answer as text:\n%s", page)
	}

	// A number no call was placed to.
	resp, err = http.PostForm(rig.srv.URL+"/dev/patients", url.Values{"to": {"+14155550199"}, "channel": {"sms"}, "digits": {"2"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(b), errNoCall) || !strings.Contains(string(b), `value="2"`) {
		t.Fatalf("a press with no call answered %d:\n%s", resp.StatusCode, b)
	}
	if logs := rig.logs.String(); strings.Contains(logs, pagePhone) || strings.Contains(logs, "+14155550199") {
		t.Fatalf("the logs name a phone:\n%s", logs)
	}
}

func TestPageListsWhatAWeChatUserAndAMailboxReceived(t *testing.T) {
	wsim := wechatsim.New(wechatsim.Options{})
	t.Cleanup(wsim.Close)
	mail := smtpsim.New(smtpsim.Options{})
	t.Cleanup(func() { _ = mail.Close() })
	rig := newPageRig(t, func(o *Options) {
		o.WeChat, o.WeChatToken, o.WeChatAESKey, o.SMTP = wsim, "token", "devEncodingAESKey0123456789abcdefghijklmnop", mail
	})
	const openid = "oDevPatient1"
	wechatSend(t, wsim, wechatsim.TemplateSendPath, map[string]any{"touser": openid, "template_id": "TPL-followup",
		"data": map[string]any{"time": map[string]any{"value": "<b>明天</b>"}}})
	mailTo(t, mail, "jane@example.org", "Your results <b>are</b> ready", "Please sign in.")

	resp, page := pageGet(t, rig.srv.URL+"/dev/patients?to="+openid+"&channel=wechat")
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, `src="/dev/patients/inbox?to=oDevPatient1&amp;channel=wechat"`) || strings.Contains(page, `name="digits"`) {
		t.Fatalf("the WeChat page (%d):\n%s", resp.StatusCode, page)
	}
	resp, inbox := pageGet(t, rig.srv.URL+"/dev/patients/inbox?to="+openid+"&channel=wechat")
	if resp.StatusCode != http.StatusOK || !strings.Contains(inbox, "Template TPL-followup") || !strings.Contains(inbox, "time: &lt;b&gt;明天&lt;/b&gt;") {
		t.Fatalf("the WeChat user's list (%d):\n%s", resp.StatusCode, inbox)
	}

	resp, page = pageGet(t, rig.srv.URL+"/dev/patients?to=jane%40example.org&channel=email")
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, `src="/dev/patients/inbox?to=jane%40example.org&amp;channel=email"`) ||
		strings.Contains(page, `name="body"`) || strings.Contains(page, `name="digits"`) {
		t.Fatalf("the mailbox page (%d):\n%s", resp.StatusCode, page)
	}
	resp, inbox = pageGet(t, rig.srv.URL+"/dev/patients/inbox?to=jane%40example.org&channel=email")
	if resp.StatusCode != http.StatusOK || !strings.Contains(inbox, "Your results &lt;b&gt;are&lt;/b&gt; ready") || !strings.Contains(inbox, "Please sign in.") {
		t.Fatalf("the mailbox list (%d):\n%s", resp.StatusCode, inbox)
	}

	for _, c := range []struct {
		url    string
		status int
		says   string
	}{
		{"/dev/patients?to=not-an-address&channel=email", http.StatusBadRequest, "not an email address"},
		{"/dev/patients/inbox?to=bad%20openid&channel=wechat", http.StatusBadRequest, "not a WeChat openid"},
		{"/dev/patients/inbox?channel=email", http.StatusBadRequest, "no address given"},
	} {
		if resp, body := pageGet(t, rig.srv.URL+c.url); resp.StatusCode != c.status || !strings.Contains(body, c.says) {
			t.Fatalf("GET %s answered %d, want %d saying %q:\n%s", c.url, resp.StatusCode, c.status, c.says, body)
		}
	}
	if resp, body := pageGet(t, newPageRig(t).srv.URL+"/dev/patients?to=jane%40example.org&channel=email"); resp.StatusCode != http.StatusNotFound || !strings.Contains(body, errMailOff) {
		t.Fatalf("the mailbox page without an SMTP simulator answered %d:\n%s", resp.StatusCode, body)
	}
	if logs := rig.logs.String(); strings.Contains(logs, openid) || strings.Contains(logs, "jane") {
		t.Fatalf("the logs name the openid or the address:\n%s", logs)
	}
}
