package patientsim

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/twilio/twilio-go/client"

	"github.com/patientmsg/gateway/channels/channeltest"
	"github.com/patientmsg/gateway/channels/twilio"
	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
)

const (
	pagePhone    = "+14155550100"
	pageTwilioNr = "+15005550006"
)

// pageRig is a patient simulator in front of a fake gateway that checks
// every inbound SMS's X-Twilio-Signature as the gateway does, with
// twilio-go's validator.
type pageRig struct {
	sim     *twiliosim.Server
	srv     *httptest.Server
	logs    *channeltest.LogBuffer
	mu      sync.Mutex
	inbound []url.Values // signed inbound SMS the gateway took
}

func newPageRig(t *testing.T) *pageRig {
	t.Helper()
	rig := &pageRig{sim: twiliosim.New(twiliosim.Options{}), logs: &channeltest.LogBuffer{}}
	t.Cleanup(rig.sim.Close)
	validator := client.NewRequestValidator(rig.sim.AuthToken())
	var gw *httptest.Server
	gw = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != twilio.InboundPath || r.ParseForm() != nil {
			http.NotFound(w, r)
			return
		}
		params := map[string]string{}
		for k, v := range r.PostForm {
			params[k] = v[0]
		}
		if !validator.Validate(gw.URL+r.URL.Path, params, r.Header.Get("X-Twilio-Signature")) {
			http.Error(w, "bad signature", http.StatusForbidden)
			return
		}
		rig.mu.Lock()
		rig.inbound = append(rig.inbound, r.PostForm)
		rig.mu.Unlock()
		w.Header().Set("Content-Type", "text/xml")
		io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Response><Message>Thanks &lt;script&gt;x()&lt;/script&gt;</Message></Response>`)
	}))
	t.Cleanup(gw.Close)
	s := New(Options{Gateway: gw.URL, Twilio: rig.sim, TwilioNumber: pageTwilioNr, Region: "US",
		Logger: slog.New(slog.NewTextHandler(rig.logs, nil))})
	rig.srv = httptest.NewServer(s.Handler())
	t.Cleanup(rig.srv.Close)
	return rig
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
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, `src="/dev/patients/inbox?to=%2b14155550100"`) {
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
