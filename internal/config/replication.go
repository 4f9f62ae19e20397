package config

import "time"

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
	// FailoverWait is how long a message request with an Idempotency-Key
	// waits out a failover (REDIS_FAILOVER_WAIT): its writes not
	// confirmed on the replicas, or no primary to write to, it is run
	// again on the new primary, where the key finds the message or makes
	// it once, before it is answered 503. Zero answers 503 at once.
	FailoverWait time.Duration
}

// MaxFailoverWait is the longest REDIS_FAILOVER_WAIT: the request's own
// deadline (10 s) must leave room for its last try.
const MaxFailoverWait = 5 * time.Second

// MaxReplicaAckTimeout is the longest REDIS_REPLICA_ACK_TIMEOUT: the wait
// shares a pipeline with a write, whose answer must come within the Redis
// client's read timeout (3 s).
const MaxReplicaAckTimeout = 2 * time.Second

// MaxReplicasAck is the largest REDIS_MIN_REPLICAS_ACK.
const MaxReplicasAck = 16

// defaultReplication acknowledges at once: a single Redis has no replica.
func defaultReplication() ReplicationConfig {
	return ReplicationConfig{AckTimeout: 500 * time.Millisecond, FailoverWait: 2 * time.Second}
}
