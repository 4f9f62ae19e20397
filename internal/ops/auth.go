package ops

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"log/slog"
	"net/http"
	"sync"

	"golang.org/x/crypto/bcrypt"
)

// users checks operators' passwords against their bcrypt hashes. The
// dashboard asks again every few seconds, and bcrypt takes tens of
// milliseconds by design: a password that matched is remembered (as an
// HMAC under a key of this process) so later requests skip bcrypt.
type users struct {
	hashes map[string]string
	key    []byte
	mu     sync.Mutex
	good   map[string][]byte
}

// unknownHash is compared against for an unknown name, so that a wrong
// name takes as long as a wrong password.
var unknownHash, _ = bcrypt.GenerateFromPassword([]byte("no such operator"), 10)

func newUsers(hashes map[string]string) *users {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	return &users{hashes: hashes, key: key, good: map[string][]byte{}}
}

func (u *users) check(name, password string) bool {
	mac := hmac.New(sha256.New, u.key)
	mac.Write([]byte(name))
	mac.Write([]byte{0})
	mac.Write([]byte(password))
	sum := mac.Sum(nil)
	u.mu.Lock()
	remembered := u.good[name]
	u.mu.Unlock()
	if remembered != nil && hmac.Equal(remembered, sum) {
		return true
	}
	hash, known := u.hashes[name]
	if !known {
		_ = bcrypt.CompareHashAndPassword(unknownHash, []byte(password))
		return false
	}
	if bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) != nil {
		return false
	}
	u.mu.Lock()
	u.good[name] = sum
	u.mu.Unlock()
	return true
}

// basicAuth lets through the requests of a known operator with the right
// password; others are answered 401 with a basic-auth challenge. Neither
// the name nor the password is logged.
func basicAuth(u *users, log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, password, ok := r.BasicAuth()
		if !ok || !u.check(name, password) {
			if ok {
				log.Warn("queue dashboard: authentication failed", "comp", "ops", "remote", r.RemoteAddr)
			}
			w.Header().Set("WWW-Authenticate", `Basic realm="gateway operations", charset="UTF-8"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}
