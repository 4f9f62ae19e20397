package twilio_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/channels/channeltest"
	"github.com/patientmsg/gateway/channels/twilio"
	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/internal/ledger"
)

// syncReceiver wraps a RecordingReceiver so the test can read what the
// gateway's handlers (other goroutines) recorded.
type syncReceiver struct {
	mu sync.Mutex
	r  channeltest.RecordingReceiver
}

func (s *syncReceiver) ProviderStatus(ctx context.Context, id string, u ledger.ProviderUpdate) (ledger.Applied, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.r.ProviderStatus(ctx, id, u)
}

func (s *syncReceiver) Message(ctx context.Context, id string) (*ledger.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.r.Message(ctx, id)
}

func (s *syncReceiver) Answer(ctx context.Context, id string, a ledger.Answer, recordingURL string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.r.Answer(ctx, id, a, recordingURL)
}

func (s *syncReceiver) Redial(ctx context.Context, id, providerID string, after time.Duration, maxRedials int, reason ledger.ErrorInfo) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.r.Redial(ctx, id, providerID, after, maxRedials, reason)
}

func (s *syncReceiver) Inbound(ctx context.Context, in channels.InboundMessage) (channels.InboundResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.r.Inbound(ctx, in)
}

func (s *syncReceiver) OptOut(ctx context.Context, channel string, who ledger.Recipient, evidence string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.r.OptOut(ctx, channel, who, evidence)
}

func (s *syncReceiver) recorded() ([]channeltest.Update, []channeltest.AnswerCall, []channeltest.RedialCall) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]channeltest.Update(nil), s.r.Updates...), append([]channeltest.AnswerCall(nil), s.r.Answers...),
		append([]channeltest.RedialCall(nil), s.r.Redials...)
}

// mount serves channel routes over net/http, as the gateway does: the
// signed URL is the public base URL plus the request URI.
func mount(publicURL string, routes []channels.Route) http.Handler {
	mux := http.NewServeMux()
	for _, rt := range routes {
		mux.HandleFunc(rt.Method+" "+rt.Path, func(w http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			if err != nil {
				http.Error(w, "bad body", http.StatusBadRequest)
				return
			}
			form, _ := url.ParseQuery(string(body))
			resp := rt.Handle(r.Context(), channels.WebhookRequest{URL: publicURL + r.URL.RequestURI(), Header: r.Header,
				Query: r.URL.Query(), Form: form, Body: body})
			if resp.ContentType != "" {
				w.Header().Set("Content-Type", resp.ContentType)
			}
			w.WriteHeader(resp.Status)
			_, _ = w.Write(resp.Body)
		})
	}
	return mux
}

// voiceRig is the voice channel against the simulator, with its webhooks
// served on a loopback gateway.
type voiceRig struct {
	sim *twiliosim.Server
	v   *twilio.Voice
	rcv *syncReceiver
}

func newVoiceRig(t *testing.T, m *ledger.Message, logger *slog.Logger) voiceRig {
	t.Helper()
	sim := twiliosim.New(twiliosim.Options{AccountSID: testSID, AuthToken: testToken, Voice: true, CallbackDelay: -1})
	t.Cleanup(sim.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	public := "http://" + ln.Addr().String()
	v := newVoice(t, sim.URL(), channeltest.LoopbackOnly(nil), func(c *twilio.VoiceConfig) {
		c.PublicURL = public
		c.Logger = logger
	})
	rcv := &syncReceiver{r: channeltest.RecordingReceiver{Messages: known(m)}}
	gw := httptest.NewUnstartedServer(mount(public, v.Routes(rcv)))
	gw.Listener.Close()
	gw.Listener = ln
	gw.Start()
	t.Cleanup(gw.Close)
	return voiceRig{sim: sim, v: v, rcv: rcv}
}

// call places the message's call and waits until the simulator has made
// every request for it.
func (r voiceRig) call(t *testing.T, m *ledger.Message) twiliosim.CallRecord {
	t.Helper()
	res, err := r.v.Send(context.Background(), channels.MessageOf(m))
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.sim.WaitCallbacks(ctx); err != nil {
		t.Fatal(err)
	}
	c, ok := r.sim.Call(res.ProviderID)
	if !ok || !c.Done {
		t.Fatalf("the simulator has no finished call %s", res.ProviderID)
	}
	return c
}

func verbNames(vs []twiliosim.Verb) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.Name)
	}
	return out
}

func TestVoiceCallAgainstTheSimulatorEndToEnd(t *testing.T) {
	m := followUp()
	rig := newVoiceRig(t, m, nil)
	rig.sim.ScriptCalls(twiliosim.CallPlan{Digits: []string{"1"}, RecordSeconds: 4})
	c := rig.call(t, m)
	updates, answers, redials := rig.rcv.recorded()

	up := func(status ledger.Status, provider string) channeltest.Update {
		return channeltest.Update{MessageID: m.ID, ProviderUpdate: ledger.ProviderUpdate{Channel: "voice", ProviderID: c.SID, Status: status, ProviderStatus: provider}}
	}
	var codes []int
	for _, h := range c.Hooks {
		codes = append(codes, h.Code)
	}
	var recURL string
	if len(c.Recordings) == 1 {
		recURL = rig.sim.RecordingsURL() + "/" + c.Recordings[0]
	}
	twimlHooks, gathers := c.HooksOf(twiliosim.HookTwiML), c.HooksOf(twiliosim.HookGather)
	tests := []struct {
		name      string
		got, want any
	}{
		{"the call reports initiated, ringing, answered and completed", c.Statuses(),
			[]string{"initiated", "ringing", "in-progress", "completed"}},
		{"every request of the call was answered 200 by the gateway", codes, repeat(200, len(c.Hooks))},
		{"the TwiML was fetched once", len(twimlHooks), 1},
		{"the TwiML says, asks, prompts, records, hangs up", verbNames(twimlHooks[0].Verbs), []string{"Say", "Gather", "Say", "Record", "Hangup"}},
		{"the TwiML speaks Mandarin", twimlHooks[0].Verbs[0].Attrs["language"], "cmn-CN"},
		{"the key was posted to the gather action", gathers[0].Form.Get("Digits"), "1"},
		{"the gather answer leads to the recording", verbNames(gathers[0].Verbs), []string{"Say", "Record", "Hangup"}},
		{"one recording was made", len(c.Recordings), 1},
		{"the record action was answered with thanks", verbNames(c.HooksOf(twiliosim.HookRecord)[0].Verbs), []string{"Say", "Hangup"}},
		{"the ledger got sent, sent, answered, then delivered", updates, []channeltest.Update{
			up(ledger.StatusSent, "initiated"), up(ledger.StatusSent, "ringing"), up(ledger.StatusSent, "answered"), up(ledger.StatusDelivered, "completed")}},
		{"the key and the recording are the answers", answers, []channeltest.AnswerCall{
			{MessageID: m.ID, Answer: ledger.Answer{Digits: "1"}},
			{MessageID: m.ID, Answer: ledger.Answer{RecordingSID: c.Recordings[0], Duration: 4}, RecordingURL: recURL}}},
		{"nothing is redialled", len(redials), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !reflect.DeepEqual(tt.got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", tt.got, tt.want)
			}
		})
	}

	t.Run("FetchRecording downloads the recording's media with basic auth", func(t *testing.T) {
		body, ct, err := rig.v.FetchRecording(context.Background(), recURL)
		if err != nil {
			t.Fatalf("FetchRecording: %v", err)
		}
		defer body.Close()
		media, err := io.ReadAll(body)
		if err != nil {
			t.Fatal(err)
		}
		if ct != "audio/x-wav" || !bytes.Equal(media, twiliosim.ToneWAV(4)) {
			t.Fatalf("got %q, %d bytes; want audio/x-wav, the 4 s tone", ct, len(media))
		}
		reqs := rig.sim.Requests()
		last := reqs[len(reqs)-1]
		if last.Method != "GET" || last.Path != strings.TrimPrefix(recURL, rig.sim.URL())+".wav" ||
			last.Header.Get("Authorization") != "Basic "+basic(testSID, testToken) {
			t.Fatalf("the simulator saw %s %s with %q", last.Method, last.Path, last.Header.Get("Authorization"))
		}
	})
	t.Run("FetchRecording of a deleted recording is permanent", func(t *testing.T) {
		gone := rig.sim.RecordingsURL() + "/RE" + strings.Repeat("0", 32)
		_, _, err := rig.v.FetchRecording(context.Background(), gone)
		if se := channels.AsSendError(err); se.Class != channels.Permanent || se.HTTPStatus != 404 {
			t.Fatalf("FetchRecording = %v", err)
		}
	})
}

func repeat(v, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = v
	}
	return out
}

func TestVoiceCallOutcomesAgainstTheSimulator(t *testing.T) {
	redial := func(code, msg string) []channeltest.RedialCall {
		return []channeltest.RedialCall{{MessageID: voiceMsgID, After: voiceRedialIn, MaxRedials: voiceRedials, Reason: ledger.ErrorInfo{Code: code, Message: msg}}}
	}
	tests := []struct {
		name        string
		plan        twiliosim.CallPlan
		m           *ledger.Message
		statuses    []string
		last        ledger.Status
		lastCode    string
		wantDigits  []string
		wantRedials []channeltest.RedialCall
	}{
		{name: "a busy line is redialled with the configured delay and maximum", plan: twiliosim.CallPlan{Outcome: twiliosim.CallBusy}, m: followUp(),
			statuses: []string{"initiated", "busy"}, last: ledger.StatusSent, wantRedials: redial("busy", "the line was busy")},
		{name: "an unanswered call is redialled", plan: twiliosim.CallPlan{Outcome: twiliosim.CallNoAnswer}, m: followUp(),
			statuses: []string{"initiated", "ringing", "no-answer"}, last: ledger.StatusSent, wantRedials: redial("no-answer", "the call was not answered")},
		{name: "a failed call fails with its error code", plan: twiliosim.CallPlan{Outcome: twiliosim.CallFailed, ErrorCode: 13227}, m: followUp(),
			statuses: []string{"initiated", "failed"}, last: ledger.StatusFailed, lastCode: "13227"},
		{name: "a wrong key is asked again and the second key is the only answer", plan: twiliosim.CallPlan{Digits: []string{"9", "2"}}, m: questionOnly(),
			statuses: []string{"initiated", "ringing", "in-progress", "completed"}, last: ledger.StatusDelivered, wantDigits: []string{"2"}},
		{name: "no key at all is asked again, then the call ends without an answer", plan: twiliosim.CallPlan{}, m: questionOnly(),
			statuses: []string{"initiated", "ringing", "in-progress", "completed"}, last: ledger.StatusDelivered},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rig := newVoiceRig(t, tt.m, nil)
			rig.sim.ScriptCalls(tt.plan)
			c := rig.call(t, tt.m)
			updates, answers, redials := rig.rcv.recorded()
			if got := c.Statuses(); !reflect.DeepEqual(got, tt.statuses) {
				t.Errorf("statuses %v, want %v", got, tt.statuses)
			}
			if len(updates) != len(tt.statuses) {
				t.Fatalf("updates %+v", updates)
			}
			if l := updates[len(updates)-1]; l.Status != tt.last || l.ErrorCode != tt.lastCode {
				t.Errorf("last update %+v, want %s %q", l, tt.last, tt.lastCode)
			}
			var digits []string
			for _, a := range answers {
				digits = append(digits, a.Answer.Digits)
			}
			if !reflect.DeepEqual(digits, tt.wantDigits) {
				t.Errorf("answered %q, want %q", digits, tt.wantDigits)
			}
			for i := range tt.wantRedials {
				tt.wantRedials[i].ProviderID = c.SID
			}
			if !reflect.DeepEqual(redials, tt.wantRedials) {
				t.Errorf("redials %+v, want %+v", redials, tt.wantRedials)
			}
			if g := c.HooksOf(twiliosim.HookGather); tt.plan.Outcome == "" && (len(g) != 2 || !strings.Contains(g[1].URL, "retry=1")) {
				t.Errorf("want the question asked twice, the second time with retry=1: %+v", g)
			}
		})
	}
}

func TestVoiceLogsNoPhoneNumbersKeysOrRecordingURLs(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(&lockedWriter{w: &buf, mu: &mu}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m := followUp()
	rig := newVoiceRig(t, m, logger)
	rig.sim.ScriptCalls(twiliosim.CallPlan{Digits: []string{"7"}}, twiliosim.CallPlan{Digits: []string{"2"}})
	rig.call(t, m) // 7 is not a choice: asked again, no key the second time
	c := rig.call(t, m)
	if len(c.Recordings) == 0 {
		t.Fatal("no recording was made")
	}
	_, _, _ = rig.v.FetchRecording(context.Background(), rig.sim.RecordingsURL()+"/"+c.Recordings[0])
	_, _, _ = rig.v.FetchRecording(context.Background(), rig.sim.RecordingsURL()+"/RE"+strings.Repeat("0", 32))
	mu.Lock()
	logs := buf.String()
	mu.Unlock()
	if !strings.Contains(logs, voiceMsgID) {
		t.Fatalf("the log names no message id; is it logging at all?\n%s", logs)
	}
	for _, secret := range []string{voiceTo, testFrom, "4155550123", "Recordings/", m.Body, m.Voice.Gather.Prompt, "digits=", "Digits"} {
		if strings.Contains(logs, secret) {
			t.Errorf("the log contains %q:\n%s", secret, logs)
		}
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
