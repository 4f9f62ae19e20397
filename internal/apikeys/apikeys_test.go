package apikeys_test

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/apikeys"
	"github.com/patientmsg/gateway/internal/audit"
	"github.com/patientmsg/gateway/internal/invalid"
	"github.com/patientmsg/gateway/internal/redistest"
)

// clock is a test clock: tests move it, never sleep.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// storeOnRedis is a store on a Redis of its own, with a clock the test moves.
func storeOnRedis(t *testing.T) (context.Context, *clock, redis.UniversalClient, *apikeys.Store) {
	clk := newClock()
	rdb := redistest.Start(t).Client()
	return context.Background(), clk, rdb, apikeys.New(rdb, apikeys.Config{Now: clk.Now})
}

func newClock() *clock { return &clock{t: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)} }

var by = apikeys.By{Actor: "apikey:aaaaaaaaaaaaaaaa", RequestID: "req-1"}

func TestAKeyIsStoredHashedAndFoundByItsID(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client()
	s := apikeys.New(rdb, apikeys.Config{Now: newClock().Now})
	k, plain, err := s.Create(ctx, apikeys.NewKey{Tenant: "clinic-a", Name: " EHR integration ", Scopes: []apikeys.Scope{"read", "send", "read"}}, by)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^pmg_[a-z2-7]{16}_[a-z2-7]{52}$`).MatchString(plain) || !strings.Contains(plain, "_"+k.ID+"_") {
		t.Fatalf("key %q (id %s) is not pmg_<id>_<secret>", plain, k.ID)
	}
	if k.Name != "EHR integration" || strings.Join(scopeStrings(k.Scopes), ",") != "send,read" || k.State != apikeys.Active {
		t.Fatalf("made %+v", k)
	}
	secret := plain[len(plain)-52:]
	for _, key := range rdb.Keys(ctx, "*").Val() {
		dump := strings.Join(append(rdb.HVals(ctx, key).Val(), rdb.ZRange(ctx, key, 0, -1).Val()...), " ")
		if strings.Contains(key+dump, secret) {
			t.Fatalf("Redis key %s holds the secret: %s", key, dump)
		}
	}
	got, err := s.Authenticate(ctx, plain)
	if err != nil || got.ID != k.ID || got.Tenant != "clinic-a" || !got.Has(apikeys.Send) || got.Has(apikeys.Admin) {
		t.Fatalf("Authenticate = %+v, %v", got, err)
	}
	other, _, _ := s.Create(ctx, apikeys.NewKey{Tenant: "clinic-a", Name: "other", Scopes: []apikeys.Scope{"admin"}}, by)
	for name, key := range map[string]string{
		"a wrong secret":               plain[:len(plain)-1] + map[bool]string{true: "a", false: "b"}[plain[len(plain)-1] != 'a'],
		"another key's id":             strings.Replace(plain, k.ID, other.ID, 1),
		"an unknown id":                "pmg_" + strings.Repeat("a", 16) + "_" + secret,
		"no prefix":                    strings.TrimPrefix(plain, "pmg_"),
		"upper case":                   strings.ToUpper(plain),
		"a bootstrap-looking key":      "main-clinic-key-0123456789",
		"an empty key":                 "",
		"the secret with a short part": plain[:len(plain)-2],
	} {
		if _, err := s.Authenticate(ctx, key); !errors.Is(err, apikeys.ErrInvalid) {
			t.Errorf("%s: Authenticate = %v, want ErrInvalid", name, err)
		}
	}
}

func scopeStrings(s []apikeys.Scope) []string {
	out := make([]string, len(s))
	for i, sc := range s {
		out[i] = string(sc)
	}
	return out
}

func TestARotatedKeyWorksUntilItsGraceEnds(t *testing.T) {
	ctx, clk, _, s := storeOnRedis(t)
	old, oldKey, _ := s.Create(ctx, apikeys.NewKey{Tenant: "clinic-a", Name: "EHR", Scopes: []apikeys.Scope{"send"}}, by)
	if _, err := s.Authenticate(ctx, oldKey); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := s.Rotate(ctx, "clinic-b", old.ID, 0, by); !errors.Is(err, apikeys.ErrNotFound) {
		t.Fatalf("rotating another tenant's key = %v", err)
	}
	clk.Add(time.Minute)
	made, newKey, was, err := s.Rotate(ctx, "clinic-a", old.ID, 2*time.Hour, by)
	if err != nil {
		t.Fatal(err)
	}
	if made.ID == old.ID || made.Replaces != old.ID || made.Name != "EHR" || !made.Has(apikeys.Send) ||
		was.State != apikeys.Rotated || was.ReplacedBy != made.ID || !was.ValidUntil.Equal(clk.Now().Add(2*time.Hour)) {
		t.Fatalf("rotated %+v, old %+v", made, was)
	}
	if _, _, _, err := s.Rotate(ctx, "clinic-a", old.ID, 0, by); !errors.Is(err, apikeys.ErrNotActive) {
		t.Fatalf("rotating a rotated key = %v", err)
	}
	clk.Add(2*time.Hour - time.Millisecond)
	for _, k := range []string{oldKey, newKey} {
		if _, err := s.Authenticate(ctx, k); err != nil {
			t.Fatalf("within the grace: %v", err)
		}
	}
	clk.Add(time.Millisecond)
	if _, err := s.Authenticate(ctx, oldKey); !errors.Is(err, apikeys.ErrInvalid) {
		t.Fatalf("the old key after its grace = %v", err)
	}
	if _, err := s.Authenticate(ctx, newKey); err != nil {
		t.Fatalf("the new key after the grace: %v", err)
	}
	list, _ := s.List(ctx, "clinic-a")
	if len(list) != 2 || list[0].State != apikeys.Expired || list[1].State != apikeys.Active {
		t.Fatalf("List = %+v", list)
	}
	if _, _, _, err := s.Rotate(ctx, "clinic-a", made.ID, apikeys.MaxGrace+time.Hour, by); !isInvalid(err, "grace") {
		t.Fatalf("a grace over the most = %v", err)
	}
	made2, _, _, err := s.Rotate(ctx, "clinic-a", made.ID, 0, by)
	if err != nil {
		t.Fatal(err)
	}
	if k, _ := s.Get(ctx, "clinic-a", made.ID); !k.ValidUntil.Equal(clk.Now().Add(apikeys.DefaultGrace)) || made2.Replaces != made.ID {
		t.Fatalf("the default grace: %+v", k)
	}
}

func isInvalid(err error, field string) bool {
	var bad *invalid.Error
	return errors.As(err, &bad) && bad.Errors[0].Field == field
}

func TestARevokedKeyStopsAtOnceHereAndWithinTheCacheTTLInOtherProcesses(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	rs := redistest.Start(t)
	here := apikeys.New(rs.Client(), apikeys.Config{Now: clk.Now, CacheTTL: 3 * time.Second})
	there := apikeys.New(rs.Client(), apikeys.Config{Now: clk.Now, CacheTTL: 3 * time.Second})
	k, plain, _ := here.Create(ctx, apikeys.NewKey{Tenant: "clinic-a", Name: "EHR", Scopes: []apikeys.Scope{"read"}}, by)
	for _, s := range []*apikeys.Store{here, there} {
		if _, err := s.Authenticate(ctx, plain); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := here.Revoke(ctx, "clinic-b", k.ID, by); !errors.Is(err, apikeys.ErrNotFound) {
		t.Fatalf("revoking another tenant's key = %v", err)
	}
	got, err := here.Revoke(ctx, "clinic-a", k.ID, by)
	if err != nil || got.State != apikeys.Revoked || !got.RevokedAt.Equal(clk.Now()) {
		t.Fatalf("Revoke = %+v, %v", got, err)
	}
	if _, err := here.Authenticate(ctx, plain); !errors.Is(err, apikeys.ErrInvalid) {
		t.Fatalf("in the process that revoked it: %v", err)
	}
	clk.Add(2 * time.Second)
	if _, err := there.Authenticate(ctx, plain); err != nil {
		t.Fatalf("another process, within its cache's TTL, still knows it as it was: %v", err)
	}
	clk.Add(time.Second)
	if _, err := there.Authenticate(ctx, plain); !errors.Is(err, apikeys.ErrInvalid) {
		t.Fatalf("another process once its cache's TTL is over: %v", err)
	}
	if _, _, _, err := here.Rotate(ctx, "clinic-a", k.ID, 0, by); !errors.Is(err, apikeys.ErrNotActive) {
		t.Fatalf("rotating a revoked key = %v", err)
	}
	if again, err := here.Revoke(ctx, "clinic-a", k.ID, by); err != nil || !again.RevokedAt.Equal(got.RevokedAt.UTC()) {
		t.Fatalf("revoking it again = %+v, %v", again, err)
	}
}

func TestTheLastUseIsWrittenAtMostOnceAMinute(t *testing.T) {
	ctx, clk, rdb, s := storeOnRedis(t)
	k, plain, _ := s.Create(ctx, apikeys.NewKey{Tenant: "clinic-a", Name: "EHR", Scopes: []apikeys.Scope{"read"}}, by)
	if got, _ := s.Get(ctx, "clinic-a", k.ID); got.LastUsedAt != nil {
		t.Fatalf("a new key was used at %v", got.LastUsedAt)
	}
	t0 := clk.Now()
	writes := func() int64 { return commandCalls(t, rdb, "hset") } // also counted inside a script
	before := writes()
	for range 50 {
		if _, err := s.Authenticate(ctx, plain); err != nil {
			t.Fatal(err)
		}
		clk.Add(time.Second) // 50 requests over 50 s
	}
	if n := writes() - before; n != 1 {
		t.Fatalf("%d writes of the last use in 50 s, want 1", n)
	}
	if got, _ := s.Get(ctx, "clinic-a", k.ID); got.LastUsedAt == nil || !got.LastUsedAt.Equal(t0) {
		t.Fatalf("last used %v, want %v", got.LastUsedAt, t0)
	}
	clk.Add(10 * time.Second)
	_, _ = s.Authenticate(ctx, plain)
	if got, _ := s.Get(ctx, "clinic-a", k.ID); !got.LastUsedAt.Equal(clk.Now()) {
		t.Fatalf("a minute later, last used %v, want %v", got.LastUsedAt, clk.Now())
	}
}

// commandCalls is how many times Redis ran a command (INFO commandstats).
func commandCalls(t *testing.T, rdb redis.UniversalClient, cmd string) int64 {
	t.Helper()
	info := rdb.Info(context.Background(), "commandstats").Val()
	m := regexp.MustCompile(`cmdstat_` + cmd + `:calls=(\d+)`).FindStringSubmatch(info)
	if m == nil {
		return 0
	}
	var n int64
	for _, c := range m[1] {
		n = n*10 + int64(c-'0')
	}
	return n
}

func TestAKeyToMakeIsChecked(t *testing.T) {
	s := apikeys.New(redistest.Start(t).Client(), apikeys.Config{})
	cases := []struct {
		name  string
		key   apikeys.NewKey
		field string
	}{
		{"no scopes", apikeys.NewKey{Tenant: "clinic-a", Name: "EHR"}, "scopes"},
		{"an unknown scope", apikeys.NewKey{Tenant: "clinic-a", Name: "EHR", Scopes: []apikeys.Scope{"send", "everything"}}, "scopes"},
		{"no name", apikeys.NewKey{Tenant: "clinic-a", Name: "  ", Scopes: []apikeys.Scope{"send"}}, "name"},
		{"a name with a line break", apikeys.NewKey{Tenant: "clinic-a", Name: "EHR\nintegration", Scopes: []apikeys.Scope{"send"}}, "name"},
		{"a tenant with a space", apikeys.NewKey{Tenant: "clinic a", Name: "EHR", Scopes: []apikeys.Scope{"send"}}, "tenant"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, _, err := s.Create(context.Background(), c.key, by); !isInvalid(err, c.field) {
				t.Fatalf("Create = %v, want a problem with %s", err, c.field)
			}
		})
	}
	if _, err := apikeys.ParseScopes("send, read,admin"); err != nil {
		t.Fatal(err)
	}
	if _, err := apikeys.ParseScopes("send,write"); err == nil || !strings.Contains(err.Error(), `"write"`) {
		t.Fatalf("ParseScopes(send,write) = %v", err)
	}
}

func TestKeyChangesAreAuditedByTheKeyIDNeverTheSecret(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client()
	log := audit.New(rdb, nil)
	s := apikeys.New(rdb, apikeys.Config{Audit: log})
	k, plain, _ := s.Create(ctx, apikeys.NewKey{Tenant: "clinic-a", Name: "EHR", Scopes: []apikeys.Scope{"send"}}, by)
	made, newPlain, _, _ := s.Rotate(ctx, "clinic-a", k.ID, 0, apikeys.By{})
	_, _ = s.Revoke(ctx, "clinic-a", k.ID, by)
	events, _, err := log.Find(ctx, "clinic-a", audit.Query{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"apikey:aaaaaaaaaaaaaaaa apikey.create apikey:" + made.Replaces + " req-1",
		"system:cli apikey.rotate apikey:" + k.ID + " ",
		"apikey:aaaaaaaaaaaaaaaa apikey.revoke apikey:" + k.ID + " req-1",
	}
	if len(events) != len(want) {
		t.Fatalf("events %+v", events)
	}
	for i, e := range events {
		if got := e.Actor + " " + e.Action + " " + e.Object + " " + e.RequestID; got != want[i] {
			t.Errorf("event %d = %q, want %q", i, got, want[i])
		}
		for _, p := range []string{plain, newPlain} {
			if strings.Contains(e.Actor+e.Object, p[len(p)-52:]) {
				t.Errorf("event %d holds a secret", i)
			}
		}
	}
}
