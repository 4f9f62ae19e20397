package templates

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// phiDoc is a tenant template that (unwisely) puts a phi variable in every
// channel, to exercise the PHI lint.
const phiDoc = `{
  "description": "Lab result ready",
  "variables": [
    {"name": "clinic_name", "description": "Clinic name", "example": "Riverside Clinic", "phi": false},
    {"name": "test_name", "description": "The test whose result is ready", "example": "HbA1c", "phi": true}
  ],
  "locales": {
    "en": {
      "sms": "{{clinic_name}}: your {{test_name}} result is ready.",
      "voice": {"text": "Your {{test_name}} result from {{clinic_name}} is ready."},
      "wechat": {"template_id": "TPL-result", "data": {"thing1": "{{test_name}}", "thing2": "{{clinic_name}}"}, "url": "https://clinic.example/r?c={{clinic_name}}"},
      "email": {"subject": "Your result from {{clinic_name}}", "text": "Your {{test_name}} result is ready.", "html": "<p>Your <b>{{test_name}}</b> result from {{clinic_name}} is ready.</p>"}
    }
  }
}`

func mustParse(t *testing.T, name, doc string) *Template {
	t.Helper()
	tpl, err := Parse(name, []byte(doc), true)
	if err != nil {
		t.Fatalf("Parse(%s): %v", name, err)
	}
	return tpl
}

func builtin(t *testing.T, name string) *Template {
	t.Helper()
	all, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	tpl := all[name]
	if tpl == nil {
		t.Fatalf("no built-in %s", name)
	}
	return tpl
}

func TestRenderStrictVariables(t *testing.T) {
	tpl := builtin(t, "appointment_reminder")
	chain := NewChain("en", nil)
	vars := examples(tpl)

	given := func(drop string, add map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range vars {
			if k != drop {
				m[k] = v
			}
		}
		for k, v := range add {
			m[k] = v
		}
		return m
	}
	tests := []struct {
		name             string
		channel          string
		vars             map[string]string
		missing, unknown []string
	}{
		{"missing", "sms", given("appointment_time", nil), []string{"appointment_time"}, nil},
		{"unknown", "sms", given("", map[string]string{"patient_name": "Ana", "bed": "4"}), nil, []string{"bed", "patient_name"}},
		{"both", "sms", given("appointment_date", map[string]string{"zzz": "1"}), []string{"appointment_date"}, []string{"zzz"}},
		{"missing in voice only", "voice", given("department", nil), []string{"department"}, nil},
		{"none", "sms", map[string]string{}, []string{"appointment_date", "appointment_time", "clinic_name"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tpl.Render(chain, tc.channel, "en", tc.vars, false)
			var ve *VarError
			if !errors.As(err, &ve) {
				t.Fatalf("err = %v, want *VarError", err)
			}
			if !reflect.DeepEqual(ve.Missing, tc.missing) || !reflect.DeepEqual(ve.Unknown, tc.unknown) {
				t.Errorf("missing %v unknown %v, want %v %v", ve.Missing, ve.Unknown, tc.missing, tc.unknown)
			}
			for _, n := range append(tc.missing, tc.unknown...) {
				if !strings.Contains(err.Error(), n) {
					t.Errorf("error %q does not name %s", err, n)
				}
			}
		})
	}

	// A variable the SMS form does not use need not be given (minimum
	// necessary: the department stays out of the request for an SMS).
	r, err := tpl.Render(chain, "sms", "en", given("department", nil), false)
	if err != nil {
		t.Fatal(err)
	}
	if want := "Riverside Clinic: reminder of your appointment on Tuesday 12 May at 9:30 AM. Reply 1 to confirm or 2 to reschedule. Reply STOP to opt out."; r.Body != want {
		t.Errorf("body %q\nwant %q", r.Body, want)
	}
	if !reflect.DeepEqual(r.ExpectReply, &ExpectReply{Options: map[string]string{"1": "confirm", "2": "reschedule"}, Within: "48h"}) {
		t.Errorf("expect_reply %+v", r.ExpectReply)
	}
	// An optional variable left out takes its default.
	r, err = tpl.Render(chain, "voice", "en", given("arrive_minutes", nil), false)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.Voice.Text, "arrive 15 minutes early") || r.Body != r.Voice.Text || r.Voice.Gather.Digits != "12" {
		t.Errorf("voice %+v", r.Voice)
	}
	r, err = tpl.Render(chain, "voice", "en", given("", map[string]string{"arrive_minutes": "30"}), false)
	if err != nil || !strings.Contains(r.Voice.Text, "arrive 30 minutes early") {
		t.Errorf("voice %v %+v", err, r)
	}
}

func TestRenderValues(t *testing.T) {
	tpl := builtin(t, "crisis_update")
	chain := NewChain("en", nil)
	base := examples(tpl)
	for _, tc := range []struct {
		value, problem string
	}{
		{"", "blank"},
		{"  \n", "blank"},
		{strings.Repeat("x", MaxValueChars+1), "longer than 500"},
		{"closed\x00today", "control character"},
		{"closed\rtoday", "control character"},
		{"closed\x1b[31m", "control character"},
		{"bad \xff utf8", "UTF-8"},
	} {
		vars := map[string]string{}
		for k, v := range base {
			vars[k] = v
		}
		vars["update"] = tc.value
		_, err := tpl.Render(chain, "sms", "en", vars, false)
		var ve *ValueError
		if !errors.As(err, &ve) || ve.Var != "update" || !strings.Contains(ve.Problem, tc.problem) {
			t.Errorf("value %q: err = %v, want a ValueError about %q", tc.value, err, tc.problem)
		}
	}
	// Newline and tab are allowed; exactly MaxValueChars is allowed.
	vars := examples(tpl)
	vars["update"] = "Closed today.\n\tOpen tomorrow."
	if r, err := tpl.Render(chain, "sms", "en", vars, false); err != nil || !strings.Contains(r.Body, "today.\n\tOpen") {
		t.Errorf("%v %+v", err, r)
	}
	vars["update"] = strings.Repeat("é", MaxValueChars)
	if _, err := tpl.Render(chain, "sms", "en", vars, false); err != nil {
		t.Error(err)
	}
	// Values are inserted once: a value that looks like a placeholder stays
	// as it is.
	vars["update"] = "{{clinic_phone}}"
	if r, err := tpl.Render(chain, "sms", "en", vars, false); err != nil || !strings.Contains(r.Body, "update: {{clinic_phone}} For") {
		t.Errorf("%v %+v", err, r)
	}
}

func TestRenderOutputLimits(t *testing.T) {
	tpl := builtin(t, "crisis_update")
	chain := NewChain("en", nil)
	vars := examples(tpl)
	vars["clinic_name"] = "Riverside\nClinic" // a line break in the subject
	_, err := tpl.Render(chain, "email", "en", vars, false)
	var oe *OutputError
	if !errors.As(err, &oe) || oe.Field != "email.subject" {
		t.Errorf("err = %v, want an OutputError on email.subject", err)
	}
	// Voice uses {{update}} twice: 4 x 500 characters fit a call (4,000)...
	vars = examples(tpl)
	vars["update"] = strings.Repeat("a", MaxValueChars)
	if _, err := tpl.Render(chain, "voice", "en", vars, false); err != nil {
		t.Error(err)
	}
	// ...but an SMS made of many values can exceed 1,600 characters.
	long := mustParse(t, "long", `{"variables":[{"name":"a","description":"d","example":"x","phi":false}],
	  "locales":{"en":{"sms":"{{a}}{{a}}{{a}}{{a}}"}}}`)
	_, err = long.Render(chain, "sms", "en", map[string]string{"a": strings.Repeat("a", 401)}, false)
	if !errors.As(err, &oe) || oe.Field != "sms" || !strings.Contains(oe.Problem, "1604") {
		t.Errorf("err = %v, want an OutputError on sms", err)
	}
}

func TestRenderPHI(t *testing.T) {
	tpl := mustParse(t, "lab_result", phiDoc)
	chain := NewChain("en", nil)
	vars := examples(tpl)
	for _, ch := range []string{"sms", "wechat"} {
		_, err := tpl.Render(chain, ch, "en", vars, false)
		var pe *PHIError
		if !errors.As(err, &pe) || pe.Channel != ch || !reflect.DeepEqual(pe.Vars, []string{"test_name"}) {
			t.Errorf("%s: err = %v, want a PHIError naming test_name", ch, err)
			continue
		}
		r, err := tpl.Render(chain, ch, "en", vars, true)
		if err != nil {
			t.Errorf("%s with allowPHI: %v", ch, err)
			continue
		}
		if len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "test_name") || !strings.Contains(r.Warnings[0], ch) {
			t.Errorf("%s warnings %q", ch, r.Warnings)
		}
	}
	// Voice and email reach the patient directly: allowed, no warning.
	for _, ch := range []string{"voice", "email"} {
		r, err := tpl.Render(chain, ch, "en", vars, false)
		if err != nil || len(r.Warnings) != 0 || !strings.Contains(r.Body, "HbA1c") {
			t.Errorf("%s: %v %+v", ch, err, r)
		}
	}
	// The built-in medication reminder keeps the medication's name to voice
	// and email.
	med := builtin(t, "medication_reminder")
	for _, ch := range Channels {
		r, err := med.Render(chain, ch, "zh-CN", examples(med), false)
		if err != nil {
			t.Errorf("medication_reminder %s: %v", ch, err)
			continue
		}
		named := strings.Contains(r.Body+r.HTML, "metformin")
		if named != (ch == "voice" || ch == "email") {
			t.Errorf("medication_reminder %s names the medication: %v", ch, named)
		}
	}
}

func TestRenderEscaping(t *testing.T) {
	tpl := mustParse(t, "lab_result", phiDoc)
	chain := NewChain("en", nil)
	vars := map[string]string{"clinic_name": `Smith & Jones <"Clinic">`, "test_name": "<script>alert(1)</script>"}
	r, err := tpl.Render(chain, "email", "en", vars, false)
	if err != nil {
		t.Fatal(err)
	}
	if want := "<p>Your <b>&lt;script&gt;alert(1)&lt;/script&gt;</b> result from Smith &amp; Jones &lt;&#34;Clinic&#34;&gt; is ready.</p>"; r.HTML != want {
		t.Errorf("html %q\nwant %q", r.HTML, want)
	}
	if r.Body != "Your <script>alert(1)</script> result is ready." || r.Subject != `Your result from Smith & Jones <"Clinic">` {
		t.Errorf("text and subject are inserted as is: %q %q", r.Body, r.Subject)
	}
	r, err = tpl.Render(chain, "wechat", "en", vars, true)
	if err != nil {
		t.Fatal(err)
	}
	w := r.WeChat
	if w.URL != "https://clinic.example/r?c=Smith%20%26%20Jones%20%3C%22Clinic%22%3E" || w.Data["thing2"] != `Smith & Jones <"Clinic">` || w.TemplateID != "TPL-result" {
		t.Errorf("wechat %+v", w)
	}
	// The template itself is unchanged by rendering.
	if tpl.Locales["en"].WeChat.Data["thing2"] != "{{clinic_name}}" {
		t.Error("rendering changed the template")
	}
}

func TestRenderErrors(t *testing.T) {
	tpl := builtin(t, "crisis_update")
	chain := NewChain("en", nil)
	if _, err := tpl.Render(chain, "fax", "en", examples(tpl), false); !errors.Is(err, ErrUnknownChannel) {
		t.Errorf("fax: %v", err)
	}
	smsOnly := mustParse(t, "sms_only", `{"variables":[{"name":"a","description":"d","example":"x","phi":false}],"locales":{"en":{"sms":"hi {{a}}"}}}`)
	_, err := smsOnly.Render(chain, "voice", "en", map[string]string{"a": "b"}, false)
	if !errors.Is(err, ErrNoForm) || !strings.Contains(err.Error(), "voice") {
		t.Errorf("voice: %v", err)
	}
	if _, err := smsOnly.Render(chain, "sms", "en-US-x-!!", nil, false); !errors.Is(err, ErrBadLocale) {
		t.Errorf("bad locale: %v", err)
	}
	// A template built in code (not by Parse) with an undeclared variable.
	hand := &Template{Name: "hand", Locales: map[string]*Forms{"en": {SMS: "hi {{who}}"}}}
	if _, err := hand.Render(chain, "sms", "en", nil, false); !errors.Is(err, ErrInvalidTemplate) {
		t.Errorf("hand-built: %v", err)
	}
	hand.Locales["en"].SMS = "hi {{Who}}"
	if _, err := hand.Render(chain, "sms", "en", nil, false); !errors.Is(err, ErrInvalidTemplate) {
		t.Errorf("hand-built: %v", err)
	}
}
