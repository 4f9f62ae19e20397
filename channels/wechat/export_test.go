package wechat

import "time"

// SetClock makes the channel and its window read the time from now.
func SetClock(c *Channel, now func() time.Time) { c.now = now }

// SetWindowLengths changes how long WeChat's windows last, so tests need
// not wait for them.
func SetWindowLengths(c *Channel, userMessage, event time.Duration) {
	c.window.rules.user.length = userMessage
	c.window.rules.event.length = event
}

// TokenKey is the Redis key holding the shared access token.
func TokenKey(appID string) string { return keyPrefix + tokenCacheKey(appID) }

// TokenLockKey is the Redis key of the token refresh lock.
func TokenLockKey(appID string) string { return tokenLockKey(appID) }

// KeyPrefix is the prefix of the channel's Redis keys.
const KeyPrefix = keyPrefix
