package service

import (
	"context"
	"fmt"
	"log/slog"

	"gocloud.dev/blob"

	"github.com/patientmsg/gateway/internal/audit"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/contacts"
)

// newAudit builds the audit log every role appends to and, with a signing
// key, the export of the log to the blob store (run by the workers), where
// every role reads the events that have left Redis.
func (s *Service) newAudit(cfg config.Config, role config.Role, logger *slog.Logger) error {
	s.Audit = audit.New(s.hot, logger)
	if cfg.Audit.SigningKey == "" {
		if role&config.RoleWorker != 0 {
			logger.Warn("the audit log is not exported: GATEWAY_AUDIT_SIGNING_KEY is not set (docs/audit.md)", "comp", "audit")
		}
		return nil
	}
	signer, err := audit.NewSigner(cfg.Audit.SigningKey)
	if err != nil {
		return fmt.Errorf("GATEWAY_AUDIT_SIGNING_KEY: %w", err)
	}
	b, err := blob.OpenBucket(context.Background(), cfg.Audit.BlobURL)
	if err != nil {
		return fmt.Errorf("GATEWAY_AUDIT_BLOB_URL: %w", err)
	}
	s.closers = append(s.closers, b.Close)
	s.Audit.Export = b
	if role&config.RoleWorker != 0 {
		s.AuditExport = &audit.Exporter{Log: s.Audit, Bucket: b, Signer: signer, Retention: cfg.Audit.Retention,
			Logger: logger.With("comp", "audit")}
	}
	return nil
}

// auditConsent records every consent change in the audit log, under the
// patient's contact id (never the address), whatever made it: a STOP, a
// provider's opt-out error, the API or the console (whose requests are
// also recorded, with their actor).
func (s *Service) auditConsent(store *contacts.Store) {
	prev := s.Consent.OnChange
	s.Consent.OnChange = func(ctx context.Context, tenant string, id consent.Identity, optedOut bool) {
		if prev != nil {
			prev(ctx, tenant, id, optedOut)
		}
		object := "contact:unknown-" + string(id.Kind)
		if c, err := store.Find(ctx, tenant, id); err == nil {
			object = "contact:" + c.ID
		}
		s.Audit.Record(ctx, audit.Event{Tenant: tenant, Actor: audit.ActorInbound, Action: audit.ActionConsentChange,
			Object: object, Outcome: audit.OK})
	}
}

// startAuditExport moves an audit log kept in the layout of earlier
// versions into buckets, then exports the log in the background until
// Shutdown (workers only).
func (s *Service) startAuditExport() {
	if s.Workers == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stopAudit = cancel
	go func() {
		if err := s.Audit.Upgrade(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("the audit log could not be moved into buckets; each export moves its tenant's", "comp", "audit", "err", err)
		}
		if s.AuditExport != nil {
			s.AuditExport.Run(ctx, s.Config.Audit.ExportInterval)
		}
	}()
}

// ExportAudit runs one export of every tenant's audit log now, as the
// background export does every GATEWAY_AUDIT_EXPORT_INTERVAL (a no-op
// without a signing key).
func (s *Service) ExportAudit(ctx context.Context) error {
	if s.AuditExport == nil {
		return nil
	}
	return s.AuditExport.ExportAll(ctx)
}
