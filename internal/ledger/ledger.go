// Package ledger is the gateway's record of every message: what was asked,
// where it stands, and what happened to it. Records live in Redis, are
// written before a message is queued, and expire after the retention period.
// Every status change goes through a Lua script so that workers, API
// processes and provider callbacks never race each other.
package ledger

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/autopipe"
	"github.com/patientmsg/gateway/internal/metrics"
	"github.com/patientmsg/gateway/internal/sms"
)

// Errors the ledger returns; match them with errors.Is.
var (
	ErrNotFound            = errors.New("message not found")
	ErrConflict            = errors.New("message can no longer be changed")
	ErrIdempotencyMismatch = errors.New("idempotency key was used with a different request")
	ErrProviderMismatch    = errors.New("provider id does not match the message")
)

// Recipient is where a message goes: the address its channel uses.
type Recipient struct {
	Phone        string `json:"phone,omitempty"`         // sms, voice: E.164
	Email        string `json:"email,omitempty"`         // email
	WeChatOpenID string `json:"wechat_openid,omitempty"` // wechat: the user's openid for the official account
}

// WeChatOptions choose how a WeChat message is sent.
type WeChatOptions struct {
	// Kind is "auto" (customer-service text inside the user's window with
	// quota left, else the subscribe message when the user subscribed to
	// its template, else the template message), "custom", "subscribe" or
	// "template".
	Kind string `json:"kind,omitempty"`
	// TemplateID, Data (template field → value) and URL make the template message.
	TemplateID string            `json:"template_id,omitempty"`
	Data       map[string]string `json:"data,omitempty"`
	URL        string            `json:"url,omitempty"`
	// Subscribe is the subscribe message (订阅通知), sent instead of the
	// template message to a user who subscribed to its template.
	Subscribe *WeChatSubscribe `json:"subscribe,omitempty"`
}

// WeChatSubscribe is a subscribe message: its template (from the
// account's subscribe templates, not its template messages), the data of
// its fields and the page it opens.
type WeChatSubscribe struct {
	TemplateID string            `json:"template_id"`
	Data       map[string]string `json:"data,omitempty"`
	Page       string            `json:"page,omitempty"`
}

// ExpectReply describes the answers a message asks for.
type ExpectReply struct {
	// Options map what the patient types ("1") to what it means ("confirm").
	Options map[string]string `json:"options"`
	// Within is how long the question stays open, in seconds.
	Within int `json:"within"`
	// Code tells questions apart when several open ones share options:
	// "K3 1" answers the question with code K3.
	Code string `json:"code,omitempty"`
}

// VoiceOptions shape a follow-up call after the spoken message.
type VoiceOptions struct {
	Gather *Gather `json:"gather,omitempty"`
	Record *Record `json:"record,omitempty"`
}

// Gather asks a keypad question.
type Gather struct {
	Prompt string `json:"prompt"`
	// Digits are the accepted keys, e.g. "123".
	Digits string `json:"digits"`
	// Timeout is how long to wait for a key, in seconds.
	Timeout int `json:"timeout,omitempty"`
}

// Record records the patient's spoken answer.
type Record struct {
	Prompt string `json:"prompt"`
	// MaxLength is the longest recording, in seconds.
	MaxLength int `json:"max_length,omitempty"`
}

// Answer is what a patient answered on a call: keypad digits or a recording.
type Answer struct {
	Digits       string `json:"digits,omitempty"`
	RecordingSID string `json:"recording_sid,omitempty"`
	// Duration of the recording, in seconds.
	Duration int `json:"duration,omitempty"`
}

// Recording is a stored call recording.
type Recording struct {
	SID         string    `json:"sid"`
	Key         string    `json:"key"` // blob key
	ContentType string    `json:"content_type"`
	Size        int64     `json:"size"`
	Duration    int       `json:"duration,omitempty"`
	StoredAt    time.Time `json:"stored_at"`
}

// ErrorInfo is the last error of a message, as the provider gave it.
type ErrorInfo struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Event is one entry of a message's history.
type Event struct {
	Status         Status     `json:"status"`
	At             time.Time  `json:"at"`
	Attempt        int        `json:"attempt,omitempty"`
	ProviderStatus string     `json:"provider_status,omitempty"`
	Error          *ErrorInfo `json:"error,omitempty"`
	RetryAt        *time.Time `json:"retry_at,omitempty"`
	Answer         *Answer    `json:"answer,omitempty"`
	Detail         string     `json:"detail,omitempty"`
}

// Request is the immutable part of a message: what the API accepted.
type Request struct {
	Tenant      string          `json:"tenant,omitempty"`
	Channel     string          `json:"channel"`
	To          Recipient       `json:"to"`
	Body        string          `json:"body"`
	Priority    string          `json:"priority"`
	SendAt      *time.Time      `json:"send_at,omitempty"`
	Metadata    json.RawMessage `json:"metadata,omitempty"`
	CallbackURL string          `json:"callback_url,omitempty"`
	Segments    int             `json:"segments,omitempty"`
	Encoding    string          `json:"encoding,omitempty"`
	// Locale is the recipient's language (BCP 47), e.g. for the voice of a call.
	Locale string `json:"locale,omitempty"`
	// Subject and HTML are for email.
	Subject string         `json:"subject,omitempty"`
	HTML    string         `json:"html,omitempty"`
	WeChat  *WeChatOptions `json:"wechat,omitempty"`
	Voice   *VoiceOptions  `json:"voice,omitempty"`
	// ExpectReply makes the message a question whose answers are matched.
	ExpectReply *ExpectReply `json:"expect_reply,omitempty"`
	// TimeZone is the recipient's IANA zone the gateway resolved, and
	// ZoneSource what decided it (contact, request, phone, tenant, default).
	TimeZone   string `json:"timezone,omitempty"`
	ZoneSource string `json:"zone_source,omitempty"`
	// QuietHours is the quiet window ("21:00-08:00") that holds this
	// message back in the recipient's zone; empty when none applies.
	QuietHours string `json:"quiet_hours,omitempty"`
	// Deferred says why SendAt is later than asked ("quiet hours …").
	Deferred string `json:"deferred,omitempty"`
	// Template and TemplateLocale name the template the body was rendered
	// from, and the locale variant used.
	Template       string `json:"template,omitempty"`
	TemplateLocale string `json:"template_locale,omitempty"`
	// Broadcast links a broadcast's message to its person ("bc_…:index").
	Broadcast string    `json:"broadcast,omitempty"`
	CreatedAt time.Time `json:"created_at,omitzero"`
	// ErasedAt is when the recipient's data was erased (see Erase).
	ErasedAt *time.Time `json:"erased_at,omitempty"`
	// Retention, when shorter than the ledger's, is how long this record
	// is kept (its tenant's retention; not stored).
	Retention time.Duration `json:"-"`
}

// Message is a ledger record.
type Message struct {
	ID string
	Request
	Status     Status
	UpdatedAt  time.Time
	Attempts   int
	ProviderID string
	Error      *ErrorInfo
	Events     []Event
	Recording  *Recording
}

// Ledger reads and writes message records.
type Ledger struct {
	rdb       redis.UniversalClient
	retention time.Duration
	now       func() time.Time
	// OnCreate, when set, adds commands to the pipeline that writes a new
	// record (other indexes of the message, in the same round trip).
	OnCreate func(ctx context.Context, pipe redis.Pipeliner, id string, req Request)
	// Metrics counts new messages and the statuses they enter (nil: none).
	Metrics *metrics.Metrics
	// cold is where Get finds messages moved out of Redis (SetCold).
	cold Cold
	// createLoaded says a record was written since the ledger was made, so
	// Redis had the record's script then (CreateAhead).
	createLoaded atomic.Bool
}

// New returns a ledger keeping records for retention.
func New(rdb redis.UniversalClient, retention time.Duration) *Ledger {
	return &Ledger{rdb: rdb, retention: retention, now: time.Now}
}

// NewID returns a new message id: a ULID, so ids sort by creation time.
func NewID() string { return ulid.Make().String() }

func msgKey(id string) string             { return "gw:m:{" + id + "}" }
func eventsKey(id string) string          { return "gw:m:{" + id + "}:ev" }
func providerKey(ch, pid string) string   { return "gw:pid:" + ch + ":" + pid }
func tenantIndexKey(tenant string) string { return "gw:t:{" + tenant + "}:msgs" }
func idemKey(tenant, key string) string {
	sum := sha256.Sum256([]byte(key))
	return "gw:idem:{" + tenant + "}:" + hex.EncodeToString(sum[:16])
}

func ms(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// docOf is a record's doc: its request without what the record keeps in
// fields of its own (tenant, created_at), 60-odd bytes a message less,
// nor the usual SMS encoding: a doc with segments and no encoding is
// GSM-7 (the two were always written together before).
func docOf(req Request) ([]byte, error) {
	req.Tenant, req.CreatedAt = "", time.Time{}
	if req.Segments > 0 && req.Encoding == string(sms.GSM7) {
		req.Encoding = ""
	}
	return json.Marshal(req)
}

// requestOf reads the doc of record id, with the tenant and creation time
// (ms) of its fields when the doc leaves them out (records of earlier
// versions have them in it). Without a creation time either, the record
// was made when its id was: a record whose creation time is its id's, to
// the millisecond, may leave it out (a later version's will, 25 bytes a
// message less), and this version reads it.
func requestOf(id, doc, tenant, createdMS string) (Request, error) {
	var r Request
	if err := json.Unmarshal([]byte(doc), &r); err != nil {
		return r, err
	}
	if r.Tenant == "" {
		r.Tenant = tenant
	}
	if r.CreatedAt.IsZero() {
		if at, err := strconv.ParseInt(createdMS, 10, 64); err == nil {
			r.CreatedAt = time.UnixMilli(at).UTC()
		} else {
			r.CreatedAt = MadeAt(id)
		}
	}
	if r.Segments > 0 && r.Encoding == "" {
		r.Encoding = string(sms.GSM7)
	}
	return r, nil
}

// Create writes a new record with status queued. It returns false when a
// record with that id already exists (a replayed idempotent request).
func (l *Ledger) Create(ctx context.Context, id string, req Request) (bool, error) {
	pipe := l.rdb.Pipeline()
	created, err := l.createIn(ctx, pipe, id, req)
	if err != nil {
		return false, err
	}
	_, _ = pipe.Exec(ctx)
	return created(ctx)
}

// CreateAhead writes a new record, as Create does, and runs then with a
// context under which the record's commands go to Redis right ahead of
// then's first command, in its pipeline (autopipe.Ahead): the record is
// written first, and the pair costs one round trip. It suits a write
// that must find the record, such as the message's send task.
//
// On a client that batches nothing, and for a ledger's first record
// (Redis may lack the record's script), the record goes on its own ahead
// of then, as with Create.
//
// When then fails, its error is returned, and the record was written only
// if its commands went with then's: the caller removes it, as after a
// failure past Create. When then succeeds without taking them (it ran no
// Redis command under its context, or ran them on another client), the
// record is written after it; so is a record whose script Redis lost
// (a restart, a failover). A send task that finds no record for a
// message this young waits for it (see the send worker).
func (l *Ledger) CreateAhead(ctx context.Context, id string, req Request, then func(context.Context) error) (bool, error) {
	// Until Redis is known to have the record's script, the record goes
	// first on its own: a record script Redis lacks runs again after the
	// pipeline, behind the task. This spares a new process's first
	// message; after a restart or failover of Redis, one message per
	// process may still meet it (and its send waits for the record).
	if !autopipe.Batches(l.rdb) || !l.createLoaded.Load() {
		created, err := l.Create(ctx, id, req)
		if err != nil {
			return false, err
		}
		if err := then(ctx); err != nil {
			return false, err
		}
		return created, nil
	}
	pipe := l.rdb.Pipeline()
	created, err := l.createIn(ctx, pipe, id, req)
	if err != nil {
		return false, err
	}
	actx, sent := autopipe.Ahead(ctx, pipe.Cmds()...)
	if err := then(actx); err != nil {
		return false, err // a record that went with then's commands is the caller's to remove
	}
	if !sent() {
		_, _ = pipe.Exec(ctx)
	}
	return created(ctx)
}

// createIn adds the commands writing a new record to pipe, and returns
// the function reading their outcome once pipe ran.
func (l *Ledger) createIn(ctx context.Context, pipe redis.Pipeliner, id string, req Request) (func(context.Context) (bool, error), error) {
	if req.CreatedAt.IsZero() {
		req.CreatedAt = l.now().UTC()
	}
	doc, err := docOf(req)
	if err != nil {
		return nil, err
	}
	ttl := l.retention
	if req.Retention > 0 && req.Retention < ttl {
		ttl = req.Retention
	}
	if req.SendAt != nil && req.SendAt.After(req.CreatedAt) {
		ttl += req.SendAt.Sub(req.CreatedAt)
	}
	first := Event{Status: StatusQueued, At: req.CreatedAt}
	if req.SendAt != nil && req.SendAt.After(req.CreatedAt) {
		first.Status = StatusScheduled
		first.RetryAt = req.SendAt
		first.Detail = "scheduled for send_at"
		if req.Deferred != "" {
			first.Detail = req.Deferred
		}
	}
	ev := eventJSON(id, first)
	keys := []string{msgKey(id), eventsKey(id)}
	args := []any{doc, req.Tenant, string(first.Status), first.Status.Rank(), ms(req.CreatedAt), ttl.Milliseconds(), ev, req.Broadcast}
	// The record script and the tenant index (another slot on Cluster, so
	// not inside the script). Indexing an existing record again is
	// harmless.
	idx := tenantIndexKey(req.Tenant)
	create := createScript.EvalSha(ctx, pipe, keys, args...)
	// Every member has score 0 and ids are ULIDs, so the set is ordered by
	// creation time lexicographically, ties included.
	indexed := pipe.ZAdd(ctx, idx, redis.Z{Score: 0, Member: id})
	cutoff := ulid.ULID{}
	_ = cutoff.SetTime(ulid.Timestamp(req.CreatedAt.Add(-l.retention)))
	pipe.ZRemRangeByLex(ctx, idx, "-", "("+cutoff.String())
	pipe.PExpire(ctx, idx, ttl)
	if l.OnCreate != nil {
		l.OnCreate(ctx, pipe, id, req)
	}
	return func(ctx context.Context) (bool, error) {
		n, err := scriptResult(ctx, l.rdb, create, createScript, keys, args).Int()
		if err != nil {
			return false, err
		}
		l.createLoaded.Store(true)
		if n == 1 {
			l.Metrics.MessageAccepted(req.Channel, req.Priority)
			l.Metrics.StatusEntered(string(first.Status))
		}
		return n == 1, indexed.Err()
	}, nil
}

// scriptResult returns a pipelined EVALSHA's command, or, when Redis did
// not have the script cached (after a restart or failover), the result of
// running it again with the script loaded.
func scriptResult(ctx context.Context, rdb redis.UniversalClient, cmd *redis.Cmd, s *redis.Script, keys []string, args []any) *redis.Cmd {
	if err := cmd.Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		return s.Run(ctx, rdb, keys, args...)
	}
	return cmd
}

// Delete removes a record that could not be queued, so no ghost stays "queued".
func (l *Ledger) Delete(ctx context.Context, tenant, id string) error {
	pipe := l.rdb.Pipeline()
	pipe.Del(ctx, msgKey(id), eventsKey(id))
	pipe.ZRem(ctx, tenantIndexKey(tenant), id)
	_, err := pipe.Exec(ctx)
	return err
}

// Exists says whether a message has a record.
func (l *Ledger) Exists(ctx context.Context, id string) (bool, error) {
	n, err := l.rdb.Exists(ctx, msgKey(id)).Result()
	return n == 1, err
}

// Get returns a record. With a non-empty tenant, a record of another tenant
// is reported as ErrNotFound.
func (l *Ledger) Get(ctx context.Context, tenant, id string) (*Message, error) {
	if !ValidID(id) {
		return nil, ErrNotFound
	}
	pipe := l.rdb.Pipeline()
	hget := pipe.HGetAll(ctx, msgKey(id))
	evs := pipe.LRange(ctx, eventsKey(id), 0, -1)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	h := hget.Val()
	if len(h) == 0 {
		return l.fromCold(ctx, tenant, id)
	}
	if tenant != "" && h["tenant"] != tenant {
		return nil, ErrNotFound
	}
	m, err := messageOf(id, h)
	if err != nil {
		return nil, err
	}
	m.Events = historyOf(id, h, evs.Val())
	return m, nil
}

// historyEntries is a record's history as stored: the entries of a list
// written by an earlier version (legacy), then those of its ev field.
func historyEntries(h map[string]string, legacy []string) []string {
	out := legacy
	if ev := h["ev"]; ev != "" {
		out = append(out, strings.Split(ev, "\n")...)
	}
	return out
}

// historyOf reads the history of message id's record.
func historyOf(id string, h map[string]string, legacy []string) []Event {
	var out []Event
	made := MadeAt(id)
	for _, raw := range historyEntries(h, legacy) {
		if e, ok := parseEvent(raw, made); ok {
			out = append(out, e)
		}
	}
	return out
}

// ValidID accepts canonical (upper-case) ULIDs only; the API upper-cases
// ids it is given, since ULIDs are case-insensitive.
func ValidID(id string) bool {
	u, err := ulid.ParseStrict(id)
	return err == nil && u.String() == id
}

// ClaimOutcome says what a worker should do with a message.
type ClaimOutcome string

// Claim outcomes.
const (
	ClaimSend        ClaimOutcome = "go"          // call the provider now
	ClaimMissing     ClaimOutcome = "missing"     // the record is gone
	ClaimFinal       ClaimOutcome = "final"       // already final (canceled, failed, …)
	ClaimAccepted    ClaimOutcome = "accepted"    // the provider already has it: do not send again
	ClaimUnconfirmed ClaimOutcome = "unconfirmed" // an earlier attempt may have reached the provider: wait
)

// Claim is the ledger's answer to a worker about to call the provider.
type Claim struct {
	Outcome ClaimOutcome
	// Attempt counts every provider attempt; Redials how many of those
	// began again after an unanswered call (they have their own budget).
	Attempt int
	Redials int
	// Throttles counts attempts the provider refused only to slow the
	// sender down.
	Throttles  int
	Status     Status
	ProviderID string
	Wait       time.Duration
	Message    *Message
	// UnconfirmedSince is when the attempt before this one began, when
	// its outcome stayed unknown through the grace period (zero
	// otherwise): the provider may hold the message already.
	UnconfirmedSince time.Time
}

// Claim atomically checks that a message may be sent and, if so, marks an
// attempt in flight. An attempt whose outcome is unknown (the worker died or
// timed out mid-call) blocks new attempts for grace, giving the provider's
// status callback time to reveal that it did accept the message.
//
// also adds the caller's own reads to the same round trip (the worker
// reads the recipient's consent); their outcome is theirs to read.
func (l *Ledger) Claim(ctx context.Context, id string, grace time.Duration, also ...func(redis.Pipeliner)) (Claim, error) {
	now := l.now().UTC()
	ev := eventJSON(id, Event{Status: StatusSending, At: now})
	keys, args := []string{msgKey(id), eventsKey(id)}, []any{ms(now), grace.Milliseconds(), ev}
	var cmd *redis.Cmd
	if len(also) == 0 {
		cmd = claimScript.Run(ctx, l.rdb, keys, args...)
	} else {
		pipe := l.rdb.Pipeline()
		cmd = claimScript.EvalSha(ctx, pipe, keys, args...)
		for _, f := range also {
			f(pipe)
		}
		_, _ = pipe.Exec(ctx)
		cmd = scriptResult(ctx, l.rdb, cmd, claimScript, keys, args)
	}
	res, err := cmd.StringSlice()
	if err != nil {
		return Claim{}, err
	}
	c := Claim{Outcome: ClaimOutcome(res[0])}
	switch c.Outcome {
	case ClaimFinal:
		c.Status = Status(res[1])
	case ClaimAccepted:
		c.ProviderID = res[1]
	case ClaimUnconfirmed:
		w, _ := strconv.ParseInt(res[1], 10, 64)
		c.Wait = time.Duration(w) * time.Millisecond
	case ClaimSend:
		c.Attempt, _ = strconv.Atoi(res[1])
		c.Redials, _ = strconv.Atoi(res[4])
		c.Throttles, _ = strconv.Atoi(res[5])
		if len(res) > 6 && res[6] != "" {
			if at, err := strconv.ParseInt(res[6], 10, 64); err == nil {
				c.UnconfirmedSince = time.UnixMilli(at).UTC()
			}
		}
		c.Status = StatusSending
		m := &Message{ID: id, Status: StatusSending, Attempts: c.Attempt}
		var tenant, created string
		if len(res) > 8 {
			tenant, created = res[7], res[8]
		}
		var err error
		if m.Request, err = requestOf(id, res[3], tenant, created); err != nil {
			return Claim{}, fmt.Errorf("ledger: record %s: %w", id, err)
		}
		c.Message = m
	}
	return c, nil
}

// RecordAccepted stores the provider's id for the message: from then on no
// worker will send it again.
//
// also adds the caller's own commands to the same round trip (the worker
// takes the message out of its tenant's backlog); their outcome is theirs
// to read.
func (l *Ledger) RecordAccepted(ctx context.Context, id, channel, providerID string, also ...func(redis.Pipeliner)) error {
	now := l.now().UTC()
	ev := eventJSON(id, Event{Status: StatusSent, At: now, Detail: detailAccepted})
	keys := []string{msgKey(id), eventsKey(id)}
	args := []any{providerID, ms(now), ev}
	// One round trip: the script and the provider index (another slot on
	// Cluster). The index lives for the retention, as long as any record.
	pipe := l.rdb.Pipeline()
	accepted := acceptedScript.EvalSha(ctx, pipe, keys, args...)
	indexed := pipe.Set(ctx, providerKey(channel, providerID), id, l.retention)
	l.await(ctx, pipe, channel, id, now)
	for _, f := range also {
		f(pipe)
	}
	_, _ = pipe.Exec(ctx)
	n, err := scriptResult(ctx, l.rdb, accepted, acceptedScript, keys, args).Int64()
	switch {
	case err != nil:
		return err
	case n == 0:
		return ErrNotFound
	case n < 0:
		return ErrProviderMismatch
	}
	l.Metrics.StatusEntered(string(StatusSent))
	return indexed.Err()
}

// indexProvider maps the provider's id to the message for as long as the record lives.
func (l *Ledger) indexProvider(ctx context.Context, channel, providerID, id string, ttlMS int64) error {
	return l.rdb.Set(ctx, providerKey(channel, providerID), id, time.Duration(ttlMS)*time.Millisecond).Err()
}

// Failure describes a failed provider attempt.
type Failure struct {
	Code    string
	Message string
	// Final ends the message (failed, or FinalStatus); otherwise it will be
	// retried at RetryAt.
	Final bool
	// FinalStatus is the status a final failure ends in; StatusFailed when empty.
	FinalStatus Status
	RetryAt     time.Time
	// Unconfirmed means the request may have reached the provider (a timeout):
	// the next attempt waits for the grace period first.
	Unconfirmed bool
	// Throttled means the provider refused the attempt to slow the sender
	// down (429): it is counted apart (Claim.Throttles), not as a failure.
	Throttled bool
	Attempt   int
}

// RecordFailure stores a failed attempt, and the failed status when Final.
func (l *Ledger) RecordFailure(ctx context.Context, id string, f Failure) error {
	now := l.now().UTC()
	e := Event{Status: StatusSending, At: now, Attempt: f.Attempt, Error: &ErrorInfo{Code: f.Code, Message: f.Message}}
	final := ""
	if f.Final {
		e.Status = StatusFailed
		if f.FinalStatus != "" {
			e.Status = f.FinalStatus
		}
		final = string(e.Status)
	} else if !f.RetryAt.IsZero() {
		r := f.RetryAt.UTC()
		e.RetryAt = &r
		e.Detail = "will retry"
		if f.Throttled {
			e.Detail = "the provider asked to slow down; will retry"
		}
	}
	_, err := attemptFailedScript.Run(ctx, l.rdb, []string{msgKey(id), eventsKey(id)},
		ms(now), f.Code, f.Message, final, b01(f.Unconfirmed), eventJSON(id, e), b01(f.Throttled)).Result()
	if err == nil && final != "" {
		l.Metrics.StatusEntered(final)
	}
	return err
}

func b01(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// ProviderUpdate is a status the provider reported for a message.
type ProviderUpdate struct {
	Channel        string
	ProviderID     string
	Status         Status
	ProviderStatus string
	ErrorCode      string
	ErrorMessage   string
	// Detail, when set, is the history event's detail: what the report
	// says beyond its status, without personal data (it outlives an
	// erasure), e.g. an email delivery report's status code.
	Detail string
}

// Applied says what a provider update did.
type Applied int

// Outcomes of ApplyProviderUpdateLinked.
const (
	AppliedUnknown   Applied = 0 // no such message
	AppliedChanged   Applied = 1 // the status moved forward
	AppliedEventOnly Applied = 2 // recorded in the history; the status stays (never backwards)
	AppliedDuplicate Applied = 3 // the same report was applied before
)

// ApplyProviderUpdateLinked is ApplyReport returning the broadcast link
// only.
func (l *Ledger) ApplyProviderUpdateLinked(ctx context.Context, id string, u ProviderUpdate) (Applied, string, error) {
	r, err := l.ApplyReport(ctx, id, u)
	return r.Applied, r.Broadcast, err
}

// Report is what applying a provider's report did, and what the caller
// needs next, read in the same round trip.
type Report struct {
	Applied Applied
	// Broadcast is the message's broadcast link ("" for none).
	Broadcast string
	// Tenant is the message's tenant ("" for an unknown message).
	Tenant string
}

// ApplyReport records a provider status report idempotently. The status
// moves only forward; a report that would move it backwards is kept as an
// event. A report that carries the provider id of a message whose
// acceptance was never recorded (the worker died mid-call) records it
// now. A final report takes the message out of the wait for its final
// status (Awaiting) in the same round trip, and puts it back when the
// report turns out not to be the message's (another call's).
func (l *Ledger) ApplyReport(ctx context.Context, id string, u ProviderUpdate) (Report, error) {
	if !ValidID(id) || !u.Status.Valid() {
		return Report{}, nil
	}
	now := l.now().UTC()
	e := Event{Status: u.Status, At: now, ProviderStatus: u.ProviderStatus, Detail: u.Detail}
	if u.ErrorCode != "" {
		e.Error = &ErrorInfo{Code: u.ErrorCode, Message: u.ErrorMessage}
	}
	awaited := u.Status.Final() && AwaitsReport(u.Channel)
	keys := []string{msgKey(id), eventsKey(id)}
	args := []any{u.ProviderID, string(u.Status), u.Status.Rank(), u.ProviderStatus, u.ErrorCode, u.ErrorMessage, ms(now), eventJSON(id, e)}
	// One round trip: the report's script and, for a final report, the
	// wait index (another slot on Cluster, so not inside the script).
	pipe := l.rdb.Pipeline()
	run := providerStatusScript.EvalSha(ctx, pipe, keys, args...)
	if awaited {
		pipe.ZRem(ctx, awaitKey(u.Channel), id)
	}
	_, _ = pipe.Exec(ctx)
	raw, err := scriptResult(ctx, l.rdb, run, providerStatusScript, keys, args).Slice()
	if err != nil {
		return Report{}, err
	}
	outcome, _ := raw[0].(int64)
	ttl, _ := raw[1].(int64)
	var r Report
	if len(raw) > 4 {
		r.Broadcast, _ = raw[2].(string)
		r.Tenant, _ = raw[3].(string)
		if rank, _ := raw[4].(int64); awaited && rank < 3 {
			// The report was not the message's (a redialled call's, or
			// another provider id's): its own report is still awaited.
			if err := l.rdb.ZAddNX(ctx, awaitKey(u.Channel), redis.Z{Score: float64(now.UnixMilli()), Member: id}).Err(); err != nil {
				return r, err
			}
		}
	}
	if outcome < 0 {
		return r, ErrProviderMismatch
	}
	r.Applied = Applied(outcome)
	if r.Applied == AppliedChanged {
		l.Metrics.StatusEntered(string(u.Status))
		if u.Status == StatusDelivered {
			// A message id is a ULID made when the API accepted the message.
			if made, err := ulid.Parse(id); err == nil {
				l.Metrics.Delivered(u.Channel, now.Sub(ulid.Time(made.Time())))
			}
		}
	}
	if ttl > 0 {
		if err := l.indexProvider(ctx, u.Channel, u.ProviderID, id, ttl); err != nil {
			return r, err
		}
	}
	return r, nil
}

// BroadcastOf returns the broadcast link of a message ("" for none).
func (l *Ledger) BroadcastOf(ctx context.Context, id string) (string, error) {
	v, err := l.rdb.HGet(ctx, msgKey(id), "bc").Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	return v, err
}

// MessageIDByProvider finds a message by the provider's id.
func (l *Ledger) MessageIDByProvider(ctx context.Context, channel, providerID string) (string, error) {
	id, err := l.rdb.Get(ctx, providerKey(channel, providerID)).Result()
	if errors.Is(err, redis.Nil) {
		return "", ErrNotFound
	}
	return id, err
}

// ConflictError explains why a message could not be changed.
type ConflictError struct {
	Status Status
	Reason string // final, handed (the provider has it), inflight (being handed over now)
}

func (e *ConflictError) Error() string {
	switch e.Reason {
	case "handed":
		return "the message was already handed to the provider (status " + string(e.Status) + ")"
	case "inflight":
		return "the message is being handed to the provider right now"
	}
	return "the message is already " + string(e.Status)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// CanceledByAPI is the history's reason for a cancellation the API asked
// for.
const CanceledByAPI = "canceled by API request"

// CanceledFromConsole is the history's reason for a cancellation staff
// asked for in the console.
const CanceledFromConsole = "canceled from the console"

// Cancel marks a tenant's message canceled unless a provider may already
// have it; reason is what its history says. It returns ErrNotFound or a
// *ConflictError.
func (l *Ledger) Cancel(ctx context.Context, tenant, id, reason string) error {
	if !ValidID(id) {
		return ErrNotFound
	}
	now := l.now().UTC()
	ev := eventJSON(id, Event{Status: StatusCanceled, At: now, Detail: reason})
	res, err := cancelScript.Run(ctx, l.rdb, []string{msgKey(id), eventsKey(id)}, tenant, ms(now), ev).StringSlice()
	if err != nil {
		return err
	}
	switch res[0] {
	case "missing":
		return ErrNotFound
	case "conflict":
		return &ConflictError{Status: Status(res[1]), Reason: res[2]}
	}
	l.Metrics.StatusEntered(string(StatusCanceled))
	return nil
}

// ClaimIdempotencyKey remembers (tenant, key) → id for ttl. It returns the id
// of the first request that used the key — id itself when this is the first
// — or ErrIdempotencyMismatch when the key was used with a different body.
func (l *Ledger) ClaimIdempotencyKey(ctx context.Context, tenant, key, bodyHash, id string, ttl time.Duration) (string, error) {
	res, err := idemScript.Run(ctx, l.rdb, []string{idemKey(tenant, key)}, id, bodyHash, ttl.Milliseconds()).StringSlice()
	if err != nil {
		return "", err
	}
	if res[1] != bodyHash {
		return res[0], ErrIdempotencyMismatch
	}
	return res[0], nil
}

// ReleaseIdempotencyKey forgets a key whose request could not be queued, so
// the client's retry is treated as new.
func (l *Ledger) ReleaseIdempotencyKey(ctx context.Context, tenant, key string) error {
	return l.rdb.Del(ctx, idemKey(tenant, key)).Err()
}

// Redial retires the provider attempt (a call that was busy or not
// answered) so the message can be sent again, at most maxRedials times; the
// caller queues the new attempt. It returns false when no redial is left:
// the message is then undelivered.
func (l *Ledger) Redial(ctx context.Context, id, providerID string, maxRedials int, retryAt time.Time, reason ErrorInfo) (bool, error) {
	now := l.now().UTC()
	r := retryAt.UTC()
	retry := eventJSON(id, Event{Status: StatusSent, At: now, Error: &reason, RetryAt: &r, Detail: "not answered; calling again"})
	final := eventJSON(id, Event{Status: StatusUndelivered, At: now, Error: &reason, Detail: "not answered; no calls left"})
	n, err := redialScript.Run(ctx, l.rdb, []string{msgKey(id), eventsKey(id)}, providerID, maxRedials, ms(now), retry, final,
		reason.Code, reason.Message).Int()
	switch {
	case err != nil:
		return false, err
	case n < 0:
		return false, ErrNotFound
	}
	return n == 1, nil
}

// RecordAnswer adds a patient's answer (keypad digits, a recording) to the
// message's history.
func (l *Ledger) RecordAnswer(ctx context.Context, id string, a Answer) error {
	m, err := l.rdb.HGet(ctx, msgKey(id), "status").Result()
	if errors.Is(err, redis.Nil) {
		return ErrNotFound
	} else if err != nil {
		return err
	}
	return l.note(ctx, id, Event{Status: Status(m), At: l.now().UTC(), Answer: &a, Detail: "answer"}, "", "")
}

// SetRecording links a stored recording to the message.
func (l *Ledger) SetRecording(ctx context.Context, id string, r Recording) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	h, err := l.rdb.HMGet(ctx, msgKey(id), "status", "erased").Result()
	if err != nil {
		return err
	}
	st, _ := h[0].(string)
	if st == "" {
		return ErrNotFound
	}
	if erased, _ := h[1].(string); erased != "" {
		return ErrErased
	}
	return l.note(ctx, id, Event{Status: Status(st), At: l.now().UTC(), Detail: "recording stored"}, "recording", string(b))
}

func (l *Ledger) note(ctx context.Context, id string, e Event, field, value string) error {
	n, err := noteScript.Run(ctx, l.rdb, []string{msgKey(id), eventsKey(id)}, eventJSON(id, e), field, value).Int()
	if err == nil && n == 0 {
		return ErrNotFound
	}
	return err
}

// Note adds an event with a detail to the message's history (an audit
// entry that changes nothing).
func (l *Ledger) Note(ctx context.Context, id, detail string) error {
	st, err := l.rdb.HGet(ctx, msgKey(id), "status").Result()
	if errors.Is(err, redis.Nil) {
		return ErrNotFound
	} else if err != nil {
		return err
	}
	return l.note(ctx, id, Event{Status: Status(st), At: l.now().UTC(), Detail: detail}, "", "")
}

// Defer records that a message waits until a later time (quiet hours in
// the recipient's zone) before its next attempt: a queued message becomes
// scheduled, a call to be placed again keeps its status; the history says
// why. It returns false when the message is final, the provider has it, or
// an attempt is in flight.
func (l *Ledger) Defer(ctx context.Context, id string, until time.Time, reason string) (bool, error) {
	now := l.now().UTC()
	u := until.UTC()
	ev := eventJSON(id, Event{Status: StatusScheduled, At: now, RetryAt: &u, Detail: reason})
	n, err := deferScript.Run(ctx, l.rdb, []string{msgKey(id), eventsKey(id)}, ms(now), ms(u), ev).Int()
	return n == 1, err
}

// Waiting reports, for each message id, whether the message still waits
// to be sent: its record exists and it was neither handed to a provider
// nor ended (queued, scheduled, or sending and to be retried).
func (l *Ledger) Waiting(ctx context.Context, ids []string) ([]bool, error) {
	pipe := l.rdb.Pipeline()
	ranks := make([]*redis.StringCmd, len(ids))
	for i, id := range ids {
		ranks[i] = pipe.HGet(ctx, msgKey(id), "rank")
	}
	_, _ = pipe.Exec(ctx)
	out := make([]bool, len(ids))
	for i, c := range ranks {
		r, err := c.Int()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, err
		}
		out[i] = err == nil && r < StatusSent.Rank()
	}
	return out, nil
}

// TenantOf returns the tenant of a message.
func (l *Ledger) TenantOf(ctx context.Context, id string) (string, error) {
	t, err := l.rdb.HGet(ctx, msgKey(id), "tenant").Result()
	if errors.Is(err, redis.Nil) {
		return "", ErrNotFound
	}
	return t, err
}
