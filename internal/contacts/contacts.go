// Package contacts keeps a tenant's patients: each known by one or more
// identities (phone number, WeChat openid, email address) with a language
// and a time zone. An identity belongs to at most one contact of a tenant.
package contacts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/address"
	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/invalid"
)

// Errors of the contact store.
var (
	ErrNotFound = errors.New("contact not found")
)

// IdentityTakenError says an identity already belongs to another contact.
type IdentityTakenError struct {
	Identity consent.Identity
	Owner    string
}

func (e *IdentityTakenError) Error() string {
	return fmt.Sprintf("the %s identity already belongs to contact %s", e.Identity.Kind, e.Owner)
}

// Contact is a tenant's patient.
type Contact struct {
	ID         string             `json:"id"`
	Identities []consent.Identity `json:"identities"`
	Locale     string             `json:"locale,omitempty"`
	TimeZone   string             `json:"timezone,omitempty"`
	CreatedAt  time.Time          `json:"created_at"`
	UpdatedAt  time.Time          `json:"updated_at"`
}

// Store reads and writes contacts.
type Store struct {
	rdb redis.UniversalClient
	now func() time.Time
}

// New returns the contact store.
func New(rdb redis.UniversalClient) *Store { return &Store{rdb: rdb, now: time.Now} }

// Keys of one tenant share the hash tag {tenant}; identities are hashed in
// key names.
func contactKey(tenant, id string) string { return "gw:contact:{" + tenant + "}:" + id }
func identityKey(tenant string, i consent.Identity) string {
	sum := sha256.Sum256([]byte(i.String()))
	return "gw:contact:{" + tenant + "}:by:" + hex.EncodeToString(sum[:16])
}

// putScript replaces a contact and its identity index atomically.
// KEYS contact, new identity keys (n_new of them), old identity keys
// ARGV id, doc, n_new, contact key prefix. Returns "" or the id of another
// managed contact owning one of the new identities; a contact the gateway
// created implicitly ("auto-…") gives its identity up and is removed.
var putScript = redis.NewScript(`
local nnew = tonumber(ARGV[3])
for i = 2, 1 + nnew do
  local owner = redis.call('GET', KEYS[i])
  if owner and owner ~= ARGV[1] and string.sub(owner, 1, 5) ~= 'auto-' then return owner end
end
for i = 2, 1 + nnew do
  local owner = redis.call('GET', KEYS[i])
  if owner and string.sub(owner, 1, 5) == 'auto-' then redis.call('DEL', ARGV[4] .. owner) end
end
for i = 2 + nnew, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
redis.call('SET', KEYS[1], ARGV[2])
for i = 2, 1 + nnew do redis.call('SET', KEYS[i], ARGV[1]) end
return ''
`)

// Put creates or replaces a contact. It keeps CreatedAt of an existing one.
func (s *Store) Put(ctx context.Context, tenant string, c Contact) (Contact, error) {
	old, err := s.Get(ctx, tenant, c.ID)
	switch {
	case errors.Is(err, ErrNotFound):
		c.CreatedAt = s.now().UTC()
	case err != nil:
		return Contact{}, err
	default:
		c.CreatedAt = old.CreatedAt
	}
	c.UpdatedAt = s.now().UTC()
	doc, _ := json.Marshal(c)
	keys := []string{contactKey(tenant, c.ID)}
	for _, i := range c.Identities {
		keys = append(keys, identityKey(tenant, i))
	}
	for _, i := range old.Identities {
		keys = append(keys, identityKey(tenant, i))
	}
	owner, err := putScript.Run(ctx, s.rdb, keys, c.ID, doc, len(c.Identities), contactKey(tenant, "")).Text()
	if err != nil {
		return Contact{}, err
	}
	if owner != "" {
		for _, i := range c.Identities {
			if o, _ := s.rdb.Get(ctx, identityKey(tenant, i)).Result(); o == owner {
				return Contact{}, &IdentityTakenError{Identity: i, Owner: owner}
			}
		}
		return Contact{}, &IdentityTakenError{Owner: owner}
	}
	return c, nil
}

// Get returns a contact.
func (s *Store) Get(ctx context.Context, tenant, id string) (Contact, error) {
	raw, err := s.rdb.Get(ctx, contactKey(tenant, id)).Result()
	if errors.Is(err, redis.Nil) {
		return Contact{}, ErrNotFound
	}
	if err != nil {
		return Contact{}, err
	}
	var c Contact
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		return Contact{}, fmt.Errorf("contacts: %s: %w", id, err)
	}
	return c, nil
}

// Find returns the contact an identity belongs to.
func (s *Store) Find(ctx context.Context, tenant string, i consent.Identity) (Contact, error) {
	// One round trip: the identity's contact id, then the contact (both
	// keys share the tenant's hash tag).
	raw, err := findScript.Run(ctx, s.rdb, []string{identityKey(tenant, i)}, contactKey(tenant, "")).Text()
	if errors.Is(err, redis.Nil) {
		return Contact{}, ErrNotFound
	}
	if err != nil {
		return Contact{}, err
	}
	var c Contact
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		return Contact{}, fmt.Errorf("contacts: %w", err)
	}
	return c, nil
}

// findScript: KEYS identity index ARGV contact key prefix. Returns the
// contact's JSON, or nil.
var findScript = redis.NewScript(`
local id = redis.call('GET', KEYS[1])
if not id then return false end
return redis.call('GET', ARGV[1] .. id)
`)

// ensureSrc creates a contact for an identity no contact has yet.
// KEYS identity index, contact ARGV id, doc
const ensureSrc = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
return 1
`

// EnsureIn queues, on pipe, the creation of a contact for an identity that
// belongs to none yet: sends and replies create contacts implicitly, with
// an id "auto-<ULID>" the tenant can look up by identity (and replace
// with PUT under its own id after removing the identity here).
func EnsureIn(ctx context.Context, pipe redis.Pipeliner, tenant string, i consent.Identity, locale string, now time.Time) {
	id := "auto-" + strings.ToLower(ulid.Make().String())
	doc, _ := json.Marshal(Contact{ID: id, Identities: []consent.Identity{i}, Locale: locale, CreatedAt: now.UTC(), UpdatedAt: now.UTC()})
	// EVAL rather than EVALSHA: a pipeline cannot recover from NOSCRIPT,
	// and the script is short.
	pipe.Eval(ctx, ensureSrc, []string{identityKey(tenant, i), contactKey(tenant, id)}, id, doc)
}

// Input is a contact as a clinic gives it (the body of PUT
// /v1/contacts/{id}): at least one address, each normalised by package
// address.
type Input struct {
	Phone        *string `json:"phone"`
	Email        *string `json:"email"`
	WeChatOpenID *string `json:"wechat_openid"`
	Locale       *string `json:"locale"`
	TimeZone     *string `json:"timezone"`
}

// ValidID reports whether id can name a contact: 1-64 letters, digits,
// '-', '_' or '.' (a medical record number, say).
func ValidID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// Contact checks and normalises the input into contact id; every bad field
// is an *invalid.Error.
func (in Input) Contact(id string) (Contact, error) {
	var bad invalid.List
	ct := Contact{ID: id}
	if in.Phone != nil {
		if e164, err := address.Phone(*in.Phone, ""); err == nil {
			ct.Identities = append(ct.Identities, consent.Identity{Kind: consent.Phone, Value: e164})
		} else {
			bad.Add("phone", "is not a valid phone number; give it in international form, e.g. +14155550100")
		}
	}
	if in.Email != nil {
		if addr, ok := address.Email(*in.Email); ok {
			ct.Identities = append(ct.Identities, consent.Identity{Kind: consent.Email, Value: addr})
		} else {
			bad.Add("email", "is not a valid email address such as patient@example.org")
		}
	}
	if in.WeChatOpenID != nil {
		if address.OpenID(*in.WeChatOpenID) {
			ct.Identities = append(ct.Identities, consent.Identity{Kind: consent.WeChat, Value: *in.WeChatOpenID})
		} else {
			bad.Add("wechat_openid", "is not a WeChat openid")
		}
	}
	if in.Phone == nil && in.Email == nil && in.WeChatOpenID == nil {
		bad.Add("phone", "a contact needs at least one of phone, email or wechat_openid")
	}
	if in.Locale != nil {
		if v, ok := address.Locale(*in.Locale); ok {
			ct.Locale = v
		} else {
			bad.Add("locale", "is not a language tag such as en-US or zh-CN")
		}
	}
	if in.TimeZone != nil {
		if _, err := time.LoadLocation(*in.TimeZone); err != nil || *in.TimeZone == "" || strings.EqualFold(*in.TimeZone, "local") {
			bad.Add("timezone", "is not an IANA time zone such as Asia/Shanghai or America/New_York")
		} else {
			ct.TimeZone = *in.TimeZone
		}
	}
	return ct, bad.Err()
}
