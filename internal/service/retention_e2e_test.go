package service_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/config"
)

// TestATenantKeepsItsMessagesForItsOwnRetention: one clinic keeps its
// messages 7 days, the other the gateway's 30; more than the gateway's is
// refused naming the field.
func TestATenantKeepsItsMessagesForItsOwnRetention(t *testing.T) {
	e := start(t, config.RoleAll, func(c *config.Config) { c.Retention, c.RecordingRetention = 30*24*time.Hour, 30*24*time.Hour })
	set := e.do("GET", "/v1/settings", keyA, "")
	body := strings.TrimSuffix(set.Raw, "}") + `,"retention_days":31}`
	if a := e.do("PUT", "/v1/settings", keyA, body); a.Status != 422 || !strings.Contains(a.Raw, `"retention_days"`) {
		t.Fatalf("a retention past the gateway's = %d %s", a.Status, a.Raw)
	}
	body = strings.TrimSuffix(set.Raw, "}") + `,"retention_days":7,"recording_retention_days":2}`
	if a := e.do("PUT", "/v1/settings", keyA, body); a.Status != 200 || !strings.Contains(a.Raw, `"retention_days":7`) {
		t.Fatalf("PUT settings = %d %s", a.Status, a.Raw)
	}
	ttlOf := func(id string) time.Duration {
		ttl, err := e.svc.Redis.PTTL(context.Background(), "gw:m:{"+id+"}").Result()
		if err != nil {
			t.Fatal(err)
		}
		return ttl
	}
	a := e.send(keyA, smsBody(patientPhone, "hello"))
	b := e.send(keyB, smsBody(patientPhone, "hello"))
	if ttl := ttlOf(a); ttl > 7*24*time.Hour || ttl < 7*24*time.Hour-time.Minute {
		t.Fatalf("clinic A's message is kept %s, want 7 days", ttl)
	}
	if ttl := ttlOf(b); ttl < 29*24*time.Hour {
		t.Fatalf("clinic B's message is kept %s, want the gateway's 30 days", ttl)
	}
}
