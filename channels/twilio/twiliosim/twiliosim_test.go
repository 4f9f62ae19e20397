package twiliosim_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twilio/twilio-go"
	"github.com/twilio/twilio-go/client"
	openapi "github.com/twilio/twilio-go/rest/api/v2010"

	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
)

const (
	from = "+15005550006"
	to   = "+15551230001"
)

// newSim starts a simulator closed at the end of the test.
func newSim(t *testing.T, opts twiliosim.Options) *twiliosim.Server {
	t.Helper()
	s := twiliosim.New(opts)
	t.Cleanup(s.Close)
	return s
}

// rewriteTransport sends api.twilio.com requests to the simulator and
// refuses every other host, so no test can reach the internet.
type rewriteTransport struct {
	target *url.URL
	base   http.RoundTripper
}

func (rt rewriteTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Host != "api.twilio.com" {
		return nil, fmt.Errorf("test transport: refusing host %q", r.URL.Host)
	}
	r2 := r.Clone(r.Context())
	r2.URL.Scheme, r2.URL.Host, r2.Host = rt.target.Scheme, rt.target.Host, rt.target.Host
	return rt.base.RoundTrip(r2)
}

// twilioClient returns a real twilio-go client talking to s with the given
// credentials.
func twilioClient(t *testing.T, s *twiliosim.Server, sid, token string) *twilio.RestClient {
	t.Helper()
	target, err := url.Parse(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	c := &client.Client{
		Credentials: client.NewCredentials(sid, token),
		HTTPClient:  &http.Client{Transport: rewriteTransport{target: target, base: base}, Timeout: 10 * time.Second},
	}
	c.SetAccountSid(sid)
	return twilio.NewRestClientWithParams(twilio.ClientParams{Client: c})
}

// restError asserts err is a TwilioRestError and returns it.
func restError(t *testing.T, err error) *client.TwilioRestError {
	t.Helper()
	var te *client.TwilioRestError
	if !errors.As(err, &te) {
		t.Fatalf("error = %v (%T), want *client.TwilioRestError", err, err)
	}
	return te
}

// receiver is a loopback StatusCallback endpoint recording what it gets.
type receiver struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []received
}

type received struct {
	url  string
	form url.Values
	sig  string
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	rc := &receiver{}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rc.mu.Lock()
		rc.got = append(rc.got, received{
			url:  "http://" + r.Host + r.URL.RequestURI(),
			form: r.PostForm,
			sig:  r.Header.Get("X-Twilio-Signature"),
		})
		rc.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) received() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.got...)
}

func waitCallbacks(t *testing.T, s *twiliosim.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.WaitCallbacks(ctx); err != nil {
		t.Fatalf("WaitCallbacks: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }

func TestNewGeneratesCredentialsTwilioGoAccepts(t *testing.T) {
	s := newSim(t, twiliosim.Options{})
	if !regexp.MustCompile(`^AC[0-9a-f]{32}$`).MatchString(s.AccountSID()) {
		t.Errorf("AccountSID = %q, want AC + 32 lowercase hex", s.AccountSID())
	}
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(s.AuthToken()) {
		t.Errorf("AuthToken = %q, want 32 lowercase hex", s.AuthToken())
	}
	if !strings.HasPrefix(s.URL(), "http://127.0.0.1:") {
		t.Errorf("URL = %q, want http://127.0.0.1:port", s.URL())
	}
	other := newSim(t, twiliosim.Options{AccountSID: "AC" + strings.Repeat("1", 32), AuthToken: strings.Repeat("2", 32)})
	if other.AccountSID() != "AC"+strings.Repeat("1", 32) || other.AuthToken() != strings.Repeat("2", 32) {
		t.Errorf("given credentials not kept: %q %q", other.AccountSID(), other.AuthToken())
	}
}

func TestRealTwilioClientCreatesMessagesLikeTwilio(t *testing.T) {
	s := newSim(t, twiliosim.Options{})
	c := twilioClient(t, s, s.AccountSID(), s.AuthToken())
	tests := []struct {
		name       string
		params     openapi.CreateMessageParams
		wantStatus string
		wantFrom   *string
		wantMSS    *string
		wantSegs   string
	}{
		{
			name:       "a From number queues the message",
			params:     openapi.CreateMessageParams{To: ptr(to), From: ptr(from), Body: ptr("Your follow-up is tomorrow.")},
			wantStatus: "queued", wantFrom: ptr(from), wantSegs: "1",
		},
		{
			name:       "a messaging service accepts the message with a null from",
			params:     openapi.CreateMessageParams{To: ptr(to), MessagingServiceSid: ptr("MG" + strings.Repeat("a", 32)), Body: ptr("hi")},
			wantStatus: "accepted", wantMSS: ptr("MG" + strings.Repeat("a", 32)), wantSegs: "1",
		},
		{
			name:       "a long body counts several segments",
			params:     openapi.CreateMessageParams{To: ptr(to), From: ptr(from), Body: ptr(strings.Repeat("a", 161)), ValidityPeriod: ptr(600)},
			wantStatus: "queued", wantFrom: ptr(from), wantSegs: "2",
		},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := c.Api.CreateMessage(&tt.params)
			if err != nil {
				t.Fatalf("CreateMessage: %v", err)
			}
			if m.Sid == nil || !regexp.MustCompile(`^SM[0-9a-f]{32}$`).MatchString(*m.Sid) {
				t.Fatalf("sid = %v, want SM + 32 hex", m.Sid)
			}
			if seen[*m.Sid] {
				t.Errorf("sid %s reused", *m.Sid)
			}
			seen[*m.Sid] = true
			checks := []struct {
				field     string
				got, want any
			}{
				{"status", deref(m.Status), tt.wantStatus},
				{"to", deref(m.To), to},
				{"from", m.From, tt.wantFrom},
				{"messaging_service_sid", m.MessagingServiceSid, tt.wantMSS},
				{"body", deref(m.Body), *tt.params.Body},
				{"num_segments", deref(m.NumSegments), tt.wantSegs},
				{"account_sid", deref(m.AccountSid), s.AccountSID()},
				{"direction", deref(m.Direction), "outbound-api"},
				{"api_version", deref(m.ApiVersion), "2010-04-01"},
				{"uri", deref(m.Uri), "/2010-04-01/Accounts/" + s.AccountSID() + "/Messages/" + *m.Sid + ".json"},
				{"error_code", m.ErrorCode, (*int)(nil)},
				{"error_message", m.ErrorMessage, (*string)(nil)},
				{"price", m.Price, (*string)(nil)},
			}
			for _, ch := range checks {
				if fmt.Sprint(show(ch.got)) != fmt.Sprint(show(ch.want)) {
					t.Errorf("%s = %v, want %v", ch.field, show(ch.got), show(ch.want))
				}
			}
			for _, d := range []*string{m.DateCreated, m.DateUpdated} {
				if _, err := time.Parse(time.RFC1123Z, deref(d)); err != nil || !strings.HasSuffix(deref(d), "+0000") {
					t.Errorf("date %q is not RFC 1123Z in UTC: %v", deref(d), err)
				}
			}
		})
	}
	if got := s.Accepted(); got != len(tests) {
		t.Errorf("Accepted() = %d, want %d", got, len(tests))
	}
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// show renders pointers by value so comparisons read naturally.
func show(v any) any {
	switch p := v.(type) {
	case *string:
		if p == nil {
			return "<nil>"
		}
		return *p
	case *int:
		if p == nil {
			return "<nil>"
		}
		return *p
	}
	return v
}

func TestRejectsLikeTwilio(t *testing.T) {
	s := newSim(t, twiliosim.Options{})
	good := twilioClient(t, s, s.AccountSID(), s.AuthToken())
	tests := []struct {
		name       string
		client     *twilio.RestClient
		params     openapi.CreateMessageParams
		wantStatus int
		wantCode   int
	}{
		{"a wrong auth token is answered 401 Authenticate",
			twilioClient(t, s, s.AccountSID(), strings.Repeat("0", 32)),
			openapi.CreateMessageParams{To: ptr(to), From: ptr(from), Body: ptr("x")}, 401, 20003},
		{"a wrong account SID is answered 401 Authenticate",
			twilioClient(t, s, "AC"+strings.Repeat("0", 32), s.AuthToken()),
			openapi.CreateMessageParams{To: ptr(to), From: ptr(from), Body: ptr("x")}, 401, 20003},
		{"another account's path is answered 404",
			good,
			openapi.CreateMessageParams{PathAccountSid: ptr("AC" + strings.Repeat("0", 32)), To: ptr(to), From: ptr(from), Body: ptr("x")}, 404, 20404},
		{"a missing To is answered 21604", good,
			openapi.CreateMessageParams{From: ptr(from), Body: ptr("x")}, 400, 21604},
		{"a missing From and MessagingServiceSid is answered 21603", good,
			openapi.CreateMessageParams{To: ptr(to), Body: ptr("x")}, 400, 21603},
		{"a missing Body is answered 21602", good,
			openapi.CreateMessageParams{To: ptr(to), From: ptr(from)}, 400, 21602},
		{"magic number 15005550001 is an invalid To", good,
			openapi.CreateMessageParams{To: ptr(twiliosim.MagicToInvalid), From: ptr(from), Body: ptr("x")}, 400, 21211},
		{"magic number 15005550009 is not a mobile number", good,
			openapi.CreateMessageParams{To: ptr(twiliosim.MagicToNotMobile), From: ptr(from), Body: ptr("x")}, 400, 21614},
		{"magic number 15005550004 is an unsubscribed recipient", good,
			openapi.CreateMessageParams{To: ptr(twiliosim.MagicToUnsubscribed), From: ptr(from), Body: ptr("x")}, 400, 21610},
		{"magic number 15005550002 cannot be routed", good,
			openapi.CreateMessageParams{To: ptr(twiliosim.MagicToCannotRoute), From: ptr(from), Body: ptr("x")}, 400, 21612},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.client.Api.CreateMessage(&tt.params)
			te := restError(t, err)
			if te.Status != tt.wantStatus || te.Code != tt.wantCode {
				t.Errorf("got status %d code %d, want %d %d", te.Status, te.Code, tt.wantStatus, tt.wantCode)
			}
			if te.Message == "" || te.MoreInfo != fmt.Sprintf("https://www.twilio.com/docs/errors/%d", tt.wantCode) {
				t.Errorf("message %q more_info %q", te.Message, te.MoreInfo)
			}
		})
	}
	if got := s.Accepted(); got != 0 {
		t.Errorf("Accepted() = %d, want 0", got)
	}
	if st := s.Stats(); st.Rejected != len(tests) {
		t.Errorf("Stats().Rejected = %d, want %d", st.Rejected, len(tests))
	}
}

func TestScriptedRepliesAreServedInOrderThenDefaultsResume(t *testing.T) {
	s := newSim(t, twiliosim.Options{})
	c := twilioClient(t, s, s.AccountSID(), s.AuthToken())
	s.Script(
		twiliosim.Throttle("7"),
		twiliosim.Fail(500, 0, ""),
		twiliosim.Fail(503, 0, "maintenance"),
		twiliosim.Reply{}, // a scripted success even overrides a magic number
	)
	tests := []struct {
		name       string
		to         string
		wantStatus int // 0: success
		wantCode   int
	}{
		{"the first request is throttled with 429 20429", to, 429, 20429},
		{"the second gets a 500 with Twilio's generic code", to, 500, 20500},
		{"the third gets the scripted 503", to, 503, 20503},
		{"the fourth succeeds despite a magic number", twiliosim.MagicToInvalid, 0, 0},
		{"then magic numbers apply again", twiliosim.MagicToInvalid, 400, 21211},
		{"and plain requests succeed", to, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Api.CreateMessage(&openapi.CreateMessageParams{To: ptr(tt.to), From: ptr(from), Body: ptr("x")})
			if tt.wantStatus == 0 {
				if err != nil {
					t.Fatalf("CreateMessage: %v", err)
				}
				return
			}
			te := restError(t, err)
			if te.Status != tt.wantStatus || te.Code != tt.wantCode {
				t.Errorf("got status %d code %d, want %d %d", te.Status, te.Code, tt.wantStatus, tt.wantCode)
			}
		})
	}
	reqs := s.Requests()
	if len(reqs) != len(tests) {
		t.Fatalf("recorded %d requests, want %d", len(reqs), len(tests))
	}
	for i, tt := range tests {
		want := tt.wantStatus
		if want == 0 {
			want = 201
		}
		if reqs[i].Reply != want {
			t.Errorf("request %d recorded reply %d, want %d", i, reqs[i].Reply, want)
		}
	}
}

func TestThrottleSendsRetryAfterAndTwilioErrorJSON(t *testing.T) {
	s := newSim(t, twiliosim.Options{})
	s.Script(twiliosim.Throttle("7"))
	form := url.Values{"To": {to}, "From": {from}, "Body": {"x"}}
	req, err := http.NewRequest(http.MethodPost, s.MessagesURL(), strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(s.AccountSID(), s.AuthToken())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"code": 20429.0, "message": "Too Many Requests",
		"more_info": "https://www.twilio.com/docs/errors/20429", "status": 429.0}
	if fmt.Sprint(body) != fmt.Sprint(want) {
		t.Errorf("body = %v, want %v", body, want)
	}
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "7" || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("status %d Retry-After %q Content-Type %q", resp.StatusCode, resp.Header.Get("Retry-After"), resp.Header.Get("Content-Type"))
	}
}

func TestOtherPathsAndMethodsAnswerTwilioErrors(t *testing.T) {
	s := newSim(t, twiliosim.Options{})
	tests := []struct {
		name, method, path string
		wantStatus         int
		wantCode           int
	}{
		{"an unknown path is not found", http.MethodGet, "/nope", 404, 20404},
		{"another resource is not found", http.MethodPost, "/2010-04-01/Accounts/" + s.AccountSID() + "/Calls.json", 404, 20404},
		{"deleting messages is not allowed", http.MethodDelete, "/2010-04-01/Accounts/" + s.AccountSID() + "/Messages.json", 405, 20004},
		{"an unknown message is not found", http.MethodGet, "/2010-04-01/Accounts/" + s.AccountSID() + "/Messages/SM00000000000000000000000000000000.json", 404, 20404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, s.URL()+tt.path, nil)
			req.SetBasicAuth(s.AccountSID(), s.AuthToken())
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var e struct{ Code, Status int }
			if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.wantStatus || e.Status != tt.wantStatus || e.Code != tt.wantCode {
				t.Errorf("got HTTP %d body status %d code %d, want %d %d", resp.StatusCode, e.Status, e.Code, tt.wantStatus, tt.wantCode)
			}
		})
	}
}

func TestLatencyDelaysAnswers(t *testing.T) {
	s := newSim(t, twiliosim.Options{})
	c := twilioClient(t, s, s.AccountSID(), s.AuthToken())
	params := &openapi.CreateMessageParams{To: ptr(to), From: ptr(from), Body: ptr("x")}
	tests := []struct {
		name    string
		setup   func()
		atLeast time.Duration
	}{
		{"a default latency delays every create", func() { s.SetLatency(60 * time.Millisecond) }, 60 * time.Millisecond},
		{"a scripted latency overrides the default", func() { s.Script(twiliosim.Reply{Latency: 120 * time.Millisecond}) }, 120 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.setup()
			start := time.Now()
			if _, err := c.Api.CreateMessage(params); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d < tt.atLeast {
				t.Errorf("answered after %v, want at least %v", d, tt.atLeast)
			}
		})
	}
}

func TestStatusCallbacksArriveInOrderSignedLikeTwilio(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(*twiliosim.Server)
		final     string
		errorCode string
	}{
		{"a delivered message reports sent then delivered", nil, "delivered", ""},
		{"an undelivered message carries the default ErrorCode",
			func(s *twiliosim.Server) { s.Script(twiliosim.Deliver("undelivered", 0)) }, "undelivered", "30003"},
		{"a failed message carries the scripted ErrorCode",
			func(s *twiliosim.Server) { s.Script(twiliosim.Deliver("failed", 30006)) }, "failed", "30006"},
		{"a default final applies to every message",
			func(s *twiliosim.Server) { s.SetFinal("undelivered", 30005) }, "undelivered", "30005"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSim(t, twiliosim.Options{})
			rc := newReceiver(t)
			if tt.setup != nil {
				tt.setup(s)
			}
			c := twilioClient(t, s, s.AccountSID(), s.AuthToken())
			cbURL := rc.srv.URL + "/webhooks/twilio/status?ref=abc&x=1"
			m, err := c.Api.CreateMessage(&openapi.CreateMessageParams{
				To: ptr(to), From: ptr(from), Body: ptr("x"), StatusCallback: ptr(cbURL)})
			if err != nil {
				t.Fatal(err)
			}
			waitCallbacks(t, s)
			got := rc.received()
			wantStatuses := []string{"sent", tt.final}
			if len(got) != len(wantStatuses) {
				t.Fatalf("received %d callbacks, want %d", len(got), len(wantStatuses))
			}
			validator := client.NewRequestValidator(s.AuthToken())
			for i, cb := range got {
				params := map[string]string{}
				for k := range cb.form {
					params[k] = cb.form.Get(k)
				}
				if cb.url != cbURL {
					t.Errorf("callback %d went to %q, want %q", i, cb.url, cbURL)
				}
				if !validator.Validate(cb.url, params, cb.sig) {
					t.Errorf("callback %d signature %q does not validate", i, cb.sig)
				}
				if sig := twiliosim.Sign(s.AuthToken(), cb.url, cb.form); sig != cb.sig {
					t.Errorf("Sign = %q, header = %q", sig, cb.sig)
				}
				want := map[string]string{
					"MessageSid": *m.Sid, "SmsSid": *m.Sid, "MessageStatus": wantStatuses[i], "SmsStatus": wantStatuses[i],
					"AccountSid": s.AccountSID(), "From": from, "To": to, "ApiVersion": "2010-04-01",
				}
				if i == 1 && tt.errorCode != "" {
					want["ErrorCode"] = tt.errorCode
				}
				if fmt.Sprint(params) != fmt.Sprint(want) {
					t.Errorf("callback %d params = %v, want %v", i, params, want)
				}
			}
			recorded := s.Callbacks()
			if len(recorded) != 2 || recorded[0].Status != "sent" || recorded[1].Status != tt.final ||
				recorded[1].Code != http.StatusNoContent || recorded[1].Err != "" {
				t.Errorf("recorded callbacks = %+v", recorded)
			}
		})
	}
}

func TestMessagingServiceCallbacksNameTheServiceAndAPooledSender(t *testing.T) {
	s := newSim(t, twiliosim.Options{})
	rc := newReceiver(t)
	c := twilioClient(t, s, s.AccountSID(), s.AuthToken())
	mss := "MG" + strings.Repeat("b", 32)
	if _, err := c.Api.CreateMessage(&openapi.CreateMessageParams{
		To: ptr(to), MessagingServiceSid: ptr(mss), Body: ptr("x"), StatusCallback: ptr(rc.srv.URL + "/cb")}); err != nil {
		t.Fatal(err)
	}
	waitCallbacks(t, s)
	got := rc.received()
	if len(got) != 2 {
		t.Fatalf("received %d callbacks, want 2", len(got))
	}
	for _, cb := range got {
		if cb.form.Get("MessagingServiceSid") != mss || cb.form.Get("From") != twiliosim.MagicFromValid {
			t.Errorf("callback form = %v", cb.form)
		}
	}
}

func TestDroppedCallbacksAreNeverSent(t *testing.T) {
	tests := []struct {
		name  string
		setup func(*twiliosim.Server)
	}{
		{"a scripted reply drops its callbacks", func(s *twiliosim.Server) { s.Script(twiliosim.Reply{DropCallbacks: true}) }},
		{"SetDropCallbacks drops every callback", func(s *twiliosim.Server) { s.SetDropCallbacks(true) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSim(t, twiliosim.Options{})
			rc := newReceiver(t)
			tt.setup(s)
			c := twilioClient(t, s, s.AccountSID(), s.AuthToken())
			if _, err := c.Api.CreateMessage(&openapi.CreateMessageParams{
				To: ptr(to), From: ptr(from), Body: ptr("x"), StatusCallback: ptr(rc.srv.URL + "/cb")}); err != nil {
				t.Fatal(err)
			}
			waitCallbacks(t, s)
			time.Sleep(20 * time.Millisecond) // nothing should be on its way either
			if got := rc.received(); len(got) != 0 {
				t.Errorf("received %d callbacks, want none", len(got))
			}
			if got := s.Callbacks(); len(got) != 0 {
				t.Errorf("recorded %d callbacks, want none", len(got))
			}
		})
	}
}

func TestNonLoopbackCallbacksAreNeverDialledAndRecordedAsErrors(t *testing.T) {
	tests := []struct{ name, url string }{
		{"a documentation-range IP", "http://192.0.2.1/x"},
		{"a public host name", "https://example.com/status"},
		{"a non-HTTP scheme", "ftp://127.0.0.1/x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSim(t, twiliosim.Options{})
			c := twilioClient(t, s, s.AccountSID(), s.AuthToken())
			if _, err := c.Api.CreateMessage(&openapi.CreateMessageParams{
				To: ptr(to), From: ptr(from), Body: ptr("x"), StatusCallback: ptr(tt.url)}); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			waitCallbacks(t, s)
			if d := time.Since(start); d > time.Second {
				t.Errorf("callbacks took %v; a dial must not even be attempted", d)
			}
			got := s.Callbacks()
			if len(got) != 2 {
				t.Fatalf("recorded %d callbacks, want 2", len(got))
			}
			for _, cb := range got {
				if cb.Err == "" || cb.Code != 0 {
					t.Errorf("callback %+v: want an error and no HTTP answer", cb)
				}
			}
			if st := s.Stats(); st.Callbacks != 2 || st.CallbackErrors != 2 {
				t.Errorf("Stats() = %+v, want 2 callbacks, 2 errors", st)
			}
		})
	}
}

func TestRecordingSupportsAssertionsAndReset(t *testing.T) {
	s := newSim(t, twiliosim.Options{})
	c := twilioClient(t, s, s.AccountSID(), s.AuthToken())
	for _, dest := range []string{to, to, "+15551230002", twiliosim.MagicToNotMobile} {
		_, _ = c.Api.CreateMessage(&openapi.CreateMessageParams{To: ptr(dest), From: ptr(from), Body: ptr("x")})
	}
	reqs := s.Requests()
	tests := []struct {
		name      string
		got, want any
	}{
		{"every request is recorded", len(reqs), 4},
		{"the form is recorded", reqs[0].Form.Get("To"), to},
		{"the answer is recorded", reqs[3].Reply, 400},
		{"the error code is recorded", reqs[3].Code, twiliosim.CodeNotMobile},
		{"the created SID is recorded", strings.HasPrefix(reqs[0].SID, "SM"), true},
		{"headers are recorded", reqs[0].Header.Get("Content-Type"), "application/x-www-form-urlencoded"},
		{"accepted messages are counted", s.Accepted(), 3},
		{"messages are counted per recipient", s.MessagesTo(to), 2},
		{"rejected messages do not count for their recipient", s.MessagesTo(twiliosim.MagicToNotMobile), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %v, want %v", tt.got, tt.want)
			}
		})
	}
	t.Run("returned requests are copies", func(t *testing.T) {
		reqs[0].Form.Set("To", "changed")
		if s.Requests()[0].Form.Get("To") != to {
			t.Error("mutating a returned request changed the record")
		}
	})
	t.Run("Reset forgets everything", func(t *testing.T) {
		s.Script(twiliosim.Fail(500, 0, ""))
		s.Reset()
		if len(s.Requests()) != 0 || s.Accepted() != 0 || s.Stats() != (twiliosim.Stats{}) {
			t.Errorf("after Reset: %d requests, %d accepted, %+v", len(s.Requests()), s.Accepted(), s.Stats())
		}
		if _, err := c.Api.CreateMessage(&openapi.CreateMessageParams{To: ptr(to), From: ptr(from), Body: ptr("x")}); err != nil {
			t.Errorf("scripted reply survived Reset: %v", err)
		}
	})
}

func TestNoRecordKeepsOnlyCounters(t *testing.T) {
	s := newSim(t, twiliosim.Options{NoRecord: true})
	rc := newReceiver(t)
	c := twilioClient(t, s, s.AccountSID(), s.AuthToken())
	for range 3 {
		if _, err := c.Api.CreateMessage(&openapi.CreateMessageParams{
			To: ptr(to), From: ptr(from), Body: ptr("x"), StatusCallback: ptr(rc.srv.URL)}); err != nil {
			t.Fatal(err)
		}
	}
	waitCallbacks(t, s)
	if len(s.Requests()) != 0 || len(s.Callbacks()) != 0 {
		t.Errorf("recorded %d requests and %d callbacks, want none", len(s.Requests()), len(s.Callbacks()))
	}
	if st := s.Stats(); st != (twiliosim.Stats{Requests: 3, Accepted: 3, Callbacks: 6}) {
		t.Errorf("Stats() = %+v", st)
	}
}

func TestConcurrentSendsGetUniqueSidsAndAllCallbacks(t *testing.T) {
	s := newSim(t, twiliosim.Options{})
	rc := newReceiver(t)
	c := twilioClient(t, s, s.AccountSID(), s.AuthToken())
	const n = 50
	var mu sync.Mutex
	sids := map[string]bool{}
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			m, err := c.Api.CreateMessage(&openapi.CreateMessageParams{
				To: ptr(to), From: ptr(from), Body: ptr("x"), StatusCallback: ptr(rc.srv.URL)})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			sids[*m.Sid] = true
			mu.Unlock()
		})
	}
	wg.Wait()
	waitCallbacks(t, s)
	if len(sids) != n || s.Accepted() != n {
		t.Errorf("%d unique sids, %d accepted, want %d", len(sids), s.Accepted(), n)
	}
	if got := len(rc.received()); got != 2*n {
		t.Errorf("received %d callbacks, want %d", got, 2*n)
	}
	order := map[string][]string{}
	for _, cb := range rc.received() {
		sid := cb.form.Get("MessageSid")
		order[sid] = append(order[sid], cb.form.Get("MessageStatus"))
	}
	for sid, st := range order {
		if fmt.Sprint(st) != "[sent delivered]" {
			t.Errorf("message %s callbacks in order %v", sid, st)
		}
	}
}

func TestCloseCancelsPendingWorkPromptly(t *testing.T) {
	rc := newReceiver(t)
	s := twiliosim.New(twiliosim.Options{CallbackDelay: time.Minute})
	defer s.Close()
	c := twilioClient(t, s, s.AccountSID(), s.AuthToken())
	if _, err := c.Api.CreateMessage(&openapi.CreateMessageParams{
		To: ptr(to), From: ptr(from), Body: ptr("x"), StatusCallback: ptr(rc.srv.URL)}); err != nil {
		t.Fatal(err)
	}
	s.SetLatency(time.Minute)
	answered := make(chan error, 1)
	go func() {
		_, err := c.Api.CreateMessage(&openapi.CreateMessageParams{To: ptr(to), From: ptr(from), Body: ptr("x")})
		answered <- err
	}()
	for s.Stats().InFlight == 0 { // wait until the second request is in its latency
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	s.Close()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v", d)
	}
	if err := <-answered; err == nil {
		t.Error("a request in its latency succeeded during Close")
	} else if te := restError(t, err); te.Status != 503 {
		t.Errorf("in-flight request got %d, want 503", te.Status)
	}
	if got := len(rc.received()); got != 0 {
		t.Errorf("received %d callbacks after Close, want none", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.WaitCallbacks(ctx); err != nil {
		t.Errorf("WaitCallbacks after Close: %v", err)
	}
}

func TestSendInboundPostsASignedIncomingMessage(t *testing.T) {
	s := newSim(t, twiliosim.Options{})
	rc := newReceiver(t)
	hook := rc.srv.URL + "/webhooks/twilio/inbound"
	code, err := s.SendInbound(context.Background(), hook, to, from, "STOP")
	if err != nil || code != http.StatusNoContent {
		t.Fatalf("SendInbound = %d, %v", code, err)
	}
	got := rc.received()
	if len(got) != 1 {
		t.Fatalf("received %d posts, want 1", len(got))
	}
	params := map[string]string{}
	for k := range got[0].form {
		params[k] = got[0].form.Get(k)
	}
	v := client.NewRequestValidator(s.AuthToken())
	if !v.Validate(hook, params, got[0].sig) {
		t.Error("inbound signature does not validate")
	}
	if params["Body"] != "STOP" || params["From"] != to || params["To"] != from || params["SmsStatus"] != "received" {
		t.Errorf("params = %v", params)
	}
	if _, err := s.SendInbound(context.Background(), "http://192.0.2.1/in", to, from, "x"); err == nil {
		t.Error("SendInbound to a non-loopback host succeeded")
	}
}

func TestSignMatchesTwilioValidator(t *testing.T) {
	tests := []struct {
		name   string
		url    string
		params url.Values
	}{
		{"no parameters", "https://mycompany.com/myapp.php?foo=1&bar=2", url.Values{}},
		{"call parameters", "https://mycompany.com/myapp.php?foo=1&bar=2", url.Values{
			"CallSid": {"CA1234567890ABCDE"}, "Caller": {"+12349013030"}, "Digits": {"1234"},
			"From": {"+12349013030"}, "To": {"+18005551212"}}},
		{"unicode values", "http://127.0.0.1:8080/cb", url.Values{"Body": {"héllo 🙂"}, "a": {""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			params := map[string]string{}
			for k := range tt.params {
				params[k] = tt.params.Get(k)
			}
			v := client.NewRequestValidator("12345")
			if sig := twiliosim.Sign("12345", tt.url, tt.params); !v.Validate(tt.url, params, sig) {
				t.Errorf("signature %q does not validate", sig)
			}
		})
	}
	// The known-answer vector from twilio-go's own request validator tests;
	// "Reason" must sort before "ReasonConferenceEnded".
	vector := url.Values{"Digits": {"1234"}, "CallSid": {"CA1234567890ABCDE"}, "To": {"+18005551212"},
		"Caller": {"+14158675309"}, "From": {"+14158675309"}, "ReasonConferenceEnded": {"test"}, "Reason": {"Participant"}}
	if got := twiliosim.Sign("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", vector); got != "vOEb5UThFn24KEfnOFLQY2AE5FY=" {
		t.Errorf("known vector signed as %q", got)
	}
}

func TestSegmentsFollowGSMAndUCS2Limits(t *testing.T) {
	tests := []struct {
		name string
		body string
		want int
	}{
		{"a short text is one segment", "Your appointment is at 10:00.", 1},
		{"160 GSM characters fit one segment", strings.Repeat("a", 160), 1},
		{"161 GSM characters take two", strings.Repeat("a", 161), 2},
		{"306 GSM characters take two", strings.Repeat("a", 306), 2},
		{"307 GSM characters take three", strings.Repeat("a", 307), 3},
		{"extended characters take two septets", strings.Repeat("€", 81), 2},
		{"accented GSM letters stay GSM", strings.Repeat("é", 160), 1},
		{"70 UCS-2 units fit one segment", strings.Repeat("ł", 70), 1},
		{"71 UCS-2 units take two", strings.Repeat("ł", 71), 2},
		{"emoji count two UTF-16 units", strings.Repeat("🙂", 36), 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := twiliosim.Segments(tt.body); got != tt.want {
				t.Errorf("Segments = %d, want %d", got, tt.want)
			}
		})
	}
}

func BenchmarkCreateMessage(b *testing.B) {
	s := twiliosim.New(twiliosim.Options{NoRecord: true})
	defer s.Close()
	body := url.Values{"To": {to}, "From": {from}, "Body": {"Your follow-up is tomorrow."}}.Encode()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodPost, s.MessagesURL(), strings.NewReader(body))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth(s.AccountSID(), s.AuthToken())
			resp, err := hc.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}
