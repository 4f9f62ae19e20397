package workers

import (
	"context"
	"log/slog"
	"time"

	"github.com/patientmsg/gateway/internal/replication"
)

// Fence waits until the writes a process finished are on the Redis
// replicas (a *replication.Fence), so that a failover cannot take back a
// claim or a recorded answer of the provider. Begin is called before a
// send's first write.
type Fence interface {
	Begin() replication.Epoch
	Wait(ctx context.Context, began replication.Epoch) error
}

// begin starts a send's unit of writes.
func (h *SendHandler) begin() replication.Epoch {
	if h.Fence == nil {
		return 0
	}
	return h.Fence.Begin()
}

// ReplicationWait is how long a send waits for the store when its writes
// could not be confirmed on the replicas (a failover is under way).
const ReplicationWait = time.Second

// claimReplicated returns nil once the claim of an attempt is on the
// replicas, so the provider is called only for an attempt the ledger
// keeps. Otherwise the attempt is given back, not counted, and the send
// waits: a claim a failover takes back would let another worker send
// again without waiting for this attempt's outcome.
func (h *SendHandler) claimReplicated(ctx context.Context, began replication.Epoch, id string, attempt int, log *slog.Logger) error {
	if h.Fence == nil {
		return nil
	}
	err := h.Fence.Wait(ctx, began)
	if err == nil {
		return nil
	}
	log.Warn("claim not confirmed on the Redis replicas; not sending now", "err", err)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if uerr := h.Ledger.Unclaim(rctx, id, attempt, "not sent: the claim could not be confirmed on the store's replicas; will retry"); uerr != nil {
		log.Warn("attempt not given back (the next claim waits for the grace period)", "err", uerr)
	}
	return &waitError{reason: "claim not replicated: " + err.Error(), after: ReplicationWait}
}

// answerReplicated returns nil once the recorded answer of the provider
// is on the replicas; otherwise the task runs again after a wait, and its
// claim finds what the ledger kept: the answer (nothing is sent again),
// or the attempt in flight (the provider's callback is awaited).
func (h *SendHandler) answerReplicated(ctx context.Context, began replication.Epoch, log *slog.Logger) error {
	if h.Fence == nil {
		return nil
	}
	if err := h.Fence.Wait(ctx, began); err != nil {
		log.Warn("the provider's answer is recorded but not confirmed on the Redis replicas; the task runs again", "err", err)
		return &waitError{reason: "answer not replicated: " + err.Error(), after: ReplicationWait}
	}
	return nil
}
