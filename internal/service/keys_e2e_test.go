package service_test

import (
	"testing"

	"github.com/patientmsg/gateway/internal/config"
)

// TestAKeyMadeThroughTheAPISendsWithinItsScopeUntilRevoked: a clinic's
// bootstrap key makes a send-only key, which sends a message and is
// refused a read; once revoked it is refused altogether.
func TestAKeyMadeThroughTheAPISendsWithinItsScopeUntilRevoked(t *testing.T) {
	e := start(t, config.RoleAPI)
	a := e.do("POST", "/v1/api-keys", keyA, `{"name":"EHR integration","scopes":["send"]}`)
	key, _ := a.Body["key"].(string)
	if a.Status != 201 || key == "" {
		t.Fatalf("POST /v1/api-keys = %d %s", a.Status, a.Raw)
	}
	if id := e.send(key, smsBody(patientPhone, "Your appointment is at 9:00.")); id == "" {
		t.Fatal("the send key made no message")
	}
	if r := e.do("GET", "/v1/messages", key, ""); r.Status != 403 || r.Body["type"] != "/problems/insufficient-scope" {
		t.Fatalf("a read with a send key = %d %s", r.Status, r.Raw)
	}
	if r := e.do("DELETE", "/v1/api-keys/"+a.Body["id"].(string), keyA, ""); r.Status != 200 || r.Body["state"] != "revoked" {
		t.Fatalf("revoke = %d %s", r.Status, r.Raw)
	}
	if r := e.do("POST", "/v1/messages", key, smsBody(patientPhone, "Your appointment is at 9:00.")); r.Status != 401 {
		t.Fatalf("a revoked key = %d %s", r.Status, r.Raw)
	}
}
