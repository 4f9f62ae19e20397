package service

import (
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/config"
)

// NewRedis connects to the configured Redis: a single endpoint, a Sentinel
// deployment (failover follows the primary), or a Cluster. Every key of
// one message shares a hash tag, so the ledger's scripts run on one slot.
func NewRedis(cfg config.Config) (redis.UniversalClient, error) {
	switch {
	case cfg.RedisCluster:
		opt, err := redis.ParseClusterURL(cfg.RedisURL)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL (cluster seed nodes): %w", err)
		}
		return redis.NewClusterClient(opt), nil
	case cfg.RedisSentinelMaster != "":
		opt, err := redis.ParseURL(cfg.RedisURL)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL: %w", err)
		}
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: cfg.RedisSentinelMaster, SentinelAddrs: cfg.RedisSentinelAddrs,
			Username: opt.Username, Password: opt.Password, DB: opt.DB, TLSConfig: opt.TLSConfig,
		}), nil
	}
	opt, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	return redis.NewClient(opt), nil
}
