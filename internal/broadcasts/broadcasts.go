// Package broadcasts keeps crisis broadcasts: one message to every person
// of an audience over a cascade of channels (WeChat, then SMS, then a
// call), each person tried on their next channel until they acknowledge,
// and a live roster of who is safe, who needs help and who could not be
// reached.
//
// A broadcast and its people live in Redis under the broadcast's hash tag:
//
//	gw:bc:{id}          hash: doc (the Config, JSON), tenant, state, created_at, total, counters
//	gw:bc:{id}:p        hash: person index → Person (JSON)
//	gw:bc:{id}:s:<name> set:  person indexes by state and by answer, for listing
//	gw:bc:{id}:ev       stream: progress events, for Server-Sent Events
//	gw:bc:{id}:dl       sorted set: person index by the deadline of their current try
//
// Every change to a person is a compare-and-set of its JSON that also moves
// the broadcast's counters by the difference between the old and the new
// person, so the roster is always the sum of its people: a duplicated or
// late report changes nothing twice.
package broadcasts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/audiences"
	"github.com/patientmsg/gateway/internal/metrics"
)

// Errors of the store.
var (
	ErrNotFound  = errors.New("broadcast not found")
	ErrConflict  = errors.New("the person changed meanwhile")
	ErrNotActive = errors.New("broadcast is not active")
)

// Broadcast states.
const (
	StateActive   = "active"
	StateCanceled = "canceled"
)

// Person states, in the order a person goes through them.
const (
	PersonPending      = "pending"      // not sent anything yet
	PersonQueued       = "queued"       // a message is queued on the current channel
	PersonSent         = "sent"         // the provider has it
	PersonDelivered    = "delivered"    // the provider reports delivery (a poll still waits for the answer)
	PersonAcknowledged = "acknowledged" // answered the poll, or delivered when there is no poll
	PersonUnreachable  = "unreachable"  // every channel they have failed or was refused
	PersonSuppressed   = "suppressed"   // opted out on every channel they have
	PersonCanceled     = "canceled"     // the broadcast was canceled before they were reached
)

// Config is a broadcast as created: what is sent to whom, how.
type Config struct {
	ID         string            `json:"id"`
	Tenant     string            `json:"tenant"`
	Name       string            `json:"name"`
	Channels   []string          `json:"channels"`
	Template   string            `json:"template,omitempty"`
	Vars       map[string]string `json:"vars,omitempty"`
	Body       map[string]string `json:"body,omitempty"` // locale → text
	Poll       *Poll             `json:"poll,omitempty"`
	AckTimeout time.Duration     `json:"ack_timeout"`
	Priority   string            `json:"priority"`
	SendAt     *time.Time        `json:"send_at,omitempty"`
	AudienceID string            `json:"audience_id"`
	FollowUpOf string            `json:"follow_up_of,omitempty"`
	// OnlyNotSafe sends a follow-up only to those who did not answer safe.
	OnlyNotSafe bool `json:"only_not_safe,omitempty"`
	// IncidentID is the incident the broadcast is an update of.
	IncidentID string    `json:"incident_id,omitempty"`
	Total      int       `json:"total"`
	Chunks     int       `json:"chunks"`
	CreatedAt  time.Time `json:"created_at"`
}

// Poll is the question of a broadcast: answers ("1") and their meanings
// ("safe", "need_help").
type Poll struct {
	// Question is spoken on calls with a body, after it.
	Question Texts             `json:"question,omitempty"`
	Options  map[string]string `json:"options"`
}

// Texts is a text for every language ("Press 1 …", kept under the locale
// "") or one per locale ({"en": "Press 1 …", "zh-CN": "请按1 …"}).
type Texts map[string]string

// UnmarshalJSON reads a string or an object of locale → text.
func (t *Texts) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*t = Texts{"": one}
		return nil
	}
	var each map[string]string
	if err := json.Unmarshal(b, &each); err != nil {
		return errors.New("must be a text, or an object of texts by locale such as {\"en\": \"Press 1 if you are safe.\"}")
	}
	*t = each
	return nil
}

// MarshalJSON writes a text for every language as a string.
func (t Texts) MarshalJSON() ([]byte, error) {
	if one, ok := t[""]; ok && len(t) == 1 {
		return json.Marshal(one)
	}
	return json.Marshal(map[string]string(t))
}

// Try is one message sent to a person.
type Try struct {
	Channel   string    `json:"channel"`
	MessageID string    `json:"message_id"`
	At        time.Time `json:"at"`
	Status    string    `json:"status"`
	// ReachedAt is when the provider first took or delivered the message
	// (sent or delivered); nil before, and in records made before it was kept.
	ReachedAt *time.Time `json:"reached_at,omitempty"`
}

// Person is one recipient of a broadcast and how far they got.
type Person struct {
	Index int                 `json:"index"`
	To    audiences.Recipient `json:"to"`
	// Channels are the broadcast's channels this person has, in order.
	Channels []string `json:"channels"`
	// Step is the index into Channels of the current try (-1: none yet).
	Step       int        `json:"step"`
	Tries      []Try      `json:"tries"`
	State      string     `json:"state"`
	Answer     string     `json:"answer,omitempty"`
	AnsweredAt *time.Time `json:"answered_at,omitempty"`
	AnsweredOn string     `json:"answered_on,omitempty"`
	// AcknowledgedAt is when the person became acknowledged (nil before,
	// and in records made before it was kept).
	AcknowledgedAt *time.Time `json:"acknowledged_at,omitempty"`
	// Deadline is when the current try times out if nobody acknowledges
	// it (nil when the person is done).
	Deadline *time.Time `json:"deadline,omitempty"`
}

// Current is the person's current try (nil before the first).
func (p *Person) Current() *Try {
	if len(p.Tries) == 0 {
		return nil
	}
	return &p.Tries[len(p.Tries)-1]
}

// TryOf finds the try of a message.
func (p *Person) TryOf(messageID string) *Try {
	for i := range p.Tries {
		if p.Tries[i].MessageID == messageID {
			return &p.Tries[i]
		}
	}
	return nil
}

// Done says whether nothing more will be sent to the person.
func (p *Person) Done() bool {
	switch p.State {
	case PersonAcknowledged, PersonUnreachable, PersonSuppressed, PersonCanceled:
		return true
	}
	return false
}

// counters are what a person adds to the broadcast's counters.
func (p *Person) counters() map[string]int64 {
	c := map[string]int64{"st:" + p.State: 1}
	if p.Answer != "" {
		c["ans:"+p.Answer]++
	}
	for _, t := range p.Tries {
		c["ch:"+t.Channel+":"+t.Status]++
	}
	return c
}

// sets are the listing sets a person belongs to.
func (p *Person) sets() []string {
	s := []string{"st:" + p.State}
	if p.Answer != "" {
		s = append(s, "ans:"+p.Answer)
	}
	return s
}

// NewID returns a broadcast id.
func NewID() string { return "bc_" + ulid.Make().String() }

func validID(id string) bool {
	rest, ok := strings.CutPrefix(id, "bc_")
	_, err := ulid.ParseStrict(rest)
	return ok && err == nil
}

// Store reads and writes broadcasts.
type Store struct {
	rdb       redis.UniversalClient
	retention time.Duration
	reports   reportCache
	// Metrics counts people entering each state (nil: none).
	Metrics *metrics.Metrics
}

// NewStore returns a store keeping broadcasts for retention after their creation.
func NewStore(rdb redis.UniversalClient, retention time.Duration) *Store {
	return &Store{rdb: rdb, retention: retention}
}

func key(id string) string           { return "gw:bc:{" + id + "}" }
func peopleKey(id string) string     { return key(id) + ":p" }
func setKey(id, name string) string  { return key(id) + ":s:" + name }
func eventsKey(id string) string     { return key(id) + ":ev" }
func deadlinesKey(id string) string  { return key(id) + ":dl" }
func tenantKey(tenant string) string { return "gw:bc:t:{" + tenant + "}" }

// Create stores a new broadcast.
func (s *Store) Create(ctx context.Context, c *Config) error {
	doc, err := json.Marshal(c)
	if err != nil {
		return err
	}
	pipe := s.rdb.TxPipeline()
	pipe.HSet(ctx, key(c.ID), "doc", doc, "tenant", c.Tenant, "state", StateActive,
		"created_at", c.CreatedAt.UnixMilli(), "total", c.Total)
	pipe.PExpire(ctx, key(c.ID), s.retention)
	if _, err := pipe.Exec(ctx); err != nil {
		return err
	}
	idx := s.rdb.Pipeline()
	idx.ZAdd(ctx, tenantKey(c.Tenant), redis.Z{Score: float64(c.CreatedAt.UnixMilli()), Member: c.ID})
	idx.ZRemRangeByScore(ctx, tenantKey(c.Tenant), "-inf", strconv.FormatInt(c.CreatedAt.Add(-s.retention).UnixMilli(), 10))
	idx.PExpire(ctx, tenantKey(c.Tenant), s.retention)
	_, err = idx.Exec(ctx)
	return err
}

// Summary is a broadcast with its counters.
type Summary struct {
	Config
	State string
	// ChunksDone is how many chunks of the audience are fanned out.
	ChunksDone int
	Counters   map[string]int64
}

// Get returns a tenant's broadcast ("" tenant: any).
func (s *Store) Get(ctx context.Context, tenant, id string) (*Summary, error) {
	if !validID(id) {
		return nil, ErrNotFound
	}
	h, err := s.rdb.HGetAll(ctx, key(id)).Result()
	if err != nil {
		return nil, err
	}
	if len(h) == 0 || (tenant != "" && h["tenant"] != tenant) {
		return nil, ErrNotFound
	}
	sum := &Summary{State: h["state"], Counters: map[string]int64{}}
	sum.ChunksDone, _ = strconv.Atoi(h["chunks_done"])
	if err := json.Unmarshal([]byte(h["doc"]), &sum.Config); err != nil {
		return nil, fmt.Errorf("broadcasts: %s: %w", id, err)
	}
	for k, v := range h {
		if strings.HasPrefix(k, "st:") || strings.HasPrefix(k, "ans:") || strings.HasPrefix(k, "ch:") {
			n, _ := strconv.ParseInt(v, 10, 64)
			sum.Counters[k] = n
		}
	}
	return sum, nil
}

// Recent returns a tenant's broadcasts, newest first, at most limit.
func (s *Store) Recent(ctx context.Context, tenant string, limit int) ([]*Summary, error) {
	ids, err := s.rdb.ZRevRange(ctx, tenantKey(tenant), 0, int64(limit)-1).Result()
	if err != nil {
		return nil, err
	}
	out := make([]*Summary, 0, len(ids))
	for _, id := range ids {
		sum, err := s.Get(ctx, tenant, id)
		if errors.Is(err, ErrNotFound) {
			continue // expired
		} else if err != nil {
			return nil, err
		}
		out = append(out, sum)
	}
	return out, nil
}

// State is a broadcast's state (ErrNotFound when it expired).
func (s *Store) State(ctx context.Context, id string) (string, error) {
	st, err := s.rdb.HGet(ctx, key(id), "state").Result()
	if errors.Is(err, redis.Nil) {
		return "", ErrNotFound
	}
	return st, err
}

// SetState sets the broadcast's state; false when it was not active.
func (s *Store) SetState(ctx context.Context, id, state string) (bool, error) {
	n, err := setStateScript.Run(ctx, s.rdb, []string{key(id)}, state).Int()
	return n == 1, err
}

var setStateScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'state') ~= 'active' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1])
return 1
`)

// StartPeople stores new people as they start: each at their first
// channel (a try queued, a deadline) or already done (unreachable). Those
// stored before (a fan-out run again) are kept as they are. It counts the
// new people, lists them, sets their deadlines and adds one "chunk" event
// for them all, in one script; it returns the people as stored and which
// of them are new.
func (s *Store) StartPeople(ctx context.Context, id string, chunk int, people []*Person) ([]*Person, []bool, error) {
	keys := []string{key(id), peopleKey(id), deadlinesKey(id), eventsKey(id)}
	setIdx := map[string]int{}
	// A profile is the sets and counters a new person joins: people of a
	// chunk share a few, so the script adds them up.
	type profile struct{ sets, counters []string }
	var profiles []profile
	profileOf := map[string]int{}
	args := []any{0}
	var persons []any
	for _, p := range people {
		sets := p.sets()
		counters := slices.Sorted(maps.Keys(p.counters()))
		sig := strings.Join(sets, ",") + "|" + strings.Join(counters, ",")
		n, ok := profileOf[sig]
		if !ok {
			n = len(profiles)
			profileOf[sig] = n
			profiles = append(profiles, profile{sets, counters})
			for _, st := range sets {
				if _, ok := setIdx[st]; !ok {
					keys = append(keys, setKey(id, st))
					setIdx[st] = len(keys)
				}
			}
		}
		doc, err := json.Marshal(p)
		if err != nil {
			return nil, nil, err
		}
		deadline := int64(0)
		if p.Deadline != nil && !p.Done() {
			deadline = p.Deadline.UnixMilli()
		}
		persons = append(persons, p.Index, doc, deadline, n+1)
	}
	args[0] = len(profiles)
	for _, pr := range profiles {
		args = append(args, len(pr.sets))
		for _, st := range pr.sets {
			args = append(args, setIdx[st])
		}
		args = append(args, len(pr.counters))
		for _, c := range pr.counters {
			args = append(args, c)
		}
	}
	// The script appends how many people are new.
	at, _ := json.Marshal(time.Now().UTC())
	args = append(args, fmt.Sprintf(`{"type":"chunk","chunk":%d,"at":%s,"people":`, chunk, at))
	args = append(args, persons...)
	res, err := startPeopleScript.Run(ctx, s.rdb, keys, args...).StringSlice()
	if err != nil {
		return nil, nil, err
	}
	out := make([]*Person, len(res))
	fresh := make([]bool, len(res))
	for i, doc := range res {
		if doc == "" {
			out[i], fresh[i] = people[i], true
			s.Metrics.BroadcastPeople(people[i].State, 1)
			continue
		}
		out[i] = &Person{}
		if err := json.Unmarshal([]byte(doc), out[i]); err != nil {
			return nil, nil, fmt.Errorf("broadcasts: person: %w", err)
		}
	}
	return out, fresh, nil
}

// startPeopleScript: KEYS broadcast, people, deadlines, events, sets…;
// ARGV profiles (count, then each: number of sets, their KEYS indexes,
// number of counters, the counters), the chunk event's JSON up to its
// count of new people, then per person
// index, doc, deadline (ms, 0: none), profile. Returns, per person, ""
// when new or the doc stored before.
var startPeopleScript = redis.NewScript(`
local np, pos = tonumber(ARGV[1]), 2
local psets, pcounters, padded = {}, {}, {}
for p = 1, np do
  local sets, counters = {}, {}
  for i = 1, tonumber(ARGV[pos]) do sets[i] = KEYS[tonumber(ARGV[pos + i])] end
  pos = pos + 1 + #sets
  for i = 1, tonumber(ARGV[pos]) do counters[i] = ARGV[pos + i] end
  pos = pos + 1 + #counters
  psets[p], pcounters[p], padded[p] = sets, counters, {}
end
local event = ARGV[pos]
pos = pos + 1
local out, deadlines, fresh = {}, {}, 0
while pos <= #ARGV do
  local idx, doc, dl, p = ARGV[pos], ARGV[pos + 1], tonumber(ARGV[pos + 2]), tonumber(ARGV[pos + 3])
  pos = pos + 4
  if redis.call('HSETNX', KEYS[2], idx, doc) == 1 then
    local added = padded[p]
    added[#added + 1] = idx
    if dl > 0 then
      deadlines[#deadlines + 1] = dl
      deadlines[#deadlines + 1] = idx
    end
    fresh = fresh + 1
    out[#out + 1] = ''
  else
    out[#out + 1] = redis.call('HGET', KEYS[2], idx)
  end
end
if fresh == 0 then return out end
local ttl = redis.call('PTTL', KEYS[1])
for p = 1, np do
  local added = padded[p]
  if #added > 0 then
    for _, set in ipairs(psets[p]) do
      redis.call('SADD', set, unpack(added))
      if ttl > 0 then redis.call('PEXPIRE', set, ttl) end
    end
    for _, c in ipairs(pcounters[p]) do redis.call('HINCRBY', KEYS[1], c, #added) end
  end
end
if #deadlines > 0 then
  redis.call('ZADD', KEYS[3], unpack(deadlines))
end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', 10000, '*', 't', 'chunk', 'e', event .. fresh .. '}')
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)
  redis.call('PEXPIRE', KEYS[4], ttl)
end
return out
`)

// Person reads one person.
func (s *Store) Person(ctx context.Context, id string, index int) (*Person, string, error) {
	doc, err := s.rdb.HGet(ctx, peopleKey(id), strconv.Itoa(index)).Result()
	if errors.Is(err, redis.Nil) {
		return nil, "", ErrNotFound
	}
	if err != nil {
		return nil, "", err
	}
	p := &Person{}
	if err := json.Unmarshal([]byte(doc), p); err != nil {
		return nil, "", fmt.Errorf("broadcasts: person: %w", err)
	}
	return p, doc, nil
}

// Event is one line of a broadcast's progress stream.
type Event struct {
	Type   string `json:"type"` // person
	Index  int    `json:"index"`
	State  string `json:"state"`
	Answer string `json:"answer,omitempty"`
	// Channel and Status describe the try that changed.
	Channel string    `json:"channel,omitempty"`
	Status  string    `json:"status,omitempty"`
	At      time.Time `json:"at"`
}

// Update changes one person with change (which reports whether it changed
// anything), retrying when another process changed the person meanwhile.
// The counters, listing sets and the event stream follow.
func (s *Store) Update(ctx context.Context, id string, index int, change func(p *Person) (*Event, bool)) (*Person, error) {
	for range 10 {
		p, old, err := s.Person(ctx, id, index)
		if err != nil {
			return nil, err
		}
		before := p.counters()
		oldSets := p.sets()
		ev, changed := change(p)
		if !changed {
			return p, nil
		}
		doc, _ := json.Marshal(p)
		after := p.counters()
		var deltas []any
		for _, k := range slices.Sorted(maps.Keys(mergeKeys(before, after))) {
			if d := after[k] - before[k]; d != 0 {
				deltas = append(deltas, k, d)
			}
		}
		evDoc := ""
		if ev != nil {
			ev.Type, ev.Index, ev.State, ev.Answer = "person", index, p.State, p.Answer
			if ev.At.IsZero() {
				ev.At = time.Now().UTC()
			}
			b, _ := json.Marshal(ev)
			evDoc = string(b)
		}
		if p.Done() {
			p.Deadline = nil
			doc, _ = json.Marshal(p)
		}
		deadline := int64(0)
		if p.Deadline != nil {
			deadline = p.Deadline.UnixMilli()
		}
		keys := []string{key(id), peopleKey(id), eventsKey(id), deadlinesKey(id)}
		args := []any{index, old, doc, evDoc, len(oldSets), len(deltas) / 2, deadline}
		for _, st := range oldSets {
			keys = append(keys, setKey(id, st))
		}
		for _, st := range p.sets() {
			keys = append(keys, setKey(id, st))
		}
		args = append(args, deltas...)
		ok, err := updateScript.Run(ctx, s.rdb, keys, args...).Int()
		if err != nil {
			return nil, err
		}
		if ok == 1 {
			if before["st:"+p.State] == 0 {
				s.Metrics.BroadcastPeople(p.State, 1)
			}
			return p, nil
		}
	}
	return nil, ErrConflict
}

func mergeKeys(a, b map[string]int64) map[string]int64 {
	m := maps.Clone(a)
	for k := range b {
		m[k] += 0
	}
	return m
}

// updateScript: KEYS broadcast, people, events, deadlines, old sets…, new
// sets… ARGV index, old doc, new doc, event ("" none), #old sets, #deltas,
// deadline ms (0: none), field, delta, … Returns 0 when the person changed
// meanwhile.
var updateScript = redis.NewScript(`
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
local nold, nd = tonumber(ARGV[5]), tonumber(ARGV[6])
for i = 5, 4 + nold do redis.call('SREM', KEYS[i], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
for i = 5 + nold, #KEYS do
  redis.call('SADD', KEYS[i], ARGV[1])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[i], ttl) end
end
if tonumber(ARGV[7]) > 0 then
  redis.call('ZADD', KEYS[4], ARGV[7], ARGV[1])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[4], ttl) end
else
  redis.call('ZREM', KEYS[4], ARGV[1])
end
for i = 0, nd - 1 do redis.call('HINCRBY', KEYS[1], ARGV[8 + 2*i], ARGV[9 + 2*i]) end
if ARGV[4] ~= '' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', 10000, '*', 'e', ARGV[4])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[3], ttl) end
end
return 1
`)

// List returns people of a listing set ("st:acknowledged", "ans:need_help")
// in index order, from the index after `after`, at most limit.
func (s *Store) List(ctx context.Context, id, set string, after, limit int) ([]*Person, error) {
	members, err := s.rdb.SMembers(ctx, setKey(id, set)).Result()
	if err != nil {
		return nil, err
	}
	var idx []int
	for _, m := range members {
		if n, err := strconv.Atoi(m); err == nil && n > after {
			idx = append(idx, n)
		}
	}
	slices.Sort(idx)
	if len(idx) > limit {
		idx = idx[:limit]
	}
	return s.People(ctx, id, idx)
}

// Count is how many people a listing set holds ("ans:safe").
func (s *Store) Count(ctx context.Context, id, set string) (int64, error) {
	return s.rdb.SCard(ctx, setKey(id, set)).Result()
}

// People reads people by index.
func (s *Store) People(ctx context.Context, id string, idx []int) ([]*Person, error) {
	if len(idx) == 0 {
		return []*Person{}, nil
	}
	fields := make([]string, len(idx))
	for i, n := range idx {
		fields[i] = strconv.Itoa(n)
	}
	docs, err := s.rdb.HMGet(ctx, peopleKey(id), fields...).Result()
	if err != nil {
		return nil, err
	}
	out := make([]*Person, 0, len(docs))
	for _, d := range docs {
		str, ok := d.(string)
		if !ok {
			continue
		}
		p := &Person{}
		if json.Unmarshal([]byte(str), p) == nil {
			out = append(out, p)
		}
	}
	return out, nil
}

// Scan calls f for every person, in no particular order and one at a
// time (for cancellation, the report and the roster's export); it stops
// at f's first error. The next pages are read from Redis while the last
// ones are decoded, on every core: the after-action report of 100,000
// people reads them all.
func (s *Store) Scan(ctx context.Context, id string, f func(p *Person) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pages := make(chan []string, 2)
	var readErr error
	go func() {
		defer close(pages)
		var cursor uint64
		for {
			kv, next, err := s.rdb.HScan(ctx, peopleKey(id), cursor, "", scanPage).Result()
			if err != nil {
				readErr = err
				return
			}
			select {
			case pages <- kv:
			case <-ctx.Done():
				return
			}
			if next == 0 {
				return
			}
			cursor = next
		}
	}()
	decoded := make(chan []*Person, 2)
	var wg sync.WaitGroup
	for range max(runtime.GOMAXPROCS(0), 1) {
		wg.Go(func() {
			for kv := range pages {
				people := make([]*Person, 0, len(kv)/2)
				for i := 1; i < len(kv); i += 2 {
					p := &Person{}
					if json.Unmarshal([]byte(kv[i]), p) == nil {
						people = append(people, p)
					}
				}
				select {
				case decoded <- people:
				case <-ctx.Done():
					return
				}
			}
		})
	}
	go func() {
		wg.Wait()
		close(decoded)
	}()
	var err error
	for people := range decoded {
		for _, p := range people {
			if err == nil {
				if err = f(p); err != nil {
					cancel() // the reader and decoders stop; decoded closes
				}
			}
		}
	}
	if err != nil {
		return err
	}
	return readErr // written before pages closed, so before decoded closed
}

// scanPage is how many people Scan asks Redis for at a time.
const scanPage = 1000

// Due returns the people whose current try's deadline has passed (at most
// limit), how many people wait for a deadline at all, and the next
// deadline after those (zero when none).
func (s *Store) Due(ctx context.Context, id string, now time.Time, limit int) (due []int, waiting int64, next time.Time, err error) {
	pipe := s.rdb.Pipeline()
	r := pipe.ZRangeByScore(ctx, deadlinesKey(id), &redis.ZRangeBy{Min: "-inf", Max: strconv.FormatInt(now.UnixMilli(), 10), Count: int64(limit)})
	n := pipe.ZCard(ctx, deadlinesKey(id))
	after := pipe.ZRangeByScoreWithScores(ctx, deadlinesKey(id), &redis.ZRangeBy{Min: "(" + strconv.FormatInt(now.UnixMilli(), 10), Max: "+inf", Count: 1})
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, 0, time.Time{}, err
	}
	for _, m := range r.Val() {
		if i, err := strconv.Atoi(m); err == nil {
			due = append(due, i)
		}
	}
	if z := after.Val(); len(z) > 0 {
		next = time.UnixMilli(int64(z[0].Score))
	}
	return due, n.Val(), next, nil
}

// FinishChunk records that a chunk of the audience is fanned out (once per
// chunk, however often it runs), after saying that the next chunk (next <
// 0: none) runs in the same run until `until` (FanoutRunning), so that a
// running fan-out always has a chunk with a live lease; and it reads the
// broadcast's state (ErrNotFound once it expired). One round trip, the
// commands in that order.
func (s *Store) FinishChunk(ctx context.Context, id string, chunk, next int, run string, until time.Time) (string, error) {
	pipe := s.rdb.Pipeline()
	if next >= 0 {
		pipe.HSet(ctx, key(id), "fan:"+strconv.Itoa(next), lease(run, until))
	}
	chunkDoneScript.Eval(ctx, pipe, []string{key(id)}, chunk)
	state := pipe.HGet(ctx, key(id), "state")
	cmds, err := pipe.Exec(ctx)
	if err != nil && !errors.Is(err, redis.Nil) {
		return "", err
	}
	for _, c := range cmds[:len(cmds)-1] {
		if err := c.Err(); err != nil {
			return "", err
		}
	}
	if errors.Is(state.Err(), redis.Nil) {
		return "", ErrNotFound
	}
	return state.Val(), nil
}

var chunkDoneScript = redis.NewScript(`
if redis.call('HSETNX', KEYS[1], 'chunk:' .. ARGV[1], 1) == 1 then
  return redis.call('HINCRBY', KEYS[1], 'chunks_done', 1)
end
return tonumber(redis.call('HGET', KEYS[1], 'chunks_done'))
`)

// FanoutRunning records that a chunk's fan-out is running in the fan-out
// run (any name unique to it), and will say so again before until (a
// heartbeat): a fan-out that is not done and has not been heard from since
// is one whose worker died. An empty run is a placeholder for a fan-out
// queued and not started yet, which any run may claim.
func (s *Store) FanoutRunning(ctx context.Context, id string, chunk int, run string, until time.Time) error {
	return s.rdb.HSet(ctx, key(id), "fan:"+strconv.Itoa(chunk), lease(run, until)).Err()
}

// lease is a chunk's fan:<chunk> field: until (ms) and the run holding it.
func lease(run string, until time.Time) string {
	return strconv.FormatInt(until.UnixMilli(), 10) + "|" + run
}

// ChunkClaim is what ClaimChunk found.
type ChunkClaim int

// What ClaimChunk found.
const (
	// ChunkClaimed: the chunk is the run's now.
	ChunkClaimed ChunkClaim = iota
	// ChunkDone: the chunk is fanned out already.
	ChunkDone
	// ChunkTaken: another run holds the chunk, and was heard from within
	// its lease.
	ChunkTaken
)

// ClaimChunk claims a chunk's fan-out for a run until until, unless the
// chunk is done or another run holds it with a lease not lapsed at now.
func (s *Store) ClaimChunk(ctx context.Context, id string, chunk int, run string, now, until time.Time) (ChunkClaim, error) {
	n, err := claimChunkScript.Run(ctx, s.rdb, []string{key(id)}, chunk, run, until.UnixMilli(), now.UnixMilli()).Int()
	return ChunkClaim(n), err
}

var claimChunkScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], 'chunk:' .. ARGV[1]) == 1 then
  return 1
end
local held = redis.call('HGET', KEYS[1], 'fan:' .. ARGV[1])
if held then
  local bar = string.find(held, '|', 1, true)
  if bar then
    local owner = string.sub(held, bar + 1)
    if owner ~= '' and owner ~= ARGV[2] and tonumber(string.sub(held, 1, bar - 1)) >= tonumber(ARGV[4]) then
      return 2
    end
  end
end
redis.call('HSET', KEYS[1], 'fan:' .. ARGV[1], ARGV[3] .. '|' .. ARGV[2])
return 0
`)

// FirstQuiet records that a broadcast went quiet (nobody waits), and says
// whether it is the first time: its repair pass runs once then.
func (s *Store) FirstQuiet(ctx context.Context, id string) (bool, error) {
	return s.rdb.HSetNX(ctx, key(id), "quiet", 1).Result()
}

// StalledChunks lists the chunks of a broadcast (of chunks) whose fan-out
// was queued or started but is neither done nor heard from since before
// now. A chunk no fan-out has reached yet is not stalled: it waits its
// turn.
func (s *Store) StalledChunks(ctx context.Context, id string, chunks int, now time.Time) ([]int, error) {
	if chunks <= 0 {
		return nil, nil
	}
	fields := make([]string, 0, 2*chunks)
	for i := range chunks {
		fields = append(fields, "chunk:"+strconv.Itoa(i), "fan:"+strconv.Itoa(i))
	}
	vals, err := s.rdb.HMGet(ctx, key(id), fields...).Result()
	if err != nil {
		return nil, err
	}
	var stalled []int
	for i := range chunks {
		if vals[2*i] != nil || vals[2*i+1] == nil {
			continue // done, or not started
		}
		lease, _, _ := strings.Cut(fmt.Sprint(vals[2*i+1]), "|")
		until, _ := strconv.ParseInt(lease, 10, 64)
		if until < now.UnixMilli() {
			stalled = append(stalled, i)
		}
	}
	return stalled, nil
}

// Events reads the progress stream after the stream id `after` ("0" for
// the start), waiting up to block for new ones (0: do not wait).
func (s *Store) Events(ctx context.Context, id, after string, block time.Duration) ([]redis.XMessage, error) {
	if block <= 0 {
		return s.rdb.XRangeN(ctx, eventsKey(id), "("+after, "+", 500).Result()
	}
	res, err := s.rdb.XRead(ctx, &redis.XReadArgs{Streams: []string{eventsKey(id), after}, Count: 500, Block: block}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil || len(res) == 0 {
		return nil, err
	}
	return res[0].Messages, nil
}

// Summaries returns the tenant's broadcasts of those ids, in that order,
// leaving out those no longer kept.
func (s *Store) Summaries(ctx context.Context, tenant string, ids []string) ([]*Summary, error) {
	out := make([]*Summary, 0, len(ids))
	for _, id := range ids {
		sum, err := s.Get(ctx, tenant, id)
		if errors.Is(err, ErrNotFound) {
			continue
		} else if err != nil {
			return nil, err
		}
		out = append(out, sum)
	}
	return out, nil
}
