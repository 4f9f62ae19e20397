package service_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/patientmsg/gateway/internal/config"
)

func TestBadInputGetsAClearProblemAndNothingIsQueued(t *testing.T) {
	e := start(t, config.RoleAPI, func(c *config.Config) { c.MaxRequestBytes = 16 << 10 })
	long := strings.Repeat("a", 1601)
	cases := []struct {
		name, body string
		headers    []string
		status     int
		mention    string // the detail must name what is wrong
	}{
		{"an empty body", "", []string{"Content-Type", "application/json"}, 400, "empty"},
		{"malformed JSON", `{"channel":"sms",`, nil, 400, "JSON"},
		{"a JSON array instead of an object", `[1,2]`, nil, 400, "object"},
		{"two JSON objects", `{"channel":"sms"}{"channel":"sms"}`, nil, 400, "after"},
		{"an unknown field", `{"channel":"sms","to":{"phone":"+14155550100"},"body":"x","colour":"red"}`, nil, 400, "colour"},
		{"an unknown field inside to", `{"channel":"sms","to":{"phone":"+14155550100","fax":"1"},"body":"x"}`, nil, 400, "fax"},
		{"a number where a string belongs", `{"channel":"sms","to":{"phone":"+14155550100"},"body":42}`, nil, 400, "body"},
		{"a missing channel", `{"to":{"phone":"+14155550100"},"body":"x"}`, nil, 422, "channel"},
		{"an unknown channel", `{"channel":"fax","to":{"phone":"+14155550100"},"body":"x"}`, nil, 422, "fax"},
		{"a missing recipient", `{"channel":"sms","body":"x"}`, nil, 422, "to"},
		{"a recipient without a phone", `{"channel":"sms","to":{},"body":"x"}`, nil, 422, "to.phone"},
		{"an unparseable phone number", `{"channel":"sms","to":{"phone":"call me"},"body":"x"}`, nil, 422, "to.phone"},
		{"a national number without country code", `{"channel":"sms","to":{"phone":"4155550100"},"body":"x"}`, nil, 422, "to.phone"},
		{"a number that cannot exist", `{"channel":"sms","to":{"phone":"+1555"},"body":"x"}`, nil, 422, "to.phone"},
		{"a missing body", `{"channel":"sms","to":{"phone":"+14155550100"}}`, nil, 422, "body"},
		{"a blank body", `{"channel":"sms","to":{"phone":"+14155550100"},"body":"   "}`, nil, 422, "body"},
		{"a body over 1,600 characters", `{"channel":"sms","to":{"phone":"+14155550100"},"body":"` + long + `"}`, nil, 422, "1600"},
		{"an unknown priority", `{"channel":"sms","to":{"phone":"+14155550100"},"body":"x","priority":"urgent"}`, nil, 422, "priority"},
		{"a send_at that is not RFC 3339", `{"channel":"sms","to":{"phone":"+14155550100"},"body":"x","send_at":"tomorrow 10am"}`, nil, 422, "send_at"},
		{"a send_at in the past", `{"channel":"sms","to":{"phone":"+14155550100"},"body":"x","send_at":"2020-01-01T10:00:00Z"}`, nil, 422, "past"},
		{"a send_at years ahead", `{"channel":"sms","to":{"phone":"+14155550100"},"body":"x","send_at":"2099-01-01T10:00:00Z"}`, nil, 422, "days ahead"},
		{"metadata that is not an object", `{"channel":"sms","to":{"phone":"+14155550100"},"body":"x","metadata":[1]}`, nil, 422, "metadata"},
		{"metadata over 4 KiB", `{"channel":"sms","to":{"phone":"+14155550100"},"body":"x","metadata":{"n":"` + strings.Repeat("m", 4100) + `"}}`, nil, 422, "metadata"},
		{"a relative callback URL", `{"channel":"sms","to":{"phone":"+14155550100"},"body":"x","callback_url":"/hook"}`, nil, 422, "callback_url"},
		{"a callback URL with credentials", `{"channel":"sms","to":{"phone":"+14155550100"},"body":"x","callback_url":"https://u:p@example.org/h"}`, nil, 422, "credentials"},
		{"an unknown template", `{"channel":"sms","to":{"phone":"+14155550100"},"template":"no_such_template"}`, nil, 422, "no_such_template"},
		{"a template variable left out", `{"channel":"sms","to":{"phone":"+14155550100"},"template":"appointment_reminder","vars":{"clinic_name":"Riverside","appointment_time":"9:30"}}`, nil, 422, "vars.appointment_date"},
		{"a variable the template does not have", `{"channel":"sms","to":{"phone":"+14155550100"},"template":"post_discharge_day1","vars":{"clinic_name":"Riverside","clinic_phone":"555-0100","diagnosis":"x"}}`, nil, 422, "vars.diagnosis"},
		{"a body next to a template", `{"channel":"sms","to":{"phone":"+14155550100"},"template":"post_discharge_day1","body":"hi","vars":{"clinic_name":"Riverside","clinic_phone":"555-0100"}}`, nil, 422, "the template provides it"},
		{"vars without a template", `{"channel":"sms","to":{"phone":"+14155550100"},"body":"hi","vars":{"a":"b"}}`, nil, 422, "only apply with a template"},
		{"an unknown recipient time zone", `{"channel":"sms","to":{"phone":"+14155550100","timezone":"Mars/Olympus"},"body":"hi"}`, nil, 422, "to.timezone"},
		{"a form-encoded body", `channel=sms`, []string{"Content-Type", "application/x-www-form-urlencoded"}, 415, "JSON"},
		{"an oversized request", `{"channel":"sms","to":{"phone":"+14155550100"},"body":"` + strings.Repeat("b", 20<<10) + `"}`, nil, 413, "larger"},
		{"an idempotency key over 255 characters", `{"channel":"sms","to":{"phone":"+14155550100"},"body":"x"}`, []string{"Idempotency-Key", strings.Repeat("k", 300)}, 400, "255"},
		{"invalid UTF-8 in the body", "{\"channel\":\"sms\",\"to\":{\"phone\":\"+14155550100\"},\"body\":\"\xff\xfe\"}", nil, 400, "UTF-8"},
		{"a WeChat message without openid", `{"channel":"wechat","to":{},"body":"x"}`, nil, 422, "to.wechat_openid"},
		{"an email to an invalid address", `{"channel":"email","to":{"email":"nobody"},"subject":"s","body":"x"}`, nil, 422, "to.email"},
		{"an email without subject", `{"channel":"email","to":{"email":"a@example.org"},"body":"x"}`, nil, 422, "subject"},
		{"a voice call without phone", `{"channel":"voice","to":{"email":"a@example.org"},"body":"x"}`, nil, 422, "to.phone"},
		{"a keypad question on an SMS", `{"channel":"sms","to":{"phone":"+14155550100"},"body":"x","gather":{"prompt":"p","digits":"1"}}`, nil, 422, "gather"},
		{"a WeChat template without template_id", `{"channel":"wechat","to":{"wechat_openid":"oA"},"wechat":{"kind":"template"}}`, nil, 422, "wechat.template_id"},
		{"several mistakes at once are all listed", `{"channel":"sms","to":{"phone":"nope"},"priority":"x"}`, nil, 422, "to.phone"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := e.do(http.MethodPost, "/v1/messages", keyA, c.body, c.headers...)
			if a.Status != c.status {
				t.Fatalf("status %d, want %d: %s", a.Status, c.status, a.Raw)
			}
			if ct := a.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Fatalf("content type %q", ct)
			}
			detail, _ := a.Body["detail"].(string)
			if a.Body["status"] != float64(c.status) || a.Body["type"] == nil || a.Body["title"] == nil {
				t.Fatalf("not a problem document: %s", a.Raw)
			}
			if !strings.Contains(a.Raw, c.mention) {
				t.Fatalf("the problem does not mention %q: %s", c.mention, a.Raw)
			}
			if detail == "" {
				t.Fatalf("no detail: %s", a.Raw)
			}
		})
	}
	if a := e.do("GET", "/v1/messages", keyA, ""); strings.Contains(a.Raw, `"id"`) {
		t.Fatalf("a rejected request left a message behind: %s", a.Raw)
	}
	if a := e.do("GET", "/v1/nowhere", keyA, ""); a.Status != 404 || a.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("unknown route = %d %s", a.Status, a.Raw)
	}
	if a := e.do("GET", "/v1/messages/not-an-id", keyA, ""); a.Status != 404 {
		t.Fatalf("malformed id = %d", a.Status)
	}
	if a := e.do("GET", "/v1/messages?limit=1000", keyA, ""); a.Status != 400 {
		t.Fatalf("limit=1000 = %d", a.Status)
	}
	multi := e.do(http.MethodPost, "/v1/messages", keyA, `{"channel":"sms","to":{"phone":"nope"},"priority":"x"}`)
	if errs, _ := multi.Body["errors"].([]any); len(errs) != 3 {
		t.Fatalf("want 3 field errors (to.phone, body, priority): %s", multi.Raw)
	}
}

// TestEveryJSONRouteRefusesBadBodiesTheSameWay walks the API's routes: every
// one that takes a JSON body refuses a wrong Content-Type, invalid UTF-8,
// null and a non-object with the same problem, and changes nothing.
func TestEveryJSONRouteRefusesBadBodiesTheSameWay(t *testing.T) {
	e := start(t, config.RoleAPI)
	// Routes that read no JSON body: the cancels, closing an incident, the
	// repair pass, and the CSV upload (its own tests cover it).
	noJSON := map[string]bool{
		"POST /v1/messages/:id/cancel":   true,
		"POST /v1/followups/:id/cancel":  true,
		"POST /v1/broadcasts/:id/cancel": true,
		"POST /v1/broadcasts/:id/repair": true,
		"POST /v1/incidents/:id/close":   true,
		"POST /v1/audiences":             true,
	}
	cases := []struct {
		name, contentType, body string
		status                  int
		mention                 string
	}{
		{"a text/plain body", "text/plain", `{"a":1}`, 415, "application/json"},
		{"no Content-Type", "", `{"a":1}`, 415, "application/json"},
		{"a JSON-looking Content-Type", "application/jsonp", `{"a":1}`, 415, "application/json"},
		{"invalid UTF-8", "application/json", "{\"url\":\"\xff\xfe\"}", 400, "UTF-8"},
		{"null", "application/json", "null", 400, "null"},
		{"an array", "application/json", "[]", 400, "object"},
		{"a string", "application/json", `"x"`, 400, "object"},
	}
	var routes int
	for _, r := range e.svc.API.App().GetRoutes(true) {
		route := r.Method + " " + r.Path
		if (r.Method != http.MethodPost && r.Method != http.MethodPut) || !strings.HasPrefix(r.Path, "/v1/") || noJSON[route] {
			continue
		}
		routes++
		path := strings.NewReplacer(":id", "x", ":name", "appointment_reminder").Replace(r.Path)
		for _, c := range cases {
			t.Run(route+"/"+c.name, func(t *testing.T) {
				req, _ := http.NewRequest(r.Method, e.base+path, strings.NewReader(c.body))
				req.Header.Set("Authorization", "Bearer "+keyA)
				if c.contentType != "" {
					req.Header.Set("Content-Type", c.contentType)
				}
				resp, err := e.http.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				raw, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != c.status || resp.Header.Get("Content-Type") != "application/problem+json" || !strings.Contains(string(raw), c.mention) {
					t.Fatalf("%d %q %s; want %d problem+json mentioning %q", resp.StatusCode, resp.Header.Get("Content-Type"), raw, c.status, c.mention)
				}
			})
		}
	}
	if routes < 13 {
		t.Fatalf("only %d JSON routes found", routes)
	}
}

// TestPutSettingsNullChangesNothing: a null body used to reset the
// tenant's settings to the defaults.
func TestPutSettingsNullChangesNothing(t *testing.T) {
	e := start(t, config.RoleAPI)
	set := e.do("PUT", "/v1/settings", keyA, `{"quiet_hours":"22:00-07:00"}`)
	if set.Status != 200 {
		t.Fatalf("PUT /v1/settings = %d %s", set.Status, set.Raw)
	}
	if a := e.do("PUT", "/v1/settings", keyA, "null"); a.Status != 400 {
		t.Fatalf("PUT /v1/settings null = %d %s", a.Status, a.Raw)
	}
	if a := e.do("GET", "/v1/settings", keyA, ""); a.Body["quiet_hours"] != "22:00-07:00" {
		t.Fatalf("settings after a null PUT: %s", a.Raw)
	}
}

// TestAFollowUpStepReportsEveryMistakeAtOnce: a bad offset used to hide
// the same step's missing variables, and its message gave the examples
// twice.
func TestAFollowUpStepReportsEveryMistakeAtOnce(t *testing.T) {
	e := start(t, config.RoleAPI)
	a := e.do("POST", "/v1/followups", keyA, `{"contact":{"phone":"+14155550123"},"anchor":"2030-01-01T00:00:00Z",
	  "steps":[{"offset":"one day","at":"25:00","channel":"sms","template":"post_discharge_day1","vars":{"clinic_name":"Riverside"}}]}`)
	if a.Status != 422 {
		t.Fatalf("status %d: %s", a.Status, a.Raw)
	}
	fields := map[string]string{}
	for _, fe := range a.Body["errors"].([]any) {
		m := fe.(map[string]any)
		fields[m["field"].(string)] = m["detail"].(string)
	}
	for _, want := range []string{"steps[0].offset", "steps[0].at", "steps[0].vars.clinic_phone"} {
		if _, ok := fields[want]; !ok {
			t.Errorf("no error for %s: %s", want, a.Raw)
		}
	}
	if d := fields["steps[0].offset"]; strings.Count(d, "P1D,") != 1 || strings.Contains(d, "schedule:") {
		t.Errorf("offset detail %q: want the examples once, without the package name", d)
	}
}
