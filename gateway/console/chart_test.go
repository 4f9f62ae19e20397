package console

import (
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func TestAChartIsWellFormedSVGWithAPathPerLineAndEscapedText(t *testing.T) {
	start := time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)
	shanghai, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		t.Skip("no time zone database:", err)
	}
	ch := &lineChart{ID: "timeline", Title: `Flood <script>alert(1)</script> & "drill"`, Desc: "People over time",
		Start: start, Zone: shanghai, XLabel: "Time (Asia/Shanghai)", YLabel: "People",
		Times: []time.Time{start.Add(time.Minute), start.Add(2 * time.Minute), start.Add(3 * time.Minute)},
		Lines: []chartLine{
			{Label: "reached", Class: "series-reached", Points: []int64{3, 7, 10}},
			{Label: "acknowledged", Class: "series-acknowledged", Points: []int64{0, 4, 6}},
			{Label: "<b>SMS</b>", Class: "series-channel-1", Points: []int64{1, 2, 5}},
		}}
	svg := string(ch.SVG())
	if strings.Contains(svg, "<script") || strings.Contains(svg, "<b>") {
		t.Fatalf("text not escaped: %s", svg)
	}
	dec := xml.NewDecoder(strings.NewReader(svg))
	paths, title, texts := 0, "", []string{}
	var in []string
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, svg)
		}
		switch tk := tok.(type) {
		case xml.StartElement:
			in = append(in, tk.Name.Local)
			if tk.Name.Local == "path" {
				paths++
			}
		case xml.EndElement:
			in = in[:len(in)-1]
		case xml.CharData:
			switch {
			case len(in) == 2 && in[1] == "title":
				title = string(tk)
			case len(in) > 0 && in[len(in)-1] == "text":
				texts = append(texts, string(tk))
			}
		}
	}
	if paths != 3 {
		t.Errorf("%d paths, want one per line (3)", paths)
	}
	if title != `Flood <script>alert(1)</script> & "drill"` {
		t.Errorf("title reads %q", title)
	}
	// Times are in the tenant's zone: 03:00 UTC is 11:00 in Shanghai.
	all := strings.Join(texts, "|")
	if !strings.Contains(all, "11:00:00") || !strings.Contains(all, "<b>SMS</b>") || !strings.Contains(all, "Time (Asia/Shanghai)") {
		t.Errorf("labels: %s", all)
	}
	if strings.Contains(svg, "style=") || strings.Contains(svg, "<style") {
		t.Error("the chart carries a style the Content-Security-Policy forbids")
	}
}

func TestAChartOfNothingIsStillDrawn(t *testing.T) {
	ch := &lineChart{ID: "empty", Title: "Nothing yet", Start: time.Unix(0, 0),
		Lines: []chartLine{{Label: "reached", Class: "series-reached"}}}
	if err := xml.Unmarshal([]byte(ch.SVG()), new(struct{})); err != nil {
		t.Fatal(err)
	}
}

func TestNiceSteps(t *testing.T) {
	for top, want := range map[int64]int64{1: 1, 4: 1, 10: 5, 100: 50, 1000: 500, 99_999: 50_000} {
		if got := niceStep(top); got != want {
			t.Errorf("niceStep(%d) = %d, want %d", top, got, want)
		}
	}
}
