package ledger

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrErased is returned for a change that would add personal data to a
// message whose recipient was erased (a recording fetched late).
var ErrErased = errors.New("the message's recipient was erased")

// Scrub is what Erase leaves of a request: the tenant, channel, priority,
// times, template name, size and links (broadcast, callback URL); never
// the recipient, the text or the metadata, which may identify the patient.
func (r Request) Scrub(at time.Time) Request {
	out := Request{Tenant: r.Tenant, Channel: r.Channel, Priority: r.Priority, SendAt: r.SendAt,
		CallbackURL: r.CallbackURL, Segments: r.Segments, Encoding: r.Encoding, QuietHours: r.QuietHours,
		Template: r.Template, TemplateLocale: r.TemplateLocale, Broadcast: r.Broadcast, CreatedAt: r.CreatedAt}
	if r.ExpectReply != nil {
		out.ExpectReply = &ExpectReply{Within: r.ExpectReply.Within, Code: r.ExpectReply.Code}
	}
	at = at.UTC()
	out.ErasedAt = &at
	return out
}

// scrubEvent drops what a history entry may say of the patient: the keys
// pressed, the recording and the provider's error text (its code stays).
func scrubEvent(id, raw string) string {
	e, ok := parseEvent(raw, MadeAt(id))
	if !ok {
		return eventJSON(id, Event{Status: StatusQueued, Detail: "erased"})
	}
	scrubOne(&e)
	return eventJSON(id, e)
}

// scrubOne drops what one history entry may say of the patient.
func scrubOne(e *Event) {
	if e.Answer != nil {
		e.Answer = &Answer{Duration: e.Answer.Duration}
	}
	if e.Error != nil {
		e.Error = &ErrorInfo{Code: e.Error.Code}
	}
}

// eraseScript replaces a record's request and the first entries of its
// history with their scrubbed forms, keeping the entries written since it
// was read and the record's expiry. KEYS msg, legacy events list ARGV
// tenant, doc, erased_ms, n (the list's entries read), f (the ev field's
// entries read), then n and f scrubbed entries. Returns 0 when the record
// is gone or another tenant's.
var eraseScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'tenant') ~= ARGV[1] then return 0 end
local n, f = tonumber(ARGV[4]), tonumber(ARGV[5])
if n > 0 then
  local ttl = redis.call('PTTL', KEYS[2])
  local tail = redis.call('LRANGE', KEYS[2], n, -1)
  redis.call('DEL', KEYS[2])
  for i = 6, 5 + n do redis.call('RPUSH', KEYS[2], ARGV[i]) end
  for _, e in ipairs(tail) do redis.call('RPUSH', KEYS[2], e) end
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
end
local cur = redis.call('HGET', KEYS[1], 'ev')
if cur and f > 0 then
  local out, i = {}, 0
  for e in string.gmatch(cur, '[^\n]+') do
    i = i + 1
    if i <= f then out[i] = ARGV[5 + n + i] else out[i] = e end
  end
  redis.call('HSET', KEYS[1], 'ev', table.concat(out, '\n'))
end
redis.call('HSET', KEYS[1], 'doc', ARGV[2], 'err_msg', '', 'erased', ARGV[3])
redis.call('HDEL', KEYS[1], 'recording')
return 1
`)

// Erase scrubs a tenant's message of its recipient's personal data: the
// record stays (its status, channel, times and counts still add up in
// reports and broadcasts) but says nothing of who it went to or what it
// said (see Request.Scrub); the history loses keys pressed and error
// texts, and the link to a recording goes (delete the recording first).
// Erasing again is harmless; a message that is gone is no error.
func (l *Ledger) Erase(ctx context.Context, tenant, id string) error {
	m, err := l.Get(ctx, tenant, id)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	now := l.now()
	doc, err := docOf(m.Request.Scrub(now))
	if err != nil {
		return err
	}
	pipe := l.rdb.Pipeline()
	list := pipe.LRange(ctx, eventsKey(id), 0, -1)
	field := pipe.HGet(ctx, msgKey(id), "ev")
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	var inField []string
	if v := field.Val(); v != "" {
		inField = strings.Split(v, "\n")
	}
	args := []any{tenant, doc, ms(now), len(list.Val()), len(inField)}
	for _, e := range append(list.Val(), inField...) {
		args = append(args, scrubEvent(id, e))
	}
	return eraseScript.Run(ctx, l.rdb, []string{msgKey(id), eventsKey(id)}, args...).Err()
}

// Erased says whether a message's recipient was erased.
func (l *Ledger) Erased(ctx context.Context, id string) (bool, error) {
	n, err := l.rdb.HExists(ctx, msgKey(id), "erased").Result()
	return n, err
}

// ScrubMessage scrubs a message held outside Redis (archived) as Erase
// scrubs a record: the request (Request.Scrub), the history's keys
// pressed and error texts, the error's text and the recording's link.
func ScrubMessage(m *Message, at time.Time) {
	m.Request = m.Request.Scrub(at)
	for i := range m.Events {
		scrubOne(&m.Events[i])
	}
	if m.Error != nil {
		m.Error = &ErrorInfo{Code: m.Error.Code}
	}
	m.Recording = nil
}
