package service

import (
	"context"
	"log/slog"
	"time"

	"github.com/patientmsg/gateway/internal/inbound"
)

// Reconciliation bounds: a pass a minute, at most 60 questions to the
// provider a pass (one a second at most), asked until 3 days after the
// message was made.
const (
	ReconcileEvery   = time.Minute
	ReconcilePerPass = 60
	ReconcileGiveUp  = 72 * time.Hour
)

// startReconcile runs the delivery report reconciler in a worker process:
// it asks the provider about messages whose final status callback was
// lost (see inbound.Reconciler).
func (s *Service) startReconcile() {
	if s.Workers == nil || s.Inbound == nil || s.Config.Worker.ReportWait <= 0 {
		return
	}
	r := &inbound.Reconciler{Redis: s.Redis, Ledger: s.Ledger, Channels: s.Channels, Apply: s.Inbound.ProviderStatus,
		Redial: s.Inbound.Redial, After: s.Config.Worker.ReportWait, GiveUp: ReconcileGiveUp, Every: ReconcileEvery, PerPass: ReconcilePerPass,
		Logger: s.log.With("comp", "reconcile"), Now: time.Now}
	s.Reconciler = r
	s.every(ReconcileEvery, r.Logger, "delivery report reconciliation failed", func(ctx context.Context) error {
		_, err := r.Pass(ctx)
		return err
	})
}

// every runs pass every d in the background until Shutdown, logging a
// failed pass as failed (the next pass takes up what it left).
func (s *Service) every(d time.Duration, log *slog.Logger, failed string, pass func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := pass(ctx); err != nil && ctx.Err() == nil {
				log.Warn(failed, "err", err)
			}
		}
	}()
	s.closers = append(s.closers, func() error { cancel(); <-done; return nil })
}
