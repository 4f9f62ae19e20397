package templates

import (
	"errors"
	"strings"
	"testing"

	"github.com/patientmsg/gateway/internal/sms"
)

// examples returns the example value of every variable of t.
func examples(t *Template) map[string]string {
	m := map[string]string{}
	for _, v := range t.Variables {
		m[v.Name] = v.Example
	}
	return m
}

// starters are the built-in templates the product ships.
var starters = []string{
	"appointment_reminder", "crisis_safety_check", "crisis_update", "medication_reminder",
	"post_discharge_day1", "post_discharge_day30", "post_discharge_day7", "satisfaction_survey",
}

func TestBuiltinLoads(t *testing.T) {
	all, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(starters) {
		t.Errorf("got %d built-in templates, want %d", len(all), len(starters))
	}
	for _, name := range starters {
		tpl := all[name]
		if tpl == nil {
			t.Errorf("built-in %s is missing", name)
			continue
		}
		if tpl.Name != name || tpl.Source != SourceBuiltin {
			t.Errorf("%s: name %q source %q", name, tpl.Name, tpl.Source)
		}
		for _, loc := range []string{"en", "zh-CN"} {
			if tpl.Locales[loc] == nil {
				t.Errorf("%s has no %s variant", name, loc)
			}
		}
		if tpl.Description == "" {
			t.Errorf("%s has no description", name)
		}
	}
}

// Every built-in renders in en and zh-CN, in every channel it has a form
// for, with its example values, and each variant has the same channels.
func TestBuiltinRenderAllForms(t *testing.T) {
	all, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	chain := NewChain("en", nil)
	for name, tpl := range all {
		vars := examples(tpl)
		for _, loc := range []string{"en", "zh-CN"} {
			forms := tpl.Locales[loc]
			for _, ch := range Channels {
				if forms.has(ch) != tpl.Locales["en"].has(ch) {
					t.Errorf("%s: %s has a %s form and en does not, or the reverse", name, loc, ch)
				}
				if !forms.has(ch) {
					continue
				}
				r, err := tpl.Render(chain, ch, loc, vars, true)
				if err != nil {
					t.Errorf("%s %s %s: %v", name, loc, ch, err)
					continue
				}
				if r.Locale != loc || r.Channel != ch || r.Template != name {
					t.Errorf("%s %s %s: rendered as %s %s %s", name, loc, ch, r.Template, r.Locale, r.Channel)
				}
				all := r.Body + r.Subject + r.HTML
				if r.Voice != nil {
					all += r.Voice.Text
					if r.Voice.Gather != nil {
						all += r.Voice.Gather.Prompt
					}
					if r.Voice.Record != nil {
						all += r.Voice.Record.Prompt
					}
				}
				if strings.Contains(all, "{{") || strings.TrimSpace(r.Body) == "" {
					t.Errorf("%s %s %s: rendered %q", name, loc, ch, all)
				}
				if ch == ChannelEmail && r.ExpectReply != nil {
					t.Errorf("%s: email carries expect_reply", name)
				}
				if ch == ChannelSMS && tpl.ExpectReply != nil && r.ExpectReply == nil {
					t.Errorf("%s: sms lost expect_reply", name)
				}
			}
		}
	}
}

// Routine SMS carry the opt-out hint, crisis ones do not need it; English
// SMS stay in GSM-7 (a curly quote would double their cost); no built-in
// uses a phi variable in SMS or WeChat, so all render without allowPHI.
func TestBuiltinSMSHygiene(t *testing.T) {
	all, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	chain := NewChain("en", nil)
	for name, tpl := range all {
		vars := examples(tpl)
		routine := !strings.HasPrefix(name, "crisis_")
		for loc, hint := range map[string]string{"en": "Reply STOP to opt out", "zh-CN": "回复TD退订"} {
			for _, ch := range []string{ChannelSMS, ChannelWeChat} {
				if _, err := tpl.Render(chain, ch, loc, vars, false); err != nil {
					t.Errorf("%s %s %s without allowPHI: %v", name, loc, ch, err)
				}
			}
			r, err := tpl.Render(chain, ChannelSMS, loc, vars, false)
			if err != nil {
				continue
			}
			if routine && !strings.HasSuffix(strings.TrimSuffix(r.Body, "."), hint) {
				t.Errorf("%s %s sms does not end with %q: %q", name, loc, hint, r.Body)
			}
			info := sms.Analyze(r.Body)
			if loc == "en" && info.Encoding != sms.GSM7 {
				t.Errorf("%s en sms is %s, want GSM-7: %q", name, info.Encoding, r.Body)
			}
			if info.Segments > 3 {
				t.Errorf("%s %s sms costs %d segments", name, loc, info.Segments)
			}
		}
	}
}

// The issue asks for a PHI variable the lint can demonstrate, and for the
// crisis safety check's answers.
func TestBuiltinContent(t *testing.T) {
	all, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	med := all["medication_reminder"]
	phi := false
	for _, v := range med.Variables {
		if v.Name == "medication_name" {
			phi = v.PHI
		}
	}
	if !phi {
		t.Error("medication_reminder.medication_name is not marked phi")
	}
	r, err := med.Render(NewChain("", nil), ChannelEmail, "en", examples(med), false)
	if err != nil || !strings.Contains(r.Body, "metformin 500 mg") {
		t.Errorf("medication email: %v %+v", err, r)
	}
	sc := all["crisis_safety_check"].ExpectReply
	if sc == nil || sc.Options["1"] != "safe" || sc.Options["2"] != "need_help" || len(sc.Options) != 2 {
		t.Errorf("crisis_safety_check expect_reply = %+v", sc)
	}
	ar := all["appointment_reminder"].ExpectReply
	if ar == nil || ar.Options["1"] != "confirm" || ar.Options["2"] != "reschedule" {
		t.Errorf("appointment_reminder expect_reply = %+v", ar)
	}
	v := all["post_discharge_day30"].Locales["en"].Voice
	if v == nil || v.Gather == nil || v.Record == nil || v.Record.MaxLength == 0 {
		t.Errorf("post_discharge_day30 voice = %+v", v)
	}
	if v := all["post_discharge_day30"].Locales["zh-CN"].Voice; v == nil || v.Gather == nil || v.Record == nil {
		t.Errorf("post_discharge_day30 zh-CN voice = %+v", v)
	}
}

// Builtin hands out copies: changing one does not change the next.
func TestBuiltinCopies(t *testing.T) {
	a, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	a["crisis_update"].Locales["en"].SMS = "changed"
	a["crisis_update"].Variables[0].Name = "changed"
	b, _ := Builtin()
	if b["crisis_update"].Locales["en"].SMS == "changed" || b["crisis_update"].Variables[0].Name == "changed" {
		t.Error("Builtin returned shared templates")
	}
	if _, err := b["crisis_update"].Render(NewChain("", nil), "sms", "en", examples(b["crisis_update"]), false); errors.Is(err, ErrInvalidTemplate) || err != nil {
		t.Error(err)
	}
}
