package console_test

import (
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/ledger"
)

// TestStaffSeeAndCancelAFollowUpPlanFromTheConsole: a plan made through
// the API is listed for clinic-a with the patient masked, shown with its
// steps' messages and on the patient's contact page; a viewer cannot
// cancel it, clinic-b neither sees nor cancels it; staff cancel it through
// the same domain function as the API, and its scheduled messages are
// canceled saying so.
func TestStaffSeeAndCancelAFollowUpPlanFromTheConsole(t *testing.T) {
	g := consoleGateway(t)
	anchor := time.Now().Add(-12 * time.Hour).UTC().Format(time.RFC3339)
	vars := `{"clinic_name":"Riverside Clinic","clinic_phone":"555-0100"}`
	plan := g.api("POST", "/v1/followups", keyA, `{"contact":{"phone":"+14155550177","timezone":"America/New_York","locale":"en"},
		"anchor":"`+anchor+`","steps":[{"offset":"P1D","channel":"sms","template":"post_discharge_day1","vars":`+vars+`},
		{"offset":"P7D","at":"10:00","channel":"sms","template":"post_discharge_day7","vars":`+vars+`}]}`)
	id := plan["id"].(string)
	var messages []string
	for _, st := range plan["steps"].([]any) {
		messages = append(messages, st.(map[string]any)["message_id"].(string))
	}

	viewer := g.signIn("viewer@clinic-a.test")
	resp, body := viewer.get("/console/plans")
	if resp.StatusCode != 200 || !strings.Contains(body, `id="plan-`+id+`"`) {
		t.Fatalf("the viewer's list = %d:\n%s", resp.StatusCode, body)
	}
	if strings.Contains(body, "4155550177") {
		t.Fatalf("the patient's number is shown in clear:\n%s", body)
	}
	resp, body = viewer.get("/console/plans/" + id)
	if resp.StatusCode != 200 || !strings.Contains(body, `id="step-1"`) || !strings.Contains(body, "/console/messages/"+messages[1]) {
		t.Fatalf("the plan's page = %d:\n%s", resp.StatusCode, body)
	}
	if strings.Contains(body, `id="cancel-plan"`) {
		t.Fatal("the page shows a viewer the cancel button")
	}
	if resp, _ := viewer.post("/console/plans/"+id+"/cancel", viewer.csrf); resp.StatusCode != 403 {
		t.Fatalf("a viewer's cancel = %d", resp.StatusCode)
	}
	if _, body := viewer.get(lookup("phone", "+1 415 555 0177")); !strings.Contains(body, `href="/console/plans/`+id+`"`) {
		t.Fatalf("the contact page does not list the active plan:\n%s", body)
	}

	other := g.signIn("lead@clinic-b.test")
	if _, body := other.get("/console/plans"); strings.Contains(body, id) {
		t.Fatal("clinic-b sees clinic-a's plan")
	}
	if resp, _ := other.get("/console/plans/" + id); resp.StatusCode != 404 {
		t.Fatalf("clinic-b's view of the plan = %d", resp.StatusCode)
	}
	if resp, _ := other.post("/console/plans/"+id+"/cancel", other.csrf); resp.StatusCode != 404 {
		t.Fatalf("clinic-b's cancel = %d", resp.StatusCode)
	}

	staff := g.signIn("staff@clinic-a.test")
	if resp, _ := staff.post("/console/plans/"+id+"/cancel", ""); resp.StatusCode != 403 {
		t.Fatalf("a cancel without its CSRF token = %d", resp.StatusCode)
	}
	if _, body := staff.get("/console/plans/" + id); !strings.Contains(body, `id="cancel-plan"`) {
		t.Fatalf("staff see no cancel button:\n%s", body)
	}
	resp, _ = staff.post("/console/plans/"+id+"/cancel", staff.csrf)
	if resp.StatusCode != 303 || !strings.HasSuffix(resp.Header.Get("Location"), "/console/plans/"+id+"?canceled=1") {
		t.Fatalf("staff's cancel = %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, body = staff.get("/console/plans/" + id + "?canceled=1")
	if resp.StatusCode != 200 || !strings.Contains(body, `id="canceled"`) || strings.Contains(body, `id="cancel-plan"`) {
		t.Fatalf("the canceled plan's page:\n%s", body)
	}
	for _, mid := range messages {
		m, err := g.svc.Ledger.Get(t.Context(), "clinic-a", mid)
		if err != nil {
			t.Fatal(err)
		}
		last := m.Events[len(m.Events)-1]
		if m.Status != ledger.StatusCanceled || last.Detail != ledger.CanceledFromConsole {
			t.Fatalf("step message %s is %s (%q) after the plan was canceled", mid, m.Status, last.Detail)
		}
	}
	if got := g.api("GET", "/v1/followups/"+id, keyA, ""); got["state"] != "canceled" || got["stop_reason"] != ledger.CanceledFromConsole {
		t.Fatalf("the API shows the plan %v (%v)", got["state"], got["stop_reason"])
	}
	if _, body := staff.get(lookup("phone", "+14155550177")); !strings.Contains(body, `id="no-contact-plans"`) {
		t.Fatalf("the contact page still lists the canceled plan:\n%s", body)
	}
	resp, _ = staff.post("/console/plans/"+id+"/cancel", staff.csrf)
	if resp.StatusCode != 303 || !strings.HasSuffix(resp.Header.Get("Location"), "?canceled=already") {
		t.Fatalf("a second cancel = %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// TestAPlanStepThatStartedAQuestionnaireLinksToItsResponse: the plan's
// page names a questionnaire step's questionnaire and, once the step has
// started it, links to the response.
func TestAPlanStepThatStartedAQuestionnaireLinksToItsResponse(t *testing.T) {
	g := consoleGateway(t)
	anchor := time.Now().Add(-8 * 24 * time.Hour).UTC().Format(time.RFC3339)
	plan := g.api("POST", "/v1/followups", keyA, `{"contact":{"phone":"+14155550178","locale":"en"},"anchor":"`+anchor+`",
		"past_due":"send_now","steps":[{"offset":"P7D","channel":"sms","questionnaire":"post_discharge"},
		{"offset":"P30D","channel":"sms","questionnaire":"phq9"}]}`)
	id := plan["id"].(string)
	staff := g.signIn("staff@clinic-a.test")
	var body string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, body = staff.get("/console/plans/" + id); strings.Contains(body, `href="/console/questionnaire-responses/qr_`) {
			break
		}
	}
	if !strings.Contains(body, `href="/console/questionnaire-responses/qr_`) || !strings.Contains(body, ">post_discharge</a>") {
		t.Fatalf("the started step does not link to its response:\n%s", body)
	}
	if !strings.Contains(body, "<td>phq9</td>") {
		t.Fatalf("the step not yet due does not name its questionnaire:\n%s", body)
	}
}
