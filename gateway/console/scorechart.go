package console

import (
	"fmt"
	"html/template"
	"math"
	"strconv"
	"strings"
	"time"
)

// scoreChart is a line chart of scores over time, a line per
// questionnaire, each point a response at its own time, drawn on the
// server as SVG (no script, no style attribute), as lineChart is.
type scoreChart struct {
	// ID prefixes the ids of the chart's title and description.
	ID string
	// Title and Desc are the chart's accessible name and description.
	Title, Desc    string
	Zone           *time.Location
	XLabel, YLabel string
	Lines          []scoreLine
}

// scoreLine is one questionnaire's scores, oldest first.
type scoreLine struct {
	// Label names the line in the legend; Class is its CSS class.
	Label, Class string
	Points       []scorePoint
}

// scorePoint is one response's total at the time it was sent.
type scorePoint struct {
	At    time.Time
	Total float64
	Band  string
}

// pointLabelsUpTo is the most points a chart labels in writing (beyond,
// each point keeps its <title>; the table below the chart has them all).
const pointLabelsUpTo = 30

// num writes a score as people do: 12, 7.5.
func num(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// SVG draws the chart: a path and a circle per point for each line, the
// points labelled with their date and band, axes, a legend, a <title>
// and a <desc>.
func (c *scoreChart) SVG() template.HTML {
	zone := c.Zone
	if zone == nil {
		zone = time.UTC
	}
	var first, last time.Time
	lo, hi, n := 0.0, 1.0, 0
	for _, l := range c.Lines {
		for _, p := range l.Points {
			if n == 0 || p.At.Before(first) {
				first = p.At
			}
			if n == 0 || p.At.After(last) {
				last = p.At
			}
			lo, hi = min(lo, math.Floor(p.Total)), max(hi, math.Ceil(p.Total))
			n++
		}
	}
	if n == 0 {
		first = time.Unix(0, 0)
	}
	// A day either side of the points, so that none sits on an axis.
	start, end := first.Add(-24*time.Hour), last.Add(24*time.Hour)
	if !end.After(start) {
		end = start.Add(48 * time.Hour)
	}
	span := end.Sub(start)
	step := niceStep(int64(hi - lo))
	bottom := math.Floor(lo/float64(step)) * float64(step)
	top := math.Ceil(hi/float64(step)) * float64(step)
	if top <= bottom {
		top = bottom + float64(step)
	}
	x := func(t time.Time) float64 {
		return plotL + float64(plotR-plotL)*float64(t.Sub(start))/float64(span)
	}
	y := func(v float64) float64 { return plotB - float64(plotB-plotT)*(v-bottom)/(top-bottom) }

	var yTicks, xTicks []tick
	for v := bottom; v <= top; v += float64(step) {
		yTicks = append(yTicks, tick{y(v), num(v)})
	}
	layout := "2006-01-02"
	if span <= 72*time.Hour {
		layout = "01-02 15:04"
	}
	for i := range 6 {
		t := start.Add(span * time.Duration(i) / 5)
		xTicks = append(xTicks, tick{x(t), t.In(zone).Format(layout)})
	}
	var b strings.Builder
	frame(&b, c.ID, c.Title, c.Desc, yTicks, xTicks, c.YLabel, c.XLabel)
	for i, l := range c.Lines {
		fmt.Fprintf(&b, `<g class="series %s">`, esc(l.Class))
		if len(l.Points) > 1 {
			var d strings.Builder
			for j, p := range l.Points {
				cmd := " L"
				if j == 0 {
					cmd = "M"
				}
				fmt.Fprintf(&d, "%s%.1f %.1f", cmd, x(p.At), y(p.Total))
			}
			fmt.Fprintf(&b, `<path class="line" fill="none" stroke="currentColor" d="%s"/>`, strings.TrimSpace(d.String()))
		}
		for j, p := range l.Points {
			day := p.At.In(zone).Format("2006-01-02")
			label := day + " · " + num(p.Total)
			if p.Band != "" {
				label += " · " + p.Band
			}
			fmt.Fprintf(&b, `<circle class="point" cx="%.1f" cy="%.1f" r="4" fill="currentColor"><title>%s</title></circle>`,
				x(p.At), y(p.Total), esc(l.Label+": "+label))
			if n <= pointLabelsUpTo {
				// Above the point, and below for every other one, so that
				// neighbours' labels do not run into each other.
				dy := -10.0
				if j%2 == 1 {
					dy = 18
				}
				short := p.At.In(zone).Format("01-02")
				if p.Band != "" {
					short += " · " + p.Band
				}
				fmt.Fprintf(&b, `<text class="point-label" x="%.1f" y="%.1f" text-anchor="middle" aria-hidden="true">%s</text>`,
					x(p.At), y(p.Total)+dy, esc(short))
			}
		}
		b.WriteString(`</g>`)
		ly := legendY + i*legendRowStep
		fmt.Fprintf(&b, `<g class="legend %s"><line x1="%d" x2="%d" y1="%d" y2="%d" stroke="currentColor"/><text x="%d" y="%d">%s</text></g>`,
			esc(l.Class), legendX, legendX+28, ly, ly, legendX+36, ly+5, esc(l.Label))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // every text above is escaped
}
