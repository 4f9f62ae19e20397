package console

import (
	"fmt"
	"html/template"
	"math"
	"strings"
	"time"
)

// lineChart is a line chart of counts over time, drawn on the server as
// SVG: no script, no style attribute (the Content-Security-Policy allows
// neither); the lines' colours and dashes come from console.css by class.
type lineChart struct {
	// ID prefixes the ids of the chart's title and description.
	ID string
	// Title and Desc are the chart's accessible name and description
	// (text; escaped here).
	Title, Desc string
	// Start is the time of the origin; Times[i] is the time of each
	// line's Points[i].
	Start time.Time
	Times []time.Time
	Zone  *time.Location
	// XLabel and YLabel name the axes.
	XLabel, YLabel string
	Lines          []chartLine
}

// chartLine is one line of a chart.
type chartLine struct {
	// Label is the line's name in the legend; Class its CSS class
	// ("series-reached").
	Label, Class string
	Points       []int64
}

// The chart's geometry, in SVG user units (it scales to its box).
const (
	chartW, chartH                  = 960, 360
	plotL, plotR, plotT, plotB      = 64, 720, 16, 300
	legendX, legendY, legendRowStep = 740, 28, 22
)

// esc escapes text for SVG (XML) content and attribute values.
func esc(s string) string { return template.HTMLEscapeString(s) }

// SVG draws the chart: a path per line, axes with ticks (times in the
// chart's zone), a legend, a <title> and a <desc>.
func (c *lineChart) SVG() template.HTML {
	zone := c.Zone
	if zone == nil {
		zone = time.UTC
	}
	var top int64 = 1
	for _, l := range c.Lines {
		for _, v := range l.Points {
			top = max(top, v)
		}
	}
	yStep := niceStep(top)
	top = (top + yStep - 1) / yStep * yStep
	end := c.Start.Add(time.Second)
	if len(c.Times) > 0 && c.Times[len(c.Times)-1].After(c.Start) {
		end = c.Times[len(c.Times)-1]
	}
	span := end.Sub(c.Start)
	x := func(t time.Time) float64 {
		return plotL + float64(plotR-plotL)*float64(t.Sub(c.Start))/float64(span)
	}
	y := func(v int64) float64 { return plotB - float64(plotB-plotT)*float64(v)/float64(top) }

	var yTicks, xTicks []tick
	for v := int64(0); v <= top; v += yStep {
		yTicks = append(yTicks, tick{y(v), group(v)})
	}
	// The x axis: six ticks, as times of day (with the date past a day).
	layout := "15:04"
	if span >= 24*time.Hour || c.Start.In(zone).YearDay() != end.In(zone).YearDay() {
		layout = "01-02 15:04"
	}
	if span < 5*time.Minute {
		layout = "15:04:05"
	}
	for i := range 6 {
		t := c.Start.Add(span * time.Duration(i) / 5)
		xTicks = append(xTicks, tick{x(t), t.In(zone).Format(layout)})
	}
	var b strings.Builder
	frame(&b, c.ID, c.Title, c.Desc, yTicks, xTicks, c.YLabel, c.XLabel)
	// A path per line, from the origin; and its legend entry.
	for i, l := range c.Lines {
		var d strings.Builder
		fmt.Fprintf(&d, "M%.1f %.1f", x(c.Start), y(0))
		for j, v := range l.Points {
			if j < len(c.Times) {
				fmt.Fprintf(&d, " L%.1f %.1f", x(c.Times[j]), y(v))
			}
		}
		fmt.Fprintf(&b, `<path class="line %s" fill="none" stroke="currentColor" d="%s"><title>%s</title></path>`,
			esc(l.Class), d.String(), esc(l.Label))
		ly := legendY + i*legendRowStep
		fmt.Fprintf(&b, `<g class="legend %s"><line x1="%d" x2="%d" y1="%d" y2="%d" stroke="currentColor"/><text x="%d" y="%d">%s</text></g>`,
			esc(l.Class), legendX, legendX+28, ly, ly, legendX+36, ly+5, esc(l.Label))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // every text above is escaped
}

// tick is a mark of an axis: its position (in SVG units) and its label.
type tick struct {
	At    float64
	Label string
}

// frame opens a chart's SVG with its title and description, and draws
// its axes: a gridline per y tick, a mark per x tick, and their labels
// (text; escaped here).
func frame(b *strings.Builder, id, title, desc string, yTicks, xTicks []tick, yLabel, xLabel string) {
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 %d %d" role="img" aria-labelledby="%s-title %s-desc">`,
		chartW, chartH, esc(id), esc(id))
	fmt.Fprintf(b, `<title id="%s-title">%s</title><desc id="%s-desc">%s</desc>`, esc(id), esc(title), esc(id), esc(desc))
	b.WriteString(`<g class="axis y">`)
	for _, t := range yTicks {
		fmt.Fprintf(b, `<line class="grid" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/>`, plotL, plotR, t.At, t.At)
		fmt.Fprintf(b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`, plotL-6, t.At+4, esc(t.Label))
	}
	fmt.Fprintf(b, `<text class="label" x="12" y="%d" transform="rotate(-90 12 %d)" text-anchor="middle">%s</text>`,
		(plotT+plotB)/2, (plotT+plotB)/2, esc(yLabel))
	b.WriteString(`</g>`)
	b.WriteString(`<g class="axis x">`)
	fmt.Fprintf(b, `<line x1="%d" x2="%d" y1="%d" y2="%d"/>`, plotL, plotR, plotB, plotB)
	for _, t := range xTicks {
		fmt.Fprintf(b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d"/>`, t.At, t.At, plotB, plotB+5)
		fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`, t.At, plotB+20, esc(t.Label))
	}
	fmt.Fprintf(b, `<text class="label" x="%d" y="%d" text-anchor="middle">%s</text>`, (plotL+plotR)/2, plotB+44, esc(xLabel))
	b.WriteString(`</g>`)
}

// niceStep is a step of 1, 2 or 5 × 10ⁿ giving about four steps up
// to top.
func niceStep(top int64) int64 {
	raw := float64(top) / 4
	if raw <= 1 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return int64(m * p)
		}
	}
	return int64(10 * p)
}
