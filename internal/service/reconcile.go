package service

import (
	"context"
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
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	s.closers = append(s.closers, func() error { cancel(); <-done; return nil })
}
