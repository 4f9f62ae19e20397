package console_test

import (
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// moodCheck is a one-question questionnaire: a reply completes it, scored
// and banded; its title has markup that pages must escape.
const moodCheck = `{"title":{"en":"Mood <i>check</i>"},"code":"MD",
 "questions":[{"id":"mood","type":"choice","text":{"en":"Your mood today? 0 good, 1 fair, 3 bad"},
  "options":[{"key":"0","text":{"en":"Good"},"points":0},{"key":"1","text":{"en":"Fair"},"points":1},{"key":"3","text":{"en":"Bad"},"points":3}]}],
 "bands":[{"min":0,"label":"fine"},{"min":2,"label":"low"}],
 "risk":[{"name":"low_mood","level":"moderate","total_at_least":3}]}`

// completeMood sends the mood check to a phone, answers it and waits
// until the response is completed; it returns the response's id.
func (g *gw) completeMood(phone, reply string) string {
	g.t.Helper()
	sent := g.sim.MessagesTo(phone)
	id := g.api("POST", "/v1/questionnaires/mood/responses", keyA, `{"channel":"sms","to":{"phone":"`+phone+`"}}`)["id"].(string)
	eventually(g.t, "the mood question", func() bool { return g.sim.MessagesTo(phone) > sent })
	g.inboundSMS(phone, reply)
	eventually(g.t, "the response completed", func() bool {
		return g.api("GET", "/v1/questionnaire-responses/"+id, keyA, "")["state"] == "completed"
	})
	return id
}

var (
	svgPoint    = regexp.MustCompile(`<circle class="point"`)
	lookupField = regexp.MustCompile(`<input id="h-to" name="to" type="search" value="[^"]*"`)
)

// TestAPatientsScoresAreChartedOverTime: a patient's history, opened by
// address, from a response or from the contact, charts one point per
// completed response with the same figures in a table, never shows the
// address in clear outside the lookup field, escapes the questionnaire's
// title, and is another clinic's to read only for its own patients.
func TestAPatientsScoresAreChartedOverTime(t *testing.T) {
	g := consoleGateway(t)
	const jane = "+14155550191"
	g.api("PUT", "/v1/questionnaires/mood", keyA, moodCheck)
	g.api("PUT", "/v1/contacts/mrn-7", keyA, `{"phone":"`+jane+`"}`)
	first := g.completeMood(jane, "0")
	second := g.completeMood(jane, "3")
	open := g.api("POST", "/v1/questionnaires/phq9/responses", keyA, `{"channel":"sms","to":{"phone":"`+jane+`"}}`)["id"].(string)

	viewer := g.signIn("viewer@clinic-a.test")
	byAddress := "/console/questionnaire-responses?" + url.Values{"to": {jane}, "channel": {"sms"}}.Encode()
	for _, path := range []string{byAddress, "/console/questionnaire-responses?response=" + first, "/console/questionnaire-responses?contact=mrn-7"} {
		resp, body := viewer.get(path)
		if resp.StatusCode != 200 {
			t.Fatalf("%s = %d\n%s", path, resp.StatusCode, body)
		}
		if n := len(svgPoint.FindAllString(body, -1)); n != 2 {
			t.Errorf("%s: %d points on the chart, want one per completed response (2)\n%s", path, n, body)
		}
		if !strings.Contains(body, `id="scores-table"`) || !strings.Contains(body, `id="r-`+open+`"`) ||
			!strings.Contains(body, `id="r-`+second+`"`) || !strings.Contains(body, "fine") || !strings.Contains(body, "· low") {
			t.Errorf("%s: the table, the responses or the bands are missing\n%s", path, body)
		}
		if strings.Contains(body, "<i>check</i>") || !strings.Contains(body, "Mood &lt;i&gt;check&lt;/i&gt;") {
			t.Errorf("%s: the questionnaire's title is not escaped\n%s", path, body)
		}
		// The address typed into the lookup is echoed into its field only.
		outside := lookupField.ReplaceAllString(body, "")
		if strings.Contains(outside, "4155550191") || !strings.Contains(body, "••••••••91") {
			t.Errorf("%s: the address in clear, or not masked\n%s", path, body)
		}
		title := body[strings.Index(body, "<title>"):strings.Index(body, "</title>")]
		if strings.Contains(title, "0191") {
			t.Errorf("%s: the page title names the address: %s", path, title)
		}
	}
	// The links from the response's page and the contact's.
	if _, body := viewer.get("/console/questionnaire-responses/" + first); !strings.Contains(body, `href="/console/questionnaire-responses?response=`+first+`"`) {
		t.Errorf("the response's page does not link to the patient's history\n%s", body)
	}
	if _, body := viewer.get("/console/contacts/mrn-7"); !strings.Contains(body, `href="/console/questionnaire-responses?contact=mrn-7"`) {
		t.Errorf("the contact's page does not link to the patient's history\n%s", body)
	}

	// Addresses that do not read, or not on their channel.
	for _, q := range []url.Values{{"to": {"415 555 0191"}, "channel": {"sms"}}, {"to": {jane}, "channel": {"wechat"}}, {"to": {jane}, "channel": {"fax"}}} {
		if resp, body := viewer.get("/console/questionnaire-responses?" + q.Encode()); resp.StatusCode != 422 || !strings.Contains(body, `id="refused"`) {
			t.Errorf("%v = %d, want 422 with the form's error\n%s", q, resp.StatusCode, body)
		}
	}
	if resp, _ := g.do("GET", byAddress, "", nil, ""); resp.StatusCode != 303 {
		t.Errorf("signed out: %d, want the sign-in redirect", resp.StatusCode)
	}

	// Another clinic: not its response, not its contact, none of its answers.
	other := g.signIn("lead@clinic-b.test")
	for _, path := range []string{"/console/questionnaire-responses?response=" + first, "/console/questionnaire-responses?contact=mrn-7"} {
		if resp, _ := other.get(path); resp.StatusCode != 404 {
			t.Errorf("clinic-b: %s = %d, want 404", path, resp.StatusCode)
		}
	}
	if resp, body := other.get(byAddress); resp.StatusCode != 200 || strings.Contains(body, first) || svgPoint.MatchString(body) ||
		!strings.Contains(body, `id="no-responses"`) {
		t.Errorf("clinic-b reads clinic-a's patient: %d\n%s", resp.StatusCode, body)
	}
}

// TestAQuestionnairesResponsesAreFilteredByAPlainForm: the questionnaire's
// page filters by state, risk level and patient through a GET form, and
// refuses a value it cannot read.
func TestAQuestionnairesResponsesAreFilteredByAPlainForm(t *testing.T) {
	g := consoleGateway(t)
	const jane, joe = "+14155550191", "+14155550192"
	g.api("PUT", "/v1/questionnaires/mood", keyA, moodCheck)
	calm := g.completeMood(jane, "0")
	sad := g.completeMood(joe, "3")
	open := g.api("POST", "/v1/questionnaires/mood/responses", keyA, `{"channel":"sms","to":{"phone":"`+jane+`"}}`)["id"].(string)

	viewer := g.signIn("viewer@clinic-a.test")
	for _, c := range []struct {
		query     url.Values
		want, not []string
	}{
		{url.Values{"state": {"completed"}, "channel": {"sms"}}, []string{calm, sad}, []string{open}},
		{url.Values{"risk_level": {"moderate"}, "channel": {"sms"}}, []string{sad}, []string{calm, open}},
		{url.Values{"risk_level": {"high"}, "channel": {"sms"}}, nil, []string{calm, sad, open}},
		{url.Values{"to": {jane}, "channel": {"sms"}}, []string{calm, open}, []string{sad}},
	} {
		resp, body := viewer.get("/console/questionnaires/mood?" + c.query.Encode())
		if resp.StatusCode != 200 || !strings.Contains(body, `id="filters"`) {
			t.Fatalf("%v = %d\n%s", c.query, resp.StatusCode, body)
		}
		for _, id := range c.want {
			if !strings.Contains(body, `id="r-`+id+`"`) {
				t.Errorf("%v: %s not listed", c.query, id)
			}
		}
		for _, id := range c.not {
			if strings.Contains(body, `id="r-`+id+`"`) {
				t.Errorf("%v: %s listed", c.query, id)
			}
		}
		if len(c.want) == 0 && !strings.Contains(body, `id="no-responses"`) {
			t.Errorf("%v: no note that nothing matches", c.query)
		}
	}
	for _, q := range []url.Values{{"state": {"done"}}, {"risk_level": {"severe"}}, {"to": {"jane"}, "channel": {"sms"}}} {
		if resp, body := viewer.get("/console/questionnaires/mood?" + q.Encode()); resp.StatusCode != 422 || !strings.Contains(body, `aria-invalid="true"`) {
			t.Errorf("%v = %d, want 422 marking the field\n%s", q, resp.StatusCode, body)
		}
	}
	if _, body := g.signIn("lead@clinic-b.test").get("/console/questionnaires/mood?state=completed"); strings.Contains(body, calm) {
		t.Error("clinic-b sees clinic-a's responses")
	}
}
