package wechat_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/silenceper/wechat/v2/credential"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/channels/channeltest"
	"github.com/patientmsg/gateway/channels/wechat"
	"github.com/patientmsg/gateway/channels/wechat/wechatsim"
	"github.com/patientmsg/gateway/internal/ledger"
)

func TestTwoProcessesSharingRedisFetchTheTokenOnce(t *testing.T) {
	e := newEnv(t)
	sim, a := e.simChannel(t, wechatsim.Options{})
	sim.SetLatency(100 * time.Millisecond) // a slow token fetch widens the race
	b := e.channel(t, sim.URL(), channeltest.LoopbackOnly(nil))
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		ch := a
		if i%2 == 1 {
			ch = b
		}
		wg.Go(func() {
			// Template messages: WeChat allows no user 20 customer-service messages.
			m := msg(template("template"))
			m.ID = fmt.Sprintf("m%02d", i)
			if _, err := ch.Send(context.Background(), m); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := sim.TokenFetches(); n != 1 {
		t.Fatalf("token fetched %d times, want once", n)
	}
	if _, tmpl := sim.Accepted(); tmpl != 20 {
		t.Fatalf("accepted %d, want 20", tmpl)
	}
	if n, _ := e.rdb.Exists(context.Background(), wechat.TokenLockKey(testAppID)).Result(); n != 0 {
		t.Fatal("the refresh lock was not released")
	}
	e.logs.assertClean(t, append(sim.Tokens(), testOpenID, testBody, testSecret)...)
}

func TestTheTokenIsCachedForItsLifetimeLessAMargin(t *testing.T) {
	tests := []struct {
		name     string
		lifetime time.Duration
		want     time.Duration
	}{
		{"a 7,200 s token is kept 6,900 s (refreshed 5 minutes early)", 7200 * time.Second, 6900 * time.Second},
		{"a 600 s token is kept half its life", 600 * time.Second, 300 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			sim, ch := e.simChannel(t, wechatsim.Options{TokenLifetime: tt.lifetime})
			if _, err := ch.Send(context.Background(), msg(template("template"))); err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			tok, err := e.rdb.Get(ctx, wechat.TokenKey(testAppID)).Result()
			if err != nil || tok != sim.Tokens()[0] {
				t.Fatalf("cached token %q (%v), want the issued one", tok, err)
			}
			ttl, _ := e.rdb.PTTL(ctx, wechat.TokenKey(testAppID)).Result()
			if ttl > tt.want || ttl < tt.want-5*time.Second {
				t.Fatalf("token TTL %s, want about %s", ttl, tt.want)
			}
		})
	}
}

func TestARejectedTokenIsRefreshedOnceAndTheSendRetried(t *testing.T) {
	tests := []struct {
		name       string
		provoke    func(*wechatsim.Server)
		kind       string
		wantErr    string // code; "" for success
		wantFetch  int
		wantRoutes []string
	}{
		{"40001 on a custom send: a new token, and the retry succeeds",
			func(s *wechatsim.Server) { s.Script(40001) }, "custom", "", 2,
			[]string{wechatsim.CustomSendPath + "=40001", wechatsim.TokenPath, wechatsim.CustomSendPath}},
		{"42001 after the tokens expired: a new token, and the template retry succeeds",
			func(s *wechatsim.Server) { s.ExpireTokens() }, "template", "", 2,
			[]string{wechatsim.TemplateSendPath + "=42001", wechatsim.TokenPath, wechatsim.TemplateSendPath}},
		{"40001 twice: refreshed only once, then retryable",
			func(s *wechatsim.Server) { s.Script(40001, 40001) }, "custom", "40001", 2,
			[]string{wechatsim.CustomSendPath + "=40001", wechatsim.TokenPath, wechatsim.CustomSendPath + "=40001"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			sim, ch := e.simChannel(t, wechatsim.Options{})
			ctx := context.Background()
			if _, err := ch.Send(ctx, msg(template("template"))); err != nil { // fetches the first token
				t.Fatal(err)
			}
			sim.Interact(testOpenID, 5, 48*time.Hour) // the patient wrote: customer-service messages may answer
			before := len(sim.Requests())
			tt.provoke(sim)
			_, err := ch.Send(ctx, msg(template(tt.kind)))
			if tt.wantErr == "" && err != nil {
				t.Fatalf("Send: %v", err)
			}
			if tt.wantErr != "" {
				if se := sendErr(t, err); se.Class != channels.Retryable || se.Code != tt.wantErr {
					t.Fatalf("Send error %v, want retryable %s", se, tt.wantErr)
				}
			}
			if got := paths(sim.Requests()[before:]); fmt.Sprint(got) != fmt.Sprint(tt.wantRoutes) {
				t.Fatalf("requests %v, want %v", got, tt.wantRoutes)
			}
			if n := sim.TokenFetches(); n != tt.wantFetch {
				t.Fatalf("token fetches %d, want %d", n, tt.wantFetch)
			}
		})
	}
}

func TestWrongCredentialsAreRetryableAndCacheNothing(t *testing.T) {
	e := newEnv(t)
	sim, ch := e.simChannel(t, wechatsim.Options{}, func(c *wechat.Config) { c.AppSecret = "not-the-secret" })
	_, err := ch.Send(context.Background(), msg(&ledger.WeChatOptions{Kind: "custom"}))
	if se := sendErr(t, err); se.Class != channels.Retryable || se.Code != "40125" || se.Unconfirmed {
		t.Fatalf("Send error %+v, want retryable 40125, confirmed unsent", se)
	}
	ctx := context.Background()
	for _, key := range []string{wechat.TokenKey(testAppID), wechat.TokenLockKey(testAppID)} {
		if n, _ := e.rdb.Exists(ctx, key).Result(); n != 0 {
			t.Errorf("%s is left in Redis", key)
		}
	}
	if len(sim.Requests()) != 1 {
		t.Fatalf("requests %v, want only the token request", paths(sim.Requests()))
	}
	e.logs.assertClean(t, "not-the-secret", testOpenID)
}

func TestTheLibrarysOwnTokenHandleSharesTheCachedToken(t *testing.T) {
	e := newEnv(t)
	e.seedToken(t, seededTok)
	// silenceper's DefaultAccessToken (e.g. in code built on the library
	// elsewhere) reads the same token through RedisCache without a fetch.
	h := credential.NewDefaultAccessToken(testAppID, testSecret, credential.CacheKeyOfficialAccountPrefix,
		wechat.NewRedisCache(e.rdb, wechat.KeyPrefix))
	tok, err := h.GetAccessToken()
	if err != nil || tok != seededTok {
		t.Fatalf("library handle got %q, %v; want the shared token", tok, err)
	}
}

func TestRedisCacheImplementsTheLibrarysCache(t *testing.T) {
	e := newEnv(t)
	c := wechat.NewRedisCache(e.rdb, "test:")
	if c.Get("k") != nil || c.IsExist("k") {
		t.Fatal("an absent key must read as nil and not exist")
	}
	tests := []struct {
		name string
		val  any
		want string
	}{
		{"a string is stored as is", "tok", "tok"},
		{"bytes are stored as a string", []byte("raw"), "raw"},
		{"other values are stored as JSON", map[string]int{"a": 1}, `{"a":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := c.Set("k", tt.val, time.Minute); err != nil {
				t.Fatal(err)
			}
			if got := c.Get("k"); got != tt.want || !c.IsExist("k") {
				t.Fatalf("Get = %v, want %q", got, tt.want)
			}
			if ttl, _ := e.rdb.PTTL(context.Background(), "test:k").Result(); ttl <= 0 || ttl > time.Minute {
				t.Fatalf("TTL %s", ttl)
			}
		})
	}
	if err := c.Delete("k"); err != nil || c.IsExist("k") {
		t.Fatalf("Delete: %v", err)
	}
	if err := c.Set("k", "v", -time.Second); err == nil {
		t.Fatal("a negative timeout must be refused, not stored forever")
	}
}
