package console

import (
	"errors"
	"net/http"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/internal/broadcasts"
	"github.com/patientmsg/gateway/internal/incidents"
	"github.com/patientmsg/gateway/internal/invalid"
)

// IncidentsShown is how many incidents the incidents page lists.
const IncidentsShown = 50

// incidentRow is an incident in the list, with whether its update is
// overdue now.
type incidentRow struct {
	*incidents.Incident
	Overdue bool
}

// incidentsData is the incidents page's: the list, and the form to open
// one posted back when refused.
type incidentsData struct {
	Rows          []incidentRow
	Name, Cadence string
	Errors        map[string]string
}

func (c *Console) incidentRows(ctx *fiber.Ctx) ([]incidentRow, error) {
	list, err := c.opts.Incidents.List(ctx.UserContext(), userOf(ctx).Tenant, IncidentsShown)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	rows := make([]incidentRow, len(list))
	for i, inc := range list {
		rows[i] = incidentRow{Incident: inc, Overdue: inc.Overdue(now)}
	}
	return rows, nil
}

// incidentsPage lists the tenant's incidents, overdue ones marked, with
// the form to open one (leads).
func (c *Console) incidentsPage(ctx *fiber.Ctx) error {
	rows, err := c.incidentRows(ctx)
	if err != nil {
		return err
	}
	return c.render(ctx, http.StatusOK, "incidents", pageData{Title: "incidents.title", Nav: "incidents", User: userOf(ctx),
		Data: incidentsData{Rows: rows, Cadence: "6h"}})
}

// openIncident opens an incident, as POST /v1/incidents does.
func (c *Console) openIncident(ctx *fiber.Ctx) error {
	u := userOf(ctx)
	name, cadence := ctx.FormValue("name"), ctx.FormValue("cadence")
	inc, err := c.opts.Incidents.Open(ctx.UserContext(), u.Tenant, name, cadence)
	var bad *invalid.Error
	if errors.As(err, &bad) {
		rows, lerr := c.incidentRows(ctx)
		if lerr != nil {
			return lerr
		}
		d := incidentsData{Rows: rows, Name: name, Cadence: cadence, Errors: map[string]string{}}
		for _, fe := range bad.Errors {
			d.Errors[fe.Field] = fe.Detail
		}
		return c.render(ctx, http.StatusUnprocessableEntity, "incidents", pageData{Title: "incidents.title", Nav: "incidents", User: u, Data: d})
	} else if err != nil {
		return err
	}
	c.log.Info("incident opened from the console", "tenant", u.Tenant, "incident_id", inc.ID, "user_id", u.ID)
	return ctx.Redirect(Prefix+"/incidents/"+inc.ID, http.StatusSeeOther)
}

// incidentOf is the tenant's incident named in the path.
func (c *Console) incidentOf(ctx *fiber.Ctx) (*incidents.Incident, error) {
	inc, err := c.opts.Incidents.Get(ctx.UserContext(), userOf(ctx).Tenant, ctx.Params("id"))
	if errors.Is(err, incidents.ErrNotFound) {
		return nil, notFound()
	}
	return inc, err
}

// incidentWithBroadcasts is the tenant's incident named in the path with
// its broadcasts still kept, in the order sent.
func (c *Console) incidentWithBroadcasts(ctx *fiber.Ctx) (*incidents.Incident, []*broadcasts.Summary, error) {
	inc, err := c.incidentOf(ctx)
	if err != nil {
		return nil, nil, err
	}
	sums, err := c.opts.Broadcasts.Summaries(ctx.UserContext(), inc.Tenant, inc.Broadcasts)
	return inc, sums, err
}

// incidentData is an incident's page: its broadcasts with their rosters.
type incidentData struct {
	*incidents.Incident
	Overdue    bool
	Broadcasts []broadcastRow
	// Latest is the latest broadcast kept, for a follow-up to those not
	// yet safe.
	Latest *broadcasts.Summary
	Closed string
}

// incidentPage shows an incident: when the next update is due (overdue
// marked), its broadcasts in the order sent with their counts, and, for
// leads, sending an update and closing it.
func (c *Console) incidentPage(ctx *fiber.Ctx) error {
	inc, sums, err := c.incidentWithBroadcasts(ctx)
	if err != nil {
		return err
	}
	d := incidentData{Incident: inc, Overdue: inc.Overdue(time.Now()), Closed: ctx.Query("closed")}
	for _, sum := range sums {
		d.Broadcasts = append(d.Broadcasts, broadcastRow{Summary: sum, Roster: sum.Roster()})
	}
	if len(sums) > 0 {
		d.Latest = sums[len(sums)-1]
	}
	return c.render(ctx, http.StatusOK, "incident", pageData{Title: "incident.title", Nav: "incidents", User: userOf(ctx), Data: d})
}

// closeIncident closes it, as POST /v1/incidents/{id}/close does.
func (c *Console) closeIncident(ctx *fiber.Ctx) error {
	u := userOf(ctx)
	outcome := "1"
	_, err := c.opts.Incidents.Close(ctx.UserContext(), u.Tenant, ctx.Params("id"))
	switch {
	case errors.Is(err, incidents.ErrNotFound):
		return notFound()
	case errors.Is(err, incidents.ErrClosed):
		outcome = "already"
	case err != nil:
		return err
	default:
		c.log.Info("incident closed from the console", "tenant", u.Tenant, "incident_id", ctx.Params("id"), "user_id", u.ID)
	}
	return ctx.Redirect(Prefix+"/incidents/"+ctx.Params("id")+"?closed="+outcome, http.StatusSeeOther)
}

// incidentReportRow is one broadcast of an incident's after-action
// report.
type incidentReportRow struct {
	*broadcasts.Summary
	Report *broadcasts.Report
}

// incidentReportData is an incident's after-action report.
type incidentReportData struct {
	*incidents.Incident
	Rows []incidentReportRow
	// Sums add up the broadcasts' people (a person in two broadcasts
	// counts twice).
	People, Reached, Acknowledged, Safe, NeedHelp, NeverReached int64
	// Timeline is the broadcasts' reports on one timeline
	// (broadcasts.Combine), drawn as a broadcast's report draws its own.
	Timeline reportData
}

// Took writes a time to an acknowledged share as the broadcast report
// does.
func (d incidentReportData) Took(p *time.Duration) string { return reportData{}.Took(p) }

// incidentReportPage is an incident's after-action report: each
// broadcast's figures (people, reached, acknowledged, safe, need help,
// never reached; time to half and nine tenths acknowledged), linked to
// its own report, and their sums. It reads every person of every
// broadcast once.
func (c *Console) incidentReportPage(ctx *fiber.Ctx) error {
	inc, sums, err := c.incidentWithBroadcasts(ctx)
	if err != nil {
		return err
	}
	d := incidentReportData{Incident: inc}
	var reps []*broadcasts.Report
	for _, sum := range sums {
		rep, err := c.opts.Broadcasts.Report(ctx.UserContext(), sum)
		if err != nil {
			return err
		}
		d.Rows = append(d.Rows, incidentReportRow{Summary: sum, Report: rep})
		reps = append(reps, rep)
		d.People += rep.People
		d.Reached += rep.Total(broadcasts.SeriesReached)
		d.Acknowledged += rep.Total(broadcasts.SeriesAcknowledged)
		d.Safe += rep.Total(broadcasts.SeriesSafe)
		d.NeedHelp += rep.Total(broadcasts.SeriesNeedHelp)
		d.NeverReached += rep.NeverReachedTotal
	}
	u := userOf(ctx)
	zone := c.zoneOf(ctx.UserContext(), u.Tenant)
	d.Timeline = timelineOf(&broadcasts.Summary{Config: broadcasts.Config{ID: inc.ID, Name: inc.Name}}, broadcasts.Combine(reps), zone)
	return c.render(ctx, http.StatusOK, "incident_report", pageData{Title: "incident_report.title", Nav: "incidents", User: u, Zone: zone, Data: d})
}
