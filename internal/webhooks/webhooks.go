// Package webhooks delivers events to the clinics' own systems: each
// tenant registers an HTTPS endpoint and gets a signing secret; events
// (message.status, message.reply, contact.opted_out, contact.opted_in,
// contact.possible_opt_out …) are queued as Asynq tasks, posted as JSON
// signed with
// X-Gateway-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, t + "." + body)>,
// retried with backoff, and dead-lettered (visible by API) after the last
// attempt. Publishing never blocks the webhook that caused the event.
package webhooks

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/egress"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/replication"
)

// Event types.
const (
	MessageStatus   = "message.status"
	MessageReply    = "message.reply"
	ContactOptedOut = "contact.opted_out"
	ContactOptedIn  = "contact.opted_in"
	// ContactPossibleOptOut is a reply that may be a wish to stop, flagged
	// for staff with its deadline.
	ContactPossibleOptOut = "contact.possible_opt_out"
	TypeDeliver           = "webhook:deliver"
	SignatureHeader       = "X-Gateway-Signature"
	DefaultTolerance      = 5 * time.Minute
	// MaxAttempts is how often an event is tried before it is dead-lettered.
	MaxAttempts = 10
	deadKeep    = 1000
)

// Event is what a clinic receives.
type Event struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	CreatedAt time.Time       `json:"created_at"`
	Data      json.RawMessage `json:"data"`
}

// Endpoint is a tenant's registered webhook.
type Endpoint struct {
	URL    string `json:"url"`
	Secret string `json:"secret,omitempty"`
}

// Store keeps endpoints and dead letters.
type Store struct{ rdb redis.UniversalClient }

// NewStore returns the endpoint store.
func NewStore(rdb redis.UniversalClient) *Store { return &Store{rdb: rdb} }

func endpointKey(tenant string) string { return "gw:hook:{" + tenant + "}" }
func deadKey(tenant string) string     { return "gw:hook:{" + tenant + "}:dead" }

// Put registers the tenant's endpoint. The secret is kept unless rotate is
// set or there is none yet; the endpoint is returned with its secret.
func (s *Store) Put(ctx context.Context, tenant, url string, rotate bool) (Endpoint, error) {
	cur, err := s.Get(ctx, tenant)
	if err != nil && !errors.Is(err, redis.Nil) {
		return Endpoint{}, err
	}
	secret := cur.Secret
	if secret == "" || rotate {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		secret = "whsec_" + hex.EncodeToString(b)
	}
	ep := Endpoint{URL: url, Secret: secret}
	return ep, s.rdb.HSet(ctx, endpointKey(tenant), "url", url, "secret", secret).Err()
}

// Get returns the tenant's endpoint (redis.Nil when none).
func (s *Store) Get(ctx context.Context, tenant string) (Endpoint, error) {
	h, err := s.rdb.HGetAll(ctx, endpointKey(tenant)).Result()
	if err != nil {
		return Endpoint{}, err
	}
	if h["url"] == "" {
		return Endpoint{}, redis.Nil
	}
	return Endpoint{URL: h["url"], Secret: h["secret"]}, nil
}

// DeadLetter is an event that could not be delivered.
type DeadLetter struct {
	Event     Event     `json:"event"`
	URL       string    `json:"url"`
	LastError string    `json:"last_error"`
	At        time.Time `json:"at"`
}

// Dead lists the tenant's dead letters, newest first.
func (s *Store) Dead(ctx context.Context, tenant string, limit int) ([]DeadLetter, error) {
	raw, err := s.rdb.LRange(ctx, deadKey(tenant), 0, int64(limit-1)).Result()
	if err != nil {
		return nil, err
	}
	out := make([]DeadLetter, 0, len(raw))
	for _, r := range raw {
		var d DeadLetter
		if json.Unmarshal([]byte(r), &d) == nil {
			out = append(out, d)
		}
	}
	return out, nil
}

// Enqueuer queues tasks (an *asynq.Client).
type Enqueuer interface {
	EnqueueContext(ctx context.Context, task *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error)
}

// Publisher queues events for delivery.
type Publisher struct {
	Store *Store
	Queue Enqueuer
	Log   *slog.Logger
	// Attempts is how often an event is tried before it is dead-lettered
	// (MaxAttempts when 0).
	Attempts int

	mu    sync.Mutex
	cache map[string]cachedEndpoint
}

type cachedEndpoint struct {
	ep *Endpoint
	at time.Time
}

// endpointCacheTTL bounds how long a change of endpoint takes to apply.
const endpointCacheTTL = 10 * time.Second

// Enabled reports whether the tenant has an endpoint, so callers build an
// event only when someone will receive it (cached for a few seconds).
func (p *Publisher) Enabled(ctx context.Context, tenant string) bool {
	if p == nil {
		return false
	}
	ep, _ := p.endpoint(ctx, tenant)
	return ep != nil
}

// Forget drops the cached endpoint of a tenant (after it changed here;
// other processes see a change within endpointCacheTTL).
func (p *Publisher) Forget(tenant string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	delete(p.cache, tenant)
	p.mu.Unlock()
}

func (p *Publisher) endpoint(ctx context.Context, tenant string) (*Endpoint, error) {
	p.mu.Lock()
	c, ok := p.cache[tenant]
	p.mu.Unlock()
	if ok && time.Since(c.at) < endpointCacheTTL {
		return c.ep, nil
	}
	ep, err := p.Store.Get(ctx, tenant)
	if errors.Is(err, redis.Nil) {
		err = nil
	}
	if err != nil {
		return nil, err
	}
	var out *Endpoint
	if ep.URL != "" {
		out = &ep
	}
	p.mu.Lock()
	if p.cache == nil {
		p.cache = map[string]cachedEndpoint{}
	}
	p.cache[tenant] = cachedEndpoint{ep: out, at: time.Now()}
	p.mu.Unlock()
	return out, nil
}

type payload struct {
	Tenant string `json:"tenant"`
	// URL overrides the tenant's endpoint (a message's callback_url).
	URL   string `json:"url,omitempty"`
	Event Event  `json:"event"`
}

// Publish queues an event for the tenant's endpoint and, when given, a
// message's callback_url. It is a no-op for a tenant with no endpoint
// (nothing to sign with). Errors are logged, not returned: an event must
// never fail what caused it.
func (p *Publisher) Publish(ctx context.Context, tenant, typ string, data any, callbackURL string) {
	p.PublishAs(ctx, tenant, typ, data, callbackURL, "")
}

// PublishAs is Publish with the event's id given: an event published again
// for the same fact (a patient's reply filed again after a failure
// half-way) carries the same id and is queued once while the first is
// pending, so the clinic can drop a redelivery by its id. "" makes a new id.
func (p *Publisher) PublishAs(ctx context.Context, tenant, typ string, data any, callbackURL, eventID string) {
	if err := p.Enqueue(ctx, tenant, typ, data, callbackURL, eventID); err != nil {
		p.Log.Warn("webhook event not queued", "type", typ, "event_id", eventID, "err", err)
	}
}

// Enqueue is PublishAs returning why the event could not be queued, for a
// caller that retries rather than lose it (a timer whose task runs again).
func (p *Publisher) Enqueue(ctx context.Context, tenant, typ string, data any, callbackURL, eventID string) error {
	if p == nil {
		return nil
	}
	ep, err := p.endpoint(ctx, tenant)
	if err != nil {
		return fmt.Errorf("webhook endpoint not read: %w", err)
	}
	if ep == nil {
		return nil
	}
	raw, _ := json.Marshal(data)
	if eventID == "" {
		eventID = ulid.Make().String()
	}
	ev := Event{ID: eventID, Type: typ, CreatedAt: time.Now().UTC(), Data: raw}
	targets := []string{""}
	if callbackURL != "" && callbackURL != ep.URL {
		targets = append(targets, callbackURL)
	}
	var errs []error
	for i, u := range targets {
		b, _ := json.Marshal(payload{Tenant: tenant, URL: u, Event: ev})
		attempts := p.Attempts
		if attempts <= 0 {
			attempts = MaxAttempts
		}
		t := asynq.NewTask(TypeDeliver, b, asynq.TaskID("wh:"+ev.ID+":"+strconv.Itoa(i)), asynq.Queue("gw:high"),
			asynq.MaxRetry(attempts-1), asynq.Timeout(30*time.Second))
		if _, err := p.Queue.EnqueueContext(context.WithoutCancel(ctx), t); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Sign computes the signature header for a body at time t.
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "." + string(body)))
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// Verify checks a signature header the way a clinic should: the HMAC over
// "t.body" matches (in constant time) and t is within tolerance of now.
func Verify(secret, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts, sig string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sig == "" {
		return errors.New("webhooks: malformed signature header")
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return errors.New("webhooks: signature timestamp outside the tolerance")
	}
	want := Sign(secret, time.Unix(sec, 0), body)
	if !hmac.Equal([]byte(want), []byte("t="+ts+",v1="+sig)) {
		return errors.New("webhooks: signature mismatch")
	}
	return nil
}

// Deliverer is the Asynq handler that posts events.
type Deliverer struct {
	Store *Store
	// Client posts to the tenants' URLs: an egress client, which connects
	// only to public addresses (or the operator's allowed networks) and
	// does not follow redirects. Nil: egress.Policy{}.Client.
	Client *http.Client
	Log    *slog.Logger
	// Fence, when set, holds each event until what it reports is on the
	// Redis replicas: a clinic is never told of a reply or a status that
	// a failover then takes back. Nil waits for nothing.
	Fence *replication.Fence
}

// deliveryError is a failed post: Error is what the tenant's dead letter
// and the log say (never the URL, a refused address or an inner
// service's answer); Unwrap is the cause.
type deliveryError struct {
	reason string
	err    error
}

func (e *deliveryError) Error() string { return e.reason }
func (e *deliveryError) Unwrap() error { return e.err }

// ProcessTask posts one event; a non-2xx answer or a transport error is
// retried by Asynq, and the last failure is dead-lettered.
func (d *Deliverer) ProcessTask(ctx context.Context, t *asynq.Task) error {
	var p payload
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return fmt.Errorf("bad webhook payload: %w", asynq.SkipRetry)
	}
	ep, err := d.Store.Get(ctx, p.Tenant)
	if errors.Is(err, redis.Nil) {
		return nil // the endpoint was removed: nothing to sign with or send to
	}
	if err != nil {
		return err
	}
	url := ep.URL
	if p.URL != "" {
		url = p.URL
	}
	// The event was written before its task; the replication stream is
	// ordered, so once the replicas have a write made now they have the
	// event's cause too. Until then the event is held and retried.
	if ferr := d.Fence.Wait(ctx, d.Fence.Begin()); ferr != nil {
		err = &deliveryError{reason: "held: what the event reports is not yet on the store's replicas", err: ferr}
	} else {
		body, _ := json.Marshal(p.Event)
		if err = d.post(ctx, url, ep.Secret, p.Event, body); err == nil {
			return nil
		}
	}
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	d.Log.Warn("webhook delivery failed", "event_id", p.Event.ID, "type", p.Event.Type, "attempt", retried+1, "err", err)
	if retried >= maxRetry {
		dl, _ := json.Marshal(DeadLetter{Event: p.Event, URL: url, LastError: err.Error(), At: time.Now().UTC()})
		pipe := d.Store.rdb.Pipeline()
		pipe.LPush(ctx, deadKey(p.Tenant), dl)
		pipe.LTrim(ctx, deadKey(p.Tenant), 0, deadKeep-1)
		if _, derr := pipe.Exec(ctx); derr != nil {
			d.Log.Error("webhook dead letter not kept", "event_id", p.Event.ID, "err", derr)
		}
	}
	return err
}

func (d *Deliverer) post(ctx context.Context, url, secret string, ev Event, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return &deliveryError{reason: "the URL is not valid", err: err} // the error would repeat it
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "patient-messaging-gateway-webhooks")
	req.Header.Set("X-Gateway-Event", ev.Type)
	req.Header.Set("X-Gateway-Delivery", ev.ID)
	req.Header.Set(SignatureHeader, Sign(secret, time.Now(), body))
	c := d.Client
	if c == nil {
		c = defaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return &deliveryError{reason: egress.Reason(err), err: err}
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode >= 300 && resp.StatusCode <= 399:
		// Not followed: it would carry the signed event to a URL nobody
		// registered, possibly inward.
		return fmt.Errorf("endpoint answered %d; redirects are not followed", resp.StatusCode)
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return fmt.Errorf("endpoint answered %d", resp.StatusCode)
	}
	return nil
}

var defaultClient = egress.Policy{}.Client(10 * time.Second)

// MessageStatus sends a message.status event for a message's current
// status to its tenant's endpoint and its callback_url. tenant may be ""
// when the caller does not know it. The record is read only for a tenant
// with an endpoint.
func (p *Publisher) MessageStatus(ctx context.Context, l *ledger.Ledger, tenant, id string) {
	if p == nil {
		return
	}
	if tenant == "" {
		var err error
		if tenant, err = l.TenantOf(ctx, id); err != nil {
			return
		}
	}
	if !p.Enabled(ctx, tenant) {
		return
	}
	m, err := l.Get(ctx, tenant, id)
	if err != nil {
		return
	}
	p.Publish(ctx, m.Tenant, MessageStatus, map[string]any{
		"message_id": m.ID, "status": m.Status, "channel": m.Channel, "error": m.Error, "metadata": m.Metadata,
		"provider_id": m.ProviderID, "updated_at": m.UpdatedAt,
	}, m.CallbackURL)
}

// EraseDead removes the tenant's dead letters whose event match says
// holds a patient's data (an erasure), and returns how many it removed.
func (s *Store) EraseDead(ctx context.Context, tenant string, match func([]byte) bool) (int, error) {
	raw, err := s.rdb.LRange(ctx, deadKey(tenant), 0, -1).Result()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range raw {
		if !match([]byte(r)) {
			continue
		}
		k, err := s.rdb.LRem(ctx, deadKey(tenant), 0, r).Result()
		if err != nil {
			return n, err
		}
		n += int(k)
	}
	return n, nil
}
