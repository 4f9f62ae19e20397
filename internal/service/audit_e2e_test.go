package service_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"gocloud.dev/blob"

	"github.com/patientmsg/gateway/internal/audit"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/ledger"
)

// TestASendAndAReadAreAuditedWithoutAnythingPersonalAndTheExportVerifies
// follows a message from the API through the worker: its creation, its
// send and its read are events of the tenant's log, with ids only; a
// worker exports the log and Verify proves it against the signed
// checkpoints.
func TestASendAndAReadAreAuditedWithoutAnythingPersonalAndTheExportVerifies(t *testing.T) {
	skey, vkey, err := audit.GenerateKey("")
	if err != nil {
		t.Fatal(err)
	}
	archive := "file://" + t.TempDir() + "?no_tmp_dir=true"
	e := start(t, config.RoleAll, func(cfg *config.Config) {
		cfg.Audit.SigningKey, cfg.Audit.BlobURL, cfg.Audit.ExportInterval = skey, archive, 100*time.Millisecond
	})
	id := e.send(keyA, smsBody(patientPhone, secretBody), "X-Request-Id", "req-e2e-1")
	e.waitFor(id, ledger.StatusDelivered, 10*time.Second)
	if a := e.do("GET", "/v1/messages/"+id, keyA, ""); a.Status != 200 || a.Header.Get("X-Request-Id") == "" {
		t.Fatalf("GET = %d %v", a.Status, a.Header)
	}

	a := e.do("GET", "/v1/audit", keyA, "")
	if a.Status != 200 {
		t.Fatalf("GET /v1/audit = %d %s", a.Status, a.Raw)
	}
	want := map[string]string{"message.create": "apikey:", "message.send": audit.ActorWorker, "message.read": "apikey:"}
	for _, ev := range a.Body["events"].([]any) {
		ev := ev.(map[string]any)
		if actor, ok := want[ev["action"].(string)]; ok && ev["object"] == "message:"+id && strings.HasPrefix(ev["actor"].(string), actor) {
			delete(want, ev["action"].(string))
		}
		if ev["action"] == "message.create" && ev["request_id"] != "req-e2e-1" {
			t.Errorf("the create event's request id is %v", ev["request_id"])
		}
	}
	if len(want) > 0 {
		t.Fatalf("no event for %v in %s", want, a.Raw)
	}
	for _, personal := range []string{"4155550123", "biopsy", keyA} {
		if strings.Contains(a.Raw, personal) {
			t.Fatalf("the audit events hold %q: %s", personal, a.Raw)
		}
	}
	if b := e.do("GET", "/v1/audit", keyB, ""); strings.Contains(b.Raw, id) {
		t.Fatalf("another tenant reads clinic-a's events: %s", b.Raw)
	}

	// The worker exports the log; every event then verifies.
	ctx := context.Background()
	bucket, err := blob.OpenBucket(ctx, archive)
	if err != nil {
		t.Fatal(err)
	}
	defer bucket.Close()
	trusted, err := audit.NewVerifiers(vkey)
	if err != nil {
		t.Fatal(err)
	}
	size, _ := e.svc.Audit.Size(ctx, "clinic-a")
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, err := audit.Verify(ctx, bucket, trusted, audit.VerifyOptions{Tenant: "clinic-a"})
		if err == nil && r.Finding == nil && r.Checked >= size {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the export of %d events did not verify: %+v, %v", size, r, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
