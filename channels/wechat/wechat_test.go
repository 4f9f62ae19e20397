package wechat_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/silenceper/wechat/v2/util"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/channels/channeltest"
	"github.com/patientmsg/gateway/channels/wechat"
	"github.com/patientmsg/gateway/channels/wechat/wechatsim"
	"github.com/patientmsg/gateway/internal/ledger"
)

const (
	customPath   = wechatsim.CustomSendPath
	templatePath = wechatsim.TemplateSendPath
	tokenPath    = wechatsim.TokenPath
)

func wx(code int, extra ...string) string {
	s := fmt.Sprintf(`{"errcode":%d,"errmsg":%q`, code, wechatsim.Errmsg(code))
	for _, e := range extra {
		s += "," + e
	}
	return s + "}"
}

func answer(route string, code int, extra ...string) map[string]channeltest.MockResponse {
	return map[string]channeltest.MockResponse{route: {Status: 200, Body: wx(code, extra...)}}
}

// outCase is a channeltest case plus what channeltest cannot check for a
// JSON API: the request's JSON fields and token, and the request count.
type outCase struct {
	channeltest.OutboundCase
	// Window opens the user's window (a user message now) before sending.
	Window bool
	// NoToken leaves the token cache empty, so the channel fetches one.
	NoToken bool
	// ExpectedJSON are dotted JSON paths of the (last) request and their values.
	ExpectedJSON       map[string]any
	ExpectedJSONAbsent []string
	// ExpectedToken is the access_token of the (last) request; the seeded one when empty.
	ExpectedToken string
	// ExpectedRoutes are "METHOD /path" of every request, in order; nil: not checked.
	ExpectedRoutes []string
}

func runOutbound(t *testing.T, cases []outCase) {
	e := newEnv(t)
	for _, tc := range cases {
		factory := func(t *testing.T, apiURL string, tr http.RoundTripper) channels.Channel {
			ctx := context.Background()
			if err := e.rdb.FlushDB(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			rec := &recordingTransport{base: tr}
			logs := &logBuffer{}
			ce := &env{rdb: e.rdb, logs: logs, clock: e.clock}
			ch := ce.channel(t, apiURL, rec)
			if !tc.NoToken {
				ce.seedToken(t, seededTok)
			}
			if tc.Window {
				if err := ch.Window().Touch(ctx, testOpenID, wechat.UserMessage, e.clock.Now()); err != nil {
					t.Fatal(err)
				}
			}
			t.Cleanup(func() {
				reqs := rec.requests()
				if tc.ExpectedRoutes != nil {
					var got []string
					for _, r := range reqs {
						got = append(got, r.Method+" "+r.Path)
					}
					if fmt.Sprint(got) != fmt.Sprint(tc.ExpectedRoutes) {
						t.Errorf("requests %v, want %v", got, tc.ExpectedRoutes)
					}
				}
				if tc.ExpectedJSON != nil || tc.ExpectedJSONAbsent != nil {
					if len(reqs) == 0 {
						t.Fatal("no request was made")
					}
					last := reqs[len(reqs)-1]
					want := tc.ExpectedToken
					if want == "" {
						want = seededTok
					}
					if tok := last.Query.Get("access_token"); tok != want {
						t.Errorf("access_token %q, want %q", tok, want)
					}
					for path, want := range tc.ExpectedJSON {
						if got, ok := field(last.JSON, path); !ok || fmt.Sprint(got) != fmt.Sprint(want) {
							t.Errorf("JSON %s = %v (present %v), want %v", path, got, ok, want)
						}
					}
					for _, path := range tc.ExpectedJSONAbsent {
						if got, ok := field(last.JSON, path); ok {
							t.Errorf("JSON has %s = %v, want it absent", path, got)
						}
					}
				}
				logs.assertClean(t, testOpenID, testBody, testSecret, seededTok, "NEW_TOKEN")
			})
			return ch
		}
		channeltest.RunOutbound(t, factory, []channeltest.OutboundCase{tc.OutboundCase})
	}
}

func TestSendsTheExactWeChatRequestAndClassifiesEveryAnswer(t *testing.T) {
	okCustom := answer("POST "+customPath, 0)
	okTemplate := answer("POST "+templatePath, 0, `"msgid":4000000000000000123`)
	jsonHeader := map[string]string{"Content-Type": "application/json;charset=utf-8"}
	custom := msg(&ledger.WeChatOptions{Kind: "custom"})
	failCustom := func(code int) map[string]channeltest.MockResponse { return answer("POST "+customPath, code) }
	runOutbound(t, []outCase{
		{OutboundCase: channeltest.OutboundCase{
			Label:   "a custom message is customer-service text to the openid and its provider id is cs:<message id>",
			Message: custom, Responses: okCustom, ExpectedPath: customPath, ExpectedHeader: jsonHeader,
			ExpectedProviderID: "cs:" + testMsgID},
			ExpectedJSON: map[string]any{"touser": testOpenID, "msgtype": "text", "text.content": testBody}},
		{OutboundCase: channeltest.OutboundCase{
			Label:   "a template message carries template_id, data as {field: {value}} and url, and its provider id is tmpl:<msgid>",
			Message: msg(template("template")), Responses: okTemplate, ExpectedPath: templatePath, ExpectedHeader: jsonHeader,
			ExpectedProviderID: "tmpl:4000000000000000123"},
			ExpectedJSON: map[string]any{"touser": testOpenID, "template_id": "TPL_appointment_reminder",
				"data.patient.value": "Li Wei", "data.time.value": "2026-03-11 10:00", "url": "https://clinic.example/appt/1"}},
		{OutboundCase: channeltest.OutboundCase{
			Label:     "a template message without a url sends no url",
			Message:   msg(&ledger.WeChatOptions{Kind: "template", TemplateID: "TPL_x", Data: map[string]string{"a": "b"}}),
			Responses: okTemplate, ExpectedPath: templatePath, ExpectedProviderID: "tmpl:4000000000000000123"},
			ExpectedJSON: map[string]any{"data.a.value": "b"}, ExpectedJSONAbsent: []string{"url"}},
		{OutboundCase: channeltest.OutboundCase{
			Label:   "auto (no WeChat options) inside an open window sends customer-service text",
			Message: msg(nil), Responses: okCustom, ExpectedPath: customPath, ExpectedProviderID: "cs:" + testMsgID},
			Window: true, ExpectedJSON: map[string]any{"text.content": testBody}},
		{OutboundCase: channeltest.OutboundCase{
			Label:   "auto without a window sends the template",
			Message: msg(template("")), Responses: okTemplate, ExpectedPath: templatePath,
			ExpectedProviderID: "tmpl:4000000000000000123"},
			ExpectedJSON: map[string]any{"template_id": "TPL_appointment_reminder"}},
		{OutboundCase: channeltest.OutboundCase{
			Label:   "auto without a window and without a template is permanent and sends nothing",
			Message: msg(nil), Responses: okCustom,
			ExpectedClass: channels.Permanent, ExpectedCode: "no_window_no_template"},
			ExpectedRoutes: []string{}},
		{OutboundCase: channeltest.OutboundCase{
			Label:   "auto whose custom send WeChat answers 45015 sends the template once instead",
			Message: msg(template("auto")),
			Responses: map[string]channeltest.MockResponse{
				"POST " + customPath:   {Status: 200, Body: wx(45015)},
				"POST " + templatePath: {Status: 200, Body: wx(0, `"msgid":77`)},
			},
			ExpectedProviderID: "tmpl:77"},
			Window: true, ExpectedRoutes: []string{"POST " + customPath, "POST " + templatePath}},
		{OutboundCase: channeltest.OutboundCase{
			Label:   "auto whose custom send WeChat answers 45047 without a template is permanent 45047",
			Message: msg(nil), Responses: failCustom(45047),
			ExpectedClass: channels.Permanent, ExpectedCode: "45047"},
			Window: true, ExpectedRoutes: []string{"POST " + customPath}},
		{OutboundCase: channeltest.OutboundCase{Label: "-1 system busy is retryable",
			Message: custom, Responses: failCustom(-1), ExpectedClass: channels.Retryable, ExpectedCode: "-1"}},
		{OutboundCase: channeltest.OutboundCase{Label: "45009 daily quota is throttled until midnight China time",
			Message: custom, Responses: failCustom(45009), ExpectedClass: channels.Throttled, ExpectedCode: "45009",
			ExpectedRetryAfter: 90 * time.Minute}},
		{OutboundCase: channeltest.OutboundCase{Label: "43004 a user who unfollowed is opted out",
			Message: custom, Responses: failCustom(43004), ExpectedClass: channels.OptedOut, ExpectedCode: "43004"}},
		{OutboundCase: channeltest.OutboundCase{Label: "40003 an invalid openid is permanent",
			Message: custom, Responses: failCustom(40003), ExpectedClass: channels.Permanent, ExpectedCode: "40003"}},
		{OutboundCase: channeltest.OutboundCase{Label: "45015 to an explicit custom message is permanent",
			Message: custom, Responses: failCustom(45015), ExpectedClass: channels.Permanent, ExpectedCode: "45015"}},
		{OutboundCase: channeltest.OutboundCase{Label: "45047 to an explicit custom message is permanent",
			Message: custom, Responses: failCustom(45047), ExpectedClass: channels.Permanent, ExpectedCode: "45047"}},
		{OutboundCase: channeltest.OutboundCase{Label: "40037 an invalid template id is permanent",
			Message: msg(template("template")), Responses: answer("POST "+templatePath, 40037),
			ExpectedClass: channels.Permanent, ExpectedCode: "40037"}},
		{OutboundCase: channeltest.OutboundCase{Label: "an errcode not in the table is permanent",
			Message: custom, Responses: failCustom(40097), ExpectedClass: channels.Permanent, ExpectedCode: "40097"}},
		{OutboundCase: channeltest.OutboundCase{
			Label:   "40001 is answered by fetching a new token and trying once more, then it is retryable",
			Message: custom,
			Responses: map[string]channeltest.MockResponse{
				"POST " + customPath: {Status: 200, Body: wx(40001)},
				"GET " + tokenPath:   {Status: 200, Body: `{"access_token":"NEW_TOKEN","expires_in":7200}`},
			},
			ExpectedClass: channels.Retryable, ExpectedCode: "40001"},
			ExpectedRoutes: []string{"POST " + customPath, "GET " + tokenPath, "POST " + customPath}},
		{OutboundCase: channeltest.OutboundCase{
			Label:   "without a shared token the channel fetches one with the app credentials and sends with it",
			Message: custom,
			Responses: map[string]channeltest.MockResponse{
				"POST " + customPath: {Status: 200, Body: wx(0)},
				"GET " + tokenPath:   {Status: 200, Body: `{"access_token":"NEW_TOKEN","expires_in":7200}`},
			},
			ExpectedProviderID: "cs:" + testMsgID},
			NoToken: true, ExpectedToken: "NEW_TOKEN", ExpectedJSON: map[string]any{"text.content": testBody},
			ExpectedRoutes: []string{"GET " + tokenPath, "POST " + customPath}},
		{OutboundCase: channeltest.OutboundCase{
			Label:   "a token request WeChat refuses for a wrong secret is retryable: configuration must not lose messages",
			Message: custom, Responses: answer("GET "+tokenPath, 40125),
			ExpectedClass: channels.Retryable, ExpectedCode: "40125"},
			NoToken: true, ExpectedRoutes: []string{"GET " + tokenPath}},
		{OutboundCase: channeltest.OutboundCase{
			Label:   "45009 on the token request is throttled until midnight China time",
			Message: custom, Responses: answer("GET "+tokenPath, 45009),
			ExpectedClass: channels.Throttled, ExpectedCode: "45009", ExpectedRetryAfter: 90 * time.Minute},
			NoToken: true},
		{OutboundCase: channeltest.OutboundCase{Label: "an HTTP 502 is retryable",
			Message: custom, Responses: map[string]channeltest.MockResponse{"POST " + customPath: {Status: 502, Body: "<html>bad gateway</html>"}},
			ExpectedClass: channels.Retryable, ExpectedCode: "http_502"}},
		{OutboundCase: channeltest.OutboundCase{Label: "an HTTP 200 that is not WeChat JSON is retryable and unconfirmed",
			Message: custom, Responses: map[string]channeltest.MockResponse{"POST " + customPath: {Status: 200, Body: "<html>captive portal</html>"}},
			ExpectedClass: channels.Retryable, ExpectedCode: "bad_response", ExpectUnconfirmed: true}},
		{OutboundCase: channeltest.OutboundCase{Label: "a provider that never answers in time is retryable and unconfirmed",
			Message: custom, Responses: map[string]channeltest.MockResponse{"POST " + customPath: {Status: 200, Body: wx(0), Delay: 3 * time.Second}},
			ExpectedClass: channels.Retryable, ExpectedCode: "timeout", ExpectUnconfirmed: true}},
		{OutboundCase: channeltest.OutboundCase{Label: "a refused connection is retryable and known not to have reached WeChat",
			Message: custom, Unreachable: true, ExpectedClass: channels.Retryable, ExpectedCode: "connect"}},
		{OutboundCase: channeltest.OutboundCase{Label: "a message without an openid is permanent and never sent",
			Message: channels.Message{ID: testMsgID, Body: testBody}, ExpectedClass: channels.Permanent, ExpectedCode: "no_recipient"},
			ExpectedRoutes: []string{}},
		{OutboundCase: channeltest.OutboundCase{Label: "an unknown kind is permanent and never sent",
			Message: msg(&ledger.WeChatOptions{Kind: "broadcast"}), ExpectedClass: channels.Permanent, ExpectedCode: "bad_kind"},
			ExpectedRoutes: []string{}},
		{OutboundCase: channeltest.OutboundCase{Label: "a template message without a template id is permanent and never sent",
			Message: msg(&ledger.WeChatOptions{Kind: "template"}), ExpectedClass: channels.Permanent, ExpectedCode: "no_template"},
			ExpectedRoutes: []string{}},
		{OutboundCase: channeltest.OutboundCase{Label: "a custom message without a body is permanent and never sent",
			Message:       channels.Message{ID: testMsgID, To: ledger.Recipient{WeChatOpenID: testOpenID}, WeChat: &ledger.WeChatOptions{Kind: "custom"}},
			ExpectedClass: channels.Permanent, ExpectedCode: "no_body"},
			ExpectedRoutes: []string{}},
	})
}

func TestStoredErrorsAndLogsCarryNoOpenIDTokenOrSecret(t *testing.T) {
	e := newEnv(t)
	srv := channeltest.LoopbackOnly(nil)
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A hostile answer repeating the request's openid and token.
		_, _ = fmt.Fprintf(w, `{"errcode":40003,"errmsg":"invalid openid %s with token %s"}`, testOpenID, r.URL.Query().Get("access_token"))
	})
	sim := httptestServer(t, echo)
	ch := e.channel(t, sim, srv)
	e.seedToken(t, seededTok)
	_, err := ch.Send(context.Background(), msg(&ledger.WeChatOptions{Kind: "custom"}))
	se := sendErr(t, err)
	for _, leak := range []string{testOpenID, seededTok} {
		if strings.Contains(se.Error(), leak) || strings.Contains(se.Message, leak) || (se.Err != nil && strings.Contains(se.Err.Error(), leak)) {
			t.Errorf("stored error %q / %v contains %q", se.Message, se.Err, leak)
		}
	}
	e.logs.assertClean(t, testOpenID, testBody, testSecret, seededTok)
}

func TestTransportErrorsDoNotRepeatTheURIWithTheSecret(t *testing.T) {
	e := newEnv(t)
	ch := e.channel(t, "http://127.0.0.1:1", channeltest.LoopbackOnly(nil))
	_, err := ch.Send(context.Background(), msg(&ledger.WeChatOptions{Kind: "custom"}))
	se := sendErr(t, err)
	if se.Class != channels.Retryable || strings.Contains(err.Error(), testSecret) ||
		(se.Err != nil && strings.Contains(se.Err.Error(), testSecret)) {
		t.Fatalf("token fetch failure %v (%v): want retryable without the app secret", se, se.Err)
	}
	e.logs.assertClean(t, testSecret, testOpenID)
}

func TestTheChannelNeverReachesANonLoopbackHost(t *testing.T) {
	e := newEnv(t)
	ch := e.channel(t, wechat.DefaultAPIURL, channeltest.LoopbackOnly(nil))
	_, err := ch.Send(context.Background(), msg(&ledger.WeChatOptions{Kind: "custom"}))
	if !errors.Is(err, channeltest.ErrNotLoopback) {
		t.Fatalf("want the loopback guard to refuse api.weixin.qq.com, got %v", err)
	}
}

func TestChannelsWithDifferentAPIURLsInOneProcessEachReachTheirOwn(t *testing.T) {
	e := newEnv(t)
	simA := wechatsim.New(wechatsim.Options{AppID: "wxAAAA", AppSecret: "secretA"})
	defer simA.Close()
	simB := wechatsim.New(wechatsim.Options{AppID: "wxBBBB", AppSecret: "secretB"})
	defer simB.Close()
	chA := e.channel(t, simA.URL(), channeltest.LoopbackOnly(nil), func(c *wechat.Config) { c.AppID, c.AppSecret = "wxAAAA", "secretA" })
	chB := e.channel(t, simB.URL()+"/", channeltest.LoopbackOnly(nil), func(c *wechat.Config) { c.AppID, c.AppSecret = "wxBBBB", "secretB" })
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 20 {
		for _, ch := range []*wechat.Channel{chA, chB} {
			wg.Go(func() {
				// Template messages: WeChat allows no user 20 customer-service messages.
				m := msg(template("template"))
				m.ID = fmt.Sprintf("m%02d", i)
				if _, err := ch.Send(context.Background(), m); err != nil {
					errs <- err
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for name, sim := range map[string]*wechatsim.Server{"A": simA, "B": simB} {
		if _, tmpl := sim.Accepted(); tmpl != 20 || sim.TokenFetches() != 1 {
			t.Errorf("simulator %s accepted %d messages with %d token fetches, want 20 with 1", name, tmpl, sim.TokenFetches())
		}
	}
}

func TestARoutingClientReplacedByOtherCodeStopsSendsInsteadOfReachingTheRealAPI(t *testing.T) {
	e := newEnv(t)
	sim, ch := e.simChannel(t, wechatsim.Options{})
	saved := util.DefaultHTTPClient
	util.DefaultHTTPClient = &http.Client{Transport: channeltest.LoopbackOnly(nil)}
	_, err := ch.Send(context.Background(), msg(template("template")))
	util.DefaultHTTPClient = saved
	if se := sendErr(t, err); se.Class != channels.Retryable || se.Code != "config" {
		t.Fatalf("got %v, want retryable config", se)
	}
	if len(sim.Requests()) != 0 {
		t.Fatalf("simulator got %v", paths(sim.Requests()))
	}
	if _, err := ch.Send(context.Background(), msg(template("template"))); err != nil {
		t.Fatalf("after restoring the client: %v", err)
	}
}

func TestNewRejectsIncompleteConfiguration(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name   string
		mutate func(*wechat.Config)
		want   string
	}{
		{"without an app id", func(c *wechat.Config) { c.AppID = "" }, "AppID"},
		{"without an app secret", func(c *wechat.Config) { c.AppSecret = "" }, "AppSecret"},
		{"without Redis", func(c *wechat.Config) { c.Redis = nil }, "Redis"},
		{"with a relative API URL", func(c *wechat.Config) { c.APIURL = "api.example" }, "APIURL"},
		{"with a negative timeout", func(c *wechat.Config) { c.Timeout = -time.Second }, "Timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := wechat.Config{AppID: testAppID, AppSecret: testSecret, Redis: e.rdb}
			tt.mutate(&cfg)
			_, err := wechat.New(cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: %v, want an error naming %s", err, tt.want)
			}
		})
	}
	ch, err := wechat.New(wechat.Config{AppID: testAppID, AppSecret: testSecret, Redis: e.rdb})
	if err != nil || ch.Name() != "wechat" {
		t.Fatalf("New with defaults: %v, %v", ch, err)
	}
}
