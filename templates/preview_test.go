package templates

import (
	"reflect"
	"strings"
	"testing"

	"github.com/patientmsg/gateway/internal/sms"
)

// Chinese costs more segments than English for the same message: UCS-2
// fits 70 (67) units in a segment, GSM-7 160 (153).
func TestPreviewSMSFigures(t *testing.T) {
	tpl := builtin(t, "appointment_reminder")
	chain := NewChain("en", nil)
	vars := examples(tpl)
	en := tpl.Preview(chain, "en", vars, false)
	zh := tpl.Preview(chain, "zh-CN", vars, false)
	if en.Locale != "en" || zh.Locale != "zh-CN" {
		t.Fatalf("locales %s %s", en.Locale, zh.Locale)
	}
	e, z := en.Channels["sms"].SMS, zh.Channels["sms"].SMS
	if e == nil || z == nil {
		t.Fatal("no SMS figures")
	}
	if e.Encoding != "GSM-7" || e.Segments != 1 || e.SegmentSize != 160 || e.Remaining != 160-e.Units || e.Chars != e.Units {
		t.Errorf("en %+v", e)
	}
	if z.Encoding != "UCS-2" || z.Segments != 2 || z.SegmentSize != 67 || z.Remaining != 2*67-z.Units {
		t.Errorf("zh-CN %+v", z)
	}
	if z.Segments <= e.Segments {
		t.Errorf("Chinese %d segments, English %d", z.Segments, e.Segments)
	}
	if !en.Channels["sms"].Sendable || len(en.Missing) != 0 || len(en.PHI) != 0 || len(en.Problems) != 0 {
		t.Errorf("en preview %+v", en)
	}
	// Every channel form is previewed.
	for _, ch := range Channels {
		if en.Channels[ch] == nil || en.Channels[ch].Body == "" {
			t.Errorf("no %s preview", ch)
		}
	}
	if en.Channels["email"].Subject != "Appointment reminder from Riverside Clinic" || !strings.Contains(en.Channels["email"].HTML, "<li>Department: Cardiology</li>") {
		t.Errorf("email %+v", en.Channels["email"])
	}
	if en.Channels["voice"].Voice.Gather.Prompt == "" || en.Channels["sms"].ExpectReply == nil || en.Channels["email"].ExpectReply != nil {
		t.Errorf("voice/expect_reply %+v", en.Channels)
	}
}

// Remaining is exact: that many more characters keep the segment count,
// one more adds a segment, also across a two-unit character moved whole to
// the next segment.
func TestRemainingUnits(t *testing.T) {
	for _, body := range []string{
		"a",
		strings.Repeat("a", 160),
		strings.Repeat("a", 161),
		strings.Repeat("a", 152) + "€", // escape pair straddling the first boundary
		"您好",
		strings.Repeat("您", 70),
		strings.Repeat("您", 66) + "😀", // surrogate pair straddling the boundary
		strings.Repeat("b", 1500),
	} {
		st := smsStats(body)
		add := func(n int) int { return sms.Analyze(body + strings.Repeat("a", n)).Segments }
		if add(st.Remaining) != st.Segments || add(st.Remaining+1) != st.Segments+1 {
			t.Errorf("%d chars: remaining %d wrong (%+v)", len([]rune(body)), st.Remaining, st)
		}
	}
	if st := smsStats(strings.Repeat("a", 1601)); !st.TooLong {
		t.Error("1601 characters not too long")
	}
}

// A preview with variables missing renders visible markers and reports
// everything at once instead of failing.
func TestPreviewMissingAndUnknown(t *testing.T) {
	tpl := builtin(t, "appointment_reminder")
	p := tpl.Preview(NewChain("en", nil), "zh-HK", map[string]string{"clinic_name": "仁济医院", "bed_number": "12", "appointment_time": "bad\x00"}, false)
	if p.Locale != "zh-CN" {
		t.Errorf("locale %q", p.Locale)
	}
	if want := []string{"appointment_date", "clinic_phone", "department"}; !reflect.DeepEqual(p.Missing, want) {
		t.Errorf("missing %v, want %v", p.Missing, want)
	}
	if !reflect.DeepEqual(p.Unknown, []string{"bed_number"}) {
		t.Errorf("unknown %v", p.Unknown)
	}
	if len(p.Problems) != 1 || !strings.Contains(p.Problems[0], "appointment_time") {
		t.Errorf("problems %v", p.Problems)
	}
	s := p.Channels["sms"]
	if !strings.Contains(s.Body, "【仁济医院】") || !strings.Contains(s.Body, "{{appointment_date}} {{appointment_time}}") {
		t.Errorf("sms %q", s.Body)
	}
	if !reflect.DeepEqual(s.Missing, []string{"appointment_date"}) || s.Sendable {
		t.Errorf("sms missing %v sendable %v", s.Missing, s.Sendable)
	}
	// The optional arrive_minutes takes its default.
	if v := p.Channels["voice"]; !strings.Contains(v.Body, "请提前15分钟到达") || !strings.Contains(v.Body, "{{department}}") {
		t.Errorf("voice %q", v.Body)
	}
	if e := p.Channels["email"]; !strings.Contains(e.HTML, "{{clinic_phone}}") || !reflect.DeepEqual(e.Missing, []string{"appointment_date", "clinic_phone", "department"}) {
		t.Errorf("email %+v", e)
	}
}

func TestPreviewPHIAndLimits(t *testing.T) {
	tpl := mustParse(t, "lab_result", phiDoc)
	chain := NewChain("en", nil)
	vars := examples(tpl)
	p := tpl.Preview(chain, "en", vars, false)
	want := []PHIFinding{{Var: "test_name", Channel: "sms", Status: PHIRefused}, {Var: "test_name", Channel: "wechat", Status: PHIRefused}}
	if !reflect.DeepEqual(p.PHI, want) {
		t.Errorf("phi %+v", p.PHI)
	}
	if p.Channels["sms"].Sendable || p.Channels["wechat"].Sendable || !p.Channels["email"].Sendable || !p.Channels["voice"].Sendable {
		t.Errorf("sendable %+v", p.Channels)
	}
	if !strings.Contains(p.Channels["sms"].Body, "HbA1c") {
		t.Error("a refused form is still previewed")
	}
	p = tpl.Preview(chain, "en", vars, true)
	for i := range want {
		want[i].Status = PHIWarning
	}
	if !reflect.DeepEqual(p.PHI, want) || !p.Channels["sms"].Sendable || !p.Channels["wechat"].Sendable {
		t.Errorf("allowed: %+v", p.PHI)
	}
	if w := p.Channels["wechat"].WeChat; w == nil || w.Data["thing1"] != "HbA1c" || w.URL != "https://clinic.example/r?c=Riverside%20Clinic" {
		t.Errorf("wechat %+v", w)
	}

	// Limits the rendered form breaks are listed.
	vars["clinic_name"] = "Riverside\nClinic"
	p = tpl.Preview(chain, "en", vars, true)
	if e := p.Channels["email"]; e.Sendable || len(e.Problems) != 1 || !strings.Contains(e.Problems[0], "email.subject") {
		t.Errorf("email %+v", e)
	}

	// No locale: the preview says so.
	p = localeTemplate(t, "zh-CN").Preview(chain, "fr", nil, false)
	if p.Locale != "" || len(p.Problems) != 1 || len(p.Channels) != 0 {
		t.Errorf("%+v", p)
	}
}

// Preview and Render agree on whether a channel can be sent.
func TestPreviewAgreesWithRender(t *testing.T) {
	all, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	all["lab_result"] = mustParse(t, "lab_result", phiDoc)
	chain := NewChain("en", nil)
	for name, tpl := range all {
		full := examples(tpl)
		cases := []map[string]string{full, {}, {"clinic_name": "x"}, {"clinic_name": "x\x01"}, {"nope": "1"}}
		for _, vars := range cases {
			for _, allow := range []bool{false, true} {
				for _, loc := range []string{"en", "zh-CN"} {
					p := tpl.Preview(chain, loc, vars, allow)
					for ch, cp := range p.Channels {
						r, err := tpl.Render(chain, ch, loc, vars, allow)
						if (err == nil) != cp.Sendable {
							t.Errorf("%s %s %s %v allow=%v: render err %v, preview sendable %v", name, loc, ch, vars, allow, err, cp.Sendable)
						}
						if err == nil && r.Body != cp.Body {
							t.Errorf("%s %s %s: bodies differ", name, loc, ch)
						}
					}
				}
			}
		}
	}
}
