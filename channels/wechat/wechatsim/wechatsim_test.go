package wechatsim_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/patientmsg/gateway/channels/channeltest"
	"github.com/patientmsg/gateway/channels/wechat/wechatsim"
)

var client = &http.Client{Transport: channeltest.LoopbackOnly(nil), Timeout: 5 * time.Second}

type reply struct {
	ErrCode     int    `json:"errcode"`
	ErrMsg      string `json:"errmsg"`
	MsgID       int64  `json:"msgid"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int    `json:"expires_in"`
}

func call(t *testing.T, method, u string, body any) reply {
	t.Helper()
	var rd *bytes.Reader
	if s, ok := body.(string); ok {
		rd = bytes.NewReader([]byte(s))
	} else {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, u, rd)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("HTTP %d: WeChat answers errors inside 200", resp.StatusCode)
	}
	var r reply
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return r
}

func token(t *testing.T, s *wechatsim.Server, appid, secret string) reply {
	q := url.Values{"grant_type": {"client_credential"}, "appid": {appid}, "secret": {secret}}
	return call(t, "GET", s.URL()+wechatsim.TokenPath+"?"+q.Encode(), nil)
}

func TestTheTokenEndpointChecksCredentialsAndCountsFetches(t *testing.T) {
	s := wechatsim.New(wechatsim.Options{AppID: "wxapp", AppSecret: "secret"})
	defer s.Close()
	tests := []struct {
		name          string
		grant, id, pw string
		code          int
	}{
		{"valid credentials get a token for 7,200 s", "client_credential", "wxapp", "secret", 0},
		{"an unknown app id is 40013", "client_credential", "wxother", "secret", 40013},
		{"a wrong secret is 40125", "client_credential", "wxapp", "nope", 40125},
		{"another grant type is 40002", "password", "wxapp", "secret", 40002},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := url.Values{"grant_type": {tt.grant}, "appid": {tt.id}, "secret": {tt.pw}}
			r := call(t, "GET", s.URL()+wechatsim.TokenPath+"?"+q.Encode(), nil)
			if r.ErrCode != tt.code {
				t.Fatalf("errcode %d (%s), want %d", r.ErrCode, r.ErrMsg, tt.code)
			}
			if tt.code == 0 && (r.AccessToken == "" || r.ExpiresIn != 7200) {
				t.Fatalf("token answer %+v", r)
			}
		})
	}
	if s.TokenFetches() != 4 {
		t.Fatalf("fetches %d, want 4", s.TokenFetches())
	}
}

func TestTheStableTokenIsReusedUntilAForcedRefresh(t *testing.T) {
	s := wechatsim.New(wechatsim.Options{AppID: "wxapp", AppSecret: "secret"})
	defer s.Close()
	body := map[string]any{"grant_type": "client_credential", "appid": "wxapp", "secret": "secret"}
	a := call(t, "POST", s.URL()+wechatsim.StableTokenPath, body)
	b := call(t, "POST", s.URL()+wechatsim.StableTokenPath, body)
	body["force_refresh"] = true
	c := call(t, "POST", s.URL()+wechatsim.StableTokenPath, body)
	if a.AccessToken == "" || a.AccessToken != b.AccessToken || c.AccessToken == a.AccessToken {
		t.Fatalf("stable tokens %q %q %q", a.AccessToken, b.AccessToken, c.AccessToken)
	}
	if r := call(t, "POST", s.URL()+wechatsim.StableTokenPath, "not json"); r.ErrCode != wechatsim.CodeBadJSON {
		t.Fatalf("bad JSON: %+v", r)
	}
}

// testClock is a simulator clock the test moves.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTestClock() *testClock {
	return &testClock{now: time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestSendsCheckTheTokenAndTheMessage(t *testing.T) {
	clock := newTestClock()
	s := wechatsim.New(wechatsim.Options{AppID: "wxapp", AppSecret: "secret", Now: clock.Now, TokenLifetime: time.Hour})
	defer s.Close()
	tok := token(t, s, "wxapp", "secret").AccessToken
	s.Interact("oUser", 5, 48*time.Hour) // oUser wrote to the account
	text := map[string]any{"touser": "oUser", "msgtype": "text", "text": map[string]any{"content": "hello"}}
	tmpl := map[string]any{"touser": "oUser", "template_id": "TPL", "data": map[string]any{"a": map[string]any{"value": "b"}}}
	custom := func(tok string) string {
		return s.URL() + wechatsim.CustomSendPath + "?access_token=" + url.QueryEscape(tok)
	}
	template := func(tok string) string {
		return s.URL() + wechatsim.TemplateSendPath + "?access_token=" + url.QueryEscape(tok)
	}
	tests := []struct {
		name string
		url  string
		body any
		code int
	}{
		{"a text message with a valid token is accepted", custom(tok), text, 0},
		{"a template message is accepted", template(tok), tmpl, 0},
		{"a text message to a user who did not write is 45015", custom(tok), map[string]any{"touser": "oOther", "msgtype": "text", "text": map[string]any{"content": "hello"}}, 45015},
		{"a template message needs no window", template(tok), map[string]any{"touser": "oOther", "template_id": "TPL"}, 0},
		{"no token is 41001", custom(""), text, 41001},
		{"an unknown token is 40001", custom("forged"), text, 40001},
		{"an empty text is 44004", custom(tok), map[string]any{"touser": "o", "msgtype": "text", "text": map[string]any{"content": ""}}, 44004},
		{"an unknown msgtype is 40008", custom(tok), map[string]any{"touser": "o", "msgtype": "fax"}, 40008},
		{"no touser is 40003", custom(tok), map[string]any{"msgtype": "text", "text": map[string]any{"content": "x"}}, 40003},
		{"a template without template_id is 40037", template(tok), map[string]any{"touser": "o"}, 40037},
		{"a body that is not JSON is 47001", custom(tok), "<xml/>", 47001},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if r := call(t, "POST", tt.url, tt.body); r.ErrCode != tt.code {
				t.Fatalf("errcode %d (%s), want %d", r.ErrCode, r.ErrMsg, tt.code)
			}
		})
	}
	r := call(t, "POST", template(tok), tmpl)
	if r.ErrCode != 0 || r.MsgID <= 4_000_000_000_000_000_000 || r.ErrMsg != "ok" {
		t.Fatalf("template answer %+v, want ok with a large msgid", r)
	}
	clock.Add(time.Hour)
	if r := call(t, "POST", custom(tok), text); r.ErrCode != 42001 {
		t.Fatalf("after the token's lifetime: %+v, want 42001", r)
	}
	tok2 := token(t, s, "wxapp", "secret").AccessToken
	s.ExpireTokens()
	if r := call(t, "POST", custom(tok2), text); r.ErrCode != 42001 {
		t.Fatalf("after ExpireTokens: %+v, want 42001", r)
	}
	reqs := s.Requests()
	first := reqs[1]
	if first.Path != wechatsim.CustomSendPath || first.Query.Get("access_token") != tok || first.JSON["msgtype"] != "text" || first.ErrCode != 0 {
		t.Fatalf("recorded %+v", first)
	}
	if custom, template := s.Accepted(); custom != 1 || template != 3 {
		t.Fatalf("accepted %d custom, %d template", custom, template)
	}
}

func TestScriptedErrcodesAnswerTheNextSendsInOrder(t *testing.T) {
	s := wechatsim.New(wechatsim.Options{})
	defer s.Close()
	tok := token(t, s, s.AppID(), s.AppSecret()).AccessToken
	u := s.URL() + wechatsim.CustomSendPath + "?access_token=" + tok
	text := map[string]any{"touser": "o", "msgtype": "text", "text": map[string]any{"content": "x"}}
	s.Interact("o", 5, 48*time.Hour)
	s.Script(45009, 0, -1)
	var got []int
	for range 4 {
		r := call(t, "POST", u, text)
		got = append(got, r.ErrCode)
		if r.ErrCode != 0 && r.ErrMsg != wechatsim.Errmsg(r.ErrCode) {
			t.Fatalf("errmsg %q for %d", r.ErrMsg, r.ErrCode)
		}
	}
	if want := []int{45009, 0, -1, 0}; !slices.Equal(got, want) {
		t.Fatalf("errcodes %v, want %v", got, want)
	}
}

func TestACustomerServiceMessageNeedsAnOpenWindowWithQuotaLeft(t *testing.T) {
	clock := newTestClock()
	s := wechatsim.New(wechatsim.Options{Now: clock.Now})
	defer s.Close()
	tok := token(t, s, s.AppID(), s.AppSecret()).AccessToken
	u := s.URL() + wechatsim.CustomSendPath + "?access_token=" + tok
	text := map[string]any{"touser": "oUser", "msgtype": "text", "text": map[string]any{"content": "x"}}
	send := func() int { return call(t, "POST", u, text).ErrCode }
	if c := send(); c != 45015 {
		t.Fatalf("without an interaction: %d, want 45015", c)
	}
	s.Interact("oUser", 2, time.Minute)
	if a, b, c := send(), send(), send(); a != 0 || b != 0 || c != 45047 {
		t.Fatalf("within the window: %d %d %d, want 0 0 45047", a, b, c)
	}
	s.Interact("oUser", 2, time.Minute)
	clock.Add(time.Minute)
	if c := send(); c != 45015 {
		t.Fatalf("after the window: %d, want 45015", c)
	}
}

func TestSentToListsWhatOneUserWasSentWithItsTime(t *testing.T) {
	clock := newTestClock()
	s := wechatsim.New(wechatsim.Options{Now: clock.Now})
	defer s.Close()
	tok := token(t, s, s.AppID(), s.AppSecret()).AccessToken
	custom := s.URL() + wechatsim.CustomSendPath + "?access_token=" + tok
	template := s.URL() + wechatsim.TemplateSendPath + "?access_token=" + tok
	text := func(to, content string) map[string]any {
		return map[string]any{"touser": to, "msgtype": "text", "text": map[string]any{"content": content}}
	}
	call(t, "POST", custom, text("oUser", "outside the window"))
	s.Interact("oUser", 5, 48*time.Hour)
	clock.Add(time.Minute)
	call(t, "POST", custom, text("oUser", "hello"))
	call(t, "POST", custom, text("oOther", "not for oUser"))
	call(t, "POST", template, map[string]any{"touser": "oUser", "template_id": "TPL-followup", "url": "https://clinic.example/x",
		"data": map[string]any{"time": map[string]any{"value": "明天上午10点"}, "first": map[string]any{"value": "复诊提醒", "color": "#173177"}}})

	got := s.SentTo("oUser")
	if len(got) != 3 {
		t.Fatalf("SentTo(oUser) = %+v, want 3 messages", got)
	}
	if m := got[0]; m.Template || m.MsgType != "text" || m.Text != "outside the window" || m.ErrCode != wechatsim.CodeOutOfTimeLimit || !m.At.Equal(clock.Now().Add(-time.Minute)) {
		t.Fatalf("the refused message: %+v", m)
	}
	if m := got[1]; m.Text != "hello" || m.ErrCode != 0 || !m.At.Equal(clock.Now()) {
		t.Fatalf("the text message: %+v", m)
	}
	want := []wechatsim.Field{{Name: "first", Value: "复诊提醒"}, {Name: "time", Value: "明天上午10点"}}
	if m := got[2]; !m.Template || m.TemplateID != "TPL-followup" || m.URL != "https://clinic.example/x" || !slices.Equal(m.Fields, want) || m.ErrCode != 0 {
		t.Fatalf("the template message: %+v", m)
	}
	if got := s.SentTo("oNobody"); len(got) != 0 {
		t.Fatalf("SentTo(oNobody) = %+v", got)
	}
}

func TestTheSimulatorListensOnLoopbackOnly(t *testing.T) {
	s := wechatsim.New(wechatsim.Options{})
	defer s.Close()
	u, _ := url.Parse(s.URL())
	if !channeltest.IsLoopback(u.Hostname()) || !strings.HasPrefix(s.URL(), "http://127.0.0.1:") {
		t.Fatalf("URL %s", s.URL())
	}
}
