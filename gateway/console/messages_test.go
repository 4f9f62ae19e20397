package console_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestTheMessageLogFindsAMessageAndShowsItsHistoryMasked(t *testing.T) {
	g := consoleGateway(t)
	const body = `{"channel":"sms","to":{"phone":"+14155550100"},"body":"Day 7: how is the wound healing?"}`
	ours := g.api("POST", "/v1/messages", keyA, body)["id"].(string)
	theirs := g.api("POST", "/v1/messages", keyB, body)["id"].(string)
	staff := g.signIn("staff@clinic-a.test")
	viewer := g.signIn("viewer@clinic-a.test")
	private := func(t *testing.T, page string) {
		t.Helper()
		for _, secret := range []string{"+14155550100", "4155550100", "wound"} {
			if strings.Contains(page, secret) {
				t.Errorf("the page shows %q", secret)
			}
		}
		if strings.Contains(page, "‹missing:") {
			t.Error("the page has a string missing from its catalogue")
		}
	}

	t.Run("the log lists the tenant's messages with the recipient masked", func(t *testing.T) {
		resp, page := staff.get("/console/messages")
		if resp.StatusCode != http.StatusOK || !strings.Contains(page, `href="/console/messages/`+ours+`"`) || !strings.Contains(page, "&#43;1••••••••00") {
			t.Fatalf("GET /console/messages = %d\n%s", resp.StatusCode, page)
		}
		if strings.Contains(page, theirs) {
			t.Error("the log lists another tenant's message")
		}
		if !strings.Contains(page, `<label for="f-to">`) || !strings.Contains(page, `href="/console/messages" aria-current="page"`) {
			t.Error("the filter form's controls are not labelled, or the navigation does not mark the log")
		}
		private(t, page)
	})
	t.Run("a viewer finds it by the patient's number written their own way", func(t *testing.T) {
		resp, page := viewer.get("/console/messages?" + url.Values{"to": {"+1 (415) 555-0100"}, "channel": {"sms"}}.Encode())
		if resp.StatusCode != http.StatusOK || !strings.Contains(page, ours) {
			t.Fatalf("= %d\n%s", resp.StatusCode, page)
		}
		private(t, page)
	})
	t.Run("filters that match nothing say so", func(t *testing.T) {
		_, page := staff.get("/console/messages?status=delivered&since=2000-01-01&until=2000-01-02")
		if strings.Contains(page, ours) || !strings.Contains(page, "No message matches.") {
			t.Fatalf("\n%s", page)
		}
	})
	t.Run("a filter that cannot be read is a 400 that says why", func(t *testing.T) {
		resp, page := staff.get("/console/messages?to=415+555+0100&until=tomorrow")
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(page, "its country code, an email address or a WeChat openid") ||
			!strings.Contains(page, "Give a date as year-month-day") || !strings.Contains(page, `aria-invalid="true"`) {
			t.Fatalf("= %d\n%s", resp.StatusCode, page)
		}
	})
	t.Run("the message's page shows its history", func(t *testing.T) {
		var page string
		eventually(t, "the history shows the provider accepted it", func() bool {
			var resp *http.Response
			resp, page = viewer.get("/console/messages/" + strings.ToLower(ours))
			return resp.StatusCode == http.StatusOK && strings.Contains(page, "accepted by provider")
		})
		if !strings.Contains(page, `<ol id="history"`) || strings.Count(page, "<li><time>") < 3 || !strings.Contains(page, "&#43;1••••••••00") {
			t.Fatalf("the history is not queued, sending, sent:\n%s", page)
		}
		private(t, page)
	})
	t.Run("another tenant's message is not found", func(t *testing.T) {
		for _, path := range []string{"/console/messages/" + theirs, "/console/messages/not-an-id"} {
			if resp, page := staff.get(path); resp.StatusCode != http.StatusNotFound || strings.Contains(page, theirs+"</h1>") {
				t.Errorf("GET %s = %d", path, resp.StatusCode)
			}
		}
		if resp, _ := g.signIn("lead@clinic-b.test").get("/console/messages/" + theirs); resp.StatusCode != http.StatusOK {
			t.Errorf("its own tenant's lead = %d", resp.StatusCode)
		}
	})
}

// TestTheMessageLogFindsAMessageByIdAndByMetadata: an id goes straight to
// the message's page (a malformed one is refused on the form), and a
// metadata key and value find a follow-up plan's messages only.
func TestTheMessageLogFindsAMessageByIdAndByMetadata(t *testing.T) {
	g := consoleGateway(t)
	staff := g.signIn("staff@clinic-a.test")
	plan := g.api("POST", "/v1/followups", keyA, `{"contact":{"phone":"+14155550181","timezone":"America/New_York","locale":"en"},
		"anchor":"`+time.Now().UTC().Format(time.RFC3339)+`","steps":[{"offset":"P1D","channel":"sms","template":"post_discharge_day1",
		"vars":{"clinic_name":"Riverside Clinic","clinic_phone":"555-0100"}}]}`)
	step := plan["steps"].([]any)[0].(map[string]any)["message_id"].(string)
	other := g.api("POST", "/v1/messages", keyA, `{"channel":"sms","to":{"phone":"+14155550182"},"body":"Your results are ready."}`)["id"].(string)

	resp, _ := staff.get("/console/messages?id=" + strings.ToLower(step))
	if resp.StatusCode != 303 || resp.Header.Get("Location") != "/console/messages/"+step {
		t.Fatalf("an id = %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, body := staff.get("/console/messages?id=yesterday"); resp.StatusCode != 400 || !strings.Contains(body, `id="f-id-error"`) {
		t.Fatalf("a malformed id = %d:\n%s", resp.StatusCode, body)
	}
	resp, body := staff.get("/console/messages?meta_key=followup_id&meta_value=" + plan["id"].(string))
	if resp.StatusCode != 200 || !strings.Contains(body, step) || strings.Contains(body, other) {
		t.Fatalf("the plan's messages = %d:\n%s", resp.StatusCode, body)
	}
	if resp, body := staff.get("/console/messages?meta_value=fu_1"); resp.StatusCode != 400 || !strings.Contains(body, `id="f-meta-error"`) {
		t.Fatalf("a value without its key = %d:\n%s", resp.StatusCode, body)
	}
}
