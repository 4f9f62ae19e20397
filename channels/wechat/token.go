package wechat

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/url"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/silenceper/wechat/v2/credential"

	"github.com/patientmsg/gateway/channels"
)

// The access token.
//
// WeChat gives an official account one access token at a time (7,200 s
// life, about 2,000 fetches a day), and a fetch may invalidate the token
// other workers are using, so every worker of every process must share one
// token and only one of them may fetch a new one.
//
// silenceper's credential.DefaultAccessToken reads and writes its token
// through a cache.Cache, which RedisCache shares across processes, but it
// serialises the fetch with an in-process sync.Mutex: two processes that
// find the cache empty both fetch. Its structure leaves no place for a
// cross-process lock (the lock sits between two cache reads that we cannot
// tell apart), nor a way to drop a token WeChat rejected. So tokenSource
// implements credential.AccessTokenContextHandle itself, on the same cache
// key: a Redis lock (SET NX PX with an owner id) elects the one fetcher;
// the others poll the cache briefly until the new token lands (or the lock
// is gone, and they try to take it themselves).
type tokenSource struct {
	cache   *RedisCache
	rdb     redis.UniversalClient
	key     string // cache key, without the cache's prefix
	lockKey string
	fetch   func(ctx context.Context) (token string, expiresIn time.Duration, err error)
	lockTTL time.Duration
	poll    time.Duration
	log     *slog.Logger
}

var _ credential.AccessTokenContextHandle = (*tokenSource)(nil)

// refreshMargin is how long before WeChat's expiry the cached token is
// dropped, so a token is never used in its last minutes (WeChat keeps an
// old token valid for five minutes after a new fetch, not longer).
const refreshMargin = 5 * time.Minute

// cacheTTL is how long a token that WeChat gave for expiresIn is kept.
func cacheTTL(expiresIn time.Duration) time.Duration {
	ttl := expiresIn - refreshMargin
	if expiresIn <= 2*refreshMargin {
		ttl = expiresIn / 2
	}
	return max(ttl, time.Second)
}

// GetAccessToken returns the shared token, fetching it when there is none.
func (s *tokenSource) GetAccessToken() (string, error) {
	return s.GetAccessTokenContext(context.Background())
}

// GetAccessTokenContext returns the shared token, fetching it when there
// is none. Errors are *channels.SendError.
func (s *tokenSource) GetAccessTokenContext(ctx context.Context) (string, error) {
	deadline := time.Now().Add(2 * s.lockTTL)
	for {
		tok, ok, err := s.cache.get(ctx, s.key)
		if err != nil {
			return "", redisError(err)
		}
		if ok && tok != "" {
			return tok, nil
		}
		owner := newOwner()
		locked, err := s.rdb.SetNX(ctx, s.lockKey, owner, s.lockTTL).Result()
		if err != nil {
			return "", redisError(err)
		}
		if locked {
			return s.refresh(ctx, owner)
		}
		if time.Now().After(deadline) {
			return "", &channels.SendError{Class: channels.Retryable, Code: "token_wait",
				Message: "another worker is fetching the WeChat access token and has not finished"}
		}
		select {
		case <-ctx.Done():
			return "", &channels.SendError{Class: channels.Retryable, Code: "canceled",
				Message: "interrupted while waiting for the WeChat access token", Err: ctx.Err()}
		case <-time.After(s.poll):
		}
	}
}

// refresh fetches a token while holding the lock.
func (s *tokenSource) refresh(ctx context.Context, owner string) (string, error) {
	defer func() {
		// Released even when ctx is done, so others need not wait for the TTL.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), backgroundTimeout)
		defer cancel()
		_ = deleteIfScript.Run(rctx, s.rdb, []string{s.lockKey}, owner).Err()
	}()
	// Another worker may have stored a token between our read and our lock.
	if tok, ok, err := s.cache.get(ctx, s.key); err != nil {
		return "", redisError(err)
	} else if ok && tok != "" {
		return tok, nil
	}
	tok, expiresIn, err := s.fetch(ctx)
	if err != nil {
		return "", err
	}
	ttl := cacheTTL(expiresIn)
	if err := s.cache.SetContext(ctx, s.key, tok, ttl); err != nil {
		return "", redisError(err)
	}
	s.log.Info("wechat access token fetched", "expires_in", expiresIn.String(), "cached_for", ttl.String())
	return tok, nil
}

// invalidate drops the cached token if it is still the one WeChat rejected.
func (s *tokenSource) invalidate(ctx context.Context, tok string) error {
	return s.cache.deleteIf(ctx, s.key, tok)
}

func newOwner() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func redisError(err error) *channels.SendError {
	return &channels.SendError{Class: channels.Retryable, Code: "redis",
		Message: "the gateway's Redis could not be reached", Err: err}
}

// tokenURL is silenceper's access token request (credential.accessTokenURL).
func tokenURL(appID, secret string) string {
	return "https://api.weixin.qq.com/cgi-bin/token?grant_type=client_credential&appid=" +
		url.QueryEscape(appID) + "&secret=" + url.QueryEscape(secret)
}

// fetchToken asks WeChat for a new token with the library's request.
func (c *Channel) fetchToken(ctx context.Context) (string, time.Duration, error) {
	call := beginCall(ctx, c.cfg.Transport, c.target, c.cfg.Timeout)
	res, err := credential.GetTokenFromServerContext(call.ctx, call.mark(tokenURL(c.cfg.AppID, c.cfg.AppSecret)))
	call.end()
	if err == nil && res.AccessToken != "" {
		return res.AccessToken, time.Duration(res.ExpiresIn) * time.Second, nil
	}
	out := classify(call, err, "GetAccessToken", c.now(), c.cfg.AppSecret)
	se := out.err
	if se == nil { // errcode 0 without a token
		se = &channels.SendError{Class: channels.Retryable, Code: "bad_response",
			Message: "WeChat answered the token request without a token"}
	}
	// A missing token says nothing about the message: never permanent.
	if se.Class == channels.Permanent || se.Class == channels.OptedOut {
		se.Class = channels.Retryable
	}
	se.Message = "fetching the access token: " + se.Message
	se.Unconfirmed = false // nothing was sent
	c.log.Error("wechat access token fetch failed", "code", se.Code, "class", se.Class.String(), "error", se.Message)
	return "", 0, se
}

// callToken is the token handle the library gets for one API call: the
// shared token marked with the call's fragment (see transport.go).
type callToken string

func (t callToken) GetAccessToken() (string, error) { return string(t), nil }

func (t callToken) GetAccessTokenContext(context.Context) (string, error) { return string(t), nil }
