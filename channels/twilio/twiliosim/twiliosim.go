// Package twiliosim is a loopback simulator of Twilio's Programmable
// Messaging REST API. It speaks Twilio's real wire format, so the real
// twilio-go client works against it end to end without credentials or
// network access.
//
// The simulator serves POST /2010-04-01/Accounts/{AccountSid}/Messages.json
// with HTTP basic authentication, answers with Twilio's Message resource or
// Twilio's error JSON, honours Twilio's test "magic numbers", can be
// scripted to fail, throttle or slow down, and posts signed status
// callbacks (sent, then delivered/undelivered/failed) to loopback
// StatusCallback URLs. It never contacts a non-loopback address.
//
// With Options.Voice it also serves the Calls API (Calls.json): it calls
// back like Twilio's voice platform, fetching the call's TwiML, pressing
// programmed keys, making recordings it serves as WAV media (see voice.go).
//
// It is meant for tests, benchmarks and the local dev command. It logs
// neither phone numbers nor message bodies.
package twiliosim

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"
)

// APIVersion is the Twilio REST API version the simulator implements.
const APIVersion = "2010-04-01"

// Twilio test "magic numbers". Sending to one of the MagicTo numbers makes
// the simulator answer with the same error the real Twilio API gives for
// test credentials, so failures can be triggered from curl.
const (
	// MagicToInvalid as To is answered with 400, code 21211 (invalid 'To' number).
	MagicToInvalid = "+15005550001"
	// MagicToCannotRoute as To is answered with 400, code 21612 (cannot route).
	MagicToCannotRoute = "+15005550002"
	// MagicToUnsubscribed as To is answered with 400, code 21610 (unsubscribed recipient).
	MagicToUnsubscribed = "+15005550004"
	// MagicToNotMobile as To is answered with 400, code 21614 (not a mobile number).
	MagicToNotMobile = "+15005550009"
	// MagicFromValid is Twilio's always-valid test sender. The simulator uses
	// it as the sender of messages created with a MessagingServiceSid.
	MagicFromValid = "+15005550006"
)

// Twilio error codes the simulator answers with.
const (
	// CodeBadRequest is used when the request body cannot be parsed.
	CodeBadRequest = 20001
	// CodeAuthenticate is answered (HTTP 401) for missing or wrong credentials.
	CodeAuthenticate = 20003
	// CodeMethodNotAllowed is answered (HTTP 405) for a non-POST on Messages.json.
	CodeMethodNotAllowed = 20004
	// CodeNotFound is answered (HTTP 404) for unknown paths or another account's path.
	CodeNotFound = 20404
	// CodeTooManyRequests is Twilio's code for HTTP 429.
	CodeTooManyRequests = 20429
	// CodeInternalError is Twilio's code for HTTP 500.
	CodeInternalError = 20500
	// CodeServiceUnavailable is Twilio's code for HTTP 503; also answered while closing.
	CodeServiceUnavailable = 20503
	// CodeInvalidTo means the 'To' number is not a valid phone number.
	CodeInvalidTo = 21211
	// CodeBodyRequired means the message has no Body (nor media or content).
	CodeBodyRequired = 21602
	// CodeFromRequired means neither From nor MessagingServiceSid was given.
	CodeFromRequired = 21603
	// CodeToRequired means To was not given.
	CodeToRequired = 21604
	// CodeUnsubscribed means the recipient replied STOP to this sender.
	CodeUnsubscribed = 21610
	// CodeCannotRoute means the To/From combination cannot be routed.
	CodeCannotRoute = 21612
	// CodeNotMobile means the 'To' number is not a mobile number.
	CodeNotMobile = 21614
	// CodeUnreachable is the default ErrorCode of an "undelivered" callback.
	CodeUnreachable = 30003
	// CodeUnknownFailure is the default ErrorCode of a "failed" callback.
	CodeUnknownFailure = 30008
)

// Message statuses used in responses and status callbacks.
const (
	// StatusQueued is the status of a message created with a From number.
	StatusQueued = "queued"
	// StatusAccepted is the status of a message created with a MessagingServiceSid.
	StatusAccepted = "accepted"
	// StatusSent is the first status callback of every accepted message.
	StatusSent = "sent"
	// StatusDelivered is the default final status.
	StatusDelivered = "delivered"
	// StatusUndelivered is a final status carrying an ErrorCode.
	StatusUndelivered = "undelivered"
	// StatusFailed is a final status carrying an ErrorCode.
	StatusFailed = "failed"
)

// DefaultCallbackDelay is the pause before each status callback when
// Options.CallbackDelay is zero.
const DefaultCallbackDelay = 2 * time.Millisecond

// callbackTimeout bounds every status callback POST.
const callbackTimeout = 5 * time.Second

// Options configures a Server. The zero value is valid.
type Options struct {
	// AccountSID is the account the simulator accepts. Empty generates a
	// valid one ("AC" + 32 lowercase hex digits).
	AccountSID string
	// AuthToken is the token the simulator accepts and signs callbacks
	// with. Empty generates a valid one (32 lowercase hex digits).
	AuthToken string
	// CallbackDelay is the pause before each status callback. Zero means
	// DefaultCallbackDelay; a negative value means no pause.
	CallbackDelay time.Duration
	// Logger receives debug records (SIDs, statuses, codes; never phone
	// numbers, bodies or URLs). Nil discards them.
	Logger *slog.Logger
	// NoRecord keeps only counters (see Stats): Requests, Callbacks and
	// MessagesTo then report nothing. Use it for long benchmarks.
	NoRecord bool
	// Voice serves the Calls API too (see voice.go): Calls.json, the
	// calls' webhooks and recording media. Without it those paths answer
	// 404 like every resource the simulator does not implement.
	Voice bool
}

// Server is a running Twilio simulator. All methods are safe for
// concurrent use.
type Server struct {
	accountSID string
	authToken  string
	url        string
	cbDelay    time.Duration
	log        *slog.Logger
	noRecord   bool
	voiceOn    bool

	srv       *http.Server
	serveDone chan struct{}
	closing   chan struct{}
	closeOnce sync.Once

	cbCtx       context.Context
	cbCancel    context.CancelFunc
	cbTransport *http.Transport
	cbClient    *http.Client
	cbWG        sync.WaitGroup

	mu        sync.Mutex
	closed    bool
	script    []Reply
	latency   time.Duration
	drop      bool
	retries   int           // SetCallbackRetries
	retryWait time.Duration // between a callback's attempts
	final     string
	finalCode int
	requests  []Request
	callbacks []Callback
	stats     Stats
	inFlight  int
	pending   int
	idle      chan struct{} // closed whenever pending == 0
	voice     voiceState
	// messages are the accepted messages the read side serves (read.go).
	messages map[string]*stored
	fetches  int
	lists    int
	// blocked are the handsets that texted STOP (optout.go).
	blocked map[string]bool
}

// Request is one HTTP request the simulator answered, as recorded for
// assertions.
type Request struct {
	// Method is the HTTP method.
	Method string
	// Path is the URL path.
	Path string
	// Form holds the parsed form body (nil when it was not parsed, e.g.
	// for unauthenticated requests).
	Form url.Values
	// Header holds the request headers.
	Header http.Header
	// At is when the request arrived.
	At time.Time
	// Reply is the HTTP status code answered.
	Reply int
	// Code is the Twilio error code answered, 0 on success.
	Code int
	// SID is the message SID created, empty unless Reply is 201 (with
	// Options.Voice: the call SID created, or the recording SID served).
	SID string
}

// Callback is one status callback attempt.
type Callback struct {
	// MessageSID is the SID of the message the callback reports on.
	MessageSID string
	// URL is the StatusCallback URL.
	URL string
	// Status is the MessageStatus posted ("sent", "delivered", ...).
	Status string
	// ErrorCode is the ErrorCode posted, 0 when none was.
	ErrorCode int
	// Code is the HTTP status the receiver answered, 0 when none.
	Code int
	// Err describes why no answer was received (refused non-loopback
	// host, connection error, timeout); empty when one was.
	Err string
	// At is when the attempt finished.
	At time.Time
}

// Stats are the simulator's counters; they are kept even with
// Options.NoRecord.
type Stats struct {
	// Requests counts every HTTP request answered.
	Requests int
	// Accepted counts messages created (201 answers).
	Accepted int
	// Rejected counts every error answer (4xx and 5xx).
	Rejected int
	// Callbacks counts status callbacks attempted.
	Callbacks int
	// CallbackErrors counts attempts that were refused, failed, or were
	// answered with a non-2xx status.
	CallbackErrors int
	// InFlight is the number of message-create requests being processed
	// right now (for instance waiting out their latency). Reset leaves it
	// alone.
	InFlight int
	// Calls counts calls created (201 answers of Calls.json).
	Calls int
	// CallWebhooks counts requests made for calls (progress callbacks,
	// TwiML fetches, actions, recording callbacks); CallWebhookErrors
	// those refused, failed, or answered with a non-2xx status.
	CallWebhooks      int
	CallWebhookErrors int
}

// errNonLoopback is reported for callbacks whose host is not loopback.
var errNonLoopback = errors.New("twiliosim: refusing non-loopback callback host")

// New starts a simulator on 127.0.0.1 with an ephemeral port. It panics if
// it cannot listen, like httptest.NewServer. Call Close when done.
func New(opts Options) *Server {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("twiliosim: listen on loopback: %v", err))
	}
	s := &Server{
		accountSID: opts.AccountSID,
		authToken:  opts.AuthToken,
		url:        "http://" + ln.Addr().String(),
		cbDelay:    opts.CallbackDelay,
		log:        opts.Logger,
		noRecord:   opts.NoRecord,
		voiceOn:    opts.Voice,
		voice:      voiceState{calls: map[string]*CallRecord{}, recordings: map[string]int{}},
		serveDone:  make(chan struct{}),
		closing:    make(chan struct{}),
		final:      StatusDelivered,
		idle:       make(chan struct{}),
	}
	close(s.idle)
	if s.accountSID == "" {
		s.accountSID = "AC" + randHex(16)
	}
	if s.authToken == "" {
		s.authToken = randHex(16)
	}
	if s.cbDelay == 0 {
		s.cbDelay = DefaultCallbackDelay
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.cbCtx, s.cbCancel = context.WithCancel(context.Background())
	dialer := &net.Dialer{Timeout: callbackTimeout, Control: loopbackOnly}
	s.cbTransport = &http.Transport{
		Proxy:                 nil, // never go through a proxy
		DialContext:           dialer.DialContext,
		MaxIdleConnsPerHost:   32,
		MaxConnsPerHost:       64,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: callbackTimeout,
	}
	s.cbClient = &http.Client{
		Transport: s.cbTransport,
		Timeout:   callbackTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // Twilio does not follow redirects either
		},
	}
	s.srv = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	go func() {
		defer close(s.serveDone)
		_ = s.srv.Serve(ln) // returns http.ErrServerClosed on Close
	}()
	s.log.Debug("twiliosim: listening", "url", s.url)
	return s
}

// URL returns the simulator's base URL, http://127.0.0.1:port.
func (s *Server) URL() string { return s.url }

// MessagesURL returns the full URL of this account's Messages.json endpoint.
func (s *Server) MessagesURL() string {
	return s.url + "/" + APIVersion + "/Accounts/" + s.accountSID + "/Messages.json"
}

// AccountSID returns the account SID the simulator accepts.
func (s *Server) AccountSID() string { return s.accountSID }

// AuthToken returns the auth token the simulator accepts and signs with.
func (s *Server) AuthToken() string { return s.authToken }

// Close stops the server, waiting for in-flight requests (requests still
// in their simulated latency are answered 503), cancels status callbacks
// not yet attempted and waits for every callback goroutine to return. Use
// WaitCallbacks first to let callbacks finish. Close is idempotent.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.closing)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := s.srv.Shutdown(ctx); err != nil {
			_ = s.srv.Close()
		}
		cancel()
		<-s.serveDone
		s.mu.Lock()
		s.closed = true // no callback goroutine is started after this
		s.mu.Unlock()
		s.cbCancel()
		s.cbWG.Wait()
		s.cbTransport.CloseIdleConnections()
	})
}

// Script queues replies: the next len(rs) valid message-create requests
// get them in order (after any replies queued before), then default
// behaviour resumes. Requests rejected by authentication or field
// validation do not consume scripted replies, and a scripted reply takes
// precedence over magic numbers. Script panics on a Reply with an
// unsupported Status or Final.
func (s *Server) Script(rs ...Reply) {
	for _, r := range rs {
		r.mustValidate()
	}
	s.mu.Lock()
	s.script = append(s.script, rs...)
	s.mu.Unlock()
}

// SetLatency sets the default delay before answering each valid
// message-create request. A Reply with its own Latency overrides it.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	s.latency = d
	s.mu.Unlock()
}

// SetDropCallbacks makes the simulator send no status callbacks at all
// (true) or send them as requested (false, the default).
func (s *Server) SetDropCallbacks(drop bool) {
	s.mu.Lock()
	s.drop = drop
	s.mu.Unlock()
}

// SetCallbackRetries makes the simulator post a status callback again,
// up to retries more times, every wait, while the receiver answers 5xx or
// cannot be reached: what Twilio does for a StatusCallback URL with the
// connection overrides #rc=retries&rp=5xx,ct. The default is 0: one
// attempt, as without overrides.
func (s *Server) SetCallbackRetries(retries int, wait time.Duration) {
	s.mu.Lock()
	s.retries, s.retryWait = retries, wait
	s.mu.Unlock()
}

// SetFinal sets the default final callback status of accepted messages:
// "delivered" (the default), "undelivered", "failed", or "sent" (no final
// callback after "sent"). errorCode is posted as ErrorCode for undelivered
// and failed; 0 selects 30003 and 30008 respectively. SetFinal panics on
// any other status.
func (s *Server) SetFinal(status string, errorCode int) {
	if !validFinal(status) || status == "" {
		panic(fmt.Sprintf("twiliosim: unsupported final status %q", status))
	}
	s.mu.Lock()
	s.final, s.finalCode = status, errorCode
	s.mu.Unlock()
}

// Requests returns copies of the recorded requests, oldest first. It is
// empty with Options.NoRecord.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, len(s.requests))
	for i, r := range s.requests {
		r.Form = cloneValues(r.Form)
		r.Header = r.Header.Clone()
		out[i] = r
	}
	return out
}

// Accepted returns how many messages were created (201 answers).
func (s *Server) Accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats.Accepted
}

// MessagesTo returns how many recorded messages to the given To address
// were created. It is always 0 with Options.NoRecord.
func (s *Server) MessagesTo(to string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.requests {
		if r.Reply == http.StatusCreated && strings.HasPrefix(r.SID, "SM") && r.Form.Get("To") == to {
			n++
		}
	}
	return n
}

// Callbacks returns the recorded status callback attempts in the order
// they finished. It is empty with Options.NoRecord.
func (s *Server) Callbacks() []Callback {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Callback(nil), s.callbacks...)
}

// Stats returns the simulator's counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.InFlight = s.inFlight
	return st
}

// Reset forgets recorded requests and callbacks, zeroes the counters and
// drops scripted replies not yet used. Defaults set with SetLatency,
// SetDropCallbacks and SetFinal are kept; callbacks already scheduled
// still run and are recorded.
func (s *Server) Reset() {
	s.mu.Lock()
	s.requests, s.callbacks, s.script = nil, nil, nil
	s.stats = Stats{}
	s.voice.plans, s.voice.order = nil, nil
	s.voice.calls = map[string]*CallRecord{} // calls still running are no longer recorded
	s.mu.Unlock()
}

// WaitCallbacks blocks until every status callback scheduled so far has
// been attempted (or cancelled by Close), or ctx is done.
func (s *Server) WaitCallbacks(ctx context.Context) error {
	s.mu.Lock()
	idle := s.idle
	s.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// randHex returns 2n lowercase hex digits from crypto/rand.
func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

// cloneValues deep-copies form values.
func cloneValues(v url.Values) url.Values {
	if v == nil {
		return nil
	}
	out := make(url.Values, len(v))
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

// isLoopbackHost reports whether host (without port or brackets) names
// the loopback interface.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// loopbackOnly is a net.Dialer Control hook: it runs after name
// resolution and before connect, and refuses any non-loopback address, so
// even a "localhost" resolving elsewhere is never dialled.
func loopbackOnly(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return errNonLoopback
	}
	return nil
}
