package console_test

import (
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/consent"
)

// TestStaffDecidePossibleOptOutsFromTheConsole: a reply that may be a
// wish to stop is listed for clinic-a with its deadline and the address
// masked; a viewer sees it but cannot decide; staff opt the patient out,
// the row leaves the list and the address is opted out; clinic-b neither
// sees nor decides it.
func TestStaffDecidePossibleOptOutsFromTheConsole(t *testing.T) {
	g := consoleGateway(t)
	ctx := t.Context()
	from := consent.Identity{Kind: consent.Phone, Value: "+14155550142"}
	p := consent.PossibleOptOut{ID: "01M95REPLY0000000000000001", Channel: "sms", From: from,
		ReceivedAt: time.Now().Add(-time.Hour), Deadline: time.Now().Add(14 * 24 * time.Hour)}
	if _, err := g.svc.Consent.FlagPossible(ctx, "clinic-a", p); err != nil {
		t.Fatal(err)
	}
	viewer := g.signIn("viewer@clinic-a.test")
	resp, body := viewer.get("/console/opt-outs")
	if resp.StatusCode != 200 || !strings.Contains(body, `id="optout-`+p.ID+`"`) {
		t.Fatalf("the viewer's list = %d:\n%s", resp.StatusCode, body)
	}
	if strings.Contains(body, "4155550142") || !strings.Contains(body, "42") {
		t.Fatalf("the address is not masked as the API masks it:\n%s", body)
	}
	if strings.Contains(body, "/resolve") {
		t.Fatal("the page shows a viewer the decision buttons")
	}
	if resp, _ := viewer.post("/console/opt-outs/"+p.ID+"/resolve", viewer.csrf, "outcome", "opted_out"); resp.StatusCode != 403 {
		t.Fatalf("a viewer's decision = %d", resp.StatusCode)
	}

	other := g.signIn("lead@clinic-b.test")
	if _, body := other.get("/console/opt-outs"); strings.Contains(body, p.ID) {
		t.Fatal("clinic-b sees clinic-a's possible opt-out")
	}
	if resp, _ := other.post("/console/opt-outs/"+p.ID+"/resolve", other.csrf, "outcome", "opted_out"); resp.StatusCode != 404 {
		t.Fatalf("clinic-b's decision = %d", resp.StatusCode)
	}

	staff := g.signIn("staff@clinic-a.test")
	if resp, _ := staff.post("/console/opt-outs/"+p.ID+"/resolve", "", "outcome", "opted_out"); resp.StatusCode != 403 {
		t.Fatalf("a decision without its CSRF token = %d", resp.StatusCode)
	}
	if resp, _ := staff.post("/console/opt-outs/"+p.ID+"/resolve", staff.csrf, "outcome", "maybe"); resp.StatusCode != 422 {
		t.Fatalf("a decision that is neither = %d", resp.StatusCode)
	}
	resp, _ = staff.post("/console/opt-outs/"+p.ID+"/resolve", staff.csrf, "outcome", "opted_out")
	if resp.StatusCode != 303 || !strings.Contains(resp.Header.Get("Location"), "resolved=opted_out") {
		t.Fatalf("staff's decision = %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if _, body := staff.get("/console/opt-outs"); strings.Contains(body, `id="optout-`+p.ID+`"`) || !strings.Contains(body, `id="no-optouts"`) {
		t.Fatalf("still listed after the decision:\n%s", body)
	}
	if out, err := g.svc.Consent.OptedOut(ctx, "clinic-a", from); err != nil || !out {
		t.Fatalf("the address is not opted out after staff's decision: %v %v", out, err)
	}
	if resp, _ := staff.post("/console/opt-outs/"+p.ID+"/resolve", staff.csrf, "outcome", "not_an_opt_out"); resp.StatusCode != 303 ||
		!strings.Contains(resp.Header.Get("Location"), "resolved=already") {
		t.Fatalf("a second decision = %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
}
