package console_test

import (
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/incidents"
)

// TestALeadWorksACrisisAsAnIncident: a lead opens an incident (a bad
// cadence is refused by field), sends its first alert from the incident's
// page (upload, compose, confirm), and finds it on the incident with its
// counts, the next update due and the after-action report; a viewer reads
// it but cannot open or close one, clinic-b cannot see it; once closed
// nothing more is due.
func TestALeadWorksACrisisAsAnIncident(t *testing.T) {
	g := consoleGateway(t)
	lead := g.signIn("lead@clinic-a.test")
	resp, body := lead.post("/console/incidents", lead.csrf, "name", "River flood", "cadence", "5m")
	if resp.StatusCode != 422 || !strings.Contains(body, `id="err-cadence"`) {
		t.Fatalf("a cadence of 5 minutes = %d:\n%s", resp.StatusCode, body)
	}
	resp, _ = lead.post("/console/incidents", lead.csrf, "name", "River flood", "cadence", "6h")
	loc := resp.Header.Get("Location")
	if resp.StatusCode != 303 || !strings.HasPrefix(loc, "/console/incidents/inc_") {
		t.Fatalf("open = %d %s", resp.StatusCode, loc)
	}
	inc := strings.TrimPrefix(loc, "/console/incidents/")
	if _, body := lead.get(loc); !strings.Contains(body, `id="no-broadcasts"`) || !strings.Contains(body, `href="/console/broadcasts/new?incident=`+inc+`"`) {
		t.Fatalf("the new incident's page:\n%s", body)
	}

	resp, _ = lead.uploadFor(inc, "phone\n+14155550171\n+14155550172\n")
	next := resp.Header.Get("Location")
	if resp.StatusCode != 303 || !strings.HasSuffix(next, "&incident="+inc) {
		t.Fatalf("upload for the incident = %d %s", resp.StatusCode, next)
	}
	audience := strings.TrimSuffix(strings.TrimPrefix(next, "/console/broadcasts/new?audience="), "&incident="+inc)
	if _, body := lead.get(next); !strings.Contains(body, `id="compose-incident"`) || !strings.Contains(body, `name="incident_id" value="`+inc+`"`) {
		t.Fatalf("the composer does not carry the incident:\n%s", body)
	}
	fields := []string{"audience", audience, "incident_id", inc, "name", "Flood alert", "body_en", "Flood: reply 1 if safe, 2 if you need help",
		"channel_1", "sms", "poll_key_1", "1", "poll_meaning_1", "safe", "poll_key_2", "2", "poll_meaning_2", "need_help", "ack_timeout", "10m", "priority", "crisis"}
	if resp, body := lead.post("/console/broadcasts/preview", lead.csrf, fields...); resp.StatusCode != 200 || !strings.Contains(body, `id="confirm-incident"`) {
		t.Fatalf("the confirmation = %d:\n%s", resp.StatusCode, body)
	}
	resp, _ = lead.post("/console/broadcasts", lead.csrf, fields...)
	bc := strings.TrimPrefix(resp.Header.Get("Location"), "/console/broadcasts/")
	if resp.StatusCode != 303 || bc == "" {
		t.Fatalf("send = %d", resp.StatusCode)
	}
	_, body = lead.get("/console/incidents/" + inc)
	if !strings.Contains(body, `id="bc-`+bc+`"`) || !strings.Contains(body, `id="next-due"`) || !strings.Contains(body, `id="send-update"`) ||
		strings.Contains(body, `id="overdue"`) {
		t.Fatalf("the incident after its first alert:\n%s", body)
	}
	if _, body := lead.get("/console/broadcasts/" + bc); !strings.Contains(body, `href="/console/incidents/`+inc+`"`) {
		t.Fatalf("the roster does not link its incident:\n%s", body)
	}
	if resp, body := lead.get("/console/incidents/" + inc + "/report"); resp.StatusCode != 200 || !strings.Contains(body, `id="report-`+bc+`"`) ||
		!strings.Contains(body, "<svg") || !strings.Contains(body, `id="timeline-data"`) {
		t.Fatalf("the incident's report = %d:\n%s", resp.StatusCode, body)
	}

	viewer := g.signIn("viewer@clinic-a.test")
	if _, body := viewer.get("/console/incidents/" + inc); strings.Contains(body, `id="close"`) || strings.Contains(body, `id="send-update"`) {
		t.Fatal("a viewer is shown the lead's actions")
	}
	if resp, _ := viewer.post("/console/incidents", viewer.csrf, "name", "Heat wave"); resp.StatusCode != 403 {
		t.Fatalf("a viewer opened an incident: %d", resp.StatusCode)
	}
	if resp, _ := viewer.post("/console/incidents/"+inc+"/close", viewer.csrf); resp.StatusCode != 403 {
		t.Fatalf("a viewer closed an incident: %d", resp.StatusCode)
	}
	other := g.signIn("lead@clinic-b.test")
	if resp, _ := other.get("/console/incidents/" + inc); resp.StatusCode != 404 {
		t.Fatalf("clinic-b reads clinic-a's incident: %d", resp.StatusCode)
	}
	if resp, _ := other.get("/console/broadcasts/new?incident=" + inc); resp.StatusCode != 404 {
		t.Fatalf("clinic-b composes into clinic-a's incident: %d", resp.StatusCode)
	}

	// An incident whose update is late is marked on the list.
	late := incidents.NewStore(g.svc.Redis, time.Hour)
	late.Now = func() time.Time { return time.Now().Add(-time.Hour) }
	stale, err := late.Open(t.Context(), "clinic-a", "Heat wave", "15m")
	if err != nil {
		t.Fatal(err)
	}
	if _, body := lead.get("/console/incidents"); !strings.Contains(body, `id="overdue-`+stale.ID+`"`) || strings.Contains(body, `id="overdue-`+inc+`"`) {
		t.Fatalf("the overdue incident is not marked, or the other one is:\n%s", body)
	}

	resp, _ = lead.post("/console/incidents/"+inc+"/close", lead.csrf)
	if resp.StatusCode != 303 || !strings.HasSuffix(resp.Header.Get("Location"), "?closed=1") {
		t.Fatalf("close = %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if _, body := lead.get("/console/incidents/" + inc + "?closed=1"); !strings.Contains(body, `id="closed"`) || strings.Contains(body, `id="next-due"`) ||
		strings.Contains(body, `id="new-broadcast"`) {
		t.Fatalf("the closed incident:\n%s", body)
	}
}
