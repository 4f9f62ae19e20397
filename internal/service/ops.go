package service

import (
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/patientmsg/gateway/internal/metrics"
	"github.com/patientmsg/gateway/internal/ops"
)

// startOps starts the internal operations listener (GATEWAY_OPS_ADDR):
// metrics, probes and the queue dashboard. Every process has one; the
// queue and sender metrics read Redis, so every process reports the same
// values of them.
func (s *Service) startOps() error {
	ln, err := net.Listen("tcp", s.Config.OpsAddr)
	if err != nil {
		return fmt.Errorf("GATEWAY_OPS_ADDR %s: %w", s.Config.OpsAddr, err)
	}
	if err := s.Metrics.Register(metrics.NewQueueCollector(s.inspector)); err != nil {
		ln.Close()
		return fmt.Errorf("queue metrics: %w", err)
	}
	if s.Senders != nil {
		if err := s.Metrics.Register(metrics.NewSenderCollector(s.Senders)); err != nil {
			ln.Close()
			return fmt.Errorf("sender metrics: %w", err)
		}
	}
	h := ops.Handler(ops.Options{Redis: s.Redis, Metrics: s.Metrics.Handler(), Users: s.Config.OpsUsers,
		ReadOnly: s.Config.OpsReadOnly, Logger: s.log})
	s.ops = &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	s.opsAddr = ln.Addr().String()
	go func() { _ = s.ops.Serve(ln) }()
	return nil
}

// OpsAddr is the ops listener's address ("" when none).
func (s *Service) OpsAddr() string { return s.opsAddr }
