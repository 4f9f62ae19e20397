package templates

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParse checks that no document, YAML or tenant JSON, panics the
// parser, and that whatever it accepts renders with its example values in
// every form and survives the store's canonical encoding.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"appointment_reminder.yaml", "post_discharge_day30.yaml"} {
		data, err := files.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, false)
	}
	all, err := Builtin()
	if err != nil {
		f.Fatal(err)
	}
	doc, err := canonicalJSON(all["satisfaction_survey"])
	if err != nil {
		f.Fatal(err)
	}
	f.Add(doc, true)
	f.Add([]byte(phiDoc), true)
	f.Add([]byte(validDoc), true)
	f.Add([]byte(`{"locales":{"en":{"sms":"{{"}}}`), true)
	f.Add([]byte("locales:\n  en: &a\n    sms: hi\n  fr: *a\n"), false)
	f.Add([]byte("variables: [{name: a, description: d, example: \"x\", phi: false, optional: true, default: y}]\nlocales: {en: {sms: '{{ a }}'}}"), false)
	f.Fuzz(func(t *testing.T, data []byte, isJSON bool) {
		tpl, err := Parse("fuzz", data, isJSON)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("unexpected error type %T: %v", err, err)
			}
			return
		}
		vars := examples(tpl)
		chain := NewChain("en", nil)
		for loc, forms := range tpl.Locales {
			for _, ch := range Channels {
				if !forms.has(ch) {
					continue
				}
				if _, err := tpl.Render(chain, ch, loc, vars, true); err != nil {
					t.Fatalf("accepted template does not render %s %s with its examples: %v", loc, ch, err)
				}
			}
			tpl.Preview(chain, loc, nil, false)
		}
		canon, err := canonicalJSON(tpl)
		if err != nil {
			t.Fatal(err)
		}
		if len(canon) <= MaxDocBytes {
			if _, err := Parse("fuzz", canon, true); err != nil {
				t.Fatalf("canonical form does not parse: %v\n%s", err, canon)
			}
		}
	})
}

// FuzzRender checks placeholder parsing and substitution: no text panics;
// a text that parses renders with every placeholder replaced exactly once
// (values are never expanded again), and renders back to itself, modulo
// spaces inside braces, when every variable is missing.
func FuzzRender(f *testing.F) {
	f.Add("Hello {{name}}, see you {{ when }}.", "Ana")
	f.Add("{{a}}{{a}}{{b_1}}", "{{a}}")
	f.Add("{{", "x")
	f.Add("}} {{ }} {{A}}", "x")
	f.Add("<p>{{x}}</p>", `<b>&"`)
	f.Add("{{  x  }}\x00", "\xff")
	f.Fuzz(func(t *testing.T, text, value string) {
		segs, err := parseText(text)
		if err != nil {
			if _, err := placeholders(text); err == nil {
				t.Fatal("parseText and placeholders disagree")
			}
			return
		}
		var names []string
		var canon strings.Builder
		for _, sg := range segs {
			if sg.name != "" {
				if !validVarName(sg.name) {
					t.Fatalf("invalid name %q accepted", sg.name)
				}
				names = append(names, sg.name)
				canon.WriteString("{{" + sg.name + "}}")
			} else {
				canon.WriteString(sg.lit)
			}
		}
		// With no values, the text renders to its canonical self.
		out, missing, err := expand(text, func(string) (string, bool) { return "", false })
		if err != nil || out != canon.String() || len(missing) != len(names) {
			t.Fatalf("expand without values: %q %v %v, want %q", out, missing, err, canon.String())
		}
		// With values, each placeholder becomes the value.
		out, missing, err = expand(text, func(string) (string, bool) { return value, true })
		if err != nil || len(missing) != 0 {
			t.Fatal(missing, err)
		}
		var want strings.Builder
		for _, sg := range segs {
			if sg.name != "" {
				want.WriteString(value)
			} else {
				want.WriteString(sg.lit)
			}
		}
		if out != want.String() {
			t.Fatalf("rendered %q, want %q", out, want.String())
		}

		// Through a whole template: SMS and email HTML.
		if len(names) == 0 || len(text) > 1000 {
			return
		}
		tpl := &Template{Name: "fuzz", Locales: map[string]*Forms{"en": {SMS: text, Email: &EmailForm{Subject: "s", Text: text, HTML: text}}}}
		vars := map[string]string{}
		for _, n := range names {
			if !tplHas(tpl, n) {
				tpl.Variables = append(tpl.Variables, Variable{Name: n, Description: "d", Example: "x"})
			}
			vars[n] = value
		}
		r, err := tpl.Render(NewChain("", nil), "email", "en", vars, false)
		var ve *ValueError
		var oe *OutputError
		switch {
		case err == nil:
			if checkValue(value) != "" {
				t.Fatalf("invalid value %q rendered", value)
			}
			if r.Body != out {
				t.Fatalf("email text %q, want %q", r.Body, out)
			}
		case errors.As(err, &ve):
			if checkValue(value) == "" {
				t.Fatalf("valid value refused: %v", err)
			}
		case errors.As(err, &oe):
		default:
			t.Fatalf("unexpected error: %v", err)
		}
		tpl.Preview(NewChain("", nil), "en", vars, false)
	})
}

func tplHas(t *Template, name string) bool {
	for _, v := range t.Variables {
		if v.Name == name {
			return true
		}
	}
	return false
}
