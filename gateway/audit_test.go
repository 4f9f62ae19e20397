package gateway

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/audit"
	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/contacts"
	"github.com/patientmsg/gateway/internal/redistest"
)

const auditKey = "audit-test-key-0123456789"

// auditServer is an API over a working Redis whose audit log is in
// auditRedis (a dead one, for the failure cases).
func auditServer(t *testing.T, auditRedis redis.UniversalClient) (*Server, *audit.Log) {
	t.Helper()
	rdb := redistest.Start(t).Client()
	store := contacts.New(rdb)
	phone := "+14155550123"
	if _, err := store.Put(context.Background(), "clinic-a", contacts.Contact{ID: "mrn-1042",
		Identities: []consent.Identity{{Kind: consent.Phone, Value: phone}}}); err != nil {
		t.Fatal(err)
	}
	log := audit.New(auditRedis, nil)
	return New(Options{Redis: rdb, Contacts: store, Consent: consent.New(rdb), Audit: log,
		APIKeys: map[string]string{auditKey: "clinic-a"}, MaxRequestBytes: 64 << 10,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}), log
}

func call(t *testing.T, s *Server, method, path, body string) (int, string) {
	t.Helper()
	return callWith(t, s, auditKey, method, path, body)
}

// callWith calls the API with a key and answers the status and body.
func callWith(t *testing.T, s *Server, key, method, path, body string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.App().Test(req, int((10 * time.Second).Milliseconds()))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

func TestReadsAndChangesOfPatientDataAreAudited(t *testing.T) {
	s, log := auditServer(t, redistest.Start(t).Client())
	if code, body := call(t, s, "GET", "/v1/contacts/mrn-1042", ""); code != 200 {
		t.Fatalf("GET contact = %d %s", code, body)
	}
	if code, _ := call(t, s, "GET", "/v1/contacts/nobody", ""); code != 404 {
		t.Fatalf("GET unknown contact = %d", code)
	}
	call(t, s, "GET", "/v1/senders", "") // no patient data: not audited
	code, body := call(t, s, "GET", "/v1/audit?action=contact.read", "")
	if code != 200 {
		t.Fatalf("GET /v1/audit = %d %s", code, body)
	}
	for _, want := range []string{`"object":"contact:mrn-1042","outcome":"ok","status":200`,
		`"object":"contact:nobody","outcome":"denied","status":404`, `"actor":"apikey:`} {
		if !strings.Contains(body, want) {
			t.Errorf("the audit events lack %s: %s", want, body)
		}
	}
	if strings.Contains(body, "4155550123") || strings.Contains(body, auditKey) {
		t.Fatalf("an audit event holds an address or the key: %s", body)
	}
	events, _, _ := log.Find(context.Background(), "clinic-a", audit.Query{})
	for _, e := range events {
		if e.Action == "" || e.RequestID == "" || strings.Contains(e.Action, "sender") {
			t.Errorf("event %+v", e)
		}
	}
	if code, body := call(t, s, "GET", "/v1/audit?limit=0&since=yesterday", ""); code != 422 ||
		!strings.Contains(body, `"field":"since"`) || !strings.Contains(body, `"field":"limit"`) {
		t.Fatalf("bad filters = %d %s", code, body)
	}
}

func TestAReadThatCannotBeAuditedIsRefusedAndAChangeIsAnsweredAndCounted(t *testing.T) {
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 50 * time.Millisecond})
	t.Cleanup(func() { dead.Close() })
	s, log := auditServer(t, dead)
	code, body := call(t, s, "GET", "/v1/contacts/mrn-1042", "")
	if code != 503 || !strings.Contains(body, "/problems/audit-unavailable") || strings.Contains(body, "••") {
		t.Fatalf("an unaudited read = %d %s; want 503 without the contact", code, body)
	}
	code, body = call(t, s, "PUT", "/v1/contacts/mrn-1042", `{"phone":"+14155550124"}`)
	if code != 200 {
		t.Fatalf("a change whose audit failed = %d %s; want it answered as it went", code, body)
	}
	if log.Failures() != 2 {
		t.Fatalf("Failures = %d, want 2", log.Failures())
	}
}
