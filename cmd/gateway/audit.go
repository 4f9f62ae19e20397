package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"gocloud.dev/blob"
	_ "gocloud.dev/blob/fileblob" // file:// buckets
	_ "gocloud.dev/blob/s3blob"   // s3:// buckets

	"github.com/patientmsg/gateway/internal/audit"
	"github.com/patientmsg/gateway/internal/config"
)

const auditUsage = `gateway audit: the tamper-evident audit log (docs/audit.md).

  gateway audit keygen [--name N]
      Makes a signing key and prints it with its verifier key: set the first
      as GATEWAY_AUDIT_SIGNING_KEY (a secret), keep the second with whoever
      verifies the log (GATEWAY_AUDIT_VERIFIER_KEYS).
  gateway audit verify [--tenant T] [--from N] [--to M]
      Reads the exported log from GATEWAY_AUDIT_BLOB_URL and proves every
      record (indexes N to M-1; all by default) against the newest checkpoint
      signed by a trusted key (GATEWAY_AUDIT_VERIFIER_KEYS, or the signing
      key's own). Exit status 0: everything checked matches; 1: a record or
      checkpoint does not (the first one is named) or the store cannot be
      read; 2: a bad setting or flag.
`

// runAudit runs "gateway audit …".
func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, auditUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	sub, rest := args[0], args[1:]
	fs := flag.NewFlagSet("audit "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stdout, auditUsage) }
	name := fs.String("name", audit.DefaultKeyName, "the key's name (keygen)")
	tenant := fs.String("tenant", "", "one tenant to verify (default: every tenant exported)")
	from := fs.Int64("from", 0, "the first record index to verify")
	to := fs.Int64("to", 0, "the record index to stop before (0: the end)")
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	switch sub {
	case "keygen":
		skey, vkey, err := audit.GenerateKey(*name)
		if err != nil {
			fmt.Fprintln(stderr, "gateway audit keygen:", err)
			return 1
		}
		fmt.Fprintf(stdout, "GATEWAY_AUDIT_SIGNING_KEY=%s\nGATEWAY_AUDIT_VERIFIER_KEYS=%s\n", skey, vkey)
		return 0
	case "verify":
		if *from < 0 || *to < 0 || (*to > 0 && *to <= *from) {
			fmt.Fprintln(stderr, "gateway audit verify: want 0 <= --from < --to")
			return 2
		}
		return auditVerify(ctx, audit.VerifyOptions{Tenant: *tenant, From: *from, To: *to}, stdout, stderr)
	}
	fmt.Fprintf(stderr, "gateway audit: unknown command %q (keygen or verify)\n", sub)
	return 2
}

func auditVerify(ctx context.Context, o audit.VerifyOptions, stdout, stderr io.Writer) int {
	cfg, err := config.Load(nil)
	if code := configProblem(stderr, "audit verify", err); code != 0 {
		return code
	}
	if err != nil {
		fmt.Fprintln(stderr, "gateway audit verify:", err)
		return 2
	}
	vkeys := cfg.Audit.VerifierKeys
	if len(vkeys) == 0 && cfg.Audit.SigningKey != "" {
		vkey, err := audit.VerifierKey(cfg.Audit.SigningKey)
		if err != nil {
			fmt.Fprintln(stderr, "gateway audit verify: GATEWAY_AUDIT_SIGNING_KEY:", err)
			return 2
		}
		vkeys = []string{vkey}
	}
	trusted, err := audit.NewVerifiers(vkeys...)
	if err != nil {
		fmt.Fprintln(stderr, "gateway audit verify: set GATEWAY_AUDIT_VERIFIER_KEYS (or GATEWAY_AUDIT_SIGNING_KEY):", err)
		return 2
	}
	b, err := blob.OpenBucket(ctx, cfg.Audit.BlobURL)
	if err != nil {
		fmt.Fprintln(stderr, "gateway audit verify: GATEWAY_AUDIT_BLOB_URL:", err)
		return 2
	}
	defer b.Close()
	r, err := audit.Verify(ctx, b, trusted, o)
	if err != nil {
		fmt.Fprintln(stderr, "gateway audit verify: cannot read the exported log:", err)
		return 1
	}
	if r.Finding != nil {
		fmt.Fprintf(stdout, "NOT VERIFIED: %s\n", r.Finding)
		fmt.Fprintf(stdout, "%d records proved before it (%d tenants, %d checkpoints)\n", r.Checked, r.Tenants, r.Checkpoints)
		return 1
	}
	fmt.Fprintf(stdout, "verified: %d records proved against signed checkpoints (%d tenants, %d checkpoints)", r.Checked, r.Tenants, r.Checkpoints)
	if r.Uncovered > 0 {
		fmt.Fprintf(stdout, "; %d records not yet covered by a checkpoint", r.Uncovered)
	}
	fmt.Fprintln(stdout)
	return 0
}
