package service

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/replication"
)

// unitFence is a fence as the gateway and the workers take it.
type unitFence interface {
	Begin() replication.Epoch
	Wait(ctx context.Context, began replication.Epoch) error
}

// asUnitFence is nil when there is no fence, not a nil *replication.Fence
// in an interface, so that the gateway's and the workers' paths without
// one are taken (a worker then reads consent with the claim).
func asUnitFence(f *replication.Fence) unitFence {
	if f == nil {
		return nil
	}
	return f
}

// newFence waits for REDIS_MIN_REPLICAS_ACK replicas after the writes an
// acknowledgement stands for (nil when none are asked: no round trip).
func newFence(cfg config.Config, rdb redis.UniversalClient) *replication.Fence {
	if cfg.Replication.MinReplicasAck <= 0 {
		return nil
	}
	return replication.New(rdb, replication.Options{Replicas: cfg.Replication.MinReplicasAck, Timeout: cfg.Replication.AckTimeout})
}

// failoverWait is how long a message request waits out a failover: only
// with a fence, since without one a lost write is never noticed.
func failoverWait(cfg config.Config) time.Duration {
	if cfg.Replication.MinReplicasAck <= 0 {
		return 0
	}
	return cfg.Replication.FailoverWait
}

// checkReplication warns at start-up of a topology that loses
// acknowledged messages in a failover, or refuses every write.
func (s *Service) checkReplication(ctx context.Context) {
	top, err := replication.Check(ctx, s.Redis, s.Config.Replication.MinReplicasAck, s.log.With("comp", "redis"))
	if err != nil {
		s.log.Warn("could not read Redis' replication (INFO replication)", "err", err)
		return
	}
	s.log.Info("Redis replication", "replicas", top.Replicas, "min_replicas_to_write", top.MinReplicasToWrite,
		"min_replicas_ack", s.Config.Replication.MinReplicasAck)
}
