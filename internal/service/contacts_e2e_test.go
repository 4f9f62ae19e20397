package service_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/ledger"
)

func TestContactsAndTheirConsentAreManagedByAPI(t *testing.T) {
	e := start(t, config.RoleAll)
	put := e.do("PUT", "/v1/contacts/mrn-1001", keyA, `{"phone":"+1 415 555 0123","email":"Wang@Example.ORG","locale":"zh-CN","timezone":"Asia/Shanghai"}`)
	if put.Status != 200 || put.Body["phone"] != patientPhone || put.Body["email"] != "Wang@example.org" {
		t.Fatalf("PUT contact = %d %s", put.Status, put.Raw)
	}
	if a := e.do("GET", "/v1/contacts?phone=%2B14155550123", keyA, ""); a.Status != 200 || a.Body["id"] != "mrn-1001" {
		t.Fatalf("lookup by phone = %d %s", a.Status, a.Raw)
	}
	if a := e.do("GET", "/v1/contacts/mrn-1001", keyB, ""); a.Status != 404 {
		t.Fatalf("another tenant read the contact: %d", a.Status)
	}
	if a := e.do("PUT", "/v1/contacts/mrn-2002", keyA, `{"phone":"+14155550123"}`); a.Status != 409 {
		t.Fatalf("a phone of another contact = %d %s", a.Status, a.Raw)
	}
	for _, bad := range []struct{ path, body string }{
		{"/v1/contacts/mrn-3", `{}`},
		{"/v1/contacts/mrn-3", `{"phone":"nope"}`},
		{"/v1/contacts/mrn-3", `{"phone":"+14155550100","timezone":"Mars/Olympus"}`},
		{"/v1/contacts/bad%20id", `{"phone":"+14155550100"}`},
		{"/v1/contacts/mrn-1001/consent", `{"opted_out":true}`},
		{"/v1/contacts/mrn-1001/consent", `{"evidence":"x"}`},
	} {
		if a := e.do("PUT", bad.path, keyA, bad.body); a.Status < 400 || a.Status > 499 || a.Header.Get("Content-Type") != "application/problem+json" {
			t.Fatalf("PUT %s %s = %d %s", bad.path, bad.body, a.Status, a.Raw)
		}
	}

	opt := e.do("PUT", "/v1/contacts/mrn-1001/consent", keyA, `{"opted_out":true,"evidence":"asked at the front desk, 2026-11-22","identity":"phone"}`)
	if opt.Status != 200 {
		t.Fatalf("PUT consent = %d %s", opt.Status, opt.Raw)
	}
	var view struct {
		Identities []struct {
			Identity struct{ Kind, Value string }
			OptedOut bool `json:"opted_out"`
			Changes  []struct{ Source, Evidence string }
		}
	}
	_ = json.Unmarshal([]byte(opt.Raw), &view)
	if len(view.Identities) != 2 || !view.Identities[0].OptedOut || view.Identities[1].OptedOut ||
		view.Identities[0].Changes[0].Source != "api" || !strings.Contains(view.Identities[0].Changes[0].Evidence, "front desk") {
		t.Fatalf("consent view %s", opt.Raw)
	}
	id := e.send(keyA, smsBody(patientPhone, "Reminder"))
	e.waitFor(id, ledger.StatusSuppressed, 10*time.Second)
	mail := e.send(keyA, `{"channel":"email","to":{"email":"Wang@example.org"},"subject":"s","body":"x"}`)
	e.waitFor(mail, ledger.StatusSent, 10*time.Second)

	e.inbound(patientPhone, "is my appointment still on?", e.sim.AuthToken())
	e.waitFeed(keyA, "is my appointment still on?")
	conv := e.do("GET", "/v1/contacts/mrn-1001/conversation", keyA, "")
	var cv struct {
		Entries []struct{ Kind, ID, Body, Channel string }
	}
	_ = json.Unmarshal([]byte(conv.Raw), &cv)
	if conv.Status != 200 || len(cv.Entries) != 3 || cv.Entries[0].ID != id || cv.Entries[1].ID != mail ||
		cv.Entries[2].Kind != "reply" || cv.Entries[2].Body != "is my appointment still on?" {
		t.Fatalf("conversation = %d %s", conv.Status, conv.Raw)
	}
	if other := e.do("GET", "/v1/contacts/mrn-1001/conversation", keyB, ""); other.Status != 404 {
		t.Fatalf("another tenant read the conversation: %d", other.Status)
	}

	exp := e.do("GET", "/v1/consent/export", keyA, "")
	lines := strings.Split(strings.TrimSpace(exp.Raw), "\n")
	if exp.Status != 200 || exp.Header.Get("Content-Type") != "application/x-ndjson" || len(lines) != 1 || !strings.Contains(lines[0], `"opted_out":true`) {
		t.Fatalf("export = %d %q", exp.Status, exp.Raw)
	}
	if b := e.do("GET", "/v1/consent/export", keyB, ""); strings.TrimSpace(b.Raw) != "" {
		t.Fatalf("another tenant's export shows %q", b.Raw)
	}
}
