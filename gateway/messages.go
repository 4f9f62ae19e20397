package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/internal/admission"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/messaging"
	"github.com/patientmsg/gateway/internal/recordings"
)

// MaxIdempotencyKey is the longest Idempotency-Key accepted.
const MaxIdempotencyKey = 255

// acceptedJSON answers POST /v1/messages.
type acceptedJSON struct {
	ID       string     `json:"id"`
	Status   string     `json:"status"`
	Channel  string     `json:"channel"`
	Priority string     `json:"priority"`
	Segments int        `json:"segments"`
	Encoding string     `json:"encoding"`
	SendAt   *time.Time `json:"send_at,omitempty"`
	// Deferred says why send_at is later than asked (quiet hours).
	Deferred       string `json:"deferred,omitempty"`
	Template       string `json:"template,omitempty"`
	TemplateLocale string `json:"template_locale,omitempty"`
	TimeZone       string `json:"timezone,omitempty"`
}

func (s *Server) createMessage(c *fiber.Ctx) error {
	tenant := tenantOf(c)
	body, p := jsonBody(c)
	if p != nil {
		return s.rateRequest(c, tenant, p)
	}
	idemKey := c.Get("Idempotency-Key")
	if len(idemKey) > MaxIdempotencyKey {
		return s.rateRequest(c, tenant, problem(400, "bad-idempotency-key", "Idempotency-Key is longer than 255 characters"))
	}
	draft, p := parseDraft(body)
	if p != nil {
		return s.rateRequest(c, tenant, p)
	}
	// The memory guard, before any work: crisis messages pass it until its
	// last threshold. The tenant's rate is counted with the message's
	// backlog (crisis messages pass it).
	if err := s.admitMessage(c, draft.Priority); err != nil {
		return s.rateRequest(c, tenant, err)
	}
	a, err := s.acceptThroughFailover(c, tenant, draft,
		messaging.Idempotency{Key: idemKey, BodyHash: hashBody(body), TTL: s.opts.IdempotencyTTL})
	setRateLimitHeaders(c, a.Rate)
	if errors.Is(err, ledger.ErrIdempotencyMismatch) {
		return problem(422, "idempotency-mismatch", "this Idempotency-Key was already used with a different request body; use a new key for a new message")
	}
	if err != nil {
		return s.domainProblem(err)
	}
	status := fiber.StatusAccepted
	if a.Replayed {
		c.Set("Idempotent-Replayed", "true")
		status = fiber.StatusOK
	}
	r := a.Request
	return c.Status(status).JSON(acceptedJSON{ID: a.ID, Status: string(a.Status), Channel: r.Channel,
		Priority: r.Priority, Segments: r.Segments, Encoding: r.Encoding, SendAt: r.SendAt, Deferred: r.Deferred,
		Template: r.Template, TemplateLocale: r.TemplateLocale, TimeZone: r.TimeZone})
}

// unavailable answers a storage error: 503 with Retry-After, as
// /problems/store-full when Redis refused a write at its maxmemory.
func (s *Server) unavailable(err error) error {
	if admission.IsOutOfMemory(err) {
		s.log.Error("Redis is at its maxmemory: a write was refused", "err", err)
		return storeFull("the message store (Redis) is full; nothing was queued, retry with the same Idempotency-Key after Retry-After seconds",
			admission.MemoryRetryAfter)
	}
	if isNotReplicated(err) {
		s.log.Warn("a request's writes are not confirmed on the Redis replicas", "err", err)
		return notReplicated()
	}
	s.log.Error("storage unavailable", "err", err)
	// Redis may have applied the request's writes before the connection
	// failed, so the outcome is unknown: say so (a retry with the same
	// Idempotency-Key finds the message if it was queued).
	p := problem(503, "unavailable", "the message store is unavailable; the request may or may not have taken effect: retry with the same Idempotency-Key, which never makes a second message")
	p.RetryAfter = DefaultRetryAfter
	return p
}

// messageJSON is the API view of a message: the recipient masked, no body.
type messageJSON struct {
	ID         string            `json:"id"`
	Status     ledger.Status     `json:"status"`
	Channel    string            `json:"channel"`
	Priority   string            `json:"priority"`
	To         map[string]string `json:"to"`
	Segments   int               `json:"segments,omitempty"`
	Encoding   string            `json:"encoding,omitempty"`
	SendAt     *time.Time        `json:"send_at,omitempty"`
	Metadata   json.RawMessage   `json:"metadata,omitempty"`
	CreatedAt  time.Time         `json:"created_at"`
	UpdatedAt  time.Time         `json:"updated_at"`
	Attempts   int               `json:"attempts"`
	ProviderID *string           `json:"provider_id"`
	Error      *ledger.ErrorInfo `json:"error"`
	Recording  *recordingJSON    `json:"recording,omitempty"`
	Events     []ledger.Event    `json:"events,omitempty"` // omitted in lists
}

// recordingJSON describes a stored call recording (GET …/recording streams it).
type recordingJSON struct {
	ContentType string    `json:"content_type"`
	Size        int64     `json:"size"`
	Duration    int       `json:"duration,omitempty"`
	StoredAt    time.Time `json:"stored_at"`
}

func viewOf(m *ledger.Message) messageJSON {
	v := messageJSON{ID: m.ID, Status: m.Status, Channel: m.Channel, Priority: m.Priority, To: m.To.Masked(),
		Segments: m.Segments, Encoding: m.Encoding, SendAt: m.SendAt, Metadata: m.Metadata, CreatedAt: m.CreatedAt,
		UpdatedAt: m.UpdatedAt, Attempts: m.Attempts, Error: m.Error, Events: m.Events}
	if r := m.Recording; r != nil {
		v.Recording = &recordingJSON{ContentType: r.ContentType, Size: r.Size, Duration: r.Duration, StoredAt: r.StoredAt}
	}
	if m.ProviderID != "" {
		v.ProviderID = &m.ProviderID
	}
	if v.Events == nil {
		v.Events = []ledger.Event{}
	}
	return v
}

func (s *Server) getMessage(c *fiber.Ctx) error {
	m, err := s.opts.Ledger.Get(c.UserContext(), tenantOf(c), messageID(c))
	if errors.Is(err, ledger.ErrNotFound) {
		return problem(404, "not-found", "no message with this id for your API key")
	}
	if err != nil {
		return s.unavailable(err)
	}
	return c.JSON(viewOf(m))
}

func (s *Server) listMessages(c *fiber.Ctx) error {
	limit, err := queryLimit(c, 50, 100)
	if err != nil {
		return err
	}
	f, p := s.messageFilter(c)
	if p != nil {
		return p
	}
	page, err := s.opts.Ledger.Find(c.UserContext(), tenantOf(c), ledger.Query{Filter: f, Before: strings.ToUpper(c.Query("before")), Limit: limit})
	if errors.Is(err, ledger.ErrBadCursor) {
		return problem(400, "bad-query", "before must be a message id (a next value)")
	}
	if err != nil {
		return s.unavailable(err)
	}
	out := struct {
		Messages []messageJSON `json:"messages"`
		Next     string        `json:"next,omitempty"`
	}{Messages: []messageJSON{}, Next: page.Next}
	for _, m := range page.Messages {
		v := viewOf(m)
		v.Events = nil
		out.Messages = append(out.Messages, v)
	}
	return c.JSON(out)
}

// recipientForms are the addresses a list's to filter takes
// (ledger.ParseRecipient).
const recipientForms = "a phone number in international form (with + and the country code), an email address or a WeChat openid"

// rfc3339Rule is how a list's since and until are written.
const rfc3339Rule = "must be an RFC 3339 time such as 2026-12-01T09:00:00Z"

// queryTimes reads the since and until of a list (RFC 3339), and returns
// the names of those that do not read.
func queryTimes(c *fiber.Ctx, since, until *time.Time) (bad []string) {
	for _, b := range []struct {
		name string
		t    *time.Time
	}{{"since", since}, {"until", until}} {
		if v := c.Query(b.name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				bad = append(bad, b.name)
				continue
			}
			*b.t = t
		}
	}
	return bad
}

// messageFilter reads the list's filters: to, channel, status, since and
// until (RFC 3339).
func (s *Server) messageFilter(c *fiber.Ctx) (ledger.Filter, *Problem) {
	var f ledger.Filter
	if v := c.Query("to"); v != "" {
		to, err := ledger.ParseRecipient(v)
		if err != nil {
			return f, problem(400, "bad-query", "to must be "+recipientForms)
		}
		f.To = to
	}
	if v := c.Query("channel"); v != "" {
		if _, ok := s.opts.Channels.Get(v); !ok {
			return f, problem(400, "bad-query", "channel must be one of "+strings.Join(s.opts.Channels.Names(), ", "))
		}
		f.Channel = v
	}
	if v := c.Query("status"); v != "" {
		if !ledger.Status(v).Valid() {
			return f, problem(400, "bad-query", "status must be a message status such as queued, sent, delivered or failed")
		}
		f.Status = ledger.Status(v)
	}
	if bad := queryTimes(c, &f.Since, &f.Until); len(bad) > 0 {
		return f, problem(400, "bad-query", bad[0]+" "+rfc3339Rule)
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		return f, problem(400, "bad-query", "since must be before until")
	}
	// metadata[<key>]=<value>: one key of the message's metadata.
	var metaErr *Problem
	c.Context().QueryArgs().VisitAll(func(k, v []byte) {
		key, ok := strings.CutPrefix(string(k), "metadata[")
		if !ok || metaErr != nil {
			return
		}
		key, ok = strings.CutSuffix(key, "]")
		switch {
		case !ok || key == "" || len(key) > 40 || len(v) > 500:
			metaErr = problem(400, "bad-query", "metadata must be given as metadata[<key>]=<value>, a key of up to 40 characters")
		case f.MetaKey != "":
			metaErr = problem(400, "bad-query", "give one metadata[<key>]=<value> at a time")
		default:
			f.MetaKey, f.MetaValue = key, string(v)
		}
	})
	if metaErr != nil {
		return f, metaErr
	}
	return f, nil
}

func (s *Server) cancelMessage(c *fiber.Ctx) error {
	tenant, id := tenantOf(c), messageID(c)
	m, err := s.opts.Messages.Cancel(c.UserContext(), tenant, id, ledger.CanceledByAPI)
	var ce *ledger.ConflictError
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		return problem(404, "not-found", "no message with this id for your API key")
	case errors.As(err, &ce):
		return problem(409, "not-cancelable", "cannot cancel: "+ce.Error())
	case err != nil:
		return s.unavailable(err)
	}
	return c.JSON(viewOf(m))
}

// messageID reads the id path parameter; ULIDs are case-insensitive.
func messageID(c *fiber.Ctx) string { return strings.ToUpper(c.Params("id")) }

// getRecording streams a message's call recording to its tenant.
func (s *Server) getRecording(c *fiber.Ctx) error {
	m, err := s.opts.Ledger.Get(c.UserContext(), tenantOf(c), messageID(c))
	if errors.Is(err, ledger.ErrNotFound) {
		return problem(404, "not-found", "no message with this id for your API key")
	}
	if err != nil {
		return s.unavailable(err)
	}
	if m.Recording == nil || s.opts.Recordings == nil {
		return problem(404, "no-recording", "this message has no stored recording (yet): only voice messages with a record step have one, once the patient answered")
	}
	// The body streams after the handler returns, so the read gets a
	// context of its own, ended when the stream is closed.
	rctx, cancel := context.WithTimeout(context.Background(), RecordingStreamTimeout)
	r, size, err := s.opts.Recordings.Open(rctx, m.Recording.Key)
	if err != nil {
		cancel()
		if errors.Is(err, recordings.ErrNotFound) {
			return problem(404, "no-recording", "the recording is no longer kept (past its retention)")
		}
		s.log.Error("recording store unavailable", "msg_id", m.ID, "err", err)
		return problem(503, "unavailable", "the recording store is unavailable; try again")
	}
	c.Set(fiber.HeaderContentType, m.Recording.ContentType)
	c.Set(fiber.HeaderCacheControl, "private, no-store")
	c.Set(fiber.HeaderContentDisposition, `attachment; filename="`+m.ID+recordingExt(m.Recording.Key)+`"`)
	return c.SendStream(cancelOnClose{ReadCloser: r, cancel: cancel}, int(size))
}

// RecordingStreamTimeout bounds the download of one recording.
const RecordingStreamTimeout = 5 * time.Minute

// cancelOnClose ends a stream's context when the stream is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c cancelOnClose) Close() error {
	defer c.cancel()
	return c.ReadCloser.Close()
}

func recordingExt(key string) string {
	if i := strings.LastIndexByte(key, '.'); i >= 0 {
		return key[i:]
	}
	return ""
}
