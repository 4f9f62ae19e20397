package config

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// groupAudit is the section of the audit log's settings.
const groupAudit = "Audit log"

// AuditConfig is the audit log: its signing key and its export to the
// blob store (docs/audit.md).
type AuditConfig struct {
	// SigningKey signs the exported checkpoints (GATEWAY_AUDIT_SIGNING_KEY,
	// in golang.org/x/mod/sumdb/note's format); empty: events are kept in
	// Redis but not exported.
	SigningKey string
	// VerifierKeys are the keys `gateway audit verify` trusts
	// (GATEWAY_AUDIT_VERIFIER_KEYS); empty: the signing key's own.
	VerifierKeys []string
	// BlobURL is where the log is exported (GATEWAY_AUDIT_BLOB_URL,
	// default BLOB_URL).
	BlobURL string
	// ExportInterval is how often a worker exports new events
	// (GATEWAY_AUDIT_EXPORT_INTERVAL).
	ExportInterval time.Duration
	// Retention is how long exported events stay readable in Redis through
	// GET /v1/audit (GATEWAY_AUDIT_RETENTION).
	Retention time.Duration
}

// signingKey checks a note signer key.
func signingKey(c *Config, v string) error {
	if _, err := note.NewSigner(v); err != nil {
		return errors.New("want an Ed25519 signing key as `gateway audit keygen` prints it (PRIVATE+KEY+name+hash+key)")
	}
	c.Audit.SigningKey = v
	return nil
}

// verifierKeys checks note verifier keys, separated by commas.
func verifierKeys(c *Config, v string) error {
	var keys []string
	for i, k := range strings.Split(v, ",") {
		if k = strings.TrimSpace(k); k == "" {
			continue
		}
		if _, err := note.NewVerifier(k); err != nil {
			return errors.New("entry " + strconv.Itoa(i+1) + ": want a verifier key as `gateway audit keygen` prints it (name+hash+key)")
		}
		keys = append(keys, k)
	}
	c.Audit.VerifierKeys = keys
	return nil
}
