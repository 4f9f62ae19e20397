package twiliosim_test

import (
	"bytes"
	"encoding/binary"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twilio/twilio-go/client"
	openapi "github.com/twilio/twilio-go/rest/api/v2010"

	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
)

// app is a loopback voice application: it answers TwiML by path and
// records every request with whether its signature validates.
type app struct {
	srv       *httptest.Server
	validator client.RequestValidator
	mu        sync.Mutex
	got       []appRequest
	twiml     map[string]string // path → TwiML; other paths answer 204
	status    map[string]int    // path → status to answer instead
}

type appRequest struct {
	method, path string
	form         url.Values
	signed       bool
}

func newApp(t *testing.T, s *twiliosim.Server, twiml map[string]string) *app {
	t.Helper()
	a := &app{validator: client.NewRequestValidator(s.AuthToken()), twiml: twiml, status: map[string]int{}}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		params := map[string]string{}
		for k := range r.PostForm {
			params[k] = r.PostForm.Get(k)
		}
		signed := a.validator.Validate("http://"+r.Host+r.URL.RequestURI(), params, r.Header.Get("X-Twilio-Signature"))
		a.mu.Lock()
		a.got = append(a.got, appRequest{method: r.Method, path: r.URL.Path, form: r.Form, signed: signed})
		doc, ok := a.twiml[r.URL.Path]
		code := a.status[r.URL.Path]
		a.mu.Unlock()
		switch {
		case code != 0:
			w.WriteHeader(code)
		case ok:
			w.Header().Set("Content-Type", "text/xml")
			_, _ = io.WriteString(w, doc)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *app) requests() []appRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]appRequest(nil), a.got...)
}

// placeCall creates a call with the real twilio-go client.
func placeCall(t *testing.T, s *twiliosim.Server, a *app, events ...string) string {
	t.Helper()
	c := twilioClient(t, s, s.AccountSID(), s.AuthToken())
	p := &openapi.CreateCallParams{}
	p.SetTo(to).SetFrom(from).SetUrl(a.srv.URL + "/twiml?m=1").SetStatusCallback(a.srv.URL + "/status?m=1")
	if len(events) > 0 {
		p.SetStatusCallbackEvent(events)
	}
	call, err := c.Api.CreateCall(p)
	if err != nil {
		t.Fatalf("CreateCall: %v", err)
	}
	waitCallbacks(t, s)
	return *call.Sid
}

var allEvents = []string{"initiated", "ringing", "answered", "completed"}

const (
	gatherTwiML = `<?xml version="1.0" encoding="UTF-8"?><Response><Say language="en-US">Hello</Say>` +
		`<Gather numDigits="1" action="/gather?m=1" actionOnEmptyResult="true"><Say>Press 1</Say></Gather><Hangup/></Response>`
	recordTwiML = `<Response><Say>Speak after the beep</Say>` +
		`<Record maxLength="10" action="/record?m=1" recordingStatusCallback="/recording?m=1" playBeep="true"/><Hangup/></Response>`
	byeTwiML = `<Response><Say>Thank you</Say><Hangup/></Response>`
)

func TestCallsAreCreatedLikeTwilio(t *testing.T) {
	s := newSim(t, twiliosim.Options{Voice: true})
	a := newApp(t, s, map[string]string{"/twiml": byeTwiML})
	c := twilioClient(t, s, s.AccountSID(), s.AuthToken())
	p := &openapi.CreateCallParams{}
	p.SetTo(to).SetFrom(from).SetUrl(a.srv.URL + "/twiml")
	call, err := c.Api.CreateCall(p)
	if err != nil {
		t.Fatalf("CreateCall: %v", err)
	}
	waitCallbacks(t, s)
	tests := []struct {
		name      string
		got, want any
	}{
		{"the sid is CA + 32 hex", regexp.MustCompile(`^CA[0-9a-f]{32}$`).MatchString(deref(call.Sid)), true},
		{"the call is queued", deref(call.Status), "queued"},
		{"To is echoed", deref(call.To), to},
		{"From is echoed", deref(call.From), from},
		{"the account is named", deref(call.AccountSid), s.AccountSID()},
		{"the uri names the call", deref(call.Uri), "/2010-04-01/Accounts/" + s.AccountSID() + "/Calls/" + deref(call.Sid) + ".json"},
		{"the call is counted", s.Stats().Calls, 1},
		{"a call is not a message", s.Accepted(), 0},
		{"a call does not count as a message to its recipient", s.MessagesTo(to), 0},
		{"the request is recorded with the call's sid", s.Requests()[0].SID, deref(call.Sid)},
		{"the call is recorded", len(s.Calls()), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !reflect.DeepEqual(tt.got, tt.want) {
				t.Errorf("got %v, want %v", tt.got, tt.want)
			}
		})
	}
}

func TestCallCreateRejectsLikeTwilio(t *testing.T) {
	s := newSim(t, twiliosim.Options{Voice: true})
	good := twilioClient(t, s, s.AccountSID(), s.AuthToken())
	tests := []struct {
		name       string
		params     func(*openapi.CreateCallParams)
		creds      string
		wantStatus int
		wantCode   int
	}{
		{"a call without To is refused", func(p *openapi.CreateCallParams) { p.SetFrom(from).SetUrl("http://127.0.0.1/x") }, "", 400, 21201},
		{"a call without From is refused", func(p *openapi.CreateCallParams) { p.SetTo(to).SetUrl("http://127.0.0.1/x") }, "", 400, 21213},
		{"a call without Url or Twiml is refused", func(p *openapi.CreateCallParams) { p.SetTo(to).SetFrom(from) }, "", 400, 21205},
		{"a call with a relative Url is refused", func(p *openapi.CreateCallParams) { p.SetTo(to).SetFrom(from).SetUrl("/x") }, "", 400, 21205},
		{"wrong credentials are refused", func(p *openapi.CreateCallParams) { p.SetTo(to).SetFrom(from).SetUrl("http://127.0.0.1/x") }, "wrong", 401, 20003},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			if tt.creds != "" {
				c = twilioClient(t, s, s.AccountSID(), tt.creds)
			}
			p := &openapi.CreateCallParams{}
			tt.params(p)
			_, err := c.Api.CreateCall(p)
			if te := restError(t, err); te.Status != tt.wantStatus || te.Code != tt.wantCode {
				t.Errorf("got %d/%d, want %d/%d", te.Status, te.Code, tt.wantStatus, tt.wantCode)
			}
		})
	}
	t.Run("a scripted throttle answers 429 with Retry-After and no call is made", func(t *testing.T) {
		s.ScriptCalls(twiliosim.CallPlan{Status: 429, Code: twiliosim.CodeTooManyRequests, RetryAfter: "3"})
		p := &openapi.CreateCallParams{}
		p.SetTo(to).SetFrom(from).SetUrl("http://127.0.0.1/x")
		_, err := good.Api.CreateCall(p)
		if te := restError(t, err); te.Status != 429 || te.Code != 20429 {
			t.Errorf("got %+v", te)
		}
		if st := s.Stats(); st.Calls != 0 {
			t.Errorf("calls = %d, want 0", st.Calls)
		}
	})
	t.Run("without Options.Voice the Calls API is not found", func(t *testing.T) {
		plain := newSim(t, twiliosim.Options{})
		p := &openapi.CreateCallParams{}
		p.SetTo(to).SetFrom(from).SetUrl("http://127.0.0.1/x")
		_, err := twilioClient(t, plain, plain.AccountSID(), plain.AuthToken()).Api.CreateCall(p)
		if te := restError(t, err); te.Status != 404 || te.Code != 20404 {
			t.Errorf("got %+v", te)
		}
	})
}

func TestCallPlaysTwiMLPressesKeysAndRecords(t *testing.T) {
	s := newSim(t, twiliosim.Options{Voice: true})
	a := newApp(t, s, map[string]string{"/twiml": gatherTwiML, "/gather": recordTwiML, "/record": byeTwiML})
	s.ScriptCalls(twiliosim.CallPlan{Digits: []string{"1"}, RecordSeconds: 2, AnsweredBy: "human"})
	sid := placeCall(t, s, a, allEvents...)
	c, ok := s.Call(sid)
	if !ok {
		t.Fatal("call not recorded")
	}
	reqs := a.requests()
	var paths []string
	allSigned := true
	for _, r := range reqs {
		paths = append(paths, r.path+":"+r.form.Get("CallStatus"))
		allSigned = allSigned && r.signed && r.method == http.MethodPost
	}
	formOf := func(path string) url.Values {
		for _, r := range reqs {
			if r.path == path {
				return r.form
			}
		}
		return url.Values{}
	}
	rec := formOf("/recording")
	tests := []struct {
		name      string
		got, want any
	}{
		{"the app gets progress, TwiML, the key, the recording, then completion, in order", paths, []string{
			"/status:initiated", "/status:ringing", "/status:in-progress", "/twiml:in-progress", "/gather:in-progress",
			"/record:in-progress", "/recording:", "/status:completed"}},
		{"every request is a POST signed like Twilio", allSigned, true},
		{"the TwiML request names the call", formOf("/twiml").Get("CallSid"), sid},
		{"the TwiML request carries the call's parties", formOf("/twiml").Get("To") + " " + formOf("/twiml").Get("From"), to + " " + from},
		{"the programmed key is posted", formOf("/gather").Get("Digits"), "1"},
		{"the recording is announced to the record action", formOf("/record").Get("RecordingSid"), rec.Get("RecordingSid")},
		{"the recording completed", rec.Get("RecordingStatus"), "completed"},
		{"the recording lasts what was programmed", rec.Get("RecordingDuration"), "2"},
		{"the recording URL is the simulator's", rec.Get("RecordingUrl"), s.RecordingsURL() + "/" + rec.Get("RecordingSid")},
		{"the completed call has a duration", regexp.MustCompile(`^[1-9][0-9]*$`).MatchString(c.HooksOf(twiliosim.HookStatus)[3].Form.Get("CallDuration")), true},
		{"AnsweredBy is posted once answered", c.HooksOf(twiliosim.HookStatus)[2].Form.Get("AnsweredBy"), "human"},
		{"the record keeps the parsed verbs of every TwiML answer", verbNames(c.HooksOf(twiliosim.HookTwiML)[0].Verbs), []string{"Say", "Gather", "Hangup"}},
		{"nested verbs are parsed", c.HooksOf(twiliosim.HookTwiML)[0].Verbs[1].Children[0].Text, "Press 1"},
		{"attributes are parsed", c.HooksOf(twiliosim.HookTwiML)[0].Verbs[1].Attrs["numDigits"], "1"},
		{"the call ended completed", c.Status, twiliosim.CallCompleted},
		{"the call is done", c.Done, true},
		{"the call's recording is listed", c.Recordings, []string{rec.Get("RecordingSid")}},
		{"no webhook failed", s.Stats().CallWebhookErrors, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !reflect.DeepEqual(tt.got, tt.want) {
				t.Errorf("got  %v\nwant %v", tt.got, tt.want)
			}
		})
	}

	mediaURL := rec.Get("RecordingUrl")
	media := []struct {
		name       string
		url        string
		auth       bool
		wantStatus int
		wantType   string
		wantBody   []byte
	}{
		{"the .wav media is served with basic auth", mediaURL + ".wav", true, 200, "audio/x-wav", twiliosim.ToneWAV(2)},
		{"the media without extension is WAV, as Twilio's default", mediaURL, true, 200, "audio/x-wav", twiliosim.ToneWAV(2)},
		{"media without credentials is refused", mediaURL + ".wav", false, 401, "application/json", nil},
		{"there is no MP3: .mp3 is not found rather than mislabelled", mediaURL + ".mp3", true, 404, "application/json", nil},
		{"an unknown recording is not found", s.RecordingsURL() + "/RE" + strings.Repeat("0", 32) + ".wav", true, 404, "application/json", nil},
	}
	for _, tt := range media {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, tt.url, nil)
			if tt.auth {
				req.SetBasicAuth(s.AccountSID(), s.AuthToken())
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantStatus || resp.Header.Get("Content-Type") != tt.wantType {
				t.Fatalf("got %d %q, want %d %q", resp.StatusCode, resp.Header.Get("Content-Type"), tt.wantStatus, tt.wantType)
			}
			if tt.wantBody != nil && !bytes.Equal(body, tt.wantBody) {
				t.Errorf("body of %d bytes is not the tone", len(body))
			}
		})
	}
}

func verbNames(vs []twiliosim.Verb) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.Name)
	}
	return out
}

func TestCallOutcomesPostTwiliosProgress(t *testing.T) {
	tests := []struct {
		name      string
		plan      twiliosim.CallPlan
		events    []string
		want      []string
		wantTwiML bool
		errorCode string
	}{
		{"a completed call rings, is answered, plays and completes", twiliosim.CallPlan{}, allEvents,
			[]string{"initiated", "ringing", "in-progress", "completed"}, true, ""},
		{"a busy line is reported busy without ringing", twiliosim.CallPlan{Outcome: twiliosim.CallBusy}, allEvents,
			[]string{"initiated", "busy"}, false, ""},
		{"an unanswered call rings then is no-answer", twiliosim.CallPlan{Outcome: twiliosim.CallNoAnswer}, allEvents,
			[]string{"initiated", "ringing", "no-answer"}, false, ""},
		{"a failed call carries the default error code", twiliosim.CallPlan{Outcome: twiliosim.CallFailed}, allEvents,
			[]string{"initiated", "failed"}, false, "13224"},
		{"a failed call carries the programmed error code", twiliosim.CallPlan{Outcome: twiliosim.CallFailed, ErrorCode: 21215}, allEvents,
			[]string{"initiated", "failed"}, false, "21215"},
		{"a canceled call rings then is canceled", twiliosim.CallPlan{Outcome: twiliosim.CallCanceled}, allEvents,
			[]string{"initiated", "ringing", "canceled"}, false, ""},
		{"without StatusCallbackEvent only the final status is posted, as Twilio does", twiliosim.CallPlan{}, nil,
			[]string{"completed"}, true, ""},
		{"a busy line without StatusCallbackEvent still reports busy", twiliosim.CallPlan{Outcome: twiliosim.CallBusy}, nil,
			[]string{"busy"}, false, ""},
		{"dropped callbacks post no progress but the call still plays", twiliosim.CallPlan{DropCallbacks: true}, allEvents,
			nil, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSim(t, twiliosim.Options{Voice: true})
			a := newApp(t, s, map[string]string{"/twiml": byeTwiML})
			s.SetCallPlan(tt.plan)
			sid := placeCall(t, s, a, tt.events...)
			c, _ := s.Call(sid)
			if got := c.Statuses(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("statuses %v, want %v", got, tt.want)
			}
			if got := len(c.HooksOf(twiliosim.HookTwiML)) == 1; got != tt.wantTwiML {
				t.Errorf("TwiML fetched: %v, want %v", got, tt.wantTwiML)
			}
			if hooks := c.HooksOf(twiliosim.HookStatus); len(hooks) > 0 {
				if got := hooks[len(hooks)-1].Form.Get("ErrorCode"); got != tt.errorCode {
					t.Errorf("ErrorCode %q, want %q", got, tt.errorCode)
				}
			}
		})
	}
}

func TestCallTwiMLEdgeCases(t *testing.T) {
	tests := []struct {
		name      string
		twiml     map[string]string
		status    map[string]int
		plan      twiliosim.CallPlan
		wantPaths []string
		wantErr   bool
	}{
		{"a Gather without a key and without actionOnEmptyResult goes on to the next verb",
			map[string]string{"/twiml": `<Response><Gather action="/gather"><Say>x</Say></Gather><Redirect>/after</Redirect></Response>`, "/after": byeTwiML},
			nil, twiliosim.CallPlan{}, []string{"/twiml", "/after"}, false},
		{"a Gather without an action posts to the document's own URL",
			map[string]string{"/twiml": `<Response><Gather numDigits="1"/></Response>`},
			nil, twiliosim.CallPlan{Digits: []string{"1", ""}}, []string{"/twiml", "/twiml"}, false},
		{"extra keys beyond numDigits are not posted",
			map[string]string{"/twiml": `<Response><Gather numDigits="1" action="/gather"/></Response>`},
			nil, twiliosim.CallPlan{Digits: []string{"123"}}, []string{"/twiml", "/gather"}, false},
		{"a silent caller makes no recording and the call goes on",
			map[string]string{"/twiml": `<Response><Record action="/record" recordingStatusCallback="/recording"/><Redirect>/after</Redirect></Response>`, "/after": byeTwiML},
			nil, twiliosim.CallPlan{RecordSeconds: -1}, []string{"/twiml", "/after"}, false},
		{"a Redirect loop ends after a bounded number of documents",
			map[string]string{"/twiml": `<Response><Redirect>/twiml</Redirect></Response>`},
			nil, twiliosim.CallPlan{}, repeatPath("/twiml", 16), false},
		{"TwiML that does not parse ends the call, as an application error",
			map[string]string{"/twiml": `<Response><Say>unclosed</Response>`},
			nil, twiliosim.CallPlan{}, []string{"/twiml"}, true},
		{"a TwiML answer of 500 ends the call",
			map[string]string{"/twiml": byeTwiML}, map[string]int{"/twiml": 500},
			twiliosim.CallPlan{}, []string{"/twiml"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSim(t, twiliosim.Options{Voice: true})
			a := newApp(t, s, tt.twiml)
			for p, code := range tt.status {
				a.status[p] = code
			}
			s.ScriptCalls(tt.plan)
			sid := placeCall(t, s, a, allEvents...)
			var paths []string
			for _, r := range a.requests() {
				if r.path != "/status" {
					paths = append(paths, r.path)
				}
			}
			if !reflect.DeepEqual(paths, tt.wantPaths) {
				t.Errorf("paths %v, want %v", paths, tt.wantPaths)
			}
			for _, r := range a.requests() {
				if r.path == "/gather" && len(r.form.Get("Digits")) > 1 {
					t.Errorf("posted keys %q beyond numDigits", r.form.Get("Digits"))
				}
			}
			c, _ := s.Call(sid)
			if c.Status != twiliosim.CallCompleted {
				t.Errorf("status %q, want completed", c.Status)
			}
			if got := s.Stats().CallWebhookErrors > 0; got != tt.wantErr {
				t.Errorf("webhook errors recorded: %v, want %v (%+v)", got, tt.wantErr, c.Hooks)
			}
		})
	}
}

func repeatPath(p string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = p
	}
	return out
}

func TestCallWebhooksNeverLeaveLoopback(t *testing.T) {
	s := newSim(t, twiliosim.Options{Voice: true})
	c := twilioClient(t, s, s.AccountSID(), s.AuthToken())
	p := &openapi.CreateCallParams{}
	p.SetTo(to).SetFrom(from).SetUrl("http://192.0.2.1/twiml").SetStatusCallback("http://192.0.2.1/status").
		SetStatusCallbackEvent(allEvents)
	start := time.Now()
	call, err := c.Api.CreateCall(p)
	if err != nil {
		t.Fatal(err)
	}
	waitCallbacks(t, s)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v: a connection was attempted", d)
	}
	rec, _ := s.Call(*call.Sid)
	if len(rec.Hooks) == 0 {
		t.Fatal("no hooks recorded")
	}
	for _, h := range rec.Hooks {
		if h.Code != 0 || !strings.Contains(h.Err, "non-loopback") {
			t.Errorf("%s to %s: code %d err %q, want refused", h.Kind, h.URL, h.Code, h.Err)
		}
	}
}

func TestGETWebhooksCarryParametersInTheQuery(t *testing.T) {
	s := newSim(t, twiliosim.Options{Voice: true})
	a := newApp(t, s, map[string]string{"/twiml": byeTwiML})
	c := twilioClient(t, s, s.AccountSID(), s.AuthToken())
	p := &openapi.CreateCallParams{}
	p.SetTo(to).SetFrom(from).SetUrl(a.srv.URL + "/twiml?m=1").SetMethod("GET")
	if _, err := c.Api.CreateCall(p); err != nil {
		t.Fatal(err)
	}
	waitCallbacks(t, s)
	reqs := a.requests()
	if len(reqs) != 1 || reqs[0].method != http.MethodGet || reqs[0].form.Get("m") != "1" || reqs[0].form.Get("CallStatus") != "in-progress" || !reqs[0].signed {
		t.Fatalf("requests %+v", reqs)
	}
}

func TestResetForgetsCalls(t *testing.T) {
	s := newSim(t, twiliosim.Options{Voice: true})
	a := newApp(t, s, map[string]string{"/twiml": byeTwiML})
	s.ScriptCalls(twiliosim.CallPlan{Outcome: twiliosim.CallBusy}, twiliosim.CallPlan{Outcome: twiliosim.CallBusy})
	placeCall(t, s, a)
	s.Reset()
	if len(s.Calls()) != 0 || s.Stats() != (twiliosim.Stats{}) {
		t.Fatalf("after Reset: %d calls, %+v", len(s.Calls()), s.Stats())
	}
	sid := placeCall(t, s, a)
	if c, _ := s.Call(sid); c.Status != twiliosim.CallCompleted {
		t.Errorf("a scripted plan survived Reset: %q", c.Status)
	}
}

func TestCloseEndsCallsPromptly(t *testing.T) {
	s := twiliosim.New(twiliosim.Options{Voice: true, CallbackDelay: time.Minute})
	defer s.Close()
	a := newApp(t, s, map[string]string{"/twiml": byeTwiML})
	c := twilioClient(t, s, s.AccountSID(), s.AuthToken())
	p := &openapi.CreateCallParams{}
	p.SetTo(to).SetFrom(from).SetUrl(a.srv.URL + "/twiml").SetStatusCallback(a.srv.URL + "/status").SetStatusCallbackEvent(allEvents)
	if _, err := c.Api.CreateCall(p); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s.Close()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v", d)
	}
	if got := len(a.requests()); got != 0 {
		t.Errorf("the app got %d requests after Close, want none", got)
	}
}

func TestToneWAVIsAPlayableWAV(t *testing.T) {
	b := twiliosim.ToneWAV(2)
	le := binary.LittleEndian
	tests := []struct {
		name      string
		got, want any
	}{
		{"it is RIFF", string(b[0:4]), "RIFF"},
		{"the RIFF size is the file less 8 bytes", int(le.Uint32(b[4:])), len(b) - 8},
		{"it is WAVE", string(b[8:12]), "WAVE"},
		{"it is PCM", le.Uint16(b[20:]), uint16(1)},
		{"it is mono", le.Uint16(b[22:]), uint16(1)},
		{"it is 8 kHz, as Twilio records", le.Uint32(b[24:]), uint32(8000)},
		{"it is 16-bit", le.Uint16(b[34:]), uint16(16)},
		{"the data lasts the given seconds", int(le.Uint32(b[40:])), 2 * 8000 * 2},
		{"it is not silence", le.Uint16(b[46:]) != 0, true},
		{"zero seconds still makes one second", len(twiliosim.ToneWAV(0)), 44 + 8000*2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !reflect.DeepEqual(tt.got, tt.want) {
				t.Errorf("got %v, want %v", tt.got, tt.want)
			}
		})
	}
}
