// Package channeltest is the shared test harness for channels (after
// courier's handlertest): outbound cases run a channel's real provider
// client against a loopback server answering mock responses keyed by URL,
// and assert the exact request, the provider id and the error class;
// inbound cases post raw webhook bodies with valid and invalid signatures.
// Every test transport refuses non-loopback hosts.
package channeltest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/ledger"
)

// ErrNotLoopback is returned by LoopbackOnly for any other destination.
var ErrNotLoopback = errors.New("channeltest: refusing a non-loopback destination")

// LoopbackOnly wraps a transport so it dials only 127.0.0.0/8, ::1 and
// localhost. It guards tests against ever reaching a real provider.
func LoopbackOnly(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.Proxy = nil
		t.DialContext = (&net.Dialer{Timeout: 5 * time.Second, Control: DialControl}).DialContext
		base = t
	}
	return loopbackRT{base}
}

type loopbackRT struct{ base http.RoundTripper }

func (l loopbackRT) RoundTrip(r *http.Request) (*http.Response, error) {
	if !IsLoopback(r.URL.Hostname()) {
		return nil, fmt.Errorf("%w: %s", ErrNotLoopback, r.URL.Host)
	}
	return l.base.RoundTrip(r)
}

// DialControl is a net.Dialer Control hook that refuses any address that is
// not loopback once names are resolved (so "localhost" pointing elsewhere
// is refused too).
func DialControl(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%w: %s", ErrNotLoopback, address)
	}
	return nil
}

// IsLoopback reports whether host is localhost or a loopback IP.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// MockResponse is a canned provider answer.
type MockResponse struct {
	Status  int
	Body    string
	Headers map[string]string
	// Delay holds the answer back (to provoke client timeouts).
	Delay time.Duration
}

// Recorded is a request the mock provider received.
type Recorded struct {
	Method string
	Path   string
	Header http.Header
	Form   url.Values
	Body   []byte
}

// OutboundCase is one send through a channel against the mock provider.
type OutboundCase struct {
	Label   string
	Message channels.Message
	// Responses are keyed by "METHOD /path" of the provider endpoint.
	Responses map[string]MockResponse
	// Unreachable points the channel at a closed port instead of the mock.
	Unreachable bool

	// ExpectedPath and ExpectedForm describe the request the provider must get
	// (ExpectedForm keys are checked exactly; other fields are ignored unless
	// listed in ExpectedAbsent).
	ExpectedPath   string
	ExpectedForm   url.Values
	ExpectedAbsent []string
	ExpectedHeader map[string]string
	// ExpectedProviderID is the id on success; ExpectedClass the error class on failure.
	ExpectedProviderID string
	ExpectedClass      channels.Class
	ExpectedCode       string
	ExpectedRetryAfter time.Duration
	ExpectUnconfirmed  bool
}

// ChannelFactory builds the channel under test for a provider base URL and
// the loopback-guarded transport it must use.
type ChannelFactory func(t *testing.T, apiURL string, transport http.RoundTripper) channels.Channel

// RunOutbound runs each case against a fresh mock provider.
func RunOutbound(t *testing.T, newChannel ChannelFactory, cases []OutboundCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.Label, func(t *testing.T) {
			var mu sync.Mutex
			var got []Recorded
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				form, _ := url.ParseQuery(string(body))
				mu.Lock()
				got = append(got, Recorded{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Form: form, Body: body})
				mu.Unlock()
				resp, ok := tc.Responses[r.Method+" "+r.URL.Path]
				if !ok {
					http.Error(w, `{"code":20404,"message":"no mock response for `+r.Method+" "+r.URL.Path+`","status":404}`, 404)
					return
				}
				if resp.Delay > 0 {
					select {
					case <-time.After(resp.Delay):
					case <-r.Context().Done():
						return
					}
				}
				for k, v := range resp.Headers {
					w.Header().Set(k, v)
				}
				if w.Header().Get("Content-Type") == "" {
					w.Header().Set("Content-Type", "application/json")
				}
				w.WriteHeader(resp.Status)
				_, _ = io.WriteString(w, resp.Body)
			}))
			defer srv.Close()
			apiURL := srv.URL
			if tc.Unreachable {
				apiURL = closedPortURL(t)
			}
			ch := newChannel(t, apiURL, LoopbackOnly(nil))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			res, err := ch.Send(ctx, tc.Message)

			if tc.ExpectedPath != "" {
				mu.Lock()
				reqs := append([]Recorded(nil), got...)
				mu.Unlock()
				if len(reqs) != 1 {
					t.Fatalf("provider got %d requests, want 1", len(reqs))
				}
				r := reqs[0]
				if r.Path != tc.ExpectedPath {
					t.Errorf("request path %q, want %q", r.Path, tc.ExpectedPath)
				}
				for k, want := range tc.ExpectedForm {
					if g := r.Form[k]; fmt.Sprint(g) != fmt.Sprint(want) {
						t.Errorf("form %s = %q, want %q", k, g, want)
					}
				}
				for _, k := range tc.ExpectedAbsent {
					if _, present := r.Form[k]; present {
						t.Errorf("form has %s, want it absent", k)
					}
				}
				for k, want := range tc.ExpectedHeader {
					if g := r.Header.Get(k); g != want {
						t.Errorf("header %s = %q, want %q", k, g, want)
					}
				}
			}
			if tc.ExpectedClass == 0 {
				if err != nil {
					t.Fatalf("Send: unexpected error %v", err)
				}
				if res.ProviderID != tc.ExpectedProviderID {
					t.Fatalf("provider id %q, want %q", res.ProviderID, tc.ExpectedProviderID)
				}
				return
			}
			var se *channels.SendError
			if !errors.As(err, &se) {
				t.Fatalf("Send: error %v (%T), want a *channels.SendError of class %s", err, err, tc.ExpectedClass)
			}
			if se.Class != tc.ExpectedClass {
				t.Errorf("class %s, want %s (%v)", se.Class, tc.ExpectedClass, se)
			}
			if tc.ExpectedCode != "" && se.Code != tc.ExpectedCode {
				t.Errorf("code %q, want %q", se.Code, tc.ExpectedCode)
			}
			if se.RetryAfter != tc.ExpectedRetryAfter {
				t.Errorf("retry after %s, want %s", se.RetryAfter, tc.ExpectedRetryAfter)
			}
			if se.Unconfirmed != tc.ExpectUnconfirmed {
				t.Errorf("unconfirmed %v, want %v", se.Unconfirmed, tc.ExpectUnconfirmed)
			}
		})
	}
}

func closedPortURL(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

// Update is a provider status report a webhook delivered to the Receiver.
type Update struct {
	MessageID string
	ledger.ProviderUpdate
}

// AnswerCall is an answer a webhook reported.
type AnswerCall struct {
	MessageID    string
	Answer       ledger.Answer
	RecordingURL string
}

// RedialCall is a redial a webhook asked for.
type RedialCall struct {
	MessageID, ProviderID string
	After                 time.Duration
	MaxRedials            int
	Reason                ledger.ErrorInfo
}

// RecordingReceiver is a channels.Receiver that remembers what it was told.
type RecordingReceiver struct {
	mu       sync.Mutex
	Updates  []Update
	Answers  []AnswerCall
	Redials  []RedialCall
	Inbounds []channels.InboundMessage
	OptOuts  []OptOutCall
	// InboundReply is what Inbound answers with.
	InboundReply string
	// Messages are the records Message returns.
	Messages map[string]*ledger.Message
	// Err, when set, is returned (to test storage outages).
	Err error
}

// Message returns a record from Messages.
func (r *RecordingReceiver) Message(_ context.Context, id string) (*ledger.Message, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.Err != nil {
		return nil, r.Err
	}
	if m, ok := r.Messages[id]; ok {
		return m, nil
	}
	return nil, ledger.ErrNotFound
}

// Answer records the answer.
func (r *RecordingReceiver) Answer(_ context.Context, id string, a ledger.Answer, recordingURL string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.Err != nil {
		return r.Err
	}
	r.Answers = append(r.Answers, AnswerCall{MessageID: id, Answer: a, RecordingURL: recordingURL})
	return nil
}

// Inbound records the inbound message; a repeated provider id is a
// duplicate. InboundReply is the reply it answers with.
func (r *RecordingReceiver) Inbound(_ context.Context, in channels.InboundMessage) (channels.InboundResult, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.Err != nil {
		return channels.InboundResult{}, r.Err
	}
	for _, seen := range r.Inbounds {
		if seen.ProviderID == in.ProviderID {
			return channels.InboundResult{Duplicate: true}, nil
		}
	}
	r.Inbounds = append(r.Inbounds, in)
	return channels.InboundResult{Reply: r.InboundReply}, nil
}

// OptOutCall is an opt-out a webhook reported.
type OptOutCall struct {
	Channel  string
	Who      ledger.Recipient
	Evidence string
}

// OptOut records the opt-out.
func (r *RecordingReceiver) OptOut(_ context.Context, channel string, who ledger.Recipient, evidence string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.Err != nil {
		return r.Err
	}
	r.OptOuts = append(r.OptOuts, OptOutCall{Channel: channel, Who: who, Evidence: evidence})
	return nil
}

// Redial records the redial.
func (r *RecordingReceiver) Redial(_ context.Context, id, providerID string, after time.Duration, maxRedials int, reason ledger.ErrorInfo) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.Err != nil {
		return r.Err
	}
	r.Redials = append(r.Redials, RedialCall{MessageID: id, ProviderID: providerID, After: after, MaxRedials: maxRedials, Reason: reason})
	return nil
}

// ProviderStatus records the update.
func (r *RecordingReceiver) ProviderStatus(_ context.Context, id string, u ledger.ProviderUpdate) (ledger.Applied, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.Err != nil {
		return ledger.AppliedUnknown, r.Err
	}
	r.Updates = append(r.Updates, Update{MessageID: id, ProviderUpdate: u})
	return ledger.AppliedChanged, nil
}

// InboundCase is one raw webhook request.
type InboundCase struct {
	Label  string
	Method string
	// Path with query, as the provider calls it (e.g. "/webhooks/twilio/status?m=01H…").
	Path string
	Form url.Values
	// Body is the raw body (XML, JSON); the encoded Form when nil.
	Body   []byte
	Header map[string]string
	// Signed signs the request with the channel's scheme; otherwise Header may
	// carry a forged signature or none.
	Signed bool
	// ReceiverErr makes the receiver fail (storage outage).
	ReceiverErr error
	// Messages are the records the receiver knows.
	Messages map[string]*ledger.Message
	// InboundReply is what the receiver answers an inbound message with.
	InboundReply     string
	ExpectedInbounds []channels.InboundMessage
	ExpectedOptOuts  []OptOutCall

	ExpectedStatus int
	// ExpectedBody is the exact answer; ExpectedBodyContains parts of it.
	ExpectedBody         string
	ExpectedBodyContains []string
	ExpectedUpdates      []Update
	ExpectedAnswers      []AnswerCall
	ExpectedRedials      []RedialCall
}

// Signer computes a provider signature for a full URL and form.
type Signer func(fullURL string, form url.Values) (header, value string)

// RunInbound runs each case against the channel's declared routes.
func RunInbound(t *testing.T, ch channels.Inbound, publicURL string, sign Signer, cases []InboundCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.Label, func(t *testing.T) {
			rcv := &RecordingReceiver{Err: tc.ReceiverErr, Messages: tc.Messages, InboundReply: tc.InboundReply}
			u, err := url.Parse(tc.Path)
			if err != nil {
				t.Fatal(err)
			}
			var route *channels.Route
			for _, r := range ch.Routes(rcv) {
				if r.Method == tc.Method && r.Path == u.Path {
					route = &r
				}
			}
			if route == nil {
				t.Fatalf("the channel declares no route %s %s", tc.Method, u.Path)
			}
			req := channels.WebhookRequest{URL: publicURL + tc.Path, Header: http.Header{}, Query: u.Query(), Form: tc.Form, Body: tc.Body}
			if req.Form == nil {
				req.Form = url.Values{}
			}
			if req.Body == nil {
				req.Body = []byte(req.Form.Encode())
			}
			for k, v := range tc.Header {
				req.Header.Set(k, v)
			}
			if tc.Signed {
				h, v := sign(req.URL, req.Form)
				req.Header.Set(h, v)
			}
			resp := route.Handle(context.Background(), req)
			if resp.Status != tc.ExpectedStatus {
				t.Fatalf("status %d, want %d (body %q)", resp.Status, tc.ExpectedStatus, resp.Body)
			}
			if tc.ExpectedBody != "" && string(resp.Body) != tc.ExpectedBody {
				t.Errorf("body %q, want %q", resp.Body, tc.ExpectedBody)
			}
			for _, part := range tc.ExpectedBodyContains {
				if !strings.Contains(string(resp.Body), part) {
					t.Errorf("body %q lacks %q", resp.Body, part)
				}
			}
			rcv.mu.Lock()
			defer rcv.mu.Unlock()
			if fmt.Sprintf("%+v", rcv.Updates) != fmt.Sprintf("%+v", tc.ExpectedUpdates) {
				t.Errorf("updates\n got %+v\nwant %+v", rcv.Updates, tc.ExpectedUpdates)
			}
			if fmt.Sprintf("%+v", rcv.Answers) != fmt.Sprintf("%+v", tc.ExpectedAnswers) {
				t.Errorf("answers\n got %+v\nwant %+v", rcv.Answers, tc.ExpectedAnswers)
			}
			if fmt.Sprintf("%+v", rcv.OptOuts) != fmt.Sprintf("%+v", tc.ExpectedOptOuts) {
				t.Errorf("opt-outs\n got %+v\nwant %+v", rcv.OptOuts, tc.ExpectedOptOuts)
			}
			if fmt.Sprintf("%+v", rcv.Inbounds) != fmt.Sprintf("%+v", tc.ExpectedInbounds) {
				t.Errorf("inbound\n got %+v\nwant %+v", rcv.Inbounds, tc.ExpectedInbounds)
			}
			if fmt.Sprintf("%+v", rcv.Redials) != fmt.Sprintf("%+v", tc.ExpectedRedials) {
				t.Errorf("redials\n got %+v\nwant %+v", rcv.Redials, tc.ExpectedRedials)
			}
		})
	}
}

// LogBuffer collects log output for assertions (the privacy scans); safe
// for concurrent writers.
type LogBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

// Write appends p.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
