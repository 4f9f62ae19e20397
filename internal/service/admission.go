package service

import (
	"context"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/admission"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/ratelimit"
)

// newAdmission builds admission control from the configuration; each
// channel's backlog cap is hours of its sender's rate.
func newAdmission(cfg config.Config, rdb redis.UniversalClient, senders []ratelimit.SenderConfig, log *slog.Logger) (*admission.Controller, error) {
	a := cfg.Admission
	rates := map[string]float64{}
	for _, sc := range senders {
		rates[sc.Channel] = sc.PerSecond
	}
	overrides := map[string]admission.Rate{}
	for tenant, r := range a.TenantRates {
		overrides[tenant] = admission.Rate(r)
	}
	return admission.New(rdb, admission.Config{
		TenantRate: admission.Rate(a.TenantRate), TenantRates: overrides,
		BacklogHours: a.BacklogHours, SenderRates: rates,
		Memory: admission.Thresholds(a.MemoryGuard),
		Logger: log,
	})
}

// BacklogSweepEvery is how often the tenants' backlogs are checked for
// messages that left the queue without being counted out (a task lost or
// archived, a record expired); one process of the gateway does it each
// time.
const BacklogSweepEvery = 10 * time.Minute

// startBacklogSweep sweeps the tenants' backlogs every BacklogSweepEvery
// until Shutdown.
func (s *Service) startBacklogSweep() {
	tenants := s.tenantNames()
	if s.Admission == nil || len(tenants) == 0 || s.Config.Admission.BacklogHours <= 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	log := s.log.With("comp", "admission")
	go func() {
		defer close(done)
		tick := time.NewTicker(BacklogSweepEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			sctx, stop := context.WithTimeout(ctx, time.Minute)
			n, err := s.Admission.SweepBacklogs(sctx, tenants, s.Ledger.Waiting, BacklogSweepEvery-30*time.Second)
			stop()
			switch {
			case err != nil && ctx.Err() == nil:
				log.Warn("tenant backlogs not swept", "err", err)
			case n > 0:
				log.Info("tenant backlogs swept: messages no longer queued were counted out", "removed", n)
			}
		}
	}()
	s.closers = append(s.closers, func() error { cancel(); <-done; return nil })
}
