package config

import (
	"fmt"
	"strconv"
	"time"
)

// ReplicationConfig says when a write counts as done: with replicas
// (Redis Sentinel, or Cluster with replicas), the API answers 2xx, a
// worker calls the provider and a webhook is answered 2xx only once the
// writes are on the replicas, so a failover cannot lose them (package
// internal/replication, docs/failover.md).
type ReplicationConfig struct {
	// MinReplicasAck is the fewest replicas that must acknowledge a
	// request's writes before it is answered; every replica online lately
	// is waited for (REDIS_MIN_REPLICAS_ACK; 0, the default for a single
	// Redis: no waiting).
	MinReplicasAck int
	// AckTimeout bounds the wait (REDIS_REPLICA_ACK_TIMEOUT); past it the
	// request is answered 503 with Retry-After, and its retry with the
	// same Idempotency-Key never makes a second message.
	AckTimeout time.Duration
}

// MaxReplicaAckTimeout is the longest REDIS_REPLICA_ACK_TIMEOUT: the wait
// shares a pipeline with a write, whose answer must come within the Redis
// client's read timeout (3 s).
const MaxReplicaAckTimeout = 2 * time.Second

// MaxReplicasAck is the largest REDIS_MIN_REPLICAS_ACK.
const MaxReplicasAck = 16

// defaultReplication acknowledges at once: a single Redis has no replica.
func defaultReplication() ReplicationConfig {
	return ReplicationConfig{AckTimeout: 500 * time.Millisecond}
}

// loadReplication reads the replication settings over their defaults.
func loadReplication(getenv func(string) string, r *ReplicationConfig) []error {
	var errs []error
	if v, ok := lookup(getenv, "REDIS_MIN_REPLICAS_ACK"); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > MaxReplicasAck {
			errs = append(errs, fmt.Errorf("REDIS_MIN_REPLICAS_ACK=%q: want how many replicas must have a write before it is acknowledged, from 0 (none: a single Redis) to %d", v, MaxReplicasAck))
		}
		r.MinReplicasAck = n
	}
	if v, ok := lookup(getenv, "REDIS_REPLICA_ACK_TIMEOUT"); ok {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("REDIS_REPLICA_ACK_TIMEOUT=%q: want a duration such as 500ms or 1s", v))
		}
		r.AckTimeout = d
	}
	return errs
}

// validate checks the replication settings (also those set in code).
func (r ReplicationConfig) validate() []error {
	var errs []error
	if r.MinReplicasAck < 0 || r.MinReplicasAck > MaxReplicasAck {
		errs = append(errs, fmt.Errorf("REDIS_MIN_REPLICAS_ACK=%d: want 0 to %d", r.MinReplicasAck, MaxReplicasAck))
	}
	if r.AckTimeout < time.Millisecond || r.AckTimeout > MaxReplicaAckTimeout {
		errs = append(errs, fmt.Errorf("REDIS_REPLICA_ACK_TIMEOUT=%s: want 1ms to %s (the wait must end within the Redis client's read timeout)", r.AckTimeout, MaxReplicaAckTimeout))
	}
	return errs
}
