package users

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Errors of signing in and of sessions.
var (
	// ErrBadCredentials: no account has this address and password. The
	// same answer for an unknown address and a wrong password.
	ErrBadCredentials = errors.New("users: the email address or the password is wrong")
	// ErrNoSession: the token names no live session (unknown, signed out,
	// expired, or its account was removed).
	ErrNoSession = errors.New("users: no session")
)

// LockedError: too many failed sign-ins; the login is refused until Until.
type LockedError struct{ Until time.Time }

func (e *LockedError) Error() string {
	return "users: too many failed sign-ins; locked until " + e.Until.UTC().Format(time.RFC3339)
}

// Session is a signed-in account's session.
type Session struct {
	// ID is the SHA-256 of the token, hex: what the store knows it by.
	ID     string
	Tenant string
	UserID string
	// CSRF is the token every form of the session posts back.
	CSRF      string
	CreatedAt time.Time
	SeenAt    time.Time
	login     string
}

// CheckCSRF reports, in constant time, whether a posted token is the
// session's.
func (s *Session) CheckCSRF(token string) bool {
	return token != "" && subtle.ConstantTimeCompare([]byte(token), []byte(s.CSRF)) == 1
}

// tokenLen is the length of a token: 32 random bytes, base64url.
const tokenLen = 43

func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// ValidToken reports whether s has the form of a session token (the
// cookie's value), before any lookup.
func ValidToken(s string) bool {
	if len(s) != tokenLen {
		return false
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	return err == nil && len(b) == 32
}

func sessionID(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// SignIn checks an address and password and opens a session: it returns
// the account, the session and its token (for the cookie; it is not kept).
// A wrong address or password is ErrBadCredentials; after MaxFailures
// failed tries within FailureWindow the login is refused for LockFor
// (*LockedError), whether an account has the address or not.
func (s *Store) SignIn(ctx context.Context, email, password string) (*User, *Session, string, error) {
	login := loginOf(email)
	now := s.cfg.Now()
	// The try is counted before the password is checked, so that tries
	// made at once cannot pass the limit while they are being checked.
	until, err := s.attempt(ctx, login, now)
	if err != nil {
		return nil, nil, "", err
	}
	if !until.IsZero() {
		return nil, nil, "", &LockedError{Until: until}
	}
	u, err := s.byLogin(ctx, login)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, nil, "", err
	}
	s.dummyOnce.Do(func() { s.dummy, _ = HashPassword("no account has this password", s.cfg.Params) })
	hash := s.dummy
	if u != nil {
		hash = u.PasswordHash
	}
	ok, err := s.verify(ctx, password, hash)
	if err != nil {
		return nil, nil, "", err
	}
	if !ok || u == nil || len(password) > MaxPasswordLen {
		until, err := s.failed(ctx, login, now)
		if err != nil {
			return nil, nil, "", err
		}
		if !until.IsZero() {
			return nil, nil, "", &LockedError{Until: until}
		}
		return nil, nil, "", ErrBadCredentials
	}
	if err := s.rdb.Del(ctx, failsKey(login)).Err(); err != nil {
		return nil, nil, "", err
	}
	if needsRehash(u.PasswordHash, s.cfg.Params) {
		s.rehash(ctx, u, password)
	}
	sess, token, err := s.open(ctx, u, now)
	if err != nil {
		return nil, nil, "", err
	}
	return u, sess, token, nil
}

// rehash stores the password hashed with the current parameters (best
// effort: the old hash still works).
func (s *Store) rehash(ctx context.Context, u *User, password string) {
	hash, err := s.hash(ctx, password)
	if err != nil {
		return
	}
	u.PasswordHash = hash
	doc, _ := json.Marshal(u)
	_ = s.rdb.HSet(ctx, accountKey(loginOf(u.Email)), "doc", doc).Err()
}

// attempt counts a sign-in try; it returns when the login is locked until
// (zero: not locked).
func (s *Store) attempt(ctx context.Context, login string, now time.Time) (time.Time, error) {
	return s.runFails(ctx, attemptScript, login, now)
}

// failed records that a try failed; it returns the lock it caused, if any.
func (s *Store) failed(ctx context.Context, login string, now time.Time) (time.Time, error) {
	return s.runFails(ctx, failedScript, login, now)
}

func (s *Store) runFails(ctx context.Context, script *redis.Script, login string, now time.Time) (time.Time, error) {
	ms, err := script.Run(ctx, s.rdb, []string{failsKey(login)}, now.UnixMilli(), s.cfg.MaxFailures,
		s.cfg.FailureWindow.Milliseconds(), s.cfg.LockFor.Milliseconds()).Int64()
	if err != nil {
		return time.Time{}, err
	}
	if ms == 0 {
		return time.Time{}, nil
	}
	return time.UnixMilli(ms), nil
}

// attemptScript: a locked login stays locked; otherwise the try is
// counted in the current window (a new window once the last has passed),
// and one try past the limit locks. Returns the lock's end (ms) or 0.
// The key lives as long as a window and a lock (the store's clock decides;
// Redis' expiry only cleans up).
var attemptScript = redis.NewScript(`
local now, max, window, lockfor = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local h = redis.call('HMGET', KEYS[1], 'n', 'first', 'until')
local n, first, untl = tonumber(h[1] or '0'), tonumber(h[2] or '0'), tonumber(h[3] or '0')
if untl > now then return untl end
if first == 0 or now - first > window or untl > 0 then n, first = 0, now end
n = n + 1
untl = 0
if n > max then untl = now + lockfor end
redis.call('HSET', KEYS[1], 'n', n, 'first', first, 'until', untl)
redis.call('PEXPIRE', KEYS[1], window + lockfor + 60000)
return untl
`)

// failedScript: the try failed; the limit reached locks the login.
var failedScript = redis.NewScript(`
local now, max, window, lockfor = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local h = redis.call('HMGET', KEYS[1], 'n', 'until')
local n, untl = tonumber(h[1] or '0'), tonumber(h[2] or '0')
if untl > now then return untl end
if n >= max then
  untl = now + lockfor
  redis.call('HSET', KEYS[1], 'until', untl)
  redis.call('PEXPIRE', KEYS[1], window + lockfor + 60000)
  return untl
end
return 0
`)

// open stores a new session of u and returns it with its token.
func (s *Store) open(ctx context.Context, u *User, now time.Time) (*Session, string, error) {
	token, err := randomToken()
	if err != nil {
		return nil, "", err
	}
	csrf, err := randomToken()
	if err != nil {
		return nil, "", err
	}
	sess := &Session{ID: sessionID(token), Tenant: u.Tenant, UserID: u.ID, CSRF: csrf, CreatedAt: now, SeenAt: now,
		login: loginOf(u.Email)}
	pipe := s.rdb.TxPipeline()
	pipe.HSet(ctx, sessionKey(sess.ID), "tenant", sess.Tenant, "login", sess.login, "user", sess.UserID, "csrf", csrf,
		"created", now.UnixMilli(), "seen", now.UnixMilli())
	pipe.PExpire(ctx, sessionKey(sess.ID), s.cfg.MaxAge)
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, "", err
	}
	return sess, token, nil
}

// touchEvery is how stale a session's last use may be before a request
// records it again (fewer writes; the idle timeout is far longer).
const touchEvery = 30 * time.Second

// Authenticate returns the session of a token and its account, and
// records the use (the idle timeout starts again). A token that is
// malformed, unknown, signed out or expired, or whose account was removed
// or replaced, is ErrNoSession.
func (s *Store) Authenticate(ctx context.Context, token string) (*User, *Session, error) {
	if !ValidToken(token) {
		return nil, nil, ErrNoSession
	}
	id := sessionID(token)
	h, err := s.rdb.HGetAll(ctx, sessionKey(id)).Result()
	if err != nil {
		return nil, nil, err
	}
	if len(h) == 0 {
		return nil, nil, ErrNoSession
	}
	created, _ := strconv.ParseInt(h["created"], 10, 64)
	seen, _ := strconv.ParseInt(h["seen"], 10, 64)
	sess := &Session{ID: id, Tenant: h["tenant"], UserID: h["user"], CSRF: h["csrf"], CreatedAt: time.UnixMilli(created),
		SeenAt: time.UnixMilli(seen), login: h["login"]}
	now := s.cfg.Now()
	if !now.Before(sess.CreatedAt.Add(s.cfg.MaxAge)) || !now.Before(sess.SeenAt.Add(s.cfg.IdleTimeout)) {
		_ = s.rdb.Del(ctx, sessionKey(id)).Err()
		return nil, nil, ErrNoSession
	}
	u, err := s.byLogin(ctx, sess.login)
	if errors.Is(err, ErrNotFound) {
		_ = s.rdb.Del(ctx, sessionKey(id)).Err()
		return nil, nil, ErrNoSession
	}
	if err != nil {
		return nil, nil, err
	}
	if u.ID != sess.UserID || u.Tenant != sess.Tenant {
		_ = s.rdb.Del(ctx, sessionKey(id)).Err()
		return nil, nil, ErrNoSession
	}
	if now.Sub(sess.SeenAt) >= touchEvery {
		// XX: a session signed out meanwhile is not brought back.
		if err := touchScript.Run(ctx, s.rdb, []string{sessionKey(id)}, now.UnixMilli()).Err(); err != nil && !errors.Is(err, redis.Nil) {
			return nil, nil, fmt.Errorf("users: touch session: %w", err)
		}
		sess.SeenAt = now
	}
	return u, sess, nil
}

var touchScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'seen', ARGV[1]) end
return 1
`)

// SignOut ends the session of a token (nothing when there is none).
func (s *Store) SignOut(ctx context.Context, token string) error {
	if !ValidToken(token) {
		return nil
	}
	return s.rdb.Del(ctx, sessionKey(sessionID(token))).Err()
}
