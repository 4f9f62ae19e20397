package escalation

import (
	"testing"
	"time"
)

func TestRulesMatchKeywordsInAnyLanguageAndPatterns(t *testing.T) {
	r := Rules{Keywords: []string{"Chest Pain", "胸痛", "can't breathe"}, Patterns: []string{`\bsuicid`}, Options: []string{"need_help"},
		OnCall: []Target{{Channel: "sms", Phone: "+14155550177"}}}
	if err := r.Compile(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		body   string
		urgent bool
	}{
		{"I have CHEST PAIN since this morning", true},
		{"我胸痛", true},
		{"I can't breathe", true},
		{"thinking about suicide", true},
		{"feeling better, thanks", false},
		{"chest x-ray tomorrow?", false},
		{"", false},
	}
	for _, c := range cases {
		if got, _ := r.Match(c.body, ""); got != c.urgent {
			t.Errorf("Match(%q) = %v, want %v", c.body, got, c.urgent)
		}
	}
	if got, by := r.Match("3", "need_help"); !got || by != "option" {
		t.Fatal("an urgent option must escalate whatever its key")
	}
	if got, _ := r.Match("1", "safe"); got {
		t.Fatal("another option must not escalate")
	}
	if r.AckTimeout != 600 {
		t.Fatalf("default ack timeout %d", r.AckTimeout)
	}
	bad := []Rules{
		{Keywords: []string{"x"}},
		{Keywords: []string{"x"}, OnCall: []Target{{Channel: "fax", Phone: "+1"}}},
		{OnCall: []Target{{Channel: "sms", Phone: "+1"}}},
		{Patterns: []string{"("}, OnCall: []Target{{Channel: "sms", Phone: "+1"}}},
	}
	for i, b := range bad {
		if err := b.Compile(); err == nil {
			t.Errorf("rules %d should be refused", i)
		}
	}
}

func TestTheDeadlineIsTheAckTimeoutAfterTheLastNotification(t *testing.T) {
	opened := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	r := &Rules{AckTimeout: 300}
	cases := []struct {
		name string
		esc  Escalation
		want time.Time
	}{
		{"not notified yet: from its opening", Escalation{State: "open", CreatedAt: opened}, opened.Add(5 * time.Minute)},
		{"notified twice: from the second", Escalation{State: "open", CreatedAt: opened, Notified: []Notified{{At: opened}, {At: opened.Add(5 * time.Minute)}}},
			opened.Add(10 * time.Minute)},
		{"acknowledged: none", Escalation{State: "acknowledged", CreatedAt: opened}, time.Time{}},
	}
	for _, c := range cases {
		if got := c.esc.Deadline(r); !got.Equal(c.want) {
			t.Errorf("%s: Deadline = %v, want %v", c.name, got, c.want)
		}
	}
	if got := (&Escalation{State: "open", CreatedAt: opened}).Deadline(nil); !got.Equal(opened.Add(10 * time.Minute)) {
		t.Errorf("without rules the default of ten minutes applies; got %v", got)
	}
}
