// Package users keeps the console's accounts: people of a tenant (a crisis
// lead, a nurse on call, a coordinator) who sign in with their email
// address and a password, each with a role that says what they may do. It
// also keeps their sign-in sessions, their CSRF tokens, and the failed
// sign-ins that lock an address out for a while.
//
// Keys (no email address appears in a key: logins are hashed):
//
//	gw:users:a:{<login>}        hash: doc (the account, JSON, with its password hash)
//	gw:users:a:{<login>}:fails  hash: n, first, until (ms): failed sign-ins and the lockout
//	gw:users:t:{<tenant>}       set: the logins of the tenant's accounts
//	gw:users:s:<sha256(token)>  hash: tenant, login, user, csrf, created, seen (ms): a session
//
// <login> is the first 128 bits of SHA-256 of the lower-cased address.
// Sessions are found by the SHA-256 of their token: the token itself is
// only ever in the browser's cookie.
package users

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/address"
	"github.com/patientmsg/gateway/internal/invalid"
)

// Role is what an account may do in the console.
type Role string

// The roles.
const (
	// RoleLead composes, previews, sends and cancels broadcasts, and does
	// everything staff do.
	RoleLead Role = "lead"
	// RoleStaff works the inbox, acknowledges escalations and records
	// patients' consent.
	RoleStaff Role = "staff"
	// RoleViewer reads everything and changes nothing.
	RoleViewer Role = "viewer"
)

// Roles lists the roles, most powerful first.
var Roles = []Role{RoleLead, RoleStaff, RoleViewer}

// Permission is something a role may be allowed to do beyond reading.
type Permission int

// The permissions.
const (
	// SendBroadcasts: upload audiences, preview, send and cancel crisis
	// broadcasts.
	SendBroadcasts Permission = iota + 1
	// AcknowledgeEscalations: acknowledge an urgent reply's escalation.
	AcknowledgeEscalations
	// RecordConsent: record a patient's consent, with its evidence.
	RecordConsent
	// AnswerPatients: send a patient a message from their conversation.
	AnswerPatients
	// CancelPlans: cancel a patient's follow-up plan.
	CancelPlans
	// EditTemplates: write the tenant's own message templates.
	EditTemplates
)

// Can reports whether the role has a permission. Every role may read.
func (r Role) Can(p Permission) bool {
	switch p {
	case SendBroadcasts, EditTemplates:
		return r == RoleLead
	case AcknowledgeEscalations, RecordConsent, AnswerPatients, CancelPlans:
		return r == RoleLead || r == RoleStaff
	}
	return false
}

// Locales are the console's languages.
var Locales = []string{"en", "zh-Hans"}

// User is a console account.
type User struct {
	ID     string `json:"id"`
	Tenant string `json:"tenant"`
	// Email is the login, as it was given (its domain in lower case).
	Email     string    `json:"email"`
	Name      string    `json:"name"`
	Role      Role      `json:"role"`
	Locale    string    `json:"locale"`
	CreatedAt time.Time `json:"created_at"`
	// PasswordHash is the argon2id hash, PHC-encoded.
	PasswordHash string `json:"password_hash"`
}

// Errors of the store.
var (
	ErrNotFound = errors.New("users: no such account")
	ErrExists   = errors.New("users: an account with this email address exists already")
)

// Config tunes a Store; zero fields take the defaults shown.
type Config struct {
	// Now is the clock of sessions and lockouts (time.Now).
	Now func() time.Time
	// Params are the password hashing costs (DefaultParams).
	Params Params
	// MaxFailures failed sign-ins within FailureWindow lock the login out
	// for LockFor (5 within 15 minutes, locked 15 minutes).
	MaxFailures   int
	FailureWindow time.Duration
	LockFor       time.Duration
	// IdleTimeout ends a session not used for that long (30 minutes);
	// MaxAge ends any session that long after sign-in (12 hours).
	IdleTimeout time.Duration
	MaxAge      time.Duration
	// MaxHashing bounds the password hashes computed at once (4): each
	// takes Params.Memory.
	MaxHashing int
}

// Store keeps accounts and sessions in Redis.
type Store struct {
	rdb     redis.UniversalClient
	cfg     Config
	hashing chan struct{}
	// dummy is checked against by a sign-in with an unknown address, so
	// that it takes as long as one with a known address (made at the
	// first sign-in).
	dummyOnce sync.Once
	dummy     string
}

// New returns a store on rdb.
func New(rdb redis.UniversalClient, cfg Config) *Store {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Params == (Params{}) {
		cfg.Params = DefaultParams
	}
	if cfg.MaxFailures <= 0 {
		cfg.MaxFailures = 5
	}
	if cfg.FailureWindow <= 0 {
		cfg.FailureWindow = 15 * time.Minute
	}
	if cfg.LockFor <= 0 {
		cfg.LockFor = 15 * time.Minute
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 30 * time.Minute
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = 12 * time.Hour
	}
	if cfg.MaxHashing <= 0 {
		cfg.MaxHashing = 4
	}
	return &Store{rdb: rdb, cfg: cfg, hashing: make(chan struct{}, cfg.MaxHashing)}
}

// Config is the store's configuration, defaults filled in.
func (s *Store) Config() Config { return s.cfg }

// loginOf is the hashed login of an email address.
func loginOf(email string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(strings.TrimSpace(email))))
	return hex.EncodeToString(sum[:16])
}

func accountKey(login string) string { return "gw:users:a:{" + login + "}" }
func failsKey(login string) string   { return accountKey(login) + ":fails" }
func tenantKey(tenant string) string { return "gw:users:t:{" + tenant + "}" }
func sessionKey(id string) string    { return "gw:users:s:" + id }

// NewUser is an account to create.
type NewUser struct {
	Tenant   string
	Email    string
	Name     string
	Role     Role
	Locale   string
	Password string
}

// Check validates an account to create; what is wrong is an
// *invalid.Error naming the field. It normalises Email, Name and Locale.
func (n *NewUser) Check() error {
	var errs invalid.List
	if !validTenant(n.Tenant) {
		errs.Add("tenant", "must be the tenant's name, 1 to 64 letters, digits, '-', '_' or '.'")
	}
	if e, ok := address.Email(n.Email); ok {
		n.Email = e
	} else {
		errs.Add("email", "is not an email address such as dana@example-clinic.org")
	}
	n.Name = strings.TrimSpace(n.Name)
	if utf8.RuneCountInString(n.Name) > 100 || !utf8.ValidString(n.Name) || strings.ContainsFunc(n.Name, isControl) {
		errs.Add("name", "must be at most 100 printable characters")
	}
	if !slices.Contains(Roles, n.Role) {
		errs.Add("role", "must be lead, staff or viewer")
	}
	if n.Locale == "" {
		n.Locale = "en"
	}
	if !slices.Contains(Locales, n.Locale) {
		errs.Add("locale", "must be en or zh-Hans")
	}
	if err := CheckPassword(n.Password); err != nil {
		errs.Add("password", "%s", err.Error())
	}
	return errs.Err()
}

// CheckPassword says what is wrong with a password, if anything.
func CheckPassword(p string) error {
	switch {
	case !utf8.ValidString(p):
		return errors.New("must be valid UTF-8 text")
	case utf8.RuneCountInString(p) < MinPasswordLen:
		return fmt.Errorf("must be at least %d characters", MinPasswordLen)
	case len(p) > MaxPasswordLen:
		return fmt.Errorf("must be at most %d bytes", MaxPasswordLen)
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

func validTenant(t string) bool {
	if t == "" || len(t) > 64 {
		return false
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// Add creates an account. An address already in use (in any tenant: an
// address signs in to one account) is ErrExists.
func (s *Store) Add(ctx context.Context, n NewUser) (*User, error) {
	if err := n.Check(); err != nil {
		return nil, err
	}
	hash, err := s.hash(ctx, n.Password)
	if err != nil {
		return nil, err
	}
	u := &User{ID: "u_" + ulid.Make().String(), Tenant: n.Tenant, Email: n.Email, Name: n.Name, Role: n.Role,
		Locale: n.Locale, CreatedAt: s.cfg.Now().UTC(), PasswordHash: hash}
	doc, _ := json.Marshal(u)
	login := loginOf(u.Email)
	ok, err := s.rdb.HSetNX(ctx, accountKey(login), "doc", doc).Result()
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, ErrExists
	}
	if err := s.rdb.SAdd(ctx, tenantKey(u.Tenant), login).Err(); err != nil {
		return nil, err
	}
	return u, nil
}

// hash hashes a password, at most MaxHashing at once.
func (s *Store) hash(ctx context.Context, password string) (string, error) {
	if err := s.acquire(ctx); err != nil {
		return "", err
	}
	defer s.release()
	return HashPassword(password, s.cfg.Params)
}

func (s *Store) verify(ctx context.Context, password, encoded string) (bool, error) {
	if err := s.acquire(ctx); err != nil {
		return false, err
	}
	defer s.release()
	return VerifyPassword(password, encoded), nil
}

func (s *Store) acquire(ctx context.Context) error {
	select {
	case s.hashing <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Store) release() { <-s.hashing }

// byLogin reads an account by its hashed login (ErrNotFound).
func (s *Store) byLogin(ctx context.Context, login string) (*User, error) {
	doc, err := s.rdb.HGet(ctx, accountKey(login), "doc").Result()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	var u User
	if err := json.Unmarshal([]byte(doc), &u); err != nil {
		return nil, fmt.Errorf("users: account %s: %w", login, err)
	}
	return &u, nil
}

// Get returns a tenant's account by email address (ErrNotFound).
func (s *Store) Get(ctx context.Context, tenant, email string) (*User, error) {
	u, err := s.byLogin(ctx, loginOf(email))
	if err != nil {
		return nil, err
	}
	if u.Tenant != tenant {
		return nil, ErrNotFound
	}
	return u, nil
}

// List returns a tenant's accounts by email address.
func (s *Store) List(ctx context.Context, tenant string) ([]*User, error) {
	logins, err := s.rdb.SMembers(ctx, tenantKey(tenant)).Result()
	if err != nil {
		return nil, err
	}
	out := []*User{}
	for _, l := range logins {
		u, err := s.byLogin(ctx, l)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if u.Tenant == tenant {
			out = append(out, u)
		}
	}
	slices.SortFunc(out, func(a, b *User) int { return strings.Compare(strings.ToLower(a.Email), strings.ToLower(b.Email)) })
	return out, nil
}

// Remove deletes a tenant's account (ErrNotFound). Its sessions end: they
// name an account that no longer exists.
func (s *Store) Remove(ctx context.Context, tenant, email string) error {
	u, err := s.Get(ctx, tenant, email)
	if err != nil {
		return err
	}
	login := loginOf(u.Email)
	if err := s.rdb.Del(ctx, accountKey(login), failsKey(login)).Err(); err != nil {
		return err
	}
	return s.rdb.SRem(ctx, tenantKey(tenant), login).Err()
}
