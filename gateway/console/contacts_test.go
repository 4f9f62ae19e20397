package console_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/patientmsg/gateway/internal/consent"
)

const (
	janePhone = "+14155550111"
	janeEmail = "jane.doe@example.org"
)

// contactsGateway is a console gateway where clinic-a's contact mrn-1 has
// a phone and an email address, and replied STOP from the phone.
func contactsGateway(t *testing.T) *gw {
	g := consoleGateway(t)
	g.api("PUT", "/v1/contacts/mrn-1", keyA, `{"phone":"`+janePhone+`","email":"`+janeEmail+`"}`)
	if _, err := g.svc.Consent.Set(t.Context(), "clinic-a", consent.Identity{Kind: consent.Phone, Value: janePhone}, true,
		consent.SourceKeyword, "inbound message SM0001"); err != nil {
		t.Fatal(err)
	}
	return g
}

// esc is s as the pages write it (html/template writes + as &#43;).
func esc(s string) string { return strings.ReplaceAll(s, "+", "&#43;") }

func lookup(by, q string) string {
	return "/console/contacts?" + url.Values{"by": {by}, "q": {q}}.Encode()
}

func phoneOptedOut(t *testing.T, g *gw, tenant string) bool {
	t.Helper()
	out, err := g.svc.Consent.OptedOut(t.Context(), tenant, consent.Identity{Kind: consent.Phone, Value: janePhone})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestALookupShowsTheContactItsConsentAndItsHistory(t *testing.T) {
	g := contactsGateway(t)
	viewer := g.signIn("viewer@clinic-a.test")
	resp, body := viewer.get(lookup("phone", janePhone))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("lookup = %d\n%s", resp.StatusCode, body)
	}
	for _, want := range []string{
		"Contact mrn-1",
		esc(janePhone),     // the address looked up is shown
		"j•••@example.org", // the others masked
		`id="opted-out"`, "OPTED OUT",
		`id="history-phone"`, "inbound message SM0001", "patient&#39;s reply (STOP / START)",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if strings.Contains(body, janeEmail) {
		t.Error("the page shows an address that was not looked up in clear")
	}
	if strings.Contains(body, `id="opt-in"`) {
		t.Error("the page shows a viewer the opt-in form")
	}
	if strings.Contains(body, "‹missing:") {
		t.Error("the page has a string missing from its catalogue")
	}
	// By email (the domain in any case): that address is shown, the phone
	// masked.
	_, body = viewer.get(lookup("email", "jane.doe@EXAMPLE.org"))
	if !strings.Contains(body, janeEmail) || strings.Contains(body, esc(janePhone)) || !strings.Contains(body, esc("+1••••••••11")) {
		t.Errorf("the lookup by email shows the wrong addresses:\n%s", body)
	}
	// By id: everything masked.
	_, body = viewer.get("/console/contacts/mrn-1")
	if strings.Contains(body, janeEmail) || strings.Contains(body, esc(janePhone)) || !strings.Contains(body, "OPTED OUT") {
		t.Errorf("the contact's page shows an address in clear:\n%s", body)
	}
	for _, c := range []struct{ name, path string }{
		{"an unknown address", lookup("phone", "+14155550199")},
		{"an unknown contact", "/console/contacts/mrn-404"},
	} {
		if resp, _ := viewer.get(c.path); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s = %d, want 404", c.name, resp.StatusCode)
		}
	}
	if resp, body := viewer.get(lookup("phone", "not a number")); resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, "not a phone number") {
		t.Errorf("a lookup of a bad number = %d", resp.StatusCode)
	}
}

func TestStaffRecordAnOptInWithItsEvidenceAndItJoinsTheHistory(t *testing.T) {
	g := contactsGateway(t)
	staff := g.signIn("staff@clinic-a.test")
	_, body := staff.get(lookup("phone", janePhone))
	if !strings.Contains(body, `id="opt-in"`) {
		t.Fatalf("the page does not show staff the opt-in form:\n%s", body)
	}
	if resp, body := staff.post("/console/contacts/mrn-1/consent", staff.csrf, "identity", "phone", "evidence", " "); resp.StatusCode != http.StatusUnprocessableEntity ||
		!strings.Contains(body, "evidence is required") {
		t.Fatalf("an opt-in without evidence = %d", resp.StatusCode)
	}
	if !phoneOptedOut(t, g, "clinic-a") {
		t.Fatal("an opt-in without evidence was recorded")
	}
	resp, _ := staff.post("/console/contacts/mrn-1/consent", staff.csrf, "identity", "phone", "evidence", "signed form 2026-03-01",
		"by", "phone", "q", janePhone)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the opt-in = %d", resp.StatusCode)
	}
	if phoneOptedOut(t, g, "clinic-a") {
		t.Fatal("the opt-in was not recorded in the consent ledger")
	}
	resp, body = staff.get(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the page after the opt-in = %d", resp.StatusCode)
	}
	for _, want := range []string{`id="recorded"`, "signed form 2026-03-01 (recorded in the console by staff of clinic-a &lt;staff@clinic-a.test&gt;)",
		"inbound message SM0001", esc(janePhone)} {
		if !strings.Contains(body, want) {
			t.Errorf("the page after the opt-in lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, `id="opted-out"`) {
		t.Error("the contact is still shown as opted out")
	}
	// The API reads the same history.
	out := g.api("GET", "/v1/contacts/mrn-1/consent", keyA, "")
	ids := out["identities"].([]any)
	var changes []any
	for _, x := range ids {
		if st := x.(map[string]any); st["identity"].(map[string]any)["kind"] == "phone" {
			changes = st["changes"].([]any)
		}
	}
	if len(changes) != 2 || changes[1].(map[string]any)["source"] != "api" {
		t.Fatalf("the API shows the phone's history as %v", changes)
	}
}

func TestAViewerCannotRecordConsentAndAFormWithoutItsTokenIsRefused(t *testing.T) {
	g := contactsGateway(t)
	viewer := g.signIn("viewer@clinic-a.test")
	staff := g.signIn("staff@clinic-a.test")
	if resp, body := viewer.post("/console/contacts/mrn-1/consent", viewer.csrf, "evidence", "signed form 2026-03-01"); resp.StatusCode != http.StatusForbidden ||
		!strings.Contains(body, "Your role does not allow this") {
		t.Errorf("a viewer's opt-in = %d, want 403", resp.StatusCode)
	}
	for _, token := range []string{"", viewer.csrf} {
		if resp, body := staff.post("/console/contacts/mrn-1/consent", token, "evidence", "signed form 2026-03-01"); resp.StatusCode != http.StatusForbidden ||
			!strings.Contains(body, "did not come from this console") {
			t.Errorf("an opt-in with token %q = %d, want 403", token, resp.StatusCode)
		}
	}
	if !phoneOptedOut(t, g, "clinic-a") {
		t.Fatal("a refused opt-in was recorded")
	}
}

func TestAnotherTenantsContactIsNotFound(t *testing.T) {
	g := contactsGateway(t)
	theirs := g.signIn("lead@clinic-b.test")
	for _, path := range []string{lookup("phone", janePhone), lookup("email", janeEmail), "/console/contacts/mrn-1"} {
		if resp, body := theirs.get(path); resp.StatusCode != http.StatusNotFound || strings.Contains(body, "mrn-1") || strings.Contains(body, "SM0001") {
			t.Errorf("GET %s = %d, want 404\n%s", path, resp.StatusCode, body)
		}
	}
	if resp, _ := theirs.post("/console/contacts/mrn-1/consent", theirs.csrf, "evidence", "signed form 2026-03-01"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("an opt-in of another tenant's contact = %d, want 404", resp.StatusCode)
	}
	if !phoneOptedOut(t, g, "clinic-a") {
		t.Fatal("another tenant's opt-in was recorded")
	}
}
