package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/address"
	"github.com/patientmsg/gateway/internal/redact"
)

// ErrBadCursor means a listing's cursor is not a message id.
var ErrBadCursor = errors.New("the cursor is not a message id")

// ErrBadRecipient means an address to search for is none of a phone
// number in international form, an email address or a WeChat openid.
var ErrBadRecipient = errors.New("not a phone number in international form, an email address or a WeChat openid")

// ParseRecipient reads the address a search looks for: an email address
// when it has an @, a WeChat openid when it has a letter, else a phone
// number (which must carry its country code). It is normalised as the
// API normalises a message's recipient, so the two compare equal.
func ParseRecipient(s string) (Recipient, error) {
	s = strings.TrimSpace(s)
	switch {
	case strings.Contains(s, "@"):
		if e, ok := address.Email(s); ok {
			return Recipient{Email: e}, nil
		}
	case strings.ContainsFunc(s, func(r rune) bool { return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' }):
		if address.OpenID(s) {
			return Recipient{WeChatOpenID: s}, nil
		}
	default:
		if e164, err := address.Phone(s, ""); err == nil {
			return Recipient{Phone: e164}, nil
		}
	}
	return Recipient{}, ErrBadRecipient
}

// Masked is the recipient as callers and the console may see it: each
// address by its kind (phone, email, wechat_openid), masked.
func (r Recipient) Masked() map[string]string {
	out := map[string]string{}
	if r.Phone != "" {
		out["phone"] = redact.Phone(r.Phone)
	}
	if r.Email != "" {
		out["email"] = redact.Email(r.Email)
	}
	if r.WeChatOpenID != "" {
		out["wechat_openid"] = redact.Secret(r.WeChatOpenID)
	}
	return out
}

// Filter chooses messages of a tenant's history; a zero field matches
// every message.
type Filter struct {
	// To matches a message whose recipient has this address (from
	// ParseRecipient; only its one non-empty address is compared).
	To      Recipient
	Channel string
	Status  Status
	// Since and Until bound the creation time: Since ≤ created < Until.
	Since, Until time.Time
	// MetaKey and MetaValue match a message whose metadata has that key
	// with that value (a string, or a number or boolean as JSON writes
	// it): {"followup_id": "fu_…"}.
	MetaKey, MetaValue string
}

func (f Filter) matches(m *Message) bool {
	switch {
	case f.To.Phone != "" && m.To.Phone != f.To.Phone,
		f.To.Email != "" && m.To.Email != f.To.Email,
		f.To.WeChatOpenID != "" && m.To.WeChatOpenID != f.To.WeChatOpenID,
		f.Channel != "" && m.Channel != f.Channel,
		f.Status != "" && m.Status != f.Status,
		!f.Since.IsZero() && m.CreatedAt.Before(f.Since),
		!f.Until.IsZero() && !m.CreatedAt.Before(f.Until),
		f.MetaKey != "" && !metaHas(m.Metadata, f.MetaKey, f.MetaValue):
		return false
	}
	return true
}

// metaHas says whether a metadata object has key with value.
func metaHas(raw json.RawMessage, key, value string) bool {
	if len(raw) == 0 {
		return false
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil {
		return false
	}
	v, ok := obj[key]
	if !ok {
		return false
	}
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s == value
	}
	return strings.TrimSpace(string(v)) == value
}

// MaxScan is the most records one Find examines, matching or not: a
// search through a long history goes page after page, each a bounded
// amount of work.
const MaxScan = 500

// findBatch is how many records one round trip reads.
const findBatch = 100

// Query is one page of a search of a tenant's messages, newest first.
type Query struct {
	Filter
	// Before continues a listing: only messages older than this id.
	Before string
	// Limit is the most messages returned (at least 1).
	Limit int
	// Scan is the most records examined (MaxScan when 0 or more).
	Scan int
	// HotOnly leaves the archive out: only messages in Redis.
	HotOnly bool
}

// Page is what a Find returns.
type Page struct {
	// Messages match the filter, newest first, without their events.
	Messages []*Message
	// Next is the cursor (Query.Before) of the next page when the search
	// stopped before the end of the history: the page is full, or Scan
	// records were examined. "" when there is nothing older.
	Next string
	// Scanned counts the records examined.
	Scanned int
}

// Find searches a tenant's messages, newest first (by id, which is made
// when the message is made or planned). The filter cannot end the scan
// early, since creation times do not follow ids strictly (a follow-up
// step's id is made when it is planned): at most q.Scan records are
// read, and Page.Next says where to go on.
func (l *Ledger) Find(ctx context.Context, tenant string, q Query) (Page, error) {
	if q.Before != "" && !ValidID(q.Before) {
		return Page{}, ErrBadCursor
	}
	scan := q.Scan
	if scan <= 0 || scan > MaxScan {
		scan = MaxScan
	}
	limit := max(q.Limit, 1)
	page := Page{Messages: []*Message{}}
	cursor := q.Before
	lister, _ := l.cold.(ColdLister)
	if q.HotOnly {
		lister = nil
	}
	for page.Scanned < scan {
		upper := "+"
		if cursor != "" {
			upper = "(" + cursor
		}
		n := min(findBatch, scan-page.Scanned)
		ids, err := l.rdb.ZRevRangeByLex(ctx, tenantIndexKey(tenant), &redis.ZRangeBy{Max: upper, Min: "-", Count: int64(n)}).Result()
		if err != nil {
			return Page{}, err
		}
		pipe := l.rdb.Pipeline()
		hashes := make([]*redis.MapStringStringCmd, len(ids))
		for i, id := range ids {
			hashes[i] = pipe.HGetAll(ctx, msgKey(id))
		}
		if len(ids) > 0 {
			if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
				return Page{}, err
			}
		}
		hot := make([]*Message, 0, len(ids))
		for i, id := range ids {
			h := hashes[i].Val()
			if len(h) == 0 || h["tenant"] != tenant {
				hot = append(hot, &Message{ID: id}) // expired since it was indexed: scanned, never matched
				continue
			}
			m, err := messageOf(id, h)
			if err != nil {
				return Page{}, err
			}
			hot = append(hot, m)
		}
		// Archived messages are older than the hot window: merged in once
		// the batch reaches it (or the end of what Redis holds).
		var cold []*Message
		if lister != nil && (len(ids) < n || ids[len(ids)-1] < lister.Boundary()) {
			if cold, err = lister.Older(ctx, tenant, cursor, n); err != nil {
				return Page{}, err
			}
		}
		merged, last, done := mergeNewestFirst(hot, cold, len(ids) == n, len(cold) == n)
		for _, m := range merged {
			cursor = m.ID
			page.Scanned++
			if m.Tenant != tenant || !q.matches(m) {
				continue
			}
			page.Messages = append(page.Messages, m)
			if len(page.Messages) == limit {
				page.Next = m.ID
				return page, nil
			}
		}
		if done {
			return page, nil // the end of the history
		}
		cursor = last
	}
	page.Next = cursor
	return page, nil
}

// ColdLister is a Cold that lists archived messages too, so that Find
// goes on into the archive.
type ColdLister interface {
	Cold
	// Older returns up to n of the tenant's archived messages older than
	// the id before ("" for the newest), newest first.
	Older(ctx context.Context, tenant, before string, n int) ([]*Message, error)
	// Boundary is the newest id an archived message can have (messages
	// made since the hot window began are in Redis only).
	Boundary() string
}

// mergeNewestFirst merges two newest-first batches read below the same
// cursor. A batch that was cut short (more follow) bounds what can be
// taken: nothing older than its last item, which the next round reads
// again. It returns what can be taken, the cursor for the next round and
// whether both were read to their end.
func mergeNewestFirst(a, b []*Message, aMore, bMore bool) ([]*Message, string, bool) {
	bound := ""
	if aMore && len(a) > 0 {
		bound = a[len(a)-1].ID
	}
	if bMore && len(b) > 0 && b[len(b)-1].ID > bound {
		bound = b[len(b)-1].ID
	}
	out := make([]*Message, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		var m *Message
		if j >= len(b) || (i < len(a) && a[i].ID > b[j].ID) {
			m, i = a[i], i+1
		} else {
			m, j = b[j], j+1
		}
		if bound != "" && m.ID < bound {
			break
		}
		out = append(out, m)
	}
	return out, bound, !aMore && !bMore
}

// messageOf reads a record's hash (its events are not in it).
func messageOf(id string, h map[string]string) (*Message, error) {
	m := &Message{ID: id}
	var err error
	if m.Request, err = requestOf(id, h["doc"], h["tenant"], h["created_at"]); err != nil {
		return nil, fmt.Errorf("ledger: record %s: %w", id, err)
	}
	m.Status = Status(h["status"])
	m.Attempts, _ = strconv.Atoi(h["attempts"])
	m.ProviderID = h["provider_id"]
	if u, err := strconv.ParseInt(h["updated_at"], 10, 64); err == nil {
		m.UpdatedAt = time.UnixMilli(u).UTC()
	} else {
		m.UpdatedAt = m.CreatedAt
	}
	if h["err_code"] != "" || h["err_msg"] != "" {
		m.Error = &ErrorInfo{Code: h["err_code"], Message: h["err_msg"]}
	}
	if r := h["recording"]; r != "" {
		m.Recording = &Recording{}
		if err := json.Unmarshal([]byte(r), m.Recording); err != nil {
			return nil, fmt.Errorf("ledger: record %s recording: %w", id, err)
		}
	}
	return m, nil
}
