// Package channels is the contract between the gateway and its provider
// adapters: the Channel interface, the registry, the classified SendError,
// and inbound webhook routes declared as data so adapters never import the
// HTTP framework. Each provider lives in its own folder below this one.
package channels

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"time"

	"github.com/patientmsg/gateway/internal/ledger"
)

// Message is what a worker asks a channel to deliver.
type Message struct {
	ID       string
	Tenant   string
	To       ledger.Recipient
	Body     string
	Priority string
	// Locale is the recipient's language (BCP 47), "" when unknown.
	Locale  string
	Subject string // email
	HTML    string // email, optional
	WeChat  *ledger.WeChatOptions
	Voice   *ledger.VoiceOptions
}

// MessageOf turns a ledger record into what a channel sends.
func MessageOf(m *ledger.Message) Message {
	return Message{ID: m.ID, Tenant: m.Tenant, To: m.To, Body: m.Body, Priority: m.Priority, Locale: m.Locale,
		Subject: m.Subject, HTML: m.HTML, WeChat: m.WeChat, Voice: m.Voice}
}

// Result is the provider's acceptance of a message.
type Result struct {
	// ProviderID is the provider's own id (Twilio "SM…").
	ProviderID string
}

// Channel delivers messages over one provider.
type Channel interface {
	// Name is the channel's API name ("sms").
	Name() string
	// Send hands the message to the provider. Errors should be *SendError.
	Send(ctx context.Context, m Message) (Result, error)
}

// WebhookRequest is an inbound provider request, framework-free.
type WebhookRequest struct {
	// URL is the public URL the provider called (GATEWAY_PUBLIC_URL + path +
	// query), the one its signature covers.
	URL    string
	Header http.Header
	Query  url.Values
	Form   url.Values
	Body   []byte
}

// WebhookResponse is what to answer the provider.
type WebhookResponse struct {
	Status      int
	ContentType string
	Body        []byte
}

// Route is an inbound webhook a channel serves under /webhooks/.
type Route struct {
	Method string
	Path   string
	Handle func(ctx context.Context, r WebhookRequest) WebhookResponse
}

// Receiver is told what inbound webhooks report; package inbound implements it
// on top of the ledger and the queue.
type Receiver interface {
	// ProviderStatus records a provider's delivery report for a message.
	// messageID may be empty: the provider id then finds the message.
	ProviderStatus(ctx context.Context, messageID string, u ledger.ProviderUpdate) (ledger.Applied, error)
	// Message returns a message's record (a call's TwiML is built from it).
	Message(ctx context.Context, messageID string) (*ledger.Message, error)
	// Answer records what the patient answered (keypad digits, a
	// recording); a recording is then fetched from recordingURL into the
	// blob store by a worker.
	Answer(ctx context.Context, messageID string, a ledger.Answer, recordingURL string) error
	// Redial schedules a new attempt after `after` for a message whose
	// provider attempt (a call) was busy or not answered, at most
	// maxRedials times; past that the message ends undelivered.
	Redial(ctx context.Context, messageID, providerID string, after time.Duration, maxRedials int, reason ledger.ErrorInfo) error
	// Inbound takes a message a patient sent (a reply, STOP, HELP…) and
	// says what to answer at once. It is idempotent per provider id: the
	// provider's retries of the same message are processed once.
	Inbound(ctx context.Context, in InboundMessage) (InboundResult, error)
	// OptOut records that an identity stopped accepting messages on a
	// channel through the provider (a WeChat unfollow), for every tenant.
	// evidence names the provider event.
	OptOut(ctx context.Context, channel string, who ledger.Recipient, evidence string) error
}

// CallStep is what an interactive call (an IVR) does next: say Say, then
// ask Prompt by keypad (one of Keys, or a number of up to MaxDigits keys
// ended by #, with * for a decimal point), or record a spoken answer
// (Record); or, with End, say End and hang up. Step names the question
// asked; the answer to it comes back with the same Step, so that an
// answer to an earlier step (a retried request) changes nothing.
type CallStep struct {
	Step      string
	Say       string
	Prompt    string
	Keys      string
	MaxDigits int
	Record    bool
	// MaxLength is a recording's longest, in seconds (0: the channel's default).
	MaxLength int
	End       string
}

// CallFlow is a Receiver whose calls can be interactive: each question
// comes from the domain as the call goes (a questionnaire by voice).
type CallFlow interface {
	// CallStep says what a call does next. With a nil answer it is the
	// call's first question; ok is false when the message's call is not
	// interactive (it plays as its message says). With an answer (keys
	// pressed, "" for none, or a recording) it takes the answer to step
	// and returns what follows.
	CallStep(ctx context.Context, m *ledger.Message, step string, answer *ledger.Answer) (next CallStep, ok bool, err error)
}

// A Transcriber is a Receiver that takes the transcript of a recorded
// answer (Twilio's transcription of a call's recording).
type Transcriber interface {
	Transcript(ctx context.Context, messageID, recordingSID, transcriptID, text string) error
}

// A Finder is a channel whose provider can be asked for the messages it
// holds: after an attempt whose outcome is unknown (a timeout once the
// request was written), the worker asks before sending again, so that the
// patient gets neither the message twice nor not at all.
type Finder interface {
	// Find returns the provider ids of the messages the provider holds
	// that m's attempts since `since` could have made (same recipient,
	// sender and content), newest first.
	Find(ctx context.Context, m Message, since time.Time) ([]string, error)
}

// A Reporter is a channel whose provider can be asked for a message's
// delivery status, as its status callback would have told it (a callback
// the provider does not send again when it was lost).
type Reporter interface {
	Report(ctx context.Context, providerID string) (ledger.ProviderUpdate, error)
}

// A Redialer is a channel whose calls are placed again when a report says
// they were not answered (busy, no answer). RedialFor says whether report
// u asks for another call, why, after how long and how many redials a
// message gets at most; the status callback and the reconciler of lost
// callbacks both follow it.
type Redialer interface {
	RedialFor(u ledger.ProviderUpdate) (reason ledger.ErrorInfo, after time.Duration, maxRedials int, ok bool)
}

// InboundMessage is a message a patient sent.
type InboundMessage struct {
	Channel    string
	ProviderID string // Twilio MessageSid, WeChat MsgId
	From       ledger.Recipient
	// To is the address it was sent to (our number, our official account).
	To   string
	Body string
	// ReceivedAt is when the gateway received it (set when it is queued).
	ReceivedAt time.Time `json:",omitzero"`
}

// InboundResult says what the gateway made of an inbound message.
type InboundResult struct {
	// Duplicate is set when the provider id was seen before.
	Duplicate bool
	// Reply is the text to answer with at once ("" for none): the one
	// confirmation of an opt-out, opt-in or help request.
	Reply string
}

// RecordingFetcher is implemented by channels whose provider keeps call
// recordings: it downloads one for the blob store.
type RecordingFetcher interface {
	FetchRecording(ctx context.Context, recordingURL string) (body io.ReadCloser, contentType string, err error)
}

// Rate is how fast a provider lets one sender send; zero fields are
// unlimited.
type Rate struct {
	// PerSecond is the sustained rate (messages, or calls, per second).
	PerSecond float64
	// PerDay is the daily quota; it resets at midnight in DayZone (UTC
	// when nil).
	PerDay  int64
	DayZone *time.Location
	// Spaced makes PerSecond a hard limit of the account: sends are spaced,
	// at most one second's worth at once, where other senders may burst.
	Spaced bool
}

// Sender is a channel's sending identity at its provider and the rate the
// provider allows it.
type Sender struct {
	// ID names the sender at the provider (a from-number, an official
	// account's app id, an SMTP host): it keys the shared rate limit and
	// is never a credential.
	ID string
	Rate
}

// Paced is implemented by channels whose provider limits how fast their
// sender may send: every worker process then paces it together, through
// Redis. A channel that is not Paced sends as fast as its workers go.
type Paced interface {
	Sender() Sender
}

// Inbound is implemented by channels that take provider webhooks.
type Inbound interface {
	Routes(rcv Receiver) []Route
}

// Class says what to do about a failed send.
type Class int

// Error classes.
const (
	// Retryable failures (connection failed, timeout, provider 5xx) are retried with backoff.
	Retryable Class = iota + 1
	// Throttled failures (429) are retried after the provider's Retry-After, or with backoff.
	Throttled
	// Permanent failures (bad configuration, invalid recipient, provider rejection) are not retried.
	Permanent
	// OptedOut means the recipient has opted out at the provider: permanent, and the recipient is suppressed.
	OptedOut
)

func (c Class) String() string {
	switch c {
	case Retryable:
		return "retryable"
	case Throttled:
		return "throttled"
	case Permanent:
		return "permanent"
	case OptedOut:
		return "opted_out"
	}
	return "unknown"
}

// SendError is a classified failure of Channel.Send.
type SendError struct {
	Class Class
	// Code is the provider's error code ("21211") or a gateway code ("timeout").
	Code string
	// Message is the provider's explanation, safe to store and show (no recipient data).
	Message string
	// HTTPStatus is the provider's HTTP status, 0 when none came back.
	HTTPStatus int
	// RetryAfter is the provider's Retry-After, when it gave one.
	RetryAfter time.Duration
	// Unconfirmed means the request may have reached the provider (timeout
	// after sending): it might have been accepted.
	Unconfirmed bool
	Err         error
}

func (e *SendError) Error() string {
	s := fmt.Sprintf("%s send error", e.Class)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Unwrap returns the underlying error.
func (e *SendError) Unwrap() error { return e.Err }

// Retryable reports whether the send may succeed if tried again.
func (e *SendError) Retryable() bool { return e.Class == Retryable || e.Class == Throttled }

// AsSendError classifies any error: a *SendError is returned as is, anything
// else counts as retryable (an unknown failure is not proof the message is bad).
func AsSendError(err error) *SendError {
	var se *SendError
	if errors.As(err, &se) {
		return se
	}
	return &SendError{Class: Retryable, Code: "internal", Message: "unclassified send error", Err: err}
}

// Registry holds the configured channels by name.
type Registry struct {
	byName map[string]Channel
}

// NewRegistry returns a registry of the given channels.
func NewRegistry(chs ...Channel) *Registry {
	r := &Registry{byName: map[string]Channel{}}
	for _, c := range chs {
		r.byName[c.Name()] = c
	}
	return r
}

// Get returns the channel of that name.
func (r *Registry) Get(name string) (Channel, bool) {
	c, ok := r.byName[name]
	return c, ok
}

// Names lists the configured channel names, sorted.
func (r *Registry) Names() []string {
	names := make([]string, 0, len(r.byName))
	for n := range r.byName {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// All returns the configured channels, sorted by name.
func (r *Registry) All() []Channel {
	out := make([]Channel, 0, len(r.byName))
	for _, n := range r.Names() {
		out = append(out, r.byName[n])
	}
	return out
}

// Routes collects the webhook routes of every channel that has some.
func (r *Registry) Routes(rcv Receiver) []Route {
	var routes []Route
	for _, n := range r.Names() {
		if in, ok := r.byName[n].(Inbound); ok {
			routes = append(routes, in.Routes(rcv)...)
		}
	}
	return routes
}
