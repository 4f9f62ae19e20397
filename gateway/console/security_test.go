package console_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/users"
)

// consoleGateway is a gateway with a lead, a staff member and a viewer in
// clinic-a, and a lead in clinic-b.
func consoleGateway(t *testing.T, mutate ...func(*config.Config)) *gw {
	g := startGateway(t, mutate...)
	g.addUser("clinic-a", "lead@clinic-a.test", users.RoleLead)
	g.addUser("clinic-a", "staff@clinic-a.test", users.RoleStaff)
	g.addUser("clinic-a", "viewer@clinic-a.test", users.RoleViewer)
	g.addUser("clinic-b", "lead@clinic-b.test", users.RoleLead)
	return g
}

func TestEveryConsoleAnswerCarriesAStrictContentSecurityPolicy(t *testing.T) {
	g := consoleGateway(t)
	lead := g.signIn("lead@clinic-a.test")
	viewer := g.signIn("viewer@clinic-a.test")
	bc := g.broadcast(keyA)
	cases := []struct {
		name   string
		as     *account
		method string
		path   string
		status int
	}{
		{"the sign-in page", nil, "GET", "/console/signin", 200},
		{"a page before sign-in (redirect)", nil, "GET", "/console/inbox", 303},
		{"the broadcasts", lead, "GET", "/console/broadcasts", 200},
		{"the composer", lead, "GET", "/console/broadcasts/new", 200},
		{"a roster", lead, "GET", "/console/broadcasts/" + bc, 200},
		{"the escalations", lead, "GET", "/console/escalations", 200},
		{"the inbox", lead, "GET", "/console/inbox", 200},
		{"the message log", lead, "GET", "/console/messages", 200},
		{"the contacts", lead, "GET", "/console/contacts", 200},
		{"the senders", lead, "GET", "/console/senders", 200},
		{"the follow-up plans", lead, "GET", "/console/plans", 200},
		{"the templates", lead, "GET", "/console/templates", 200},
		{"the incidents", lead, "GET", "/console/incidents", 200},
		{"the questionnaires", lead, "GET", "/console/questionnaires", 200},
		{"a questionnaire", lead, "GET", "/console/questionnaires/phq9", 200},
		{"a questionnaire, filtered", lead, "GET", "/console/questionnaires/phq9?state=completed&risk_level=high", 200},
		{"a patient's questionnaires", lead, "GET", "/console/questionnaire-responses?to=%2B14155550191&channel=sms", 200},
		{"a template", lead, "GET", "/console/templates/appointment_reminder", 200},
		{"the stylesheet", nil, "GET", "/console/static/console.css", 200},
		{"htmx", nil, "GET", "/console/static/htmx.min.js", 200},
		{"a page that does not exist", lead, "GET", "/console/nothing-here", 404},
		{"a refused page", viewer, "GET", "/console/broadcasts/new", 403},
		{"a refused form", viewer, "POST", "/console/broadcasts/" + bc + "/cancel", 403},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var resp *http.Response
			var body string
			switch {
			case c.as == nil:
				resp, body = g.do(c.method, c.path, "", nil, "")
			case c.method == "GET":
				resp, body = c.as.get(c.path)
			default:
				resp, body = c.as.post(c.path, c.as.csrf)
			}
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d\n%s", resp.StatusCode, c.status, body)
			}
			csp := resp.Header.Get("Content-Security-Policy")
			for _, want := range []string{"default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "form-action 'self'"} {
				if !strings.Contains(csp, want) {
					t.Errorf("Content-Security-Policy %q lacks %s", csp, want)
				}
			}
			if strings.Contains(csp, "unsafe") {
				t.Errorf("Content-Security-Policy allows something unsafe: %q", csp)
			}
			if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Referrer-Policy") != "no-referrer" {
				t.Errorf("headers %v", resp.Header)
			}
			if strings.Contains(resp.Header.Get("Content-Type"), "html") {
				if strings.Contains(body, "style=") || strings.Contains(body, "<script>") || strings.Contains(body, " on") && strings.Contains(body, "onclick") {
					t.Errorf("the page has inline style or script")
				}
				if strings.Contains(body, "‹missing:") {
					t.Errorf("the page has a string missing from its catalogue: %s", body[strings.Index(body, "‹missing:"):][:60])
				}
			}
		})
	}
}

func TestAFormPostedWithoutItsCSRFTokenIsRefused(t *testing.T) {
	g := consoleGateway(t)
	lead := g.signIn("lead@clinic-a.test")
	bc := g.broadcast(keyA)
	other := g.signIn("staff@clinic-a.test")
	for _, c := range []struct{ name, token string }{
		{"no token", ""},
		{"another session's token", other.csrf},
		{"a made-up token", strings.Repeat("A", 43)},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, path := range []string{"/console/broadcasts/" + bc + "/cancel", "/console/broadcasts/preview", "/console/signout"} {
				if resp, body := lead.post(path, c.token); resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "did not come from this console") {
					t.Fatalf("POST %s = %d\n%s", path, resp.StatusCode, body)
				}
			}
		})
	}
	if sum, err := g.svc.Broadcast.Store.Get(t.Context(), "clinic-a", bc); err != nil || sum.State != "active" {
		t.Fatalf("a refused cancel canceled the broadcast: %v %v", sum, err)
	}
	// Signing in needs the token of the sign-in page's own cookie.
	resp, _ := g.do("POST", "/console/signin", "", strings.NewReader("email=lead%40clinic-a.test&password=a+long+enough+password"), "application/x-www-form-urlencoded")
	if resp.StatusCode != http.StatusForbidden || cookieOf(resp, "gw_session") != "" {
		t.Fatalf("sign-in without the form's token = %d", resp.StatusCode)
	}
}

func TestAViewerCanReadButNotChangeAnything(t *testing.T) {
	g := consoleGateway(t)
	bc := g.broadcast(keyA)
	viewer := g.signIn("viewer@clinic-a.test")
	staff := g.signIn("staff@clinic-a.test")
	for _, path := range []string{"/console/broadcasts", "/console/broadcasts/" + bc, "/console/escalations", "/console/inbox", "/console/messages", "/console/broadcasts/" + bc + "/report.csv",
		"/console/contacts", "/console/senders", "/console/opt-outs", "/console/questionnaires/phq9?state=completed",
		"/console/questionnaire-responses?to=%2B14155550191&channel=sms"} {
		if resp, _ := viewer.get(path); resp.StatusCode != 200 {
			t.Errorf("viewer GET %s = %d", path, resp.StatusCode)
		}
	}
	refused := []struct {
		who  *account
		path string
	}{
		{viewer, "/console/broadcasts"},
		{viewer, "/console/broadcasts/preview"},
		{viewer, "/console/broadcasts/new"},
		{viewer, "/console/broadcasts/" + bc + "/cancel"},
		{viewer, "/console/escalations/01JD3R8K2M4N6P8Q0S2T4V6W8X/ack"},
		{staff, "/console/broadcasts"},
		{staff, "/console/broadcasts/" + bc + "/cancel"},
	}
	for _, r := range refused {
		if resp, body := r.who.post(r.path, r.who.csrf, "audience", "aud_x", "body_en", "hello", "channel_1", "sms"); resp.StatusCode != http.StatusForbidden ||
			!strings.Contains(body, "Your role does not allow this") {
			t.Errorf("POST %s = %d, want 403", r.path, resp.StatusCode)
		}
	}
	if resp, _ := viewer.upload("phone\n+14155550101\n"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("a viewer's upload = %d, want 403", resp.StatusCode)
	}
	// The buttons they may not use are not shown either.
	if _, body := viewer.get("/console/broadcasts/" + bc); strings.Contains(body, "/cancel") {
		t.Error("the roster shows a viewer the cancel button")
	}
	if resp, _ := staff.post("/console/escalations/01JD3R8K2M4N6P8Q0S2T4V6W8X/ack", staff.csrf); resp.StatusCode != http.StatusNotFound {
		t.Errorf("staff acknowledging an unknown escalation = %d, want 404 (allowed, nothing there)", resp.StatusCode)
	}
}

func TestAnotherTenantsBroadcastIsNotFound(t *testing.T) {
	g := consoleGateway(t)
	theirs := g.broadcast(keyB)
	lead := g.signIn("lead@clinic-a.test")
	for _, path := range []string{"/console/broadcasts/" + theirs, "/console/broadcasts/" + theirs + "/live", "/console/broadcasts/" + theirs + "/report.csv"} {
		if resp, body := lead.get(path); resp.StatusCode != http.StatusNotFound || strings.Contains(body, "Flood") {
			t.Errorf("GET %s = %d, want 404", path, resp.StatusCode)
		}
	}
	if resp, _ := lead.post("/console/broadcasts/"+theirs+"/cancel", lead.csrf); resp.StatusCode != http.StatusNotFound {
		t.Errorf("cancel of another tenant's broadcast = %d, want 404", resp.StatusCode)
	}
	if _, body := lead.get("/console/broadcasts"); strings.Contains(body, theirs) {
		t.Error("the list shows another tenant's broadcast")
	}
	if sum, _ := g.svc.Broadcast.Store.Get(t.Context(), "clinic-b", theirs); sum.State != "active" {
		t.Fatal("another tenant's broadcast was canceled")
	}
	// Their own lead sees it.
	if resp, _ := g.signIn("lead@clinic-b.test").get("/console/broadcasts/" + theirs); resp.StatusCode != 200 {
		t.Fatalf("the owner's lead = %d", resp.StatusCode)
	}
}

func TestAPatientsReplyContainingScriptIsShownAsText(t *testing.T) {
	g := consoleGateway(t)
	g.api("POST", "/v1/messages", keyA, `{"channel":"sms","to":{"phone":"+14155550123"},"body":"How are you?",
		"expect_reply":{"options":{"1":"better","2":"worse"}}}`)
	eventually(t, "the message is sent", func() bool { return g.sim.MessagesTo("+14155550123") > 0 })
	evil := `<script>alert("x")</script><img src=x onerror=alert(1)>`
	g.inboundSMS("+14155550123", evil)
	lead := g.signIn("lead@clinic-a.test")
	var body string
	eventually(t, "the reply reaches the inbox", func() bool {
		_, body = lead.get("/console/inbox")
		return strings.Contains(body, "&lt;script&gt;")
	})
	if strings.Contains(body, "<script>alert") || strings.Contains(body, "<img src=x") {
		t.Fatalf("the reply is rendered as markup:\n%s", body)
	}
	if !strings.Contains(body, "How are you?") {
		t.Fatal("the inbox does not show the question the reply answers")
	}
}

func TestTheConsolesUploadHasTheUploadLimitAndOtherFormsTheRequestLimit(t *testing.T) {
	g := consoleGateway(t, func(c *config.Config) { c.MaxUploadBytes = 8192; c.MaxRequestBytes = 4096 })
	lead := g.signIn("lead@clinic-a.test")
	big := "phone\n" + strings.Repeat("+14155550101\n", 700)
	if resp, body := lead.upload(big); resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(resp.Header.Get("Content-Type"), "html") {
		t.Fatalf("an upload over GATEWAY_MAX_UPLOAD_BYTES = %d %s\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	if resp, _ := lead.upload("phone\n" + strings.Repeat("+14155550101\n", 400)); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("an upload within the upload limit and over the request limit = %d", resp.StatusCode)
	}
	if resp, _ := lead.post("/console/broadcasts/preview", lead.csrf, "body_en", strings.Repeat("x", 5000)); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("a form over GATEWAY_MAX_REQUEST_BYTES = %d", resp.StatusCode)
	}
}

func TestAnAPIErrorIsStillProblemJSON(t *testing.T) {
	g := consoleGateway(t)
	resp, body := g.do("GET", "/v1/broadcasts/bc_nothing", "", nil, "")
	if resp.StatusCode != 401 || resp.Header.Get("Content-Type") != "application/problem+json" || !strings.Contains(body, "/problems/unauthorized") {
		t.Fatalf("GET /v1 without a key = %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
}
