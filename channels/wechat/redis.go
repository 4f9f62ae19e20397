package wechat

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/silenceper/wechat/v2/cache"
	"github.com/silenceper/wechat/v2/credential"
)

// Redis layout of the channel. Every script touches a single key, so all of
// it works on Redis Cluster.
//
//	gw:wx:<silenceper key>           string  the library's cache entries (RedisCache)
//	  gowechat_officialaccount__access_token_<appid>: the shared access token, with a TTL
//	gw:wx:token-lock:<appid>         string  owner of the token refresh (SET NX PX)
//	gw:wx:win:<appid>:<openid hash>  hash    customer-service window: exp (unix ms), left, quota, kind
//	gw:wx:sub:<appid>:<openid hash>  hash    subscribe templates: template id → a|r:<unix ms>
//
// An openid is hashed in key names (SHA-256, the first 16 bytes in hex),
// so no patient's openid shows up in key listings or slow logs.
const keyPrefix = "gw:wx:"

// tokenCacheKey is silenceper's own cache key for an official account's
// token (credential.DefaultAccessToken), so a library token handle given a
// RedisCache with our prefix shares the same token.
func tokenCacheKey(appID string) string {
	return fmt.Sprintf("%s_access_token_%s", credential.CacheKeyOfficialAccountPrefix, appID)
}

func tokenLockKey(appID string) string { return keyPrefix + "token-lock:" + appID }

func windowKey(appID, openid string) string { return userKey("win:", appID, openid) }

// userKey is a per-user key of kind, the openid hashed.
func userKey(kind, appID, openid string) string {
	sum := sha256.Sum256([]byte(openid))
	return keyPrefix + kind + appID + ":" + hex.EncodeToString(sum[:16])
}

// RedisCache is silenceper's cache.Cache (and cache.ContextCache) on Redis,
// so every process of the gateway sees the same access token. Values are
// stored as strings (the library stores only strings); other values are
// stored as JSON and read back as that JSON text.
type RedisCache struct {
	rdb    redis.UniversalClient
	prefix string
}

var _ cache.ContextCache = (*RedisCache)(nil)

// NewRedisCache returns a cache whose keys are prefix + the library's key.
func NewRedisCache(rdb redis.UniversalClient, prefix string) *RedisCache {
	return &RedisCache{rdb: rdb, prefix: prefix}
}

// backgroundTimeout bounds the calls made through the context-free methods
// of cache.Cache.
const backgroundTimeout = 3 * time.Second

// Get returns the value as a string, or nil when absent or unreachable.
func (c *RedisCache) Get(key string) any {
	ctx, cancel := context.WithTimeout(context.Background(), backgroundTimeout)
	defer cancel()
	return c.GetContext(ctx, key)
}

// GetContext returns the value as a string, or nil when absent or unreachable.
func (c *RedisCache) GetContext(ctx context.Context, key string) any {
	v, ok, err := c.get(ctx, key)
	if err != nil || !ok {
		return nil
	}
	return v
}

// Set stores the value for timeout (no expiry when 0).
func (c *RedisCache) Set(key string, val any, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), backgroundTimeout)
	defer cancel()
	return c.SetContext(ctx, key, val, timeout)
}

// SetContext stores the value for timeout (no expiry when 0).
func (c *RedisCache) SetContext(ctx context.Context, key string, val any, timeout time.Duration) error {
	if timeout < 0 {
		return fmt.Errorf("wechat cache: negative timeout %s for %s", timeout, key)
	}
	var s string
	switch v := val.(type) {
	case string:
		s = v
	case []byte:
		s = string(v)
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("wechat cache: %w", err)
		}
		s = string(b)
	}
	return c.rdb.Set(ctx, c.prefix+key, s, timeout).Err()
}

// IsExist reports whether the key exists.
func (c *RedisCache) IsExist(key string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), backgroundTimeout)
	defer cancel()
	return c.IsExistContext(ctx, key)
}

// IsExistContext reports whether the key exists.
func (c *RedisCache) IsExistContext(ctx context.Context, key string) bool {
	n, err := c.rdb.Exists(ctx, c.prefix+key).Result()
	return err == nil && n > 0
}

// Delete removes the key.
func (c *RedisCache) Delete(key string) error {
	ctx, cancel := context.WithTimeout(context.Background(), backgroundTimeout)
	defer cancel()
	return c.DeleteContext(ctx, key)
}

// DeleteContext removes the key.
func (c *RedisCache) DeleteContext(ctx context.Context, key string) error {
	return c.rdb.Del(ctx, c.prefix+key).Err()
}

// get is Get with the Redis error kept, for the token handle: an
// unreachable Redis must not look like a missing token.
func (c *RedisCache) get(ctx context.Context, key string) (string, bool, error) {
	v, err := c.rdb.Get(ctx, c.prefix+key).Result()
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return v, true, nil
}

// deleteIf removes the key only while it still holds val, so a worker that
// saw an old token rejected does not throw away the new one another worker
// just fetched.
func (c *RedisCache) deleteIf(ctx context.Context, key, val string) error {
	return deleteIfScript.Run(ctx, c.rdb, []string{c.prefix + key}, val).Err()
}

// deleteIfScript deletes KEYS[1] when its value is ARGV[1] (also used to
// release the token lock held by its owner).
var deleteIfScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
	return redis.call('DEL', KEYS[1])
end
return 0
`)

// touchScript opens or renews a window. The interaction's window (exp, quota)
// replaces the current one unless the current one is still open and gives
// more: more messages left, or as many for longer.
//
// KEYS[1] window; ARGV: now ms, exp ms, quota, kind, key TTL ms.
var touchScript = redis.NewScript(`
local now, exp, quota = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if exp <= now then return 0 end
local cur = redis.call('HMGET', KEYS[1], 'exp', 'left')
local cexp, cleft = tonumber(cur[1]) or 0, tonumber(cur[2]) or 0
if cexp > now and (cleft > quota or (cleft == quota and cexp >= exp)) then return 0 end
redis.call('HSET', KEYS[1], 'exp', ARGV[2], 'left', ARGV[3], 'quota', ARGV[3], 'kind', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
`)

// consumeScript takes one message of an open window's quota.
//
// KEYS[1] window; ARGV: now ms. Returns {taken 0|1, left, exp ms as string}.
var consumeScript = redis.NewScript(`
local cur = redis.call('HMGET', KEYS[1], 'exp', 'left')
local exp, left = tonumber(cur[1]) or 0, tonumber(cur[2]) or 0
if exp > tonumber(ARGV[1]) and left > 0 then
	left = redis.call('HINCRBY', KEYS[1], 'left', -1)
	return {1, left, cur[1]}
end
return {0, left, cur[1] or '0'}
`)

// closeScript marks a window used up, unless a newer interaction has
// replaced it meanwhile (its exp differs).
//
// KEYS[1] window; ARGV: exp ms of the window the message was sent in.
var closeScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'exp') == ARGV[1] then
	redis.call('HSET', KEYS[1], 'left', 0)
	return 1
end
return 0
`)

// refundScript gives back a message of the quota that WeChat did not use,
// unless the window was replaced meanwhile.
//
// KEYS[1] window; ARGV: exp ms of the window the message was taken from.
var refundScript = redis.NewScript(`
local cur = redis.call('HMGET', KEYS[1], 'exp', 'left', 'quota')
if cur[1] == ARGV[1] and (tonumber(cur[2]) or 0) < (tonumber(cur[3]) or 0) then
	redis.call('HINCRBY', KEYS[1], 'left', 1)
	return 1
end
return 0
`)
