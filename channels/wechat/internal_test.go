package wechat

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/silenceper/wechat/v2/util"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/redistest"
)

func newTokenSource(t *testing.T, srv *redistest.Server, fetch func(context.Context) (string, time.Duration, error)) *tokenSource {
	rdb := srv.Client()
	return &tokenSource{cache: NewRedisCache(rdb, keyPrefix), rdb: rdb, key: tokenCacheKey("wxapp"),
		lockKey: tokenLockKey("wxapp"), fetch: fetch, lockTTL: 2 * time.Second, poll: 5 * time.Millisecond,
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func TestOnlyTheLockHolderFetchesWhileOthersWaitForItsToken(t *testing.T) {
	srv := redistest.Start(t)
	var fetches atomic.Int32
	fetch := func(context.Context) (string, time.Duration, error) {
		fetches.Add(1)
		time.Sleep(50 * time.Millisecond)
		return "TOKEN-1", 7200 * time.Second, nil
	}
	// Separate sources, as in separate processes: only Redis is shared.
	var sources []*tokenSource
	for range 8 {
		sources = append(sources, newTokenSource(t, srv, fetch))
	}
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			tok, err := sources[i%len(sources)].GetAccessTokenContext(context.Background())
			if err != nil || tok != "TOKEN-1" {
				t.Errorf("got %q, %v", tok, err)
			}
		})
	}
	wg.Wait()
	if n := fetches.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
}

func TestAFailedFetchReleasesTheLockSoTheNextWorkerFetches(t *testing.T) {
	srv := redistest.Start(t)
	var fetches atomic.Int32
	s := newTokenSource(t, srv, func(context.Context) (string, time.Duration, error) {
		if fetches.Add(1) == 1 {
			return "", 0, &channels.SendError{Class: channels.Retryable, Code: "-1"}
		}
		return "TOKEN-2", 7200 * time.Second, nil
	})
	if _, err := s.GetAccessTokenContext(context.Background()); err == nil {
		t.Fatal("first fetch: want its error")
	}
	tok, err := s.GetAccessTokenContext(context.Background())
	if err != nil || tok != "TOKEN-2" {
		t.Fatalf("second: %q, %v", tok, err)
	}
}

func TestAWaiterGivesUpWhenTheLockHolderNeverFinishes(t *testing.T) {
	srv := redistest.Start(t)
	s := newTokenSource(t, srv, func(context.Context) (string, time.Duration, error) {
		t.Fatal("a waiter must not fetch while the lock is held")
		return "", 0, nil
	})
	s.lockTTL = 100 * time.Millisecond
	// A holder that outlives the TTL (its own lock kept alive by hand).
	if err := s.rdb.Set(context.Background(), s.lockKey, "stuck", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	_, err := s.GetAccessTokenContext(context.Background())
	var se *channels.SendError
	if !errors.As(err, &se) || se.Code != "token_wait" || se.Class != channels.Retryable {
		t.Fatalf("got %v, want retryable token_wait", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.GetAccessTokenContext(ctx); err == nil {
		t.Fatal("a canceled wait must fail")
	}
}

func TestInvalidatingKeepsATokenAnotherWorkerAlreadyReplaced(t *testing.T) {
	srv := redistest.Start(t)
	s := newTokenSource(t, srv, nil)
	ctx := context.Background()
	if err := s.cache.SetContext(ctx, s.key, "NEW", time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.invalidate(ctx, "OLD"); err != nil {
		t.Fatal(err)
	}
	if tok, _, _ := s.cache.get(ctx, s.key); tok != "NEW" {
		t.Fatalf("token %q, want NEW kept", tok)
	}
	if err := s.invalidate(ctx, "NEW"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.cache.get(ctx, s.key); ok {
		t.Fatal("the rejected token is still cached")
	}
}

func TestAnUnreachableRedisIsRetryableNotAMissingToken(t *testing.T) {
	srv := redistest.Start(t)
	if !srv.CanRestart() {
		t.Skip("needs a redis-server it can stop")
	}
	s := newTokenSource(t, srv, func(context.Context) (string, time.Duration, error) {
		t.Fatal("must not fetch when Redis cannot be read")
		return "", 0, nil
	})
	srv.Stop()
	_, err := s.GetAccessTokenContext(context.Background())
	var se *channels.SendError
	if !errors.As(err, &se) || se.Code != "redis" || se.Class != channels.Retryable {
		t.Fatalf("got %v, want retryable redis", err)
	}
}

func TestCacheTTL(t *testing.T) {
	tests := []struct {
		expiresIn, want time.Duration
	}{
		{7200 * time.Second, 6900 * time.Second},
		{600 * time.Second, 300 * time.Second},
		{time.Second, time.Second},
		{0, time.Second},
		{-time.Hour, time.Second},
	}
	for _, tt := range tests {
		if got := cacheTTL(tt.expiresIn); got != tt.want {
			t.Errorf("cacheTTL(%s) = %s, want %s", tt.expiresIn, got, tt.want)
		}
	}
}

func TestUntilChinaMidnight(t *testing.T) {
	tests := []struct {
		name string
		now  time.Time
		want time.Duration
	}{
		{"22:30 in Beijing is 90 minutes before the reset", time.Date(2026, 3, 10, 22, 30, 0, 0, china), 90 * time.Minute},
		{"midnight itself waits a whole day", time.Date(2026, 3, 10, 0, 0, 0, 0, china), 24 * time.Hour},
		{"15:59:59 UTC is one second before midnight in Beijing", time.Date(2026, 3, 10, 15, 59, 59, 0, time.UTC), time.Second},
		{"16:00 UTC is Beijing midnight", time.Date(2026, 3, 10, 16, 0, 0, 0, time.UTC), 24 * time.Hour},
		{"the last day of the year rolls into January", time.Date(2026, 12, 31, 23, 0, 0, 0, china), time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := untilChinaMidnight(tt.now); got != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestParseAnswer(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    answer
		wantErr bool
	}{
		{"a success", `{"errcode":0,"errmsg":"ok"}`, answer{ErrMsg: "ok"}, false},
		{"a template success keeps a msgid beyond float precision", `{"errcode":0,"errmsg":"ok","msgid":4000000000000000123}`,
			answer{ErrMsg: "ok", MsgID: 4000000000000000123}, false},
		{"an error code", `{"errcode":45015,"errmsg":"response out of time limit"}`, answer{ErrCode: 45015, ErrMsg: "response out of time limit"}, false},
		{"system busy is negative", `{"errcode":-1,"errmsg":"system error"}`, answer{ErrCode: -1, ErrMsg: "system error"}, false},
		{"a token answer has no errcode", `{"access_token":"x","expires_in":7200}`, answer{}, false},
		{"HTML is unreadable", `<html>502</html>`, answer{}, true},
		{"a fractional errcode is unreadable", `{"errcode":1.5}`, answer{}, true},
		{"a string errcode is unreadable", `{"errcode":"45015"}`, answer{}, true},
		{"trailing data is unreadable", `{"errcode":0}{"errcode":1}`, answer{}, true},
		{"an empty body is unreadable", ``, answer{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseAnswer([]byte(tt.body))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("parseAnswer = %+v, %v; want %+v, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// FuzzParseAnswer checks the parser of WeChat's answers never panics and
// agrees with the library's own reading of errcode whenever both succeed.
func FuzzParseAnswer(f *testing.F) {
	for _, s := range []string{`{"errcode":0,"errmsg":"ok"}`, `{"errcode":45009,"errmsg":"x"}`, `{"errcode":-1}`,
		`{"errcode":0,"msgid":4000000000000000123}`, `{"access_token":"t","expires_in":7200}`, `{"errcode":1e3}`,
		`{"errcode":null}`, `[]`, `null`, `{"errmsg":"\u00e9"}`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		a, err := parseAnswer(body)
		if err != nil {
			return
		}
		var lib util.CommonError
		if json.Unmarshal(body, &lib) == nil && lib.ErrCode != a.ErrCode {
			t.Fatalf("parseAnswer errcode %d, library %d for %q", a.ErrCode, lib.ErrCode, body)
		}
		c := &apiCall{status: 200, body: body, complete: true, ctx: context.Background()}
		out := classify(c, nil, "Fuzz", time.Now())
		if (a.ErrCode == 0) != (out.err == nil) {
			t.Fatalf("errcode %d classified as %v", a.ErrCode, out.err)
		}
		if out.err != nil && (out.err.Class < channels.Retryable || out.err.Class > channels.OptedOut) {
			t.Fatalf("class %d", out.err.Class)
		}
	})
}

// FuzzUntilChinaMidnight checks the throttle delay is in (0, 24h] and
// lands on a Beijing midnight.
func FuzzUntilChinaMidnight(f *testing.F) {
	f.Add(int64(0))
	f.Add(time.Date(2026, 3, 10, 16, 0, 0, 0, time.UTC).UnixNano())
	f.Fuzz(func(t *testing.T, ns int64) {
		now := time.Unix(0, ns)
		d := untilChinaMidnight(now)
		if d <= 0 || d > 24*time.Hour {
			t.Fatalf("delay %s at %s", d, now)
		}
		if at := now.Add(d).In(china); at.Hour() != 0 || at.Minute() != 0 || at.Second() != 0 || at.Nanosecond() != 0 {
			t.Fatalf("%s + %s = %s, not midnight", now, d, at)
		}
	})
}

func TestSanitizeMasksRequestValuesAndBoundsLength(t *testing.T) {
	got := sanitize("invalid openid oABC hint token TOK", "oABC", "TOK", "")
	if strings.Contains(got, "oABC") || strings.Contains(got, "TOK") {
		t.Fatalf("sanitize = %q", got)
	}
	long := sanitize(strings.Repeat("错", 300))
	if len(long) > 204 || !strings.HasSuffix(long, "…") || !utf8Valid(long) {
		t.Fatalf("long message cut to %d bytes: %q", len(long), long)
	}
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "?") == s }

func TestTheErrcodeTableHasAClassForEveryEntry(t *testing.T) {
	for code, r := range errcodes {
		if r.class < channels.Retryable || r.class > channels.OptedOut || r.what == "" {
			t.Errorf("errcode %d: %+v", code, r)
		}
	}
	if r := ruleFor(99999); r.class != channels.Permanent {
		t.Fatalf("unknown errcode class %s, want permanent", r.class)
	}
}
