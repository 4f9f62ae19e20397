package config

import (
	"strings"
	"testing"
	"time"
)

func TestReplicationSettings(t *testing.T) {
	cases := []struct {
		name string
		env  map[string]string
		want ReplicationConfig
	}{
		{"the default acknowledges at once (a single Redis)", with(), ReplicationConfig{AckTimeout: 500 * time.Millisecond, FailoverWait: 2 * time.Second}},
		{"one replica, within a second", with("REDIS_MIN_REPLICAS_ACK", "1", "REDIS_REPLICA_ACK_TIMEOUT", "1s"),
			ReplicationConfig{MinReplicasAck: 1, AckTimeout: time.Second, FailoverWait: 2 * time.Second}},
		{"two replicas at the default wait", with("REDIS_MIN_REPLICAS_ACK", " 2 "), ReplicationConfig{MinReplicasAck: 2, AckTimeout: 500 * time.Millisecond, FailoverWait: 2 * time.Second}},
		{"a failover answered 503 at once", with("REDIS_MIN_REPLICAS_ACK", "1", "REDIS_FAILOVER_WAIT", "0"),
			ReplicationConfig{MinReplicasAck: 1, AckTimeout: 500 * time.Millisecond}},
		{"a failover waited out for up to 5s", with("REDIS_MIN_REPLICAS_ACK", "1", "REDIS_FAILOVER_WAIT", "5s"),
			ReplicationConfig{MinReplicasAck: 1, AckTimeout: 500 * time.Millisecond, FailoverWait: 5 * time.Second}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(env(tc.env))
			if err == nil {
				err = c.Validate(RoleAll)
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Replication != tc.want {
				t.Fatalf("got %+v, want %+v", c.Replication, tc.want)
			}
		})
	}
}

func TestBadReplicationSettingsAreNamed(t *testing.T) {
	cases := []struct {
		name, key, value string
	}{
		{"a count that is not a number", "REDIS_MIN_REPLICAS_ACK", "all"},
		{"a negative count", "REDIS_MIN_REPLICAS_ACK", "-1"},
		{"more replicas than any deployment has", "REDIS_MIN_REPLICAS_ACK", "100"},
		{"a wait without a unit", "REDIS_REPLICA_ACK_TIMEOUT", "500"},
		{"a wait longer than the Redis client's read timeout allows", "REDIS_REPLICA_ACK_TIMEOUT", "5s"},
		{"a wait of nothing", "REDIS_REPLICA_ACK_TIMEOUT", "0s"},
		{"a failover wait past the request's deadline", "REDIS_FAILOVER_WAIT", "6s"},
		{"a negative failover wait", "REDIS_FAILOVER_WAIT", "-1s"},
		{"a failover wait without a unit", "REDIS_FAILOVER_WAIT", "2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(env(with(tc.key, tc.value)))
			if err == nil {
				err = c.Validate(RoleAll)
			}
			if err == nil || !strings.Contains(err.Error(), tc.key) {
				t.Fatalf("error %v, want one naming %s", err, tc.key)
			}
		})
	}
	c := NewDefaultConfig()
	c.Replication.AckTimeout = 0
	if err := c.Validate(RoleWorker); err == nil || !strings.Contains(err.Error(), "REDIS_REPLICA_ACK_TIMEOUT") {
		t.Fatalf("Validate must check a timeout set in code: %v", err)
	}
}
