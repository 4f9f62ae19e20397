package service_test

import (
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/config"
)

// TestAnIncidentGroupsItsBroadcastsThroughTheAPI: a crisis lead opens an
// incident with a 6-hour cadence, sends its first alert with incident_id,
// and reads the incident with the alert's roster and the next update due
// six hours after it; another tenant cannot link to it or read it; once
// closed, nothing is due and no broadcast joins it.
func TestAnIncidentGroupsItsBroadcastsThroughTheAPI(t *testing.T) {
	e := start(t, config.RoleAll)
	for _, bad := range []string{`{"name":""}`, `{"name":"Flood","cadence":"1m"}`, `{"name":"Flood","state":"open"}`} {
		if a := e.do("POST", "/v1/incidents", keyA, bad); a.Status != 422 && a.Status != 400 {
			t.Fatalf("POST /v1/incidents %s = %d %s", bad, a.Status, a.Raw)
		}
	}
	a := e.do("POST", "/v1/incidents", keyA, `{"name":"River flood, December","cadence":"6h"}`)
	if a.Status != 201 || a.Body["state"] != "open" || a.Body["cadence"] != "6h" {
		t.Fatalf("open = %d %s", a.Status, a.Raw)
	}
	inc := a.Body["id"].(string)
	alert := func(key, incident string) answer {
		return e.do("POST", "/v1/broadcasts", key, `{"name":"Flood alert","channels":["sms"],"incident_id":"`+incident+`",
		  "audience":[{"phone":"+14155550161"},{"phone":"+14155550162"}],
		  "body":{"en":"Flood: reply 1 if safe, 2 if you need help"},"poll":{"options":{"1":"safe","2":"need_help"}}}`)
	}
	if b := alert(keyB, inc); b.Status != 422 || !strings.Contains(b.Raw, "incident_id") {
		t.Fatalf("clinic-b's broadcast to clinic-a's incident = %d %s", b.Status, b.Raw)
	}
	sent := time.Now()
	b := alert(keyA, inc)
	if b.Status != 202 {
		t.Fatalf("the alert = %d %s", b.Status, b.Raw)
	}
	bc := b.Body["id"].(string)
	got := e.do("GET", "/v1/incidents/"+inc, keyA, "")
	if got.Status != 200 || got.Body["overdue"] != false {
		t.Fatalf("GET = %d %s", got.Status, got.Raw)
	}
	list := got.Body["broadcasts"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["id"] != bc || list[0].(map[string]any)["incident_id"] != inc {
		t.Fatalf("the incident's broadcasts: %s", got.Raw)
	}
	due, err := time.Parse(time.RFC3339Nano, got.Body["next_update_due"].(string))
	if err != nil || due.Sub(sent) < 6*time.Hour-time.Second || due.Sub(sent) > 6*time.Hour+5*time.Second {
		t.Fatalf("next update due %v (%v), want six hours after the alert", got.Body["next_update_due"], err)
	}
	if r := e.do("GET", "/v1/broadcasts/"+bc, keyA, ""); r.Body["incident_id"] != inc {
		t.Fatalf("the roster does not name its incident: %s", r.Raw)
	}
	if o := e.do("GET", "/v1/incidents/"+inc, keyB, ""); o.Status != 404 {
		t.Fatalf("clinic-b reads clinic-a's incident: %d", o.Status)
	}
	if l := e.do("GET", "/v1/incidents", keyA, ""); l.Status != 200 || !strings.Contains(l.Raw, inc) {
		t.Fatalf("GET /v1/incidents = %d %s", l.Status, l.Raw)
	}
	c := e.do("POST", "/v1/incidents/"+inc+"/close", keyA, "")
	if c.Status != 200 || c.Body["state"] != "closed" || c.Body["next_update_due"] != nil {
		t.Fatalf("close = %d %s", c.Status, c.Raw)
	}
	if c := e.do("POST", "/v1/incidents/"+inc+"/close", keyA, ""); c.Status != 409 {
		t.Fatalf("closing again = %d %s", c.Status, c.Raw)
	}
	if b := alert(keyA, inc); b.Status != 422 || !strings.Contains(b.Raw, "closed") {
		t.Fatalf("a broadcast to a closed incident = %d %s", b.Status, b.Raw)
	}
}
