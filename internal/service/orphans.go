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
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	log := s.log.With("comp", "worker")
	go func() {
		defer close(done)
		tick := time.NewTicker(workers.OrphanCheckEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			cctx, stop := context.WithTimeout(ctx, workers.OrphanCheckEvery)
			if ok, err := s.Redis.SetNX(cctx, orphansLockKey, 1, workers.OrphanCheckEvery-time.Second).Result(); err == nil && ok {
				ids, err := workers.RequeueOrphans(cctx, s.inspector, s.client, queues)
				for _, id := range ids {
					log.Warn("a send held by a worker process that stopped was queued again", "msg_id", id)
				}
				if err != nil && ctx.Err() == nil {
					log.Warn("orphaned sends not looked for", "err", err)
				}
			}
			stop()
		}
	}()
	s.closers = append(s.closers, func() error { cancel(); <-done; return nil })
}
