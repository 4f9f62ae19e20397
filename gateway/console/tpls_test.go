package console_test

import (
	"strings"
	"testing"
)

// TestTemplatesArePreviewedWithThePHICheckAndEditedByLeads: every account
// sees the templates and previews one in each channel; a lead saves the
// clinic's own template, whose preview shows a PHI variable refused on
// SMS; a document that does not parse is refused with its problem shown;
// staff and viewers cannot save, and another clinic does not see it.
func TestTemplatesArePreviewedWithThePHICheckAndEditedByLeads(t *testing.T) {
	g := consoleGateway(t)
	viewer := g.signIn("viewer@clinic-a.test")
	resp, body := viewer.get("/console/templates")
	if resp.StatusCode != 200 || !strings.Contains(body, `id="tpl-medication_reminder"`) {
		t.Fatalf("the templates = %d:\n%s", resp.StatusCode, body)
	}
	resp, body = viewer.get("/console/templates/medication_reminder")
	if resp.StatusCode != 200 || !strings.Contains(body, `id="preview-sms"`) || !strings.Contains(body, `id="preview-email"`) ||
		!strings.Contains(body, "metformin 500 mg") || strings.Contains(body, `id="edit-form"`) {
		t.Fatalf("the template's page for a viewer = %d:\n%s", resp.StatusCode, body)
	}
	resp, body = viewer.post("/console/templates/medication_reminder/preview", viewer.csrf, "locale", "en",
		"var_clinic_name", "Lakeside <b>Clinic</b>", "var_clinic_phone", "555-0199")
	if resp.StatusCode != 200 || !strings.Contains(body, "Lakeside &lt;b&gt;Clinic&lt;/b&gt;") || !strings.Contains(body, `id="missing"`) {
		t.Fatalf("a preview with the clinic's values = %d:\n%s", resp.StatusCode, body)
	}

	doc := `{"description":"Medication by SMS","variables":[{"name":"medication_name","description":"The medication","example":"metformin 500 mg","phi":true}],
	  "locales":{"en":{"sms":"Time to take your {{medication_name}}. Reply STOP to opt out."}}}`
	for _, who := range []string{"viewer@clinic-a.test", "staff@clinic-a.test"} {
		a := g.signIn(who)
		if resp, _ := a.post("/console/templates/medication_reminder", a.csrf, "save_as", "med_sms", "doc", doc); resp.StatusCode != 403 {
			t.Fatalf("%s saved a template: %d", who, resp.StatusCode)
		}
	}
	lead := g.signIn("lead@clinic-a.test")
	if _, body := lead.get("/console/templates/medication_reminder"); !strings.Contains(body, `id="edit-form"`) {
		t.Fatalf("a lead sees no edit form:\n%s", body)
	}
	resp, body = lead.post("/console/templates/medication_reminder", lead.csrf, "save_as", "med_sms", "doc", `{"locales":`)
	if resp.StatusCode != 422 || !strings.Contains(body, `id="doc-error"`) {
		t.Fatalf("a broken document = %d:\n%s", resp.StatusCode, body)
	}
	resp, body = lead.post("/console/templates/medication_reminder", lead.csrf, "save_as", "Med SMS", "doc", doc)
	if resp.StatusCode != 422 || !strings.Contains(body, `id="doc-error"`) {
		t.Fatalf("a bad name = %d:\n%s", resp.StatusCode, body)
	}
	resp, _ = lead.post("/console/templates/medication_reminder", lead.csrf, "save_as", "med_sms", "doc", doc)
	if resp.StatusCode != 303 || resp.Header.Get("Location") != "/console/templates/med_sms?saved=1" {
		t.Fatalf("saving = %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, body = lead.get("/console/templates/med_sms?saved=1")
	if resp.StatusCode != 200 || !strings.Contains(body, `id="saved"`) || !strings.Contains(body, `id="phi-findings"`) ||
		!strings.Contains(body, "medication_name is health information: refused on SMS") {
		t.Fatalf("the saved template's page = %d:\n%s", resp.StatusCode, body)
	}
	if got := g.api("GET", "/v1/templates/med_sms", keyA, ""); got["source"] != "tenant" {
		t.Fatalf("the API reads the saved template as %v", got)
	}
	other := g.signIn("lead@clinic-b.test")
	if resp, _ := other.get("/console/templates/med_sms"); resp.StatusCode != 404 {
		t.Fatalf("clinic-b reads clinic-a's template: %d", resp.StatusCode)
	}
}
