package service

import (
	"context"
	"time"

	"github.com/patientmsg/gateway/workers"
)

// orphansLockKey lets one process of the gateway look for orphaned sends
// each time.
const orphansLockKey = "gw:orphans:lock"

// startOrphanWatch, on a process with workers, queues again every
// workers.OrphanCheckEvery the sends a worker process that stopped was
// holding (their lease lapsed), until Shutdown: see
// workers.RequeueOrphans.
func (s *Service) startOrphanWatch() {
	if s.Workers == nil {
		return
	}
	queues := make([]string, len(workers.Priorities))
	for i, p := range workers.Priorities {
		queues[i] = workers.QueueFor(p)
	}
	log := s.log.With("comp", "worker")
	s.every(workers.OrphanCheckEvery, log, "orphaned sends not looked for", func(ctx context.Context) error {
		ctx, stop := context.WithTimeout(ctx, workers.OrphanCheckEvery)
		defer stop()
		if ok, err := s.Redis.SetNX(ctx, orphansLockKey, 1, workers.OrphanCheckEvery-time.Second).Result(); err != nil || !ok {
			return err
		}
		ids, err := workers.RequeueOrphans(ctx, s.inspector, s.client, queues)
		for _, id := range ids {
			log.Warn("a send held by a worker process that stopped was queued again", "msg_id", id)
		}
		return err
	})
}
