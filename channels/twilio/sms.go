// Package twilio is the "sms" and "voice" channels: it sends SMS and places
// calls through Twilio with the official twilio-go client, and serves
// Twilio's signed webhooks: message status callbacks and inbound SMS, and
// for calls the TwiML, keypad answers, recordings and call status.
package twilio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"time"

	twiliogo "github.com/twilio/twilio-go"
	"github.com/twilio/twilio-go/client"
	openapi "github.com/twilio/twilio-go/rest/api/v2010"

	"github.com/patientmsg/gateway/channels"
)

// DefaultAPIURL is Twilio's REST API.
const DefaultAPIURL = "https://api.twilio.com"

// StatusPath is where Twilio posts message status callbacks.
const StatusPath = "/webhooks/twilio/status"

// Config is a Twilio account and where to reach it.
type Config struct {
	AccountSID          string
	AuthToken           string
	From                string // E.164 sender, unless MessagingServiceSID is set
	MessagingServiceSID string
	// APIURL is Twilio's API base; another value (a simulator, a staging
	// fake) reroutes the real client there.
	APIURL string
	// PublicURL is the gateway's public base URL, for callback URLs and for
	// checking callback signatures.
	PublicURL string
	// Timeout bounds one API call.
	Timeout time.Duration
	// Transport carries API calls; http.DefaultTransport when nil.
	Transport http.RoundTripper
	Logger    *slog.Logger
	// Rate is what Twilio lets the sender (number or Messaging Service)
	// send, in segments.
	Rate channels.Rate
}

// SMS is the "sms" channel.
type SMS struct {
	cfg       Config
	target    *url.URL
	validator client.RequestValidator
	log       *slog.Logger
}

// NewSMS returns the SMS channel for the account.
func NewSMS(cfg Config) (*SMS, error) {
	if cfg.AccountSID == "" || cfg.AuthToken == "" {
		return nil, errors.New("twilio: account SID and auth token are required")
	}
	if cfg.From == "" && cfg.MessagingServiceSID == "" {
		return nil, errors.New("twilio: a From number or a Messaging Service SID is required")
	}
	if cfg.APIURL == "" {
		cfg.APIURL = DefaultAPIURL
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Transport == nil {
		cfg.Transport = http.DefaultTransport
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	target, err := apiTarget(cfg.APIURL)
	if err != nil {
		return nil, err
	}
	return &SMS{cfg: cfg, target: target, validator: client.NewRequestValidator(cfg.AuthToken),
		log: cfg.Logger.With("comp", "channel", "channel", "sms")}, nil
}

// apiTarget returns the host API calls are rerouted to, nil for Twilio's own.
func apiTarget(apiURL string) (*url.URL, error) {
	if apiURL == DefaultAPIURL {
		return nil, nil
	}
	u, err := url.Parse(apiURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("twilio: API URL %q is not an absolute URL", apiURL)
	}
	return u, nil
}

// Name is the channel's API name.
func (s *SMS) Name() string { return "sms" }

// Sender is the from-number, or the Messaging Service when one is set, at
// its configured rate.
func (s *SMS) Sender() channels.Sender {
	id := s.cfg.From
	if s.cfg.MessagingServiceSID != "" {
		id = s.cfg.MessagingServiceSID
	}
	return channels.Sender{ID: id, Rate: s.cfg.Rate}
}

// StatusCallbackURL is the callback URL given to Twilio for a message.
func (s *SMS) StatusCallbackURL(messageID string) string {
	return s.cfg.PublicURL + StatusPath + "?m=" + url.QueryEscape(messageID)
}

// Send creates the message at Twilio.
func (s *SMS) Send(ctx context.Context, m channels.Message) (channels.Result, error) {
	if m.To.Phone == "" {
		return channels.Result{}, &channels.SendError{Class: channels.Permanent, Code: "no_recipient", Message: "the message has no phone number"}
	}
	tr := &callTransport{base: s.cfg.Transport, target: s.target, ctx: ctx}
	rc := twiliogo.NewRestClientWithParams(twiliogo.ClientParams{Client: s.client(tr)})
	params := &openapi.CreateMessageParams{}
	params.SetTo(m.To.Phone).SetBody(m.Body).SetStatusCallback(s.StatusCallbackURL(m.ID))
	if s.cfg.MessagingServiceSID != "" {
		params.SetMessagingServiceSid(s.cfg.MessagingServiceSID)
	} else {
		params.SetFrom(s.cfg.From)
	}
	msg, err := rc.Api.CreateMessage(params)
	if err != nil {
		return channels.Result{}, classify(err, tr)
	}
	if msg == nil || msg.Sid == nil || *msg.Sid == "" {
		return channels.Result{}, &channels.SendError{Class: channels.Retryable, Code: "bad_response", Unconfirmed: true,
			Message: "Twilio answered without a message SID", HTTPStatus: tr.status}
	}
	return channels.Result{ProviderID: *msg.Sid}, nil
}

func (s *SMS) client(tr http.RoundTripper) *client.Client {
	return newAPIClient(s.cfg.AccountSID, s.cfg.AuthToken, s.cfg.Timeout, tr)
}

// newAPIClient returns a twilio-go client for one API call over tr.
func newAPIClient(accountSID, authToken string, timeout time.Duration, tr http.RoundTripper) *client.Client {
	c := &client.Client{
		Credentials: client.NewCredentials(accountSID, authToken),
		HTTPClient: &http.Client{
			Transport: tr,
			Timeout:   timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
	}
	c.SetAccountSid(accountSID)
	return c
}

// errorClasses maps Twilio error codes to what the gateway does about them.
// Codes not listed fall back on the HTTP status (5xx retry, other 4xx permanent).
var errorClasses = map[int]channels.Class{
	20429: channels.Throttled, // too many requests
	30001: channels.Throttled, // queue overflow: back off
	21610: channels.OptedOut,  // the recipient replied STOP
	// Rejected credentials are the gateway's configuration, not the message:
	// retry with backoff (and log loudly) so messages go out once fixed.
	20003: channels.Retryable,
	21211: channels.Permanent, // invalid To number
	21408: channels.Permanent, // region not enabled
	21606: channels.Permanent, // From is not a valid number of this account
	21612: channels.Permanent, // cannot route between these numbers
	21614: channels.Permanent, // To is not a mobile number
	21617: channels.Permanent, // body too long
	30003: channels.Permanent, // unreachable handset
	30004: channels.Permanent, // message blocked
	30005: channels.Permanent, // unknown destination
	30006: channels.Permanent, // landline or unreachable carrier
	30007: channels.Permanent, // carrier filtering
}

// numberLike finds digit runs long enough to be phone numbers, which Twilio
// puts in some error messages; they are masked before the message is stored.
var numberLike = regexp.MustCompile(`\+?\d[\d\s().-]{5,}\d`)

func classify(err error, tr *callTransport) *channels.SendError {
	return classifyWith(err, tr, nil)
}

// classifyWith classifies like classify, looking a Twilio error code up in
// extra (a channel's own codes) before errorClasses.
func classifyWith(err error, tr *callTransport, extra map[int]channels.Class) *channels.SendError {
	var te *client.TwilioRestError
	if errors.As(err, &te) {
		status := te.Status
		if status == 0 {
			status = tr.status
		}
		se := &channels.SendError{Code: strconv.Itoa(te.Code), HTTPStatus: status,
			Message: numberLike.ReplaceAllString(te.Message, "[number]"), Err: err}
		c, ok := extra[te.Code]
		if !ok {
			c, ok = errorClasses[te.Code]
		}
		if ok {
			se.Class = c
		} else {
			switch {
			case status == http.StatusTooManyRequests:
				se.Class = channels.Throttled
			case status >= 500 || status == 0:
				se.Class = channels.Retryable
			default:
				se.Class = channels.Permanent
			}
		}
		if se.Class == channels.Throttled {
			se.RetryAfter = tr.retryAfter
		}
		return se
	}
	// No Twilio error body: a transport failure, or an error page that was not Twilio JSON.
	if tr.status >= 500 {
		return &channels.SendError{Class: channels.Retryable, Code: "http_" + strconv.Itoa(tr.status), HTTPStatus: tr.status,
			Message: "Twilio answered " + http.StatusText(tr.status), Err: err}
	}
	if tr.status == http.StatusTooManyRequests {
		return &channels.SendError{Class: channels.Throttled, Code: "http_429", HTTPStatus: 429, RetryAfter: tr.retryAfter,
			Message: "Twilio answered Too Many Requests", Err: err}
	}
	if tr.status >= 400 {
		return &channels.SendError{Class: channels.Permanent, Code: "http_" + strconv.Itoa(tr.status), HTTPStatus: tr.status,
			Message: "Twilio answered " + http.StatusText(tr.status), Err: err}
	}
	var ne net.Error
	timeout := errors.As(err, &ne) && ne.Timeout()
	switch {
	case timeout || errors.Is(err, context.DeadlineExceeded):
		return &channels.SendError{Class: channels.Retryable, Code: "timeout", Unconfirmed: tr.wrote,
			Message: "no answer from Twilio in time; it may have accepted the message", Err: err}
	case errors.Is(err, context.Canceled):
		return &channels.SendError{Class: channels.Retryable, Code: "canceled", Unconfirmed: tr.wrote,
			Message: "the send was interrupted (shutdown)", Err: err}
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return &channels.SendError{Class: channels.Retryable, Code: "connect", Message: "could not connect to Twilio", Err: err}
	}
	return &channels.SendError{Class: channels.Retryable, Code: "transport", Unconfirmed: tr.wrote,
		Message: "the call to Twilio failed before an answer", Err: err}
}
