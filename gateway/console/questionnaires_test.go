package console_test

import (
	"strings"
	"testing"
)

// TestQuestionnairesShowTheirResponsesScoresAndRisks: the built-in
// questionnaires are listed; a PHQ-9 sent to a patient who answers its
// first question shows on the questionnaire's page (masked, in progress,
// counted in the response rate) and on the response's page with the
// question, the answer and its points; another clinic cannot read it.
func TestQuestionnairesShowTheirResponsesScoresAndRisks(t *testing.T) {
	g := consoleGateway(t)
	const phone = "+14155550191"
	started := g.api("POST", "/v1/questionnaires/phq9/responses", keyA, `{"channel":"sms","to":{"phone":"`+phone+`"}}`)
	id := started["id"].(string)
	eventually(t, "the first question reached the patient", func() bool { return g.sim.MessagesTo(phone) > 0 })
	g.inboundSMS(phone, "2")
	eventually(t, "the answer filed", func() bool {
		r := g.api("GET", "/v1/questionnaire-responses/"+id, keyA, "")
		list, _ := r["answers"].([]any)
		return len(list) == 1
	})

	viewer := g.signIn("viewer@clinic-a.test")
	if resp, body := viewer.get("/console/questionnaires"); resp.StatusCode != 200 || !strings.Contains(body, `id="q-phq9"`) ||
		!strings.Contains(body, `id="q-post_discharge"`) {
		t.Fatalf("the questionnaires = %d:\n%s", resp.StatusCode, body)
	}
	resp, body := viewer.get("/console/questionnaires/phq9")
	if resp.StatusCode != 200 || !strings.Contains(body, `id="r-`+id+`"`) || strings.Contains(body, "4155550191") ||
		!strings.Contains(body, `id="response-rate"`) {
		t.Fatalf("the PHQ-9's page = %d:\n%s", resp.StatusCode, body)
	}
	resp, body = viewer.get("/console/questionnaire-responses/" + id)
	if resp.StatusCode != 200 || !strings.Contains(body, `id="answers"`) || !strings.Contains(body, "2 · ") || strings.Contains(body, "4155550191") {
		t.Fatalf("the response's page = %d:\n%s", resp.StatusCode, body)
	}
	other := g.signIn("lead@clinic-b.test")
	if resp, _ := other.get("/console/questionnaire-responses/" + id); resp.StatusCode != 404 {
		t.Fatalf("clinic-b reads clinic-a's response: %d", resp.StatusCode)
	}
	if _, body := other.get("/console/questionnaires/phq9"); strings.Contains(body, id) {
		t.Fatal("clinic-b sees clinic-a's response in its list")
	}
	if resp, _ := viewer.get("/console/questionnaires/no_such_survey"); resp.StatusCode != 404 {
		t.Fatalf("an unknown questionnaire = %d", resp.StatusCode)
	}
}
