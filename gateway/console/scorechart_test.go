package console

import (
	"encoding/xml"
	"strings"
	"testing"
	"time"
)

func TestAScoreChartHasAPointPerResponseLabelledWithItsDateAndBand(t *testing.T) {
	day := time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)
	ch := &scoreChart{ID: "scores", Title: `Scores of +1••••91 <script>`, Desc: "Totals", XLabel: "Date", YLabel: "Total",
		Lines: []scoreLine{
			{Label: "PHQ-9 <b>", Class: "series-q1", Points: []scorePoint{
				{At: day, Total: 14, Band: "moderate"}, {At: day.AddDate(0, 0, 7), Total: 9.5, Band: "mild"}, {At: day.AddDate(0, 0, 14), Total: 4}}},
			{Label: "GAD-7", Class: "series-q2", Points: []scorePoint{{At: day.AddDate(0, 0, 3), Total: 6, Band: `mild & "ok"`}}},
		}}
	svg := string(ch.SVG())
	if err := xml.Unmarshal([]byte(svg), new(struct{})); err != nil {
		t.Fatalf("not well-formed: %v\n%s", err, svg)
	}
	if strings.Contains(svg, "<script") || strings.Contains(svg, "<b>") || strings.Contains(svg, `"ok"`) {
		t.Fatalf("text not escaped: %s", svg)
	}
	if n := strings.Count(svg, `<circle class="point"`); n != 4 {
		t.Fatalf("%d points, want 4", n)
	}
	if n := strings.Count(svg, `<path class="line"`); n != 1 {
		t.Fatalf("%d lines, want 1 (a single response draws no line)", n)
	}
	for _, want := range []string{"PHQ-9 &lt;b&gt;: 2026-11-02 · 14 · moderate", "2026-11-09 · 9.5 · mild", ">11-02 · moderate<", "2026-11-16 · 4<"} {
		if !strings.Contains(svg, want) {
			t.Errorf("no %q in %s", want, svg)
		}
	}
}

func TestAScoreChartOfOneOrNoPointIsStillDrawn(t *testing.T) {
	for _, lines := range [][]scoreLine{nil, {{Label: "PHQ-9", Points: []scorePoint{{At: time.Unix(0, 0), Total: 0}}}}} {
		ch := &scoreChart{ID: "scores", Title: "Nothing yet", Lines: lines}
		if err := xml.Unmarshal([]byte(ch.SVG()), new(struct{})); err != nil || strings.Contains(string(ch.SVG()), "NaN") {
			t.Fatalf("%v: %s", err, ch.SVG())
		}
	}
}
