// Package apikeys keeps the API keys a tenant's integrations use: each with
// a name, the scopes it may use, its state and when it was last used; made,
// listed, rotated and revoked while the gateway runs, in every API process
// within CacheTTL.
//
// A key reads pmg_<id>_<secret>: the id finds its record without a scan,
// the secret (256 random bits) is never stored — only the SHA-256 of the
// whole key, compared in constant time. A key so random needs no slow hash
// and no pepper: nothing shorter than the key itself finds it.
//
// Keys (all in one cluster slot, so that a rotation is one script):
//
//	gw:{apikeys}:k:<id>  hash: tenant, name, scopes, hash, state, created,
//	                     until, revoked, used (times in ms), replaces, replaced_by
//	gw:{apikeys}:ids     sorted set: every key's id, by creation time
package apikeys

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/audit"
	"github.com/patientmsg/gateway/internal/invalid"
)

// Scope is what a key may be used for; every API route declares one.
type Scope string

// The scopes.
const (
	// Send: make and cancel messages, follow-up plans and questionnaire
	// responses; keep contacts and their consent; acknowledge escalations.
	Send Scope = "send"
	// Read: read what the tenant's data shows (the GET routes).
	Read Scope = "read"
	// Broadcast: upload audiences, send, cancel and repair crisis
	// broadcasts, open and close incidents.
	Broadcast Scope = "broadcast"
	// Admin: the tenant's settings, webhook, escalation rules, templates
	// and questionnaire definitions, its API keys, audit log and erasures.
	Admin Scope = "admin"
)

// Scopes lists every scope.
var Scopes = []Scope{Send, Read, Broadcast, Admin}

// State is where a key stands.
type State string

// The states of a key.
const (
	Active State = "active"
	// Rotated: replaced by a new key, still valid until ValidUntil.
	Rotated State = "rotated"
	// Expired: rotated, and its grace is over.
	Expired State = "expired"
	Revoked State = "revoked"
)

// Audit actions of key changes.
const (
	ActionCreate = "apikey.create"
	ActionRotate = "apikey.rotate"
	ActionRevoke = "apikey.revoke"
)

// DefaultGrace is how long a rotated key stays valid; MaxGrace the most a
// rotation may give.
const (
	DefaultGrace = 24 * time.Hour
	MaxGrace     = 30 * 24 * time.Hour
)

// Prefix starts every key.
const Prefix = "pmg_"

// Key is a key's record: never its secret.
type Key struct {
	ID         string     `json:"id"`
	Tenant     string     `json:"tenant"`
	Name       string     `json:"name"`
	Scopes     []Scope    `json:"scopes"`
	State      State      `json:"state"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
	// ValidUntil is when a rotated key stops working.
	ValidUntil *time.Time `json:"valid_until,omitempty"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
	// Replaces is the key this one rotated; ReplacedBy the key this one
	// was rotated to.
	Replaces   string `json:"replaces,omitempty"`
	ReplacedBy string `json:"replaced_by,omitempty"`
}

// Has reports whether the key may use scope.
func (k Key) Has(scope Scope) bool { return slices.Contains(k.Scopes, scope) }

// NewKey is a key to make.
type NewKey struct {
	Tenant string
	Name   string
	Scopes []Scope
}

// By is who changes a key, as the audit log names them: "apikey:<id>" or
// audit.ActorCLI, and the request's id when a request did it.
type By struct {
	Actor     string
	RequestID string
}

// Errors of the store.
var (
	ErrNotFound = errors.New("apikeys: no such key")
	// ErrNotActive: only an active key can be rotated.
	ErrNotActive = errors.New("apikeys: the key is not active")
	// ErrInvalid: the key given is unknown, wrong, revoked or past its
	// rotation's grace.
	ErrInvalid = errors.New("apikeys: the key is not valid")
)

// Config tunes a Store; zero fields take the defaults shown.
type Config struct {
	// Now is the clock (time.Now).
	Now func() time.Time
	// CacheTTL is how long a process trusts a key's record before reading
	// it again (5 s): a revoked key stops working in every process within
	// it.
	CacheTTL time.Duration
	// UsedEvery is how often a key's last use is written, at most, per
	// process (1 minute).
	UsedEvery time.Duration
	// Audit records key changes (nil: none).
	Audit  *audit.Log
	Logger *slog.Logger
}

// Store keeps API keys in Redis.
type Store struct {
	rdb redis.UniversalClient
	cfg Config
	log *slog.Logger

	mu    sync.Mutex
	cache map[string]cached    // id → record, as last read
	used  map[string]time.Time // id → last write of its last use
}

type cached struct {
	rec  record
	read time.Time
}

// maxCached bounds the cache (unknown ids are cached too).
const maxCached = 10000

// New returns a store on rdb.
func New(rdb redis.UniversalClient, cfg Config) *Store {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = 5 * time.Second
	}
	if cfg.UsedEvery <= 0 {
		cfg.UsedEvery = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Store{rdb: rdb, cfg: cfg, log: cfg.Logger.With("comp", "apikeys"),
		cache: map[string]cached{}, used: map[string]time.Time{}}
}

// Config is the store's configuration, defaults filled in.
func (s *Store) Config() Config { return s.cfg }

const idsKey = "gw:{apikeys}:ids"

func recordKey(id string) string { return "gw:{apikeys}:k:" + id }

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

const (
	idLen     = 16 // 10 random bytes
	secretLen = 52 // 32 random bytes
)

func random(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return strings.ToLower(b32.EncodeToString(b))
}

// newKey makes an id and its plain key.
func newKey() (id, plain string) {
	id = random(10)
	return id, Prefix + id + "_" + random(32)
}

func hashOf(plain string) string {
	sum := sha256.Sum256([]byte(plain))
	return hex.EncodeToString(sum[:])
}

// ParseID is the id of a key of the managed form, and whether key has it.
func ParseID(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, Prefix)
	if !ok || len(rest) != idLen+1+secretLen || rest[idLen] != '_' {
		return "", false
	}
	if !isB32(rest[:idLen]) || !isB32(rest[idLen+1:]) {
		return "", false
	}
	return rest[:idLen], true
}

// ValidID reports whether id can be a key's id.
func ValidID(id string) bool { return len(id) == idLen && isB32(id) }

func isB32(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

// ParseScopes reads "send,read"; an unknown scope is an error naming it.
func ParseScopes(v string) ([]Scope, error) {
	var out []Scope
	for _, f := range strings.Split(v, ",") {
		sc := Scope(strings.TrimSpace(f))
		if sc == "" {
			continue
		}
		if !slices.Contains(Scopes, sc) {
			return nil, fmt.Errorf("unknown scope %q (send, read, broadcast, admin)", sc)
		}
		if !slices.Contains(out, sc) {
			out = append(out, sc)
		}
	}
	return out, nil
}

// Check validates a key to make; what is wrong is an *invalid.Error.
// It normalises the name and orders the scopes.
func (n *NewKey) Check() error {
	var errs invalid.List
	if !ValidTenant(n.Tenant) {
		errs.Add("tenant", "must be the tenant's name, 1 to 64 letters, digits, '-' or '_'")
	}
	n.Name = strings.TrimSpace(n.Name)
	if n.Name == "" || utf8.RuneCountInString(n.Name) > 100 || !utf8.ValidString(n.Name) ||
		strings.ContainsFunc(n.Name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		errs.Add("name", "must be 1 to 100 printable characters saying what uses the key, e.g. EHR integration")
	}
	var scopes []Scope
	for _, sc := range Scopes { // in their canonical order, once each
		if slices.Contains(n.Scopes, sc) {
			scopes = append(scopes, sc)
		}
	}
	bad := slices.ContainsFunc(n.Scopes, func(sc Scope) bool { return !slices.Contains(Scopes, sc) })
	if len(scopes) == 0 || bad {
		errs.Add("scopes", "must list one or more of send, read, broadcast, admin")
	}
	n.Scopes = scopes
	return errs.Err()
}

// ValidTenant reports whether t can be a tenant's name (as
// GATEWAY_API_KEYS names them).
func ValidTenant(t string) bool {
	if t == "" || len(t) > 64 {
		return false
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// record is a key's hash in Redis.
type record struct {
	found      bool
	tenant     string
	name       string
	scopes     []Scope
	hash       string
	state      State
	created    time.Time
	until      time.Time
	revoked    time.Time
	used       time.Time
	replaces   string
	replacedBy string
}

func ms(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

func fromMS(v string) time.Time {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n == 0 {
		return time.Time{}
	}
	return time.UnixMilli(n).UTC()
}

func parseRecord(h map[string]string) record {
	if len(h) == 0 || h["tenant"] == "" {
		return record{}
	}
	r := record{found: true, tenant: h["tenant"], name: h["name"], hash: h["hash"], state: State(h["state"]),
		created: fromMS(h["created"]), until: fromMS(h["until"]), revoked: fromMS(h["revoked"]), used: fromMS(h["used"]),
		replaces: h["replaces"], replacedBy: h["replaced_by"]}
	r.scopes, _ = ParseScopes(h["scopes"])
	return r
}

// key is the record as a Key at now (a rotated key past its grace is
// Expired).
func (r record) key(id string, now time.Time) Key {
	k := Key{ID: id, Tenant: r.tenant, Name: r.name, Scopes: r.scopes, State: r.state, CreatedAt: r.created,
		Replaces: r.replaces, ReplacedBy: r.replacedBy}
	if k.Scopes == nil {
		k.Scopes = []Scope{}
	}
	if !r.used.IsZero() {
		k.LastUsedAt = &r.used
	}
	if r.state == Rotated {
		k.ValidUntil = &r.until
		if !now.Before(r.until) {
			k.State = Expired
		}
	}
	if r.state == Revoked {
		k.RevokedAt = &r.revoked
	}
	return k
}

// valid reports whether a record lets a request in at now.
func (r record) valid(now time.Time) bool {
	return r.found && (r.state == Active || r.state == Rotated && now.Before(r.until))
}

func joinScopes(scopes []Scope) string {
	parts := make([]string, len(scopes))
	for i, sc := range scopes {
		parts[i] = string(sc)
	}
	return strings.Join(parts, ",")
}

// Create makes a key and returns it with its clear form, the only time
// the clear key is known: hand it to its user.
func (s *Store) Create(ctx context.Context, n NewKey, by By) (Key, string, error) {
	if err := n.Check(); err != nil {
		return Key{}, "", err
	}
	now := s.cfg.Now().UTC().Truncate(time.Millisecond)
	id, plain := newKey()
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, recordKey(id), "tenant", n.Tenant, "name", n.Name, "scopes", joinScopes(n.Scopes),
			"hash", hashOf(plain), "state", string(Active), "created", ms(now))
		p.ZAdd(ctx, idsKey, redis.Z{Score: float64(now.UnixMilli()), Member: id})
		return nil
	})
	if err != nil {
		return Key{}, "", err
	}
	s.record(ctx, n.Tenant, by, ActionCreate, id)
	return Key{ID: id, Tenant: n.Tenant, Name: n.Name, Scopes: n.Scopes, State: Active, CreatedAt: now}, plain, nil
}

// rotateScript replaces an active key KEYS[1] of tenant ARGV[1] by a new
// key KEYS[2] (hash ARGV[2]) with the same tenant, name and scopes; the
// old one stays valid until ARGV[4]. Returns 0 (no such key), -1 (not
// active) or 1.
var rotateScript = redis.NewScript(`
local old = redis.call('HMGET', KEYS[1], 'tenant', 'state', 'name', 'scopes')
if old[1] ~= ARGV[1] then return 0 end
if old[2] ~= 'active' then return -1 end
redis.call('HSET', KEYS[2], 'tenant', old[1], 'name', old[3], 'scopes', old[4], 'hash', ARGV[2],
  'state', 'active', 'created', ARGV[3], 'replaces', ARGV[5])
redis.call('HSET', KEYS[1], 'state', 'rotated', 'until', ARGV[4], 'replaced_by', ARGV[6])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[6])
return 1
`)

// Rotate replaces the tenant's active key id by a new one with the same
// name and scopes, returned with its clear form; the old key keeps
// working for grace (DefaultGrace when 0, at most MaxGrace), so its users
// can move to the new one without downtime. Revoke the old key to end its
// grace early.
func (s *Store) Rotate(ctx context.Context, tenant, id string, grace time.Duration, by By) (made Key, plain string, old Key, err error) {
	if grace <= 0 {
		grace = DefaultGrace
	}
	if grace > MaxGrace {
		return Key{}, "", Key{}, invalid.Field("grace", fmt.Sprintf("must be at most %d days", int(MaxGrace/(24*time.Hour))))
	}
	if !ValidID(id) {
		return Key{}, "", Key{}, ErrNotFound
	}
	now := s.cfg.Now().UTC().Truncate(time.Millisecond)
	newID, plain := newKey()
	n, err := rotateScript.Run(ctx, s.rdb, []string{recordKey(id), recordKey(newID), idsKey},
		tenant, hashOf(plain), ms(now), ms(now.Add(grace)), id, newID).Int()
	switch {
	case err != nil:
		return Key{}, "", Key{}, err
	case n == 0:
		return Key{}, "", Key{}, ErrNotFound
	case n < 0:
		return Key{}, "", Key{}, ErrNotActive
	}
	s.forget(id)
	s.record(ctx, tenant, by, ActionRotate, id)
	made, err = s.Get(ctx, tenant, newID)
	if err != nil {
		return Key{}, "", Key{}, err
	}
	old, err = s.Get(ctx, tenant, id)
	return made, plain, old, err
}

// revokeScript revokes key KEYS[1] of tenant ARGV[1] at ARGV[2]: 0 when
// there is no such key, 1 when revoked now, 2 when it was already.
var revokeScript = redis.NewScript(`
local k = redis.call('HMGET', KEYS[1], 'tenant', 'state')
if k[1] ~= ARGV[1] then return 0 end
if k[2] == 'revoked' then return 2 end
redis.call('HSET', KEYS[1], 'state', 'revoked', 'revoked', ARGV[2])
return 1
`)

// Revoke stops the tenant's key id at once in this process, and in every
// other within CacheTTL. Revoking a revoked key changes nothing.
func (s *Store) Revoke(ctx context.Context, tenant, id string, by By) (Key, error) {
	if !ValidID(id) {
		return Key{}, ErrNotFound
	}
	now := s.cfg.Now().UTC().Truncate(time.Millisecond)
	n, err := revokeScript.Run(ctx, s.rdb, []string{recordKey(id)}, tenant, ms(now)).Int()
	if err != nil {
		return Key{}, err
	}
	if n == 0 {
		return Key{}, ErrNotFound
	}
	s.forget(id)
	if n == 1 {
		s.record(ctx, tenant, by, ActionRevoke, id)
	}
	return s.Get(ctx, tenant, id)
}

// Get reads the tenant's key id (another tenant's is not found).
func (s *Store) Get(ctx context.Context, tenant, id string) (Key, error) {
	k, err := s.Find(ctx, id)
	if err == nil && k.Tenant != tenant {
		return Key{}, ErrNotFound
	}
	return k, err
}

// Find reads key id of any tenant (for the operator's command line).
func (s *Store) Find(ctx context.Context, id string) (Key, error) {
	if !ValidID(id) {
		return Key{}, ErrNotFound
	}
	h, err := s.rdb.HGetAll(ctx, recordKey(id)).Result()
	if err != nil {
		return Key{}, err
	}
	r := parseRecord(h)
	if !r.found {
		return Key{}, ErrNotFound
	}
	return r.key(id, s.cfg.Now()), nil
}

// List is the tenant's keys (every tenant's when tenant is ""), oldest
// first, revoked and expired ones included.
func (s *Store) List(ctx context.Context, tenant string) ([]Key, error) {
	ids, err := s.rdb.ZRange(ctx, idsKey, 0, -1).Result()
	if err != nil {
		return nil, err
	}
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	if len(ids) > 0 {
		_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, id := range ids {
				cmds[i] = p.HGetAll(ctx, recordKey(id))
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	now := s.cfg.Now()
	out := []Key{}
	for i, id := range ids {
		r := parseRecord(cmds[i].Val())
		if r.found && (tenant == "" || r.tenant == tenant) {
			out = append(out, r.key(id, now))
		}
	}
	return out, nil
}

// touchScript writes a key's last use, unless it was removed.
var touchScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'used', ARGV[1]) end
return 0
`)

// Authenticate finds the key a request gave: its id, tenant and scopes.
// A key that is unknown, wrong, revoked or past its rotation's grace is
// ErrInvalid; any other error is Redis'. The record is read from Redis
// at most once per CacheTTL per process, and the last use written at
// most once per UsedEvery.
func (s *Store) Authenticate(ctx context.Context, plain string) (Key, error) {
	id, ok := ParseID(plain)
	if !ok {
		return Key{}, ErrInvalid
	}
	id = strings.Clone(id) // kept in the cache: never a view of a request's buffer
	now := s.cfg.Now()
	r, err := s.lookup(ctx, id, now)
	if err != nil {
		return Key{}, err
	}
	if !r.found || subtle.ConstantTimeCompare([]byte(hashOf(plain)), []byte(r.hash)) != 1 || !r.valid(now) {
		return Key{}, ErrInvalid
	}
	s.touch(ctx, id, now)
	return r.key(id, now), nil
}

func (s *Store) lookup(ctx context.Context, id string, now time.Time) (record, error) {
	s.mu.Lock()
	c, ok := s.cache[id]
	s.mu.Unlock()
	if ok && now.Sub(c.read) < s.cfg.CacheTTL && !now.Before(c.read) {
		return c.rec, nil
	}
	h, err := s.rdb.HGetAll(ctx, recordKey(id)).Result()
	if err != nil {
		return record{}, err
	}
	r := parseRecord(h)
	s.mu.Lock()
	if len(s.cache) >= maxCached {
		clear(s.cache)
	}
	s.cache[id] = cached{rec: r, read: now}
	s.mu.Unlock()
	return r, nil
}

// touch writes the key's last use when this process has not for
// UsedEvery. A failure is logged, never the request's.
func (s *Store) touch(ctx context.Context, id string, now time.Time) {
	s.mu.Lock()
	last, ok := s.used[id]
	due := !ok || now.Sub(last) >= s.cfg.UsedEvery || now.Before(last)
	if due {
		if len(s.used) >= maxCached {
			clear(s.used)
		}
		s.used[id] = now
	}
	s.mu.Unlock()
	if !due {
		return
	}
	if err := touchScript.Run(ctx, s.rdb, []string{recordKey(id)}, ms(now)).Err(); err != nil {
		s.log.Warn("last use of an API key not recorded", "key_id", id, "err", err)
	}
}

// forget drops a key from this process' cache.
func (s *Store) forget(id string) {
	s.mu.Lock()
	delete(s.cache, id)
	s.mu.Unlock()
}

// record appends a key change to the tenant's audit log (the object is
// the key's id, never its secret).
func (s *Store) record(ctx context.Context, tenant string, by By, action, id string) {
	actor := by.Actor
	if actor == "" {
		actor = audit.ActorCLI
	}
	s.cfg.Audit.Record(ctx, audit.Event{Tenant: tenant, Actor: actor, Action: action, Object: "apikey:" + id,
		Outcome: audit.OK, RequestID: by.RequestID})
}
