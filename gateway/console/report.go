package console

import (
	"fmt"
	"net/http"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/internal/broadcasts"
)

// reportData is a broadcast's after-action report page.
type reportData struct {
	*broadcasts.Summary
	Report *broadcasts.Report
	// Lines are the timeline's series with their catalogue keys, in the
	// chart's order.
	Lines []reportLine
	Zone  *time.Location
}

// reportLine is a series of the timeline with its legend's catalogue key
// (Label; a channel's line is named from its channel) and CSS class.
type reportLine struct {
	broadcasts.Series
	Label, Class string
}

// Took writes how long after the start something took (h:mm:ss), ""
// when it did not happen.
func (d reportData) Took(p *time.Duration) string {
	if p == nil {
		return ""
	}
	s := int64(p.Round(time.Second) / time.Second)
	return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
}

// Reasons are the counts of people never reached, by reason, in the
// domain's order.
func (d reportData) Reasons() []count {
	out := make([]count, 0, len(broadcasts.Reasons))
	for _, r := range broadcasts.Reasons {
		out = append(out, count{r, d.Report.NeverReached[r]})
	}
	return out
}

// Chart is the timeline as a chart, its texts translated by t.
func (d reportData) Chart(t func(string) string) *lineChart {
	tf := func(key string, args ...any) string { return fmt.Sprintf(t(key), args...) }
	name := d.Name
	if name == "" {
		name = d.ID
	}
	ch := &lineChart{ID: "timeline", Title: tf("report.chart_title", name), Desc: t("report.chart_desc"),
		Start: d.Report.Start, Times: d.Report.Times, Zone: d.Zone,
		XLabel: tf("report.chart_x", d.Zone.String()), YLabel: t("report.people")}
	for _, l := range d.Lines {
		label := t(l.Label)
		if l.Channel != "" {
			label = tf("report.reached_on", t("channel."+l.Channel))
		}
		ch.Lines = append(ch.Lines, chartLine{Label: label, Class: l.Class, Points: l.Points})
	}
	return ch
}

// reportPage is a broadcast's after-action report: its timeline, the
// time to half and nine tenths acknowledged, and who was never reached
// and why. It reads every person once, as the CSV report does.
func (c *Console) reportPage(ctx *fiber.Ctx) error {
	sum, err := c.broadcastOf(ctx)
	if err != nil {
		return err
	}
	rep, err := c.opts.Broadcasts.Report(ctx.UserContext(), sum)
	if err != nil {
		return err
	}
	u := userOf(ctx)
	zone := c.zoneOf(ctx.UserContext(), u.Tenant)
	d := timelineOf(sum, rep, zone)
	return c.render(ctx, http.StatusOK, "report", pageData{Title: "report.title", Nav: "broadcasts", User: u, Zone: zone, Data: d})
}

// timelineOf is a report with its lines' legends and classes, for the
// timeline chart and its data table.
func timelineOf(sum *broadcasts.Summary, rep *broadcasts.Report, zone *time.Location) reportData {
	d := reportData{Summary: sum, Report: rep, Zone: zone}
	for _, s := range rep.Series {
		l := reportLine{Series: s, Label: "report.series." + s.Key, Class: "series-" + s.Key}
		if s.Channel != "" {
			l.Class = "series-channel series-channel-" + s.Channel
		}
		d.Lines = append(d.Lines, l)
	}
	return d
}
