package templates

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// validDoc is a minimal valid tenant template; cases below break it.
const validDoc = `{
  "variables": [{"name": "clinic_name", "description": "Clinic name", "example": "Riverside Clinic", "phi": false}],
  "locales": {"en": {"sms": "{{ clinic_name }}: you have a follow-up message."}}
}`

func TestParseValid(t *testing.T) {
	tpl := mustParse(t, "followup", validDoc)
	if tpl.Name != "followup" || tpl.Source != "" || tpl.Locales["en"].SMS != "{{ clinic_name }}: you have a follow-up message." {
		t.Errorf("%+v", tpl)
	}
	// Locale keys are canonicalised, texts trimmed, the name may be repeated
	// and the source (from a template read back from the API) is ignored.
	tpl = mustParse(t, "followup", `{"name":"followup","source":"builtin",
	  "variables":[{"name":"a","description":"d","example":"x","phi":false}],
	  "locales":{"zh-cn":{"sms":"  您好{{a}}\n"}}}`)
	if f := tpl.Locales["zh-CN"]; f == nil || f.SMS != "您好{{a}}" || tpl.Source != "" {
		t.Errorf("%+v", tpl.Locales)
	}
}

func TestParseProblems(t *testing.T) {
	tests := []struct {
		name, doc  string
		field, msg string // expected in one problem
	}{
		{"undeclared variable", `{"variables":[{"name":"clinic_name","description":"d","example":"x","phi":false}],
			"locales":{"en":{"sms":"{{clinic_name}}: {{patient_name}}"}}}`, "locales.en.sms", "{{patient_name}}, which is not declared"},
		{"undeclared in email html", `{"variables":[{"name":"a","description":"d","example":"x","phi":false}],
			"locales":{"en":{"sms":"{{a}}","email":{"subject":"s","text":"t","html":"<p>{{b}}</p>"}}}}`, "locales.en.email.html", "{{b}}"},
		{"unused variable", `{"variables":[{"name":"a","description":"d","example":"x","phi":false},{"name":"b","description":"d","example":"x","phi":false}],
			"locales":{"en":{"sms":"{{a}}"}}}`, "variables[1] (b)", "is declared but no text uses it"},
		{"malformed placeholder", `{"variables":[{"name":"a","description":"d","example":"x","phi":false}],
			"locales":{"en":{"sms":"{{a}} {{ Name }}"}}}`, "locales.en.sms", "malformed placeholder"},
		{"unclosed placeholder", `{"variables":[{"name":"a","description":"d","example":"x","phi":false}],
			"locales":{"en":{"sms":"{{a}} {{a"}}}`, "locales.en.sms", "malformed placeholder"},
		{"bad variable name", `{"variables":[{"name":"Clinic","description":"d","example":"x","phi":false}],
			"locales":{"en":{"sms":"hi"}}}`, "variables[0].name", "is not a variable name"},
		{"duplicate variable", `{"variables":[{"name":"a","description":"d","example":"x","phi":false},{"name":"a","description":"d","example":"x","phi":false}],
			"locales":{"en":{"sms":"{{a}}"}}}`, "variables[1] (a)", "declared twice"},
		{"no description", `{"variables":[{"name":"a","example":"x","phi":false}],"locales":{"en":{"sms":"{{a}}"}}}`, "variables[0] (a).description", "is required"},
		{"no example", `{"variables":[{"name":"a","description":"d"}],"locales":{"en":{"sms":"{{a}}"}}}`, "variables[0] (a).example", "is blank"},
		{"optional without default", `{"variables":[{"name":"a","description":"d","example":"x","optional":true}],
			"locales":{"en":{"sms":"{{a}}"}}}`, "variables[0] (a).default", "is required for an optional variable"},
		{"default without optional", `{"variables":[{"name":"a","description":"d","example":"x","default":"y"}],
			"locales":{"en":{"sms":"{{a}}"}}}`, "variables[0] (a).default", "only applies to optional variables"},
		{"example with control character", `{"variables":[{"name":"a","description":"d","example":"x\u0007"}],
			"locales":{"en":{"sms":"{{a}}"}}}`, "variables[0] (a).example", "control character"},
		{"phi not said", `{"variables":[{"name":"a","description":"d","example":"x"}],"locales":{"en":{"sms":"{{a}}"}}}`, "variables[0] (a).phi", "is required: true if"},
		{"phi null", `{"variables":[{"name":"a","description":"d","example":"x","phi":null}],"locales":{"en":{"sms":"{{a}}"}}}`, "variables[0] (a).phi", "is required"},
		{"bad locale", `{"locales":{"english":{"sms":"hi"}}}`, "locales.english", "BCP 47"},
		{"same locale twice", `{"locales":{"zh-CN":{"sms":"hi"},"zh-cn":{"sms":"hi"}}}`, "locales.zh-cn", "same locale"},
		{"no locales", `{"variables":[]}`, "locales", "is required"},
		{"empty locale", `{"locales":{"en":{}}}`, "locales.en", "has no forms"},
		{"voice without text", `{"locales":{"en":{"voice":{"gather":{"prompt":"p","digits":"12"}}}}}`, "locales.en.voice.text", "is required"},
		{"bad digits", `{"locales":{"en":{"voice":{"text":"t","gather":{"prompt":"p","digits":"1a"}}}}}`, "locales.en.voice.gather.digits", "accepted keys"},
		{"record too long", `{"locales":{"en":{"voice":{"text":"t","record":{"prompt":"p","max_length":301}}}}}`, "locales.en.voice.record.max_length", "300"},
		{"wechat data without id", `{"locales":{"en":{"wechat":{"data":{"k":"v"}}}}}`, "locales.en.wechat.template_id", "is required with data"},
		{"wechat id without data", `{"locales":{"en":{"wechat":{"template_id":"T1"}}}}`, "locales.en.wechat.data", "is required with template_id"},
		{"wechat url on text", `{"locales":{"en":{"wechat":{"text":"t","url":"https://x.example"}}}}`, "locales.en.wechat.url", "only applies to template"},
		{"wechat bad url", `{"locales":{"en":{"wechat":{"template_id":"T1","data":{"k":"v"},"url":"ftp://x"}}}}`, "locales.en.wechat.url", "http(s)"},
		{"wechat placeholder id", `{"variables":[{"name":"a","description":"d","example":"x","phi":false}],"locales":{"en":{"sms":"{{a}}","wechat":{"template_id":"{{a}}","data":{"k":"v"}}}}}`, "locales.en.wechat.template_id", "no placeholders"},
		{"email without subject", `{"locales":{"en":{"email":{"text":"t"}}}}`, "locales.en.email.subject", "is required"},
		{"email two-line subject", `{"locales":{"en":{"email":{"subject":"a\nb","text":"t"}}}}`, "locales.en.email.subject", "one line"},
		{"example breaks subject", `{"variables":[{"name":"a","description":"d","example":"x\ny","phi":false}],"locales":{"en":{"email":{"subject":"{{a}}","text":"t"}}}}`, "locales.en.email.subject", "with the example values"},
		{"sms too long", `{"locales":{"en":{"sms":"` + strings.Repeat("a", 1601) + `"}}}`, "locales.en.sms", "longer than 1600"},
		{"expect_reply empty", `{"expect_reply":{"options":{}},"locales":{"en":{"sms":"hi"}}}`, "expect_reply.options", "1 to 20 answers"},
		{"expect_reply within", `{"expect_reply":{"options":{"1":"yes"},"within":"31d"},"locales":{"en":{"sms":"hi"}}}`, "expect_reply.within", "1m to 30d"},
		{"expect_reply key", `{"expect_reply":{"options":{"1 2":"yes"}},"locales":{"en":{"sms":"hi"}}}`, "expect_reply.options", "without spaces"},
		{"name mismatch", `{"name":"other","locales":{"en":{"sms":"hi"}}}`, "name", "leave it out or make them match"},
		{"unknown field", `{"locales":{"en":{"smss":"hi"}}}`, "", "smss"},
		{"wrong type", `{"locales":{"en":{"sms":5}}}`, "", "field sms must be a string"},
		{"not an object", `[1,2]`, "", "JSON object"},
		{"trailing data", validDoc + `{}`, "", "after the JSON object"},
		{"syntax", `{"locales":`, "", "not valid JSON"},
		{"empty", ``, "", "is empty"},
		{"null", `null`, "", "is empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("followup", []byte(tc.doc), true)
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v, want *ParseError", err)
			}
			for _, p := range pe.Problems {
				if p.Field == tc.field && strings.Contains(p.Message, tc.msg) {
					if !strings.Contains(err.Error(), tc.msg) {
						t.Errorf("Error() %q lacks %q", err, tc.msg)
					}
					return
				}
			}
			t.Errorf("problems %+v lack %s: …%s…", pe.Problems, tc.field, tc.msg)
		})
	}
}

// Every problem is reported at once, so a developer fixes them in one go.
func TestParseReportsAllProblems(t *testing.T) {
	_, err := Parse("Bad-Name", []byte(`{"variables":[{"name":"a","description":"d","example":"x","phi":false}],
	  "locales":{"en":{"sms":"{{b}}"},"fr":{"voice":{"text":"{{c}}","gather":{"prompt":"p","digits":"x"}}}}}`), true)
	var pe *ParseError
	if !errors.As(err, &pe) {
		t.Fatal(err)
	}
	want := []string{"name", "locales.en.sms", "locales.fr.voice.gather.digits", "locales.fr.voice.text", "variables[0] (a)"}
	var got []string
	for _, p := range pe.Problems {
		got = append(got, p.Field)
	}
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || g == w
		}
		if !found {
			t.Errorf("problems %v lack %s", got, w)
		}
	}
}

func TestParseYAML(t *testing.T) {
	yamlDoc := `
variables:
  - name: clinic_name
    description: Clinic name
    example: Riverside Clinic
    phi: false
expect_reply:
  options: {"1": confirm}
  within: 2d
locales:
  en:
    sms: "{{clinic_name}}: reply 1 to confirm."
`
	jsonDoc := `{"variables":[{"name":"clinic_name","description":"Clinic name","example":"Riverside Clinic","phi":false}],
	  "expect_reply":{"options":{"1":"confirm"},"within":"2d"},
	  "locales":{"en":{"sms":"{{clinic_name}}: reply 1 to confirm."}}}`
	y, err := Parse("confirm", []byte(yamlDoc), false)
	if err != nil {
		t.Fatal(err)
	}
	j := mustParse(t, "confirm", jsonDoc)
	if !reflect.DeepEqual(y, j) {
		t.Errorf("YAML and JSON differ:\n%+v\n%+v", y, j)
	}
	for _, tc := range []struct{ doc, msg string }{
		{"locales:\n  en:\n    smss: hi\n", "smss"},
		{"variables:\n  - {name: a, description: d, example: x}\nlocales:\n  en:\n    sms: '{{a}}'\n", "phi is required"},
		{"locales:\n  en:\n    sms: a\n    sms: b\n", "already defined"},
		{"locales: [\n", "not a valid template"},
		{"variables: 5\n", "has the wrong type"},
		{"locales:\n  en:\n    voice:\n      text: t\n      record:\n        max_length: abc\n", "`abc` has the wrong type: a whole number is expected"},
		{"", "is empty"},
		{"locales:\n  en:\n    sms: hi\n---\nlocales: {}\n", "more than one YAML document"},
	} {
		_, err := Parse("x", []byte(tc.doc), false)
		if err == nil || !strings.Contains(err.Error(), tc.msg) || strings.Contains(err.Error(), "templates.") {
			t.Errorf("%q: err = %v, want one about %q without Go type names", tc.doc, err, tc.msg)
		}
	}
}

func TestParseLimits(t *testing.T) {
	big := `{"locales":{"en":{"email":{"subject":"s","text":"` + strings.Repeat("a", MaxDocBytes) + `"}}}}`
	if _, err := Parse("big", []byte(big), true); !errors.Is(err, ErrTooLarge) {
		t.Errorf("err = %v, want ErrTooLarge", err)
	}
	if _, err := Parse("bad", []byte("{\"locales\":{\"en\":{\"sms\":\"\xff\"}}}"), true); err == nil || !strings.Contains(err.Error(), "UTF-8") {
		t.Errorf("invalid UTF-8: %v", err)
	}
	for _, name := range []string{"", "Upper", "has-dash", strings.Repeat("a", 65), "a b"} {
		if _, err := Parse(name, []byte(validDoc), true); err == nil || !strings.Contains(err.Error(), "lower-case letters") {
			t.Errorf("name %q: %v", name, err)
		}
	}
	if _, err := Parse(strings.Repeat("a", 64), []byte(validDoc), true); err != nil {
		t.Error(err)
	}
}

// The stored (canonical JSON) form of every built-in parses back to the
// same template, so a built-in read from the API can be stored as a
// tenant's own.
func TestCanonicalRoundTrip(t *testing.T) {
	all, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range all {
		doc, err := canonicalJSON(b)
		if err != nil {
			t.Fatal(err)
		}
		back, err := Parse(name, doc, true)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		back.Source = b.Source
		if !reflect.DeepEqual(back, b) {
			t.Errorf("%s does not round-trip", name)
		}
	}
}

func TestPlaceholders(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		ok   bool
	}{
		{"no placeholders }} {", nil, true},
		{"{{a}}{{ b_2 }}{{a}}", []string{"a", "b_2"}, true},
		{"{{  a  }}", []string{"a"}, true},
		{"{{}}", nil, false},
		{"{{ }}", nil, false},
		{"{{A}}", nil, false},
		{"{{1a}}", nil, false},
		{"{{a-b}}", nil, false},
		{"{{a}", nil, false},
		{"{{{a}}}", nil, false},
		{"{{\ta}}", nil, false},
		{"{{" + strings.Repeat("a", 65) + "}}", nil, false},
	} {
		got, err := placeholders(tc.in)
		if (err == nil) != tc.ok || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("placeholders(%q) = %v, %v", tc.in, got, err)
		}
	}
}
