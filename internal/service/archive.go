package service

import (
	"context"
	"fmt"
	"sort"
	"time"

	"gocloud.dev/blob"

	"github.com/patientmsg/gateway/internal/archive"
	"github.com/patientmsg/gateway/internal/erasure"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/recordings"
)

// ArchiveEvery is how often the workers move messages past the hot window
// (GATEWAY_HOT_RETENTION) to the blob store.
const ArchiveEvery = time.Minute

// openArchive, with GATEWAY_HOT_RETENTION set, opens the blob store the
// archive lives in, and makes the ledgers find archived messages there.
func (s *Service) openArchive(ledgers ...*ledger.Ledger) error {
	if s.Config.HotRetention <= 0 || s.Config.HotRetention >= s.Config.Retention {
		return nil // off, or messages expire before they would move
	}
	b, err := blob.OpenBucket(context.Background(), s.Config.BlobURL)
	if err != nil {
		return fmt.Errorf("BLOB_URL (the archive of GATEWAY_HOT_RETENTION): %w", err)
	}
	a := &archive.Archive{Redis: s.Redis, Ledger: s.Ledger, Bucket: b, Hot: s.Config.HotRetention,
		RetentionOf: s.retentionOf, Tenants: s.tenantNames, Logger: s.log.With("comp", "archive")}
	if s.Config.RecordingKeys != "" {
		if a.Keys, err = recordings.ParseKeyring(s.Config.RecordingKeys); err != nil {
			b.Close()
			return fmt.Errorf("RECORDING_KEYS: %w", err)
		}
	} else {
		s.log.Warn("archived messages are stored unencrypted: set RECORDING_KEYS")
	}
	for _, l := range ledgers {
		l.SetCold(a)
	}
	s.Archive = a
	s.closers = append(s.closers, b.Close)
	return nil
}

// erasableArchive is the archive for erasures (a nil interface when off).
func (s *Service) erasableArchive() erasure.Archive {
	if s.Archive == nil {
		return nil
	}
	return s.Archive
}

// startArchive runs the archive in a worker process until Shutdown.
func (s *Service) startArchive() {
	if s.Archive == nil || s.Workers == nil {
		return
	}
	s.every(ArchiveEvery, s.Archive.Logger, "archive pass failed; the next one resumes it", func(ctx context.Context) error {
		_, err := s.Archive.Pass(ctx)
		return err
	})
}

// retentionOf is a tenant's message retention: its own setting within
// GATEWAY_RETENTION (that when its settings cannot be read).
func (s *Service) retentionOf(ctx context.Context, tenant string) time.Duration {
	if s.Messages == nil || s.Messages.Tenants == nil {
		return s.Config.Retention
	}
	set, err := s.Messages.Tenants.Get(ctx, tenant)
	if err != nil {
		return s.Config.Retention
	}
	return set.Retention(s.Config.Retention)
}

// tenantNames are the tenants of GATEWAY_API_KEYS, sorted.
func (s *Service) tenantNames() []string {
	seen := map[string]bool{}
	var tenants []string
	for _, t := range s.Config.APIKeys {
		if !seen[t] {
			seen[t] = true
			tenants = append(tenants, t)
		}
	}
	sort.Strings(tenants)
	return tenants
}
