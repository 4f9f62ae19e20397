package users

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/invalid"
	"github.com/patientmsg/gateway/internal/redistest"
)

// clock is a test clock: tests move it, never sleep.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Move(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// fast are cheap hashing costs for the tests that are not about hashing.
var fast = Params{Memory: 64, Time: 1, Threads: 1}

func newStore(t *testing.T) (*Store, *clock) {
	t.Helper()
	c := &clock{now: time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)}
	rs := redistest.Start(t)
	rdb := rs.Client()
	t.Cleanup(func() { rdb.Close() })
	return New(rdb, Config{Now: c.Now, Params: fast}), c
}

const pw = "correct horse battery"

func addUser(t *testing.T, s *Store, tenant, email string, role Role) *User {
	t.Helper()
	u, err := s.Add(context.Background(), NewUser{Tenant: tenant, Email: email, Name: "Dana Lee", Role: role, Password: pw})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestAPasswordIsStoredAsAnArgon2idPHCStringAndVerifiedAgainstIt(t *testing.T) {
	enc, err := HashPassword(pw, DefaultParams)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(enc, "$argon2id$v=19$m=65536,t=3,p=2$") || strings.Count(enc, "$") != 5 {
		t.Fatalf("encoded hash %q is not a PHC argon2id string with its parameters", enc)
	}
	if strings.Contains(enc, pw) {
		t.Fatal("the hash contains the password")
	}
	again, _ := HashPassword(pw, DefaultParams)
	if again == enc {
		t.Fatal("two hashes of one password are equal: the salt is not random")
	}
	cases := []struct {
		name     string
		password string
		encoded  string
		want     bool
	}{
		{"the right password matches", pw, enc, true},
		{"the right password matches a hash with another salt", pw, again, true},
		{"a wrong password does not", pw + "!", enc, false},
		{"an empty password does not", "", enc, false},
		{"a hash of another algorithm never matches", pw, strings.Replace(enc, "argon2id", "argon2i", 1), false},
		{"a damaged hash never matches", pw, enc[:len(enc)-4], false},
		{"a hash asking for absurd memory is refused", pw, strings.Replace(enc, "m=65536", "m=4294967295", 1), false},
		{"an empty hash never matches", pw, "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := VerifyPassword(c.password, c.encoded); got != c.want {
				t.Fatalf("VerifyPassword = %v, want %v", got, c.want)
			}
		})
	}
	if !needsRehash(enc, fast) || needsRehash(enc, DefaultParams) {
		t.Fatal("needsRehash does not compare the stored parameters")
	}
}

func TestAGeneratedPasswordIsLongAndUnambiguous(t *testing.T) {
	a, _ := GeneratePassword()
	b, _ := GeneratePassword()
	if a == b || len(a) != 24 || CheckPassword(a) != nil || strings.ContainsAny(a, "0O1lI") {
		t.Fatalf("generated %q and %q", a, b)
	}
}

func TestAnAccountIsCheckedCreatedFoundListedAndRemoved(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	u := addUser(t, s, "clinic-a", "Dana.Lee@Example-Clinic.org", RoleLead)
	if u.Email != "Dana.Lee@example-clinic.org" || u.Locale != "en" || !strings.HasPrefix(u.ID, "u_") {
		t.Fatalf("account %+v", u)
	}
	if _, err := s.Add(ctx, NewUser{Tenant: "clinic-b", Email: "dana.lee@example-clinic.org", Role: RoleStaff, Password: pw}); !errors.Is(err, ErrExists) {
		t.Fatalf("an address in use (in any case, in any tenant) = %v, want ErrExists", err)
	}
	var bad *invalid.Error
	_, err := s.Add(ctx, NewUser{Tenant: "clinic a", Email: "not-an-address", Role: "admin", Locale: "fr", Password: "short"})
	if !errors.As(err, &bad) || len(bad.Errors) != 5 {
		t.Fatalf("a bad account = %v, want one error per field (tenant, email, role, locale, password)", err)
	}
	if got, err := s.Get(ctx, "clinic-a", "dana.lee@EXAMPLE-clinic.org"); err != nil || got.ID != u.ID {
		t.Fatalf("Get = %v, %v", got, err)
	}
	if _, err := s.Get(ctx, "clinic-b", u.Email); !errors.Is(err, ErrNotFound) {
		t.Fatalf("another tenant's account = %v, want ErrNotFound", err)
	}
	addUser(t, s, "clinic-a", "ana@example-clinic.org", RoleViewer)
	list, err := s.List(ctx, "clinic-a")
	if err != nil || len(list) != 2 || list[0].Email != "ana@example-clinic.org" {
		t.Fatalf("List = %v, %v", list, err)
	}
	if err := s.Remove(ctx, "clinic-b", u.Email); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removing from another tenant = %v", err)
	}
	if err := s.Remove(ctx, "clinic-a", u.Email); err != nil {
		t.Fatal(err)
	}
	if list, _ := s.List(ctx, "clinic-a"); len(list) != 1 {
		t.Fatalf("after Remove, List = %v", list)
	}
}

func TestRolesAllowWhatTheyName(t *testing.T) {
	cases := []struct {
		role          Role
		send, ackEsc  bool
		consent       bool
		answer, plans bool
		unknownAction bool
	}{
		{RoleLead, true, true, true, true, true, false},
		{RoleStaff, false, true, true, true, true, false},
		{RoleViewer, false, false, false, false, false, false},
		{"admin", false, false, false, false, false, false},
	}
	for _, c := range cases {
		if c.role.Can(SendBroadcasts) != c.send || c.role.Can(AcknowledgeEscalations) != c.ackEsc || c.role.Can(RecordConsent) != c.consent ||
			c.role.Can(AnswerPatients) != c.answer || c.role.Can(CancelPlans) != c.plans || c.role.Can(EditTemplates) != c.send ||
			c.role.Can(Permission(99)) != c.unknownAction {
			t.Errorf("%s: send %v, ack %v, consent %v, answer %v, plans %v", c.role, c.role.Can(SendBroadcasts), c.role.Can(AcknowledgeEscalations),
				c.role.Can(RecordConsent), c.role.Can(AnswerPatients), c.role.Can(CancelPlans))
		}
	}
}

func TestFiveFailedSignInsLockTheLoginForFifteenMinutes(t *testing.T) {
	s, clk := newStore(t)
	ctx := context.Background()
	addUser(t, s, "clinic-a", "dana@example-clinic.org", RoleLead)
	for i := range 4 {
		if _, _, _, err := s.SignIn(ctx, "dana@example-clinic.org", "wrong password "+string(rune('a'+i))); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("failure %d = %v, want ErrBadCredentials", i+1, err)
		}
		clk.Move(time.Minute)
	}
	var locked *LockedError
	_, _, _, err := s.SignIn(ctx, "dana@example-clinic.org", "wrong password e")
	if !errors.As(err, &locked) || !locked.Until.Equal(clk.Now().Add(15*time.Minute).Truncate(time.Millisecond)) {
		t.Fatalf("the fifth failure = %v, want locked for 15 minutes", err)
	}
	clk.Move(14 * time.Minute)
	if _, _, _, err := s.SignIn(ctx, "dana@example-clinic.org", pw); !errors.As(err, &locked) {
		t.Fatalf("the right password while locked = %v, want still locked", err)
	}
	clk.Move(time.Minute)
	if _, _, _, err := s.SignIn(ctx, "dana@example-clinic.org", pw); err != nil {
		t.Fatalf("the right password once the lock ended = %v", err)
	}
}

func TestFailuresSpreadOverMoreThanTheWindowDoNotLock(t *testing.T) {
	s, clk := newStore(t)
	ctx := context.Background()
	addUser(t, s, "clinic-a", "dana@example-clinic.org", RoleLead)
	for i := range 12 {
		if _, _, _, err := s.SignIn(ctx, "dana@example-clinic.org", "wrong"); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("failure %d, 4 minutes apart = %v", i+1, err)
		}
		clk.Move(4 * time.Minute)
		if i%4 == 3 {
			clk.Move(15 * time.Minute)
		}
	}
	// A success clears the count.
	for range 4 {
		_, _, _, _ = s.SignIn(ctx, "dana@example-clinic.org", "wrong")
	}
	if _, _, _, err := s.SignIn(ctx, "dana@example-clinic.org", pw); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if _, _, _, err := s.SignIn(ctx, "dana@example-clinic.org", "wrong"); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("after a success the count starts again; got %v", err)
		}
	}
}

func TestAnUnknownAddressIsAnsweredAndLockedLikeAKnownOne(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	for i := range 5 {
		_, _, _, err := s.SignIn(ctx, "nobody@example-clinic.org", pw)
		if i < 4 && !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("unknown address, try %d = %v, want ErrBadCredentials", i+1, err)
		}
		var locked *LockedError
		if i == 4 && !errors.As(err, &locked) {
			t.Fatalf("unknown address, fifth try = %v, want locked", err)
		}
	}
}

func TestTriesMadeAtOnceCannotPassTheLimit(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	addUser(t, s, "clinic-a", "dana@example-clinic.org", RoleLead)
	var wg sync.WaitGroup
	var mu sync.Mutex
	checked := 0
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, _, err := s.SignIn(ctx, "dana@example-clinic.org", "wrong")
			if errors.Is(err, ErrBadCredentials) {
				mu.Lock()
				checked++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if checked > 5 {
		t.Fatalf("%d of 20 simultaneous guesses were checked; at most 5 may be", checked)
	}
}

func TestASessionEndsWhenIdleForThirtyMinutesOrTwelveHoursAfterSignIn(t *testing.T) {
	s, clk := newStore(t)
	ctx := context.Background()
	u := addUser(t, s, "clinic-a", "dana@example-clinic.org", RoleStaff)
	signIn := func() string {
		t.Helper()
		_, _, token, err := s.SignIn(ctx, u.Email, pw)
		if err != nil || !ValidToken(token) {
			t.Fatalf("SignIn = %q, %v", token, err)
		}
		return token
	}
	t.Run("idle", func(t *testing.T) {
		token := signIn()
		clk.Move(29 * time.Minute)
		if _, _, err := s.Authenticate(ctx, token); err != nil {
			t.Fatalf("after 29 idle minutes = %v", err)
		}
		clk.Move(29 * time.Minute)
		if _, _, err := s.Authenticate(ctx, token); err != nil {
			t.Fatalf("29 minutes after the last use = %v", err)
		}
		clk.Move(30 * time.Minute)
		if _, _, err := s.Authenticate(ctx, token); !errors.Is(err, ErrNoSession) {
			t.Fatalf("30 idle minutes = %v, want ErrNoSession", err)
		}
	})
	t.Run("absolute", func(t *testing.T) {
		token := signIn()
		for range 24 {
			clk.Move(29 * time.Minute)
			if _, _, err := s.Authenticate(ctx, token); err != nil {
				t.Fatalf("in use for %v = %v", clk.Now(), err)
			}
		}
		clk.Move(25 * time.Minute) // 12 h 1 min after sign-in
		if _, _, err := s.Authenticate(ctx, token); !errors.Is(err, ErrNoSession) {
			t.Fatalf("twelve hours after sign-in = %v, want ErrNoSession", err)
		}
	})
	t.Run("signed out", func(t *testing.T) {
		token := signIn()
		if err := s.SignOut(ctx, token); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Authenticate(ctx, token); !errors.Is(err, ErrNoSession) {
			t.Fatalf("after sign-out = %v", err)
		}
	})
	t.Run("account removed and added again", func(t *testing.T) {
		token := signIn()
		if err := s.Remove(ctx, "clinic-a", u.Email); err != nil {
			t.Fatal(err)
		}
		u = addUser(t, s, "clinic-a", u.Email, RoleViewer)
		if _, _, err := s.Authenticate(ctx, token); !errors.Is(err, ErrNoSession) {
			t.Fatalf("a session of a removed account = %v", err)
		}
	})
	t.Run("not a token", func(t *testing.T) {
		for _, tok := range []string{"", "abc", strings.Repeat("A", 43) + "=", strings.Repeat("!", 43)} {
			if _, _, err := s.Authenticate(ctx, tok); !errors.Is(err, ErrNoSession) {
				t.Fatalf("Authenticate(%q) = %v", tok, err)
			}
		}
	})
}

func TestTheSessionStoresOnlyTheTokensHashAndChecksItsCSRFToken(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	u := addUser(t, s, "clinic-a", "dana@example-clinic.org", RoleLead)
	_, sess, token, err := s.SignIn(ctx, u.Email, pw)
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := s.rdb.Keys(ctx, "gw:users:*").Result()
	for _, k := range keys {
		if strings.Contains(k, token) || strings.Contains(strings.ToLower(k), "dana") {
			t.Fatalf("key %q holds the token or the address", k)
		}
		if typ, _ := s.rdb.Type(ctx, k).Result(); typ == "hash" {
			vals, _ := s.rdb.HGetAll(ctx, k).Result()
			for _, v := range vals {
				if strings.Contains(v, token) {
					t.Fatalf("%s stores the session token", k)
				}
			}
		}
	}
	_, again, err := s.Authenticate(ctx, token)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, token string
		want        bool
	}{
		{"the session's token", sess.CSRF, true},
		{"no token", "", false},
		{"another token", strings.Repeat("x", len(sess.CSRF)), false},
		{"the session cookie's token", token, false},
	}
	for _, c := range cases {
		if got := again.CheckCSRF(c.token); got != c.want {
			t.Errorf("%s: CheckCSRF = %v", c.name, got)
		}
	}
}

func FuzzDecodeHash(f *testing.F) {
	enc, _ := HashPassword(pw, fast)
	f.Add(enc)
	f.Add("$argon2id$v=19$m=0,t=0,p=0$$")
	f.Add("$argon2id$v=19$m=65536,t=3,p=2,x=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA")
	f.Fuzz(func(t *testing.T, s string) {
		p, salt, key, err := decodeHash(s)
		if err != nil {
			return
		}
		if p.Memory > maxDecodedMemory || p.Time > 64 || p.Threads == 0 || len(salt) < 8 || len(key) < 16 || len(key) > 64 {
			t.Fatalf("decoded %+v from %q", p, s)
		}
	})
}
