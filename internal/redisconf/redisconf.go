// Package redisconf holds the Redis settings the gateway's records are
// sized for, in one place: the deployments set them, the test servers run
// with them, and the gateway warns at start when its Redis has less.
package redisconf

import (
	"context"
	"log/slog"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// Setting is one redis.conf directive and the least value the gateway
// is sized for.
type Setting struct {
	Name, Value string
	// Why says what a lower value costs.
	Why string
}

// Settings are the directives every Redis of the gateway should have.
//
// hash-max-listpack-value: a hash whose values are all at most this many
// bytes is kept as a compact listpack instead of a hashtable. A message's
// record holds its request (a few hundred bytes of JSON) and Asynq's task
// hash its payload; with Redis' default of 64 both are hashtables, about
// 2.4 times the memory (a delivered SMS's record 1,352 bytes instead of
// 560). Listpack lookups scan the hash, which at a dozen fields of at most
// 1 KiB is no slower in practice.
var Settings = []Setting{
	{Name: "hash-max-listpack-value", Value: "1024",
		Why: "message records and queued tasks are kept as hashtables, about 2.4 times the memory of a listpack"},
}

// Args are Settings as redis-server command-line arguments.
func Args() []string {
	var out []string
	for _, s := range Settings {
		out = append(out, "--"+s.Name, s.Value)
	}
	return out
}

// Check reads each setting from Redis (CONFIG GET) and logs a warning for
// each below Settings. A Redis that refuses CONFIG (a managed service) is
// logged at debug level: its operator sets them.
func Check(ctx context.Context, rdb redis.UniversalClient, log *slog.Logger) {
	for _, s := range Settings {
		got, err := rdb.ConfigGet(ctx, s.Name).Result()
		if err != nil {
			log.Debug("Redis setting not readable (CONFIG refused): set it on the server", "setting", s.Name, "recommended", s.Value, "err", err)
			continue
		}
		v, ok := got[s.Name]
		have, err1 := strconv.ParseInt(v, 10, 64)
		want, err2 := strconv.ParseInt(s.Value, 10, 64)
		if !ok || err1 != nil || err2 != nil || have >= want {
			continue
		}
		log.Warn("Redis setting below what the gateway is sized for: set it in redis.conf", "setting", s.Name,
			"value", v, "recommended", s.Value, "effect", s.Why)
	}
}
