// Package incidents groups a crisis's broadcasts under one name: the first
// alert, the follow-ups to those not yet safe, the all-clear. An incident
// may have a cadence (an update every 6 hours): the next update is due a
// cadence after the last broadcast linked to it (or after it was opened),
// and an open incident past that time is overdue, which the console shows
// and a timer tells the clinic's webhook (incident.update_overdue) once per
// missed update.
package incidents

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/invalid"
)

// States of an incident.
const (
	StateOpen   = "open"
	StateClosed = "closed"
)

// Cadence bounds.
const (
	MinCadence = 15 * time.Minute
	MaxCadence = 7 * 24 * time.Hour
	// MaxName is the longest name, in characters.
	MaxName = 200
	// MaxBroadcasts is the most broadcasts one incident groups.
	MaxBroadcasts = 500
)

var (
	// ErrNotFound: no such incident for the tenant (never opened,
	// another tenant's, or expired).
	ErrNotFound = errors.New("incident not found")
	// ErrClosed: the incident is closed; nothing more is linked to it.
	ErrClosed = errors.New("incident is closed")
)

// Incident is a crisis worked as one: its broadcasts, in the order sent.
type Incident struct {
	ID     string
	Tenant string
	Name   string
	// Cadence is how often an update is due (0: no cadence).
	Cadence time.Duration
	State   string
	// OpenedAt is when it was opened; LastUpdateAt when its latest
	// broadcast was linked (OpenedAt before the first).
	OpenedAt     time.Time
	LastUpdateAt time.Time
	ClosedAt     time.Time
	Broadcasts   []string
}

// NextDue is when the next update is due: a cadence after the last one;
// zero without a cadence or once closed.
func (i *Incident) NextDue() time.Time {
	if i.Cadence <= 0 || i.State != StateOpen {
		return time.Time{}
	}
	return i.LastUpdateAt.Add(i.Cadence)
}

// Overdue reports whether the next update is past due at now.
func (i *Incident) Overdue(now time.Time) bool {
	due := i.NextDue()
	return !due.IsZero() && now.After(due)
}

// NewID returns a new incident id: "inc_" and a ULID (they sort by time).
func NewID() string { return "inc_" + ulid.Make().String() }

func validID(id string) bool {
	rest, ok := strings.CutPrefix(id, "inc_")
	if !ok {
		return false
	}
	_, err := ulid.ParseStrict(rest)
	return err == nil
}

// Store keeps incidents in Redis: a hash per incident, the list of its
// broadcasts beside it (same slot), and a per-tenant index by opening
// time. Each lives for retention after its last change.
type Store struct {
	rdb       redis.UniversalClient
	retention time.Duration
	// Now is the clock.
	Now func() time.Time
}

// NewStore returns a store keeping each incident retention after its last
// change.
func NewStore(rdb redis.UniversalClient, retention time.Duration) *Store {
	return &Store{rdb: rdb, retention: retention, Now: time.Now}
}

func key(id string) string           { return "gw:inc:{" + id + "}" }
func listKey(id string) string       { return "gw:inc:{" + id + "}:b" }
func remindKey(id string) string     { return "gw:inc:{" + id + "}:r" }
func tenantKey(tenant string) string { return "gw:inc:t:{" + tenant + "}" }
func ms(t time.Time) string          { return strconv.FormatInt(t.UnixMilli(), 10) }
func fromMS(s string) time.Time      { n, _ := strconv.ParseInt(s, 10, 64); return msTime(n) }
func msTime(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.UnixMilli(n).UTC()
}

// Check validates a new incident's name and cadence (a Go duration such
// as "6h", or "" for none) and returns the cadence.
func Check(name, cadence string) (time.Duration, error) {
	var errs invalid.List
	switch n := utf8.RuneCountInString(strings.TrimSpace(name)); {
	case !utf8.ValidString(name):
		errs.Add("name", "must be valid UTF-8")
	case n == 0:
		errs.Add("name", "is required: what the crisis is called, e.g. \"River flood, December\"")
	case n > MaxName:
		errs.Add("name", "is at most %d characters", MaxName)
	}
	var d time.Duration
	if c := strings.TrimSpace(cadence); c != "" {
		var err error
		d, err = time.ParseDuration(c)
		if err != nil || d < MinCadence || d > MaxCadence {
			errs.Add("cadence", "must be a duration between 15m and 168h (7 days), e.g. \"6h\", or left out for none")
		}
	}
	return d, errs.Err()
}

// Open starts an incident of the tenant; cadence is a duration such as
// "6h", or "" for none.
func (s *Store) Open(ctx context.Context, tenant, name, cadence string) (*Incident, error) {
	d, err := Check(name, cadence)
	if err != nil {
		return nil, err
	}
	now := s.Now().UTC().Truncate(time.Millisecond)
	inc := &Incident{ID: NewID(), Tenant: tenant, Name: strings.TrimSpace(name), Cadence: d, State: StateOpen,
		OpenedAt: now, LastUpdateAt: now}
	pipe := s.rdb.TxPipeline()
	pipe.HSet(ctx, key(inc.ID), "tenant", tenant, "name", inc.Name, "cadence_ms", d.Milliseconds(),
		"state", StateOpen, "opened_ms", ms(now), "updated_ms", ms(now))
	pipe.PExpire(ctx, key(inc.ID), s.retention)
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("incidents: %w", err)
	}
	if err := s.index(ctx, tenant, inc.ID, now); err != nil {
		return nil, err
	}
	return inc, nil
}

// index lists the incident under its tenant, for retention.
func (s *Store) index(ctx context.Context, tenant, id string, at time.Time) error {
	pipe := s.rdb.Pipeline()
	pipe.ZAdd(ctx, tenantKey(tenant), redis.Z{Score: float64(at.UnixMilli()), Member: id})
	pipe.PExpire(ctx, tenantKey(tenant), s.retention)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("incidents: %w", err)
	}
	return nil
}

// Get returns the tenant's incident, or ErrNotFound.
func (s *Store) Get(ctx context.Context, tenant, id string) (*Incident, error) {
	if !validID(id) {
		return nil, ErrNotFound
	}
	pipe := s.rdb.Pipeline()
	h := pipe.HGetAll(ctx, key(id))
	b := pipe.LRange(ctx, listKey(id), 0, -1)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("incidents: %w", err)
	}
	v := h.Val()
	if len(v) == 0 || v["tenant"] != tenant {
		return nil, ErrNotFound
	}
	cad, _ := strconv.ParseInt(v["cadence_ms"], 10, 64)
	return &Incident{ID: id, Tenant: tenant, Name: v["name"], Cadence: time.Duration(cad) * time.Millisecond, State: v["state"],
		OpenedAt: fromMS(v["opened_ms"]), LastUpdateAt: fromMS(v["updated_ms"]), ClosedAt: fromMS(v["closed_ms"]),
		Broadcasts: b.Val()}, nil
}

// List returns the tenant's incidents, newest first, at most limit.
func (s *Store) List(ctx context.Context, tenant string, limit int) ([]*Incident, error) {
	ids, err := s.rdb.ZRevRange(ctx, tenantKey(tenant), 0, int64(limit)-1).Result()
	if err != nil {
		return nil, fmt.Errorf("incidents: %w", err)
	}
	out := make([]*Incident, 0, len(ids))
	for _, id := range ids {
		inc, err := s.Get(ctx, tenant, id)
		if errors.Is(err, ErrNotFound) {
			_ = s.rdb.ZRem(ctx, tenantKey(tenant), id).Err() // expired
			continue
		} else if err != nil {
			return nil, err
		}
		out = append(out, inc)
	}
	return out, nil
}

// linkScript links a broadcast to an open incident of the tenant. KEYS
// incident, its list ARGV tenant, broadcast, at_ms, retention_ms, max.
// Returns 1, 0 (not found), -1 (closed) or -2 (full).
var linkScript = redis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'tenant', 'state', 'updated_ms')
if not h[1] or h[1] ~= ARGV[1] then return 0 end
if h[2] ~= 'open' then return -1 end
if redis.call('LLEN', KEYS[2]) >= tonumber(ARGV[5]) then return -2 end
redis.call('RPUSH', KEYS[2], ARGV[2])
if tonumber(ARGV[3]) > tonumber(h[3] or '0') then redis.call('HSET', KEYS[1], 'updated_ms', ARGV[3]) end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
`)

// Check is whether a broadcast may be linked to the incident: it is the
// tenant's and open.
func (s *Store) Check(ctx context.Context, tenant, id string) error {
	inc, err := s.Get(ctx, tenant, id)
	if err != nil {
		return err
	}
	if inc.State != StateOpen {
		return ErrClosed
	}
	if len(inc.Broadcasts) >= MaxBroadcasts {
		return fmt.Errorf("%w: it groups %d broadcasts already", ErrClosed, MaxBroadcasts)
	}
	return nil
}

// Link adds a broadcast sent at at to the incident: it is its latest
// update, and the next is due a cadence later.
func (s *Store) Link(ctx context.Context, tenant, id, broadcast string, at time.Time) error {
	if !validID(id) {
		return ErrNotFound
	}
	n, err := linkScript.Run(ctx, s.rdb, []string{key(id), listKey(id)}, tenant, broadcast, ms(at), s.retention.Milliseconds(), MaxBroadcasts).Int()
	switch {
	case err != nil:
		return fmt.Errorf("incidents: %w", err)
	case n == 0:
		return ErrNotFound
	case n < 0:
		return ErrClosed
	}
	return s.index(ctx, tenant, id, at)
}

// closeScript closes an open incident. KEYS incident ARGV tenant, at_ms.
// Returns 1, 0 (not found) or -1 (closed already).
var closeScript = redis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'tenant', 'state')
if not h[1] or h[1] ~= ARGV[1] then return 0 end
if h[2] ~= 'open' then return -1 end
redis.call('HSET', KEYS[1], 'state', 'closed', 'closed_ms', ARGV[2])
return 1
`)

// Close ends the incident: no update is due any more.
func (s *Store) Close(ctx context.Context, tenant, id string) (*Incident, error) {
	if !validID(id) {
		return nil, ErrNotFound
	}
	n, err := closeScript.Run(ctx, s.rdb, []string{key(id)}, tenant, ms(s.Now())).Int()
	switch {
	case err != nil:
		return nil, fmt.Errorf("incidents: %w", err)
	case n == 0:
		return nil, ErrNotFound
	case n < 0:
		return nil, ErrClosed
	}
	return s.Get(ctx, tenant, id)
}

// Missed says whether the update due at due is missing now and the clinic
// was not told of it yet: the incident is open, no update was sent since
// (its next update was due then or before), that time has passed, and
// Told was not called for it.
func (s *Store) Missed(ctx context.Context, tenant, id string, due time.Time) (bool, *Incident, error) {
	inc, err := s.Get(ctx, tenant, id)
	if err != nil {
		return false, nil, err
	}
	next := inc.NextDue()
	if next.IsZero() || due.Before(next) || s.Now().Before(due) {
		return false, inc, nil // closed, updated since, or early
	}
	told, err := s.rdb.Exists(ctx, remindKey(id)+":"+ms(due)).Result()
	if err != nil {
		return false, inc, fmt.Errorf("incidents: %w", err)
	}
	return told == 0, inc, nil
}

// Told records that the clinic was told of the update missed at due.
func (s *Store) Told(ctx context.Context, id string, due time.Time) error {
	if err := s.rdb.Set(ctx, remindKey(id)+":"+ms(due), 1, s.retention).Err(); err != nil {
		return fmt.Errorf("incidents: %w", err)
	}
	return nil
}

// Refused says whether an error of Check is the incident's answer (no
// such incident, or closed) and says why, for the broadcast's field error.
func (s *Store) Refused(err error) (string, bool) {
	switch {
	case errors.Is(err, ErrNotFound):
		return "is not an incident of this tenant; GET /v1/incidents lists them", true
	case errors.Is(err, ErrClosed):
		return "the incident is closed (" + err.Error() + "); open a new one for a new crisis", true
	}
	return "", false
}

// FormatCadence writes a cadence as it is given: "6h", "90m", "1h30m".
func FormatCadence(d time.Duration) string {
	s := d.String()
	s = strings.TrimSuffix(s, "0s")
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
