package service

import (
	"context"
	"time"
)

// recordingRetentionOf is how long each tenant's recordings are kept: its
// own setting within RECORDING_RETENTION (that when its settings cannot be
// read).
func (s *Service) recordingRetentionOf(ctx context.Context) func(tenant string) time.Duration {
	return func(tenant string) time.Duration {
		if s.Messages == nil || s.Messages.Tenants == nil {
			return s.Config.RecordingRetention
		}
		set, err := s.Messages.Tenants.Get(ctx, tenant)
		if err != nil {
			return s.Config.RecordingRetention
		}
		return set.RecordingRetention(s.Config.RecordingRetention, s.Config.Retention)
	}
}
