// Package replies keeps what patients answer: each inbound message that is
// not a keyword is linked to the tenant and the message that last went to
// its sender, and appended to that tenant's reply feed (a Redis stream
// trimmed to the retention), which clinics poll with a cursor.
package replies

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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
			"option", r.Option},
	}).Result()
	if err != nil {
		return "", err
	}
	key := ConversationKey(tenant, r.From)
	pipe := s.rdb.Pipeline()
	pipe.ZAdd(ctx, key, redis.Z{Score: float64(r.ReceivedAt.UnixMilli()), Member: "r:" + id})
	pipe.ZRemRangeByScore(ctx, key, "-inf", "("+minID)
	pipe.Expire(ctx, key, s.retention)
	_, err = pipe.Exec(ctx)
	return id, err
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
// ("m:<message id>", "r:<reply id>"), scored by time (unix ms).
func ConversationKey(tenant string, id consent.Identity) string {
	sum := sha256.Sum256([]byte(id.String()))
	return "gw:conv:{" + tenant + "}:" + hex.EncodeToString(sum[:16])
}

// Entry is one line of a conversation: a message or a reply.
type Entry struct {
	Kind string // "message" or "reply"
	ID   string
	At   time.Time
}

// Conversation returns the last limit entries with an identity, oldest first.
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
	return Reply{ID: m.ID, Channel: str("channel"), From: consent.Identity{Kind: consent.Kind(str("kind")), Value: str("from")},
		Body: str("body"), ReceivedAt: at, InReplyTo: str("in_reply_to"), ProviderID: str("provider_id"), Option: str("option")}
}
