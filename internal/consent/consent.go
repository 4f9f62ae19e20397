// Package consent is the consent ledger: for each tenant and recipient
// identity (a phone number, a WeChat openid, an email address) whether
// messages may be sent, and every change with its time, source and
// evidence. Workers check it right before each provider call.
package consent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Kind is the kind of identity.
type Kind string

// Identity kinds.
const (
	Phone  Kind = "phone"
	WeChat Kind = "wechat"
	Email  Kind = "email"
)

// Identity is one address of a recipient.
type Identity struct {
	Kind  Kind   `json:"kind"`
	Value string `json:"value"`
}

func (i Identity) String() string { return string(i.Kind) + ":" + i.Value }

// Valid reports whether the identity is usable.
func (i Identity) Valid() bool {
	return (i.Kind == Phone || i.Kind == WeChat || i.Kind == Email) && i.Value != ""
}

// Sources of consent changes.
const (
	SourceKeyword     = "keyword"     // the recipient replied STOP / START …
	SourceAPI         = "api"         // the tenant recorded it through the API
	SourceProvider    = "provider"    // the provider refused a send: the recipient opted out there
	SourceUnsubscribe = "unsubscribe" // WeChat unfollow, email unsubscribe
)

// Change is one entry of the consent history.
type Change struct {
	At       time.Time `json:"at"`
	OptedOut bool      `json:"opted_out"`
	Source   string    `json:"source"`
	// Evidence is what proves the change: the inbound message id, the
	// provider's error code, the API caller's text.
	Evidence string `json:"evidence"`
}

// State is an identity's current consent.
type State struct {
	Identity Identity `json:"identity"`
	OptedOut bool     `json:"opted_out"`
	// Since is the time of the last change (zero: never changed, consent
	// assumed from the tenant's relationship with the patient).
	Since   time.Time `json:"since,omitzero"`
	Changes []Change  `json:"changes,omitempty"`
}

// Ledger reads and writes consent.
type Ledger struct {
	rdb redis.UniversalClient
	now func() time.Time
	// OnChange, when set, is told of every recorded change (after it is
	// recorded), e.g. to stop the follow-up plans of a patient who opted out.
	OnChange func(ctx context.Context, tenant string, id Identity, optedOut bool)
}

// New returns the consent ledger. Consent never expires: it is evidence.
func New(rdb redis.UniversalClient) *Ledger { return &Ledger{rdb: rdb, now: time.Now} }

// The keys of one tenant share the hash tag {tenant}. Identities are
// hashed in key names, so phone numbers and addresses never show up in
// key listings or slow logs.
func stateKey(tenant string, id Identity) string {
	return stateKeyOf(tenant, Digest(id))
}

func stateKeyOf(tenant, digest string) string { return "gw:consent:{" + tenant + "}:" + digest }

// Digest names an identity's consent state without its address: what a
// send task carries so that the worker reads the recipient's consent in
// the round trip that claims the message (ReadIn).
func Digest(id Identity) string {
	sum := sha256.Sum256([]byte(id.String()))
	return hex.EncodeToString(sum[:16])
}

func indexKey(tenant string) string { return "gw:consent:{" + tenant + "}:index" }

// changeScript applies a change when it changes the state. KEYS state,
// index ARGV opted_out(0/1), change_json, identity_json, now_ms
// Returns 1 when the state changed, 0 when it was already so.
var changeScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], 'opted_out')
if cur == ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'opted_out', ARGV[1], 'identity', ARGV[3], 'since', ARGV[4])
redis.call('RPUSH', KEYS[1] .. ':log', ARGV[2])
redis.call('SADD', KEYS[2], KEYS[1])
return 1
`)

// Set records a change of consent. It returns false when the identity was
// already in that state (nothing is recorded, so a repeated STOP is
// confirmed once). A first opt-in of an identity never recorded before is
// recorded: it is evidence of consent.
func (l *Ledger) Set(ctx context.Context, tenant string, id Identity, optedOut bool, source, evidence string) (bool, error) {
	if !id.Valid() {
		return false, fmt.Errorf("consent: invalid identity kind %q", id.Kind)
	}
	now := l.now().UTC()
	ch, _ := json.Marshal(Change{At: now, OptedOut: optedOut, Source: source, Evidence: evidence})
	ident, _ := json.Marshal(id)
	v := "0"
	if optedOut {
		v = "1"
	}
	n, err := changeScript.Run(ctx, l.rdb, []string{stateKey(tenant, id), indexKey(tenant)}, v, ch, ident, now.UnixMilli()).Int()
	if n == 1 && err == nil && l.OnChange != nil {
		l.OnChange(ctx, tenant, id, optedOut)
	}
	return n == 1, err
}

// OptedOut reports whether messages to the identity are refused.
func (l *Ledger) OptedOut(ctx context.Context, tenant string, id Identity) (bool, error) {
	v, err := l.rdb.HGet(ctx, stateKey(tenant, id), "opted_out").Result()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	return v == "1", err
}

// OptedOutIn adds the read of OptedOut, for the identity whose Digest is
// digest, to the caller's pipeline; the returned function gives its answer
// once the pipeline ran.
func (l *Ledger) OptedOutIn(ctx context.Context, pipe redis.Pipeliner, tenant, digest string) func() (bool, error) {
	cmd := pipe.HGet(ctx, stateKeyOf(tenant, digest), "opted_out")
	return func() (bool, error) {
		v, err := cmd.Result()
		if errors.Is(err, redis.Nil) {
			return false, nil
		}
		return v == "1", err
	}
}

// Get returns an identity's state with its history.
func (l *Ledger) Get(ctx context.Context, tenant string, id Identity) (State, error) {
	key := stateKey(tenant, id)
	pipe := l.rdb.Pipeline()
	h := pipe.HGetAll(ctx, key)
	log := pipe.LRange(ctx, key+":log", 0, -1)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return State{}, err
	}
	st := State{Identity: id, OptedOut: h.Val()["opted_out"] == "1"}
	for _, raw := range log.Val() {
		var c Change
		if json.Unmarshal([]byte(raw), &c) == nil {
			st.Changes = append(st.Changes, c)
			st.Since = c.At
		}
	}
	return st, nil
}

// Export calls fn for every identity of the tenant with a recorded change.
func (l *Ledger) Export(ctx context.Context, tenant string, fn func(State) error) error {
	keys, err := l.rdb.SMembers(ctx, indexKey(tenant)).Result()
	if err != nil {
		return err
	}
	for _, key := range keys {
		raw, err := l.rdb.HGet(ctx, key, "identity").Result()
		if errors.Is(err, redis.Nil) {
			continue
		} else if err != nil {
			return err
		}
		var id Identity
		if err := json.Unmarshal([]byte(raw), &id); err != nil {
			continue
		}
		st, err := l.Get(ctx, tenant, id)
		if err != nil {
			return err
		}
		if err := fn(st); err != nil {
			return err
		}
	}
	return nil
}

// Normalise folds an email address's domain to lower case; other kinds
// are used as given (phones are E.164 already).
func Normalise(id Identity) Identity {
	if id.Kind == Email {
		if at := strings.LastIndexByte(id.Value, '@'); at > 0 {
			id.Value = id.Value[:at] + strings.ToLower(id.Value[at:])
		}
	}
	return id
}
