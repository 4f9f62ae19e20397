package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gocloud.dev/blob"

	"github.com/patientmsg/gateway/internal/audit"
	"github.com/patientmsg/gateway/internal/redistest"
)

// keygen runs gateway audit keygen and returns the two keys it prints.
func keygen(t *testing.T) (skey, vkey string) {
	t.Helper()
	var out, errb bytes.Buffer
	if code := run([]string{"audit", "keygen"}, &out, &errb); code != 0 {
		t.Fatalf("keygen: exit %d: %s", code, errb.String())
	}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		name, value, _ := strings.Cut(line, "=")
		switch name {
		case "GATEWAY_AUDIT_SIGNING_KEY":
			skey = value
		case "GATEWAY_AUDIT_VERIFIER_KEYS":
			vkey = value
		}
	}
	if v, err := audit.VerifierKey(skey); err != nil || v != vkey {
		t.Fatalf("keygen printed %q and %q (%v)", skey, vkey, err)
	}
	return skey, vkey
}

func TestAuditVerifyProvesTheExportAndNamesTheRecordRewritten(t *testing.T) {
	ctx := context.Background()
	skey, vkey := keygen(t)
	dir := t.TempDir()
	url := "file://" + dir + "?no_tmp_dir=true"
	b, err := blob.OpenBucket(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	l := audit.New(redistest.Start(t).Client(), nil)
	for i := range 12 {
		if _, err := l.Append(ctx, audit.Event{Tenant: "clinic-a", Actor: "user:u1", Action: "contact.read",
			Object: fmt.Sprintf("contact:c%d", i), Outcome: audit.OK}); err != nil {
			t.Fatal(err)
		}
	}
	signer, _ := audit.NewSigner(skey)
	if _, err := (&audit.Exporter{Log: l, Bucket: b, Signer: signer, Batch: 5}).Export(ctx, "clinic-a"); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GATEWAY_AUDIT_BLOB_URL", url)
	t.Setenv("GATEWAY_AUDIT_VERIFIER_KEYS", vkey)
	verify := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := run(append([]string{"audit", "verify"}, args...), &out, &errb)
		return code, out.String() + errb.String()
	}
	if code, out := verify(); code != 0 || !strings.Contains(out, "verified: 12 records") {
		t.Fatalf("verify: exit %d: %s", code, out)
	}
	path := filepath.Join(dir, "audit", "clinic-a", "records", "00000000000000000005.jsonl")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, bytes.Replace(data, []byte("contact:c7"), []byte("contact:c0"), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out := verify(); code != 1 || !strings.Contains(out, "record 7:") {
		t.Fatalf("verify after a rewrite: exit %d: %s", code, out)
	}
	if code, out := verify("--from", "0", "--to", "7"); code != 0 {
		t.Fatalf("verify of records 0-6: exit %d: %s", code, out)
	}
	_, other := keygen(t)
	t.Setenv("GATEWAY_AUDIT_VERIFIER_KEYS", other)
	if code, out := verify(); code != 1 || !strings.Contains(out, "refused") {
		t.Fatalf("verify with another key: exit %d: %s", code, out)
	}
}
