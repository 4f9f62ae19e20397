// Package replies keeps what patients answer: each inbound message that is
// not a keyword is linked to the tenant and the message that last went to
// its sender, and appended to that tenant's reply feed (a Redis stream
// trimmed to the retention), which clinics poll with a cursor.
package replies

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/consent"
)

// ErrBadCursor is returned for a cursor that is not one this feed gave.
var ErrBadCursor = errors.New("replies: bad cursor")

// Reply is one answer of a patient.
type Reply struct {
	// ID is the feed cursor of this reply.
	ID         string           `json:"id"`
	Channel    string           `json:"channel"`
	From       consent.Identity `json:"from"`
	Body       string           `json:"body"`
	ReceivedAt time.Time        `json:"received_at"`
	// InReplyTo is the message last sent to the patient by the tenant.
	InReplyTo  string `json:"in_reply_to"`
	ProviderID string `json:"provider_id"`
	// Option is the meaning of the answer ("confirm") when it matched an
	// option of the question it answers; "" for free text.
	Option string `json:"option,omitempty"`
	// PossibleOptOut is set when the reply may be a wish to stop (see
	// consent.Recognise): staff resolve it before its deadline.
	PossibleOptOut *PossibleOptOut `json:"possible_opt_out,omitempty"`
}

// PossibleOptOut marks a reply that may be a wish to stop.
type PossibleOptOut struct {
	Deadline time.Time `json:"deadline"`
}

// possibleField is how the mark is kept in the feed: the deadline, or "".
func possibleField(p *PossibleOptOut) string {
	if p == nil {
		return ""
	}
	return p.Deadline.UTC().Format(time.RFC3339)
}

// Store finds the message that last went to a patient (LastKey, written
// with each new message) and keeps the patients' replies.
type Store struct {
	rdb       redis.UniversalClient
	retention time.Duration
}

// New returns the store; replies are kept for retention.
func New(rdb redis.UniversalClient, retention time.Duration) *Store {
	return &Store{rdb: rdb, retention: retention}
}

// LastKey is where the last outbound message to an identity is remembered
// (hashed: no address in key names).
func LastKey(id consent.Identity) string {
	sum := sha256.Sum256([]byte(id.String()))
	return "gw:last:" + hex.EncodeToString(sum[:16])
}

// LastValue is what LastKey holds: "tenant message-id".
func LastValue(tenant, messageID string) string { return tenant + " " + messageID }

// Last returns the tenant and message last sent to id.
func (s *Store) Last(ctx context.Context, id consent.Identity) (tenant, messageID string, err error) {
	v, err := s.rdb.Get(ctx, LastKey(id)).Result()
	if errors.Is(err, redis.Nil) {
		return "", "", nil
	}
	if err != nil {
		return "", "", err
	}
	tenant, messageID, _ = strings.Cut(v, " ")
	return tenant, messageID, nil
}

func feedKey(tenant string) string { return "gw:replies:{" + tenant + "}" }

// Add appends a reply to the tenant's feed and its conversation with the
// sender, and returns its cursor.
func (s *Store) Add(ctx context.Context, tenant string, r Reply) (string, error) {
	minID := strconv.FormatInt(time.Now().Add(-s.retention).UnixMilli(), 10)
	id, err := s.rdb.XAdd(ctx, &redis.XAddArgs{
		Stream: feedKey(tenant), MinID: minID, Approx: true,
		Values: []any{"channel", r.Channel, "kind", string(r.From.Kind), "from", r.From.Value, "body", r.Body,
			"at", r.ReceivedAt.UTC().Format(time.RFC3339Nano), "in_reply_to", r.InReplyTo, "provider_id", r.ProviderID,
			"option", r.Option, "possible_opt_out", possibleField(r.PossibleOptOut)},
	}).Result()
	if err != nil {
		return "", err
	}
	key := ConversationKey(tenant, r.From)
	pipe := s.rdb.Pipeline()
	pipe.ZAdd(ctx, key, redis.Z{Score: float64(r.ReceivedAt.UnixMilli()), Member: "r:" + id})
	pipe.ZRemRangeByScore(ctx, key, "-inf", "("+minID)
	pipe.ZRemRangeByRank(ctx, key, 0, keepLast)
	pipe.Expire(ctx, key, s.retention)
	_, err = pipe.Exec(ctx)
	return id, err
}

// AddOnce is Add for a reply the provider identifies (ProviderID): filed
// again (a task run again after a worker died half-way), it adds nothing
// and returns the first filing's cursor. The feed entry, the conversation
// entry and the provider id's record are written in one script.
func (s *Store) AddOnce(ctx context.Context, tenant string, r Reply) (id string, first bool, err error) {
	if r.ProviderID == "" {
		id, err = s.Add(ctx, tenant, r)
		return id, true, err
	}
	minID := strconv.FormatInt(time.Now().Add(-s.retention).UnixMilli(), 10)
	res, err := addOnceScript.Run(ctx, s.rdb,
		[]string{feedKey(tenant), ConversationKey(tenant, r.From), filedKey(tenant, r.Channel, r.ProviderID)},
		minID, int64(s.retention/time.Millisecond), r.ReceivedAt.UnixMilli(),
		"channel", r.Channel, "kind", string(r.From.Kind), "from", r.From.Value, "body", r.Body,
		"at", r.ReceivedAt.UTC().Format(time.RFC3339Nano), "in_reply_to", r.InReplyTo, "provider_id", r.ProviderID,
		"option", r.Option, "possible_opt_out", possibleField(r.PossibleOptOut)).StringSlice()
	if err != nil {
		return "", false, err
	}
	return res[0], res[1] == "1", nil
}

// filedKey records the feed cursor of a provider's message once filed.
func filedKey(tenant, channel, providerID string) string {
	return "gw:replies:{" + tenant + "}:filed:" + channel + ":" + providerID
}

var addOnceScript = redis.NewScript(`
local filed = redis.call('GET', KEYS[3])
if filed then return {filed, '0'} end
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[1], 'MINID', '~', ARGV[1], '*', unpack(fields))
redis.call('ZADD', KEYS[2], ARGV[3], 'r:' .. id)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, ` + strconv.Itoa(keepLast) + `)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('SET', KEYS[3], id, 'PX', ARGV[2])
return {id, '1'}
`)

// Filing is what a patient's message answers: the tenant and message, and
// the option's meaning when it answered a question.
type Filing struct {
	Tenant    string `json:"t"`
	MessageID string `json:"m"`
	Option    string `json:"o,omitempty"`
	// Response is the questionnaire response the message answers ("" when
	// it answers no questionnaire).
	Response string `json:"q,omitempty"`
}

// matchKey holds the match of a provider's message.
func matchKey(channel, providerID string) string {
	return "gw:replies:match:" + channel + ":" + providerID
}

// RememberMatch records what a provider's message was matched to, unless
// it was before, and returns the match that stands: a message filed again
// after a failure half-way answers the same question with the same option,
// though the question was closed meanwhile.
func (s *Store) RememberMatch(ctx context.Context, channel, providerID string, m Filing) (Filing, error) {
	b, _ := json.Marshal(m)
	prev, err := s.rdb.SetArgs(ctx, matchKey(channel, providerID), b, redis.SetArgs{Mode: "NX", Get: true, TTL: 7 * 24 * time.Hour}).Result()
	if errors.Is(err, redis.Nil) {
		return m, nil // first
	}
	if err != nil {
		return Filing{}, err
	}
	var stood Filing
	if json.Unmarshal([]byte(prev), &stood) != nil {
		return m, nil
	}
	return stood, nil
}

// RememberedMatch returns a provider's message's match, if it was made.
func (s *Store) RememberedMatch(ctx context.Context, channel, providerID string) (Filing, bool, error) {
	b, err := s.rdb.Get(ctx, matchKey(channel, providerID)).Bytes()
	if errors.Is(err, redis.Nil) {
		return Filing{}, false, nil
	}
	if err != nil {
		return Filing{}, false, err
	}
	var m Filing
	if json.Unmarshal(b, &m) != nil {
		return Filing{}, false, nil
	}
	return m, true, nil
}

// List returns up to limit replies after the cursor ("" for the oldest kept).
func (s *Store) List(ctx context.Context, tenant, after string, limit int) ([]Reply, error) {
	start := "-"
	if after != "" {
		if !validCursor(after) {
			return nil, ErrBadCursor
		}
		start = "(" + after
	}
	msgs, err := s.rdb.XRangeN(ctx, feedKey(tenant), start, "+", int64(limit)).Result()
	if err != nil {
		return nil, err
	}
	out := make([]Reply, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, replyOf(m))
	}
	return out, nil
}

// Recent returns up to limit replies before the cursor ("" for the
// newest), newest first.
func (s *Store) Recent(ctx context.Context, tenant, before string, limit int) ([]Reply, error) {
	end := "+"
	if before != "" {
		if !validCursor(before) {
			return nil, ErrBadCursor
		}
		end = "(" + before
	}
	msgs, err := s.rdb.XRevRangeN(ctx, feedKey(tenant), end, "-", int64(limit)).Result()
	if err != nil {
		return nil, err
	}
	out := make([]Reply, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, replyOf(m))
	}
	return out, nil
}

func validCursor(c string) bool {
	ms, seq, ok := strings.Cut(c, "-")
	if !ok {
		return false
	}
	_, err1 := strconv.ParseUint(ms, 10, 64)
	_, err2 := strconv.ParseUint(seq, 10, 64)
	return err1 == nil && err2 == nil
}

// PromptsKey holds the open questions to an identity: members are
// "tenant message-id", scored by when they close (unix ms).
func PromptsKey(id consent.Identity) string {
	sum := sha256.Sum256([]byte(id.String()))
	return "gw:prompts:" + hex.EncodeToString(sum[:16])
}

// Prompt is an open question to an identity.
type Prompt struct {
	Tenant, MessageID string
}

// OpenPrompts lists the questions still open for id, most recent first.
func (s *Store) OpenPrompts(ctx context.Context, id consent.Identity, now time.Time) ([]Prompt, error) {
	key := PromptsKey(id)
	members, err := s.rdb.ZRevRangeByScore(ctx, key, &redis.ZRangeBy{Min: strconv.FormatInt(now.UnixMilli(), 10), Max: "+inf"}).Result()
	if err != nil {
		return nil, err
	}
	s.rdb.ZRemRangeByScore(ctx, key, "-inf", "("+strconv.FormatInt(now.UnixMilli(), 10))
	out := make([]Prompt, 0, len(members))
	for _, m := range members {
		t, id, _ := strings.Cut(m, " ")
		out = append(out, Prompt{Tenant: t, MessageID: id})
	}
	// Scores are closing times; order by the message ids (ULIDs), newest first.
	sort.Slice(out, func(i, j int) bool { return out[i].MessageID > out[j].MessageID })
	return out, nil
}

// ClosePrompt removes an answered question.
func (s *Store) ClosePrompt(ctx context.Context, id consent.Identity, p Prompt) error {
	return s.rdb.ZRem(ctx, PromptsKey(id), p.Tenant+" "+p.MessageID).Err()
}

// ConversationKey lists a tenant's messages to an identity and its replies
// ("m:<message id>", "r:<reply id>"), scored by time (unix ms), the last
// ConversationKept of them.
func ConversationKey(tenant string, id consent.Identity) string {
	sum := sha256.Sum256([]byte(id.String()))
	return "gw:conv:{" + tenant + "}:" + hex.EncodeToString(sum[:16])
}

// ConversationKept bounds a conversation: its last ConversationKept
// entries are kept, as many as any reader reads (Thread reads at most
// this many) and few enough for Redis to keep the set compact (a listpack
// up to zset-max-listpack-entries, 128 by default). Unbounded, an address
// that gets thousands of messages (a care home's front desk, a test phone)
// kept an entry of about 130 bytes for each of them, none ever read.
const ConversationKept = 128

// keepLast is the ZREMRANGEBYRANK stop that leaves a conversation its
// last ConversationKept entries.
const keepLast = -ConversationKept - 1

// AddMessage adds a message made at `at` to the conversation with its
// recipient, in pipe (the round trip that writes its record); the
// conversation lives ttl from then.
func AddMessage(ctx context.Context, pipe redis.Pipeliner, tenant string, to consent.Identity, id string, at time.Time, ttl time.Duration) {
	key := ConversationKey(tenant, to)
	pipe.ZAdd(ctx, key, redis.Z{Score: float64(at.UnixMilli()), Member: "m:" + id})
	pipe.ZRemRangeByRank(ctx, key, 0, keepLast)
	pipe.Expire(ctx, key, ttl)
}

// Entry is one line of a conversation: a message or a reply.
type Entry struct {
	Kind string // "message" or "reply"
	ID   string
	At   time.Time
}

// Conversation returns the last limit entries with an identity, oldest
// first; no more than ConversationKept are kept.
func (s *Store) Conversation(ctx context.Context, tenant string, id consent.Identity, limit int) ([]Entry, error) {
	zs, err := s.rdb.ZRevRangeWithScores(ctx, ConversationKey(tenant, id), 0, int64(limit-1)).Result()
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(zs))
	for i := len(zs) - 1; i >= 0; i-- {
		m, _ := zs[i].Member.(string)
		kind, ref, _ := strings.Cut(m, ":")
		e := Entry{ID: ref, At: time.UnixMilli(int64(zs[i].Score)).UTC(), Kind: "message"}
		if kind == "r" {
			e.Kind = "reply"
		}
		out = append(out, e)
	}
	return out, nil
}

// Get returns one reply of a tenant's feed (ErrBadCursor when it is not there).
func (s *Store) Get(ctx context.Context, tenant, replyID string) (Reply, error) {
	if !validCursor(replyID) {
		return Reply{}, ErrBadCursor
	}
	list, err := s.rdb.XRangeN(ctx, feedKey(tenant), replyID, replyID, 1).Result()
	if err != nil {
		return Reply{}, err
	}
	if len(list) == 0 {
		return Reply{}, ErrBadCursor
	}
	return replyOf(list[0]), nil
}

func replyOf(m redis.XMessage) Reply {
	str := func(k string) string { v, _ := m.Values[k].(string); return v }
	at, _ := time.Parse(time.RFC3339Nano, str("at"))
	var possible *PossibleOptOut
	if d, err := time.Parse(time.RFC3339, str("possible_opt_out")); err == nil {
		possible = &PossibleOptOut{Deadline: d}
	}
	return Reply{PossibleOptOut: possible, ID: m.ID, Channel: str("channel"), From: consent.Identity{Kind: consent.Kind(str("kind")), Value: str("from")},
		Body: str("body"), ReceivedAt: at, InReplyTo: str("in_reply_to"), ProviderID: str("provider_id"), Option: str("option")}
}
