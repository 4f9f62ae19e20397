package twilio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	twiliogo "github.com/twilio/twilio-go"
	"github.com/twilio/twilio-go/client"
	openapi "github.com/twilio/twilio-go/rest/api/v2010"

	"github.com/patientmsg/gateway/channels"
)

// Webhook paths of the voice channel. Twilio is given them as absolute
// URLs under VoiceConfig.PublicURL, each with the message id as ?m=.
const (
	// VoiceTwiMLPath answers the TwiML a call plays.
	VoiceTwiMLPath = "/webhooks/twilio/voice/twiml"
	// VoiceGatherPath takes the key the patient pressed (<Gather> action).
	VoiceGatherPath = "/webhooks/twilio/voice/gather"
	// VoiceRecordPath ends the call after a recording (<Record> action).
	VoiceRecordPath = "/webhooks/twilio/voice/record"
	// VoiceRecordingPath takes recording status callbacks.
	VoiceRecordingPath = "/webhooks/twilio/voice/recording"
	// VoiceTranscriptionPath takes a recording's transcript (<Record
	// transcribeCallback>).
	VoiceTranscriptionPath = "/webhooks/twilio/voice/transcription"
	// VoiceStatusPath takes call progress callbacks.
	VoiceStatusPath = "/webhooks/twilio/voice/status"
)

// Voice defaults.
const (
	// DefaultMaxRedials is the usual VoiceConfig.MaxRedials: a busy or
	// unanswered call gets two more calls.
	DefaultMaxRedials = 2
	// DefaultRedialDelay is the wait before calling again.
	DefaultRedialDelay = 30 * time.Minute
	// maxSayRunes is the longest text Twilio's <Say> speaks.
	maxSayRunes = 4096
)

// RecordingExtension is appended to a RecordingUrl to download its media.
// Twilio serves a recording as WAV (audio/x-wav) or MP3 (audio/mpeg); WAV
// is what it records, so nothing is lost to a transcode, and it is what
// the simulator can serve truthfully.
const RecordingExtension = ".wav"

// VoiceConfig is a Twilio account placing follow-up calls.
type VoiceConfig struct {
	AccountSID string
	AuthToken  string
	// From is the E.164 caller id, a Twilio number of the account.
	From string
	// APIURL is Twilio's API base (DefaultAPIURL when empty); another value
	// reroutes the real client there.
	APIURL string
	// PublicURL is the gateway's public base URL: calls fetch their TwiML
	// and post their callbacks under it, and signatures are checked
	// against it. Required.
	PublicURL string
	// Timeout bounds one API call and the wait for a recording's headers
	// (10 s when zero).
	Timeout time.Duration
	// Transport carries API calls and recording downloads;
	// http.DefaultTransport when nil.
	Transport http.RoundTripper
	Logger    *slog.Logger
	// MaxRedials is how many further calls a busy or unanswered call gets
	// (DefaultMaxRedials, 3 calls in all, is the usual setting). 0 means
	// none: the zero value never calls a patient more than once.
	MaxRedials int
	// CallsPerSecond is the account's limit on new calls (Twilio's CPS),
	// 1 unless the account was granted more; calls are spaced to it.
	CallsPerSecond float64
	// RedialDelay is the wait before calling again (DefaultRedialDelay when zero).
	RedialDelay time.Duration
}

// The voice channel's parts of the channel contract.
var (
	_ channels.Channel          = (*Voice)(nil)
	_ channels.Inbound          = (*Voice)(nil)
	_ channels.RecordingFetcher = (*Voice)(nil)
)

// Voice is the "voice" channel: follow-up calls that speak a message, may
// ask a one-key question and may record a spoken answer.
type Voice struct {
	cfg       VoiceConfig
	target    *url.URL
	apiHost   string // the host of RecordingUrls this channel downloads
	validator client.RequestValidator
	log       *slog.Logger
}

// NewVoice returns the voice channel for the account.
func NewVoice(cfg VoiceConfig) (*Voice, error) {
	if cfg.AccountSID == "" || cfg.AuthToken == "" {
		return nil, errors.New("twilio voice: account SID and auth token are required")
	}
	if cfg.From == "" {
		return nil, errors.New("twilio voice: a From number is required")
	}
	cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	if u, err := url.Parse(cfg.PublicURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("twilio voice: public URL %q must be an absolute http(s) URL: calls fetch their TwiML there", cfg.PublicURL)
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
	cfg.MaxRedials = max(cfg.MaxRedials, 0)
	if cfg.RedialDelay <= 0 {
		cfg.RedialDelay = DefaultRedialDelay
	}
	target, err := apiTarget(cfg.APIURL)
	if err != nil {
		return nil, err
	}
	v := &Voice{cfg: cfg, target: target, apiHost: "api.twilio.com", validator: client.NewRequestValidator(cfg.AuthToken),
		log: cfg.Logger.With("comp", "channel", "channel", "voice")}
	if target != nil {
		v.apiHost = target.Host
	}
	return v, nil
}

// Name is the channel's API name.
func (v *Voice) Name() string { return "voice" }

// Sender is the caller id at the account's calls per second: a hard
// limit, so calls are spaced.
func (v *Voice) Sender() channels.Sender {
	return channels.Sender{ID: v.cfg.From, Rate: channels.Rate{PerSecond: v.cfg.CallsPerSecond, Spaced: true}}
}

// webhookURL is the absolute URL of a voice webhook for a message.
func (v *Voice) webhookURL(path, messageID string) string {
	return v.cfg.PublicURL + path + "?m=" + url.QueryEscape(messageID)
}

// voiceErrorClasses are the Calls API's own codes, looked up before the
// shared errorClasses.
var voiceErrorClasses = map[int]channels.Class{
	13223: channels.Permanent, // invalid phone number format
	13224: channels.Permanent, // number not supported or invalid
	13226: channels.Permanent, // invalid country code
	13227: channels.Permanent, // no international authorization
	21205: channels.Permanent, // Url is not a valid URL (configuration)
	21210: channels.Permanent, // From is not a verified caller id of the account
	21215: channels.Permanent, // geo permissions do not allow calling this number
	21216: channels.Permanent, // the account may not call this number
	21217: channels.Permanent, // the number does not appear to be valid
}

// Send places the call at Twilio. The call then fetches its TwiML from
// VoiceTwiMLPath and reports on VoiceStatusPath.
func (v *Voice) Send(ctx context.Context, m channels.Message) (channels.Result, error) {
	if m.To.Phone == "" {
		return channels.Result{}, &channels.SendError{Class: channels.Permanent, Code: "no_recipient", Message: "the message has no phone number"}
	}
	if err := checkVoiceMessage(m); err != nil {
		return channels.Result{}, err
	}
	tr := &callTransport{base: v.cfg.Transport, target: v.target, ctx: ctx}
	rc := twiliogo.NewRestClientWithParams(twiliogo.ClientParams{
		Client: newAPIClient(v.cfg.AccountSID, v.cfg.AuthToken, v.cfg.Timeout, tr)})
	params := &openapi.CreateCallParams{}
	params.SetTo(m.To.Phone).SetFrom(v.cfg.From).
		SetUrl(v.webhookURL(VoiceTwiMLPath, m.ID)).SetMethod(http.MethodPost).
		SetStatusCallback(v.webhookURL(VoiceStatusPath, m.ID)).
		SetStatusCallbackEvent([]string{"initiated", "ringing", "answered", "completed"}).
		SetStatusCallbackMethod(http.MethodPost)
	call, err := rc.Api.CreateCall(params)
	if err != nil {
		se := classifyWith(err, tr, voiceErrorClasses)
		v.log.Debug("call not placed", "msg_id", m.ID, "class", se.Class.String(), "code", se.Code)
		return channels.Result{}, se
	}
	if call == nil || call.Sid == nil || !validSid(*call.Sid, "CA") {
		return channels.Result{}, &channels.SendError{Class: channels.Retryable, Code: "bad_response", Unconfirmed: true,
			Message: "Twilio answered without a call SID", HTTPStatus: tr.status}
	}
	v.log.Debug("call placed", "msg_id", m.ID, "provider_id", *call.Sid)
	return channels.Result{ProviderID: *call.Sid}, nil
}

// checkVoiceMessage refuses, before any call is placed, a message a call
// cannot play.
func checkVoiceMessage(m channels.Message) *channels.SendError {
	bad := func(msg string) *channels.SendError {
		return &channels.SendError{Class: channels.Permanent, Code: "bad_voice_message", Message: msg}
	}
	var g, r bool
	if m.Voice != nil {
		g, r = m.Voice.Gather != nil, m.Voice.Record != nil
	}
	if strings.TrimSpace(m.Body) == "" && !g && !r {
		return bad("the call has nothing to say")
	}
	texts := []string{m.Body}
	if g {
		gt := m.Voice.Gather
		if gt.Digits == "" || strings.Trim(gt.Digits, "0123456789*#") != "" || len(gt.Digits) > 12 {
			return bad("the question's accepted keys must be 1 to 12 of 0-9, * and #")
		}
		if strings.TrimSpace(gt.Prompt) == "" {
			return bad("the question has no prompt")
		}
		if gt.Timeout < 0 || gt.Timeout > maxGatherTimeout {
			return bad(fmt.Sprintf("the question's timeout must be 0 to %d seconds", maxGatherTimeout))
		}
		texts = append(texts, gt.Prompt)
	}
	if r {
		rec := m.Voice.Record
		if rec.MaxLength < 0 || rec.MaxLength > maxRecordLength {
			return bad(fmt.Sprintf("the recording's max length must be 0 to %d seconds", maxRecordLength))
		}
		texts = append(texts, rec.Prompt)
	}
	for _, t := range texts {
		if utf8.RuneCountInString(t) > maxSayRunes {
			return bad(fmt.Sprintf("a text to speak is longer than %d characters", maxSayRunes))
		}
	}
	return nil
}

// recordingPath is the path of a RecordingUrl of the account.
var recordingPath = regexp.MustCompile(`^/2010-04-01/Accounts/(AC[0-9a-fA-F]{32})/Recordings/(RE[0-9a-fA-F]{32})$`)

// FetchRecording downloads a recording's media (RecordingUrl +
// RecordingExtension) with the account's credentials, through the same
// host-rewriting transport as API calls. Only URLs of this account's
// recordings on the Twilio API host are fetched, so the credentials never
// go anywhere else. Errors are *channels.SendError.
func (v *Voice) FetchRecording(ctx context.Context, recordingURL string) (io.ReadCloser, string, error) {
	u, err := url.Parse(recordingURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || !strings.EqualFold(u.Host, v.apiHost) ||
		u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, "", &channels.SendError{Class: channels.Permanent, Code: "bad_recording_url", Message: "the recording URL is not a Twilio recording URL"}
	}
	sm := recordingPath.FindStringSubmatch(u.Path)
	if sm == nil || sm[1] != v.cfg.AccountSID {
		return nil, "", &channels.SendError{Class: channels.Permanent, Code: "bad_recording_url", Message: "the recording URL is not a recording of this account"}
	}
	ctx, cancel := context.WithCancel(ctx)
	tr := &callTransport{base: v.cfg.Transport, target: v.target, ctx: ctx}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String()+RecordingExtension, nil)
	if err != nil {
		cancel()
		return nil, "", &channels.SendError{Class: channels.Permanent, Code: "bad_recording_url", Message: "the recording URL is not usable", Err: err}
	}
	req.SetBasicAuth(v.cfg.AccountSID, v.cfg.AuthToken)
	hc := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	// Timeout bounds the wait for the answer, not the download of the body.
	timer := time.AfterFunc(v.cfg.Timeout, cancel)
	resp, err := hc.Do(req)
	if !timer.Stop() {
		if err == nil {
			resp.Body.Close()
		}
		err = fmt.Errorf("twilio voice: no answer in %s: %w", v.cfg.Timeout, context.DeadlineExceeded)
	}
	if err == nil && resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}
	if se := recordingError(err, tr); se != nil {
		cancel()
		v.log.Warn("recording not fetched", "recording_sid", sm[2], "code", se.Code)
		return nil, "", se
	}
	ct := resp.Header.Get("Content-Type")
	if ct == "" {
		ct = "application/octet-stream"
	}
	v.log.Debug("recording fetched", "recording_sid", sm[2], "content_type", ct)
	return &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}, ct, nil
}

// recordingError classifies a failed recording download; nil when the
// media came (200).
func recordingError(err error, tr *callTransport) *channels.SendError {
	if err != nil {
		var oe *net.OpError
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			return &channels.SendError{Class: channels.Retryable, Code: "timeout", Message: "no answer from Twilio in time", Err: err}
		case errors.Is(err, context.Canceled):
			return &channels.SendError{Class: channels.Retryable, Code: "canceled", Message: "the download was interrupted", Err: err}
		case errors.As(err, &oe) && oe.Op == "dial":
			return &channels.SendError{Class: channels.Retryable, Code: "connect", Message: "could not connect to Twilio", Err: err}
		}
		return &channels.SendError{Class: channels.Retryable, Code: "transport", Message: "the download from Twilio failed", Err: err}
	}
	status := tr.status
	se := &channels.SendError{Code: "http_" + strconv.Itoa(status), HTTPStatus: status, Message: "Twilio answered " + http.StatusText(status)}
	switch {
	case status == http.StatusOK:
		return nil
	case status == http.StatusTooManyRequests:
		se.Class, se.RetryAfter = channels.Throttled, tr.retryAfter
	case status >= 500, status == http.StatusUnauthorized, status == http.StatusForbidden:
		// Rejected credentials are configuration, as for 20003: retry.
		se.Class = channels.Retryable
	default:
		se.Class = channels.Permanent // 404: the recording was deleted
	}
	return se
}

// cancelOnClose releases a download's context once its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}
