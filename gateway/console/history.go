package console

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/contacts"
	"github.com/patientmsg/gateway/internal/questionnaires"
	"github.com/patientmsg/gateway/workers"
)

// historyData is a patient's questionnaire history: every response,
// and the completed ones' totals over time.
type historyData struct {
	// Form is the patient lookup: an address on a channel.
	Form     responsesForm
	Channels []string
	// Errors map a field of the form to the catalogue key of why it
	// cannot be read.
	Errors map[string]string
	// Who is the patient's address (or a contact's addresses), masked;
	// empty before a patient is chosen.
	Who string
	// Contact is the contact's id when the page was opened from it.
	Contact string
	// Rows are the responses, newest first; Points the completed ones
	// with a score, oldest first.
	Rows   []responseRow
	Points []historyPoint
	Zone   *time.Location
}

// historyPoint is a completed response on the chart and in its table.
type historyPoint struct {
	*questionnaires.Response
	// Title is its questionnaire's title in the reader's language.
	Title string
}

// Chart draws the totals, a line per questionnaire, its texts translated
// by t.
func (d historyData) Chart(t func(string) string) *scoreChart {
	ch := &scoreChart{ID: "scores", Title: fmt.Sprintf(t("history.chart_title"), d.Who), Desc: t("history.chart_desc"),
		Zone: d.Zone, XLabel: fmt.Sprintf(t("history.chart_x"), d.Zone.String()), YLabel: t("history.chart_y")}
	at := map[string]int{}
	for _, p := range d.Points {
		i, ok := at[p.Questionnaire]
		if !ok {
			i = len(ch.Lines)
			at[p.Questionnaire] = i
			ch.Lines = append(ch.Lines, scoreLine{Label: p.Title, Class: fmt.Sprintf("series-q%d", i%6+1)})
		}
		ch.Lines[i].Points = append(ch.Lines[i].Points, scorePoint{At: p.CreatedAt, Total: p.Scores.Total, Band: p.Scores.Band})
	}
	return ch
}

// historyPage is a patient's questionnaire history: the responses to
// every questionnaire, newest first, and the totals of the completed ones
// over time as a chart and a table. The patient is an address on a
// channel (?to=&channel=, the same rules as GET
// /v1/questionnaire-responses), a response's (?response=) or a contact's
// addresses (?contact=); the page shows them masked.
func (c *Console) historyPage(ctx *fiber.Ctx) error {
	u := userOf(ctx)
	rctx := ctx.UserContext()
	zone := c.zoneOf(rctx, u.Tenant)
	d := historyData{Channels: lookupChannels(), Errors: map[string]string{}, Zone: zone,
		Form: responsesForm{To: strings.TrimSpace(ctx.Query("to")), Channel: ctx.Query("channel")}}
	render := func(status int) error {
		return c.render(ctx, status, "history", pageData{Title: "history.title", Nav: "questionnaires", User: u, Zone: zone, Data: d})
	}
	var who []consent.Identity
	channel := ""
	switch {
	case ctx.Query("response") != "":
		r, err := c.opts.Questionnaires.GetResponse(rctx, u.Tenant, ctx.Query("response"))
		if errors.Is(err, questionnaires.ErrResponseNotFound) {
			return notFound()
		} else if err != nil {
			return err
		}
		who, d.Who = []consent.Identity{workers.IdentityOf(r.Channel, r.To)}, maskedTo(r.To)
	case ctx.Query("contact") != "":
		if c.opts.Contacts == nil {
			return notFound()
		}
		ct, err := c.opts.Contacts.Get(rctx, u.Tenant, ctx.Query("contact"))
		if errors.Is(err, contacts.ErrNotFound) {
			return notFound()
		} else if err != nil {
			return err
		}
		shown := make([]string, 0, len(ct.Identities))
		for _, id := range ct.Identities {
			shown = append(shown, masked(id))
		}
		who, d.Who, d.Contact = ct.Identities, strings.Join(shown, ", "), ct.ID
	case d.Form.To != "" || d.Form.Channel != "":
		f, errs := d.Form.filter("")
		if !f.Who.Valid() && len(errs) == 0 {
			errs["to"] = "messages.bad_to"
		}
		if len(errs) > 0 {
			d.Errors = errs
			return render(http.StatusUnprocessableEntity)
		}
		who, d.Who, channel = []consent.Identity{f.Who}, masked(f.Who), f.Channel
	default:
		return render(http.StatusOK)
	}
	var list []*questionnaires.Response
	for _, id := range who {
		p, err := c.opts.Questionnaires.Find(rctx, u.Tenant, questionnaires.Filter{Who: id, Channel: channel}, ResponsesShown)
		if err != nil {
			return err
		}
		list = append(list, p.Responses...)
	}
	sort.SliceStable(list, func(i, j int) bool { return list[i].CreatedAt.After(list[j].CreatedAt) })
	list = list[:min(len(list), ResponsesShown)]
	titles := map[string]string{}
	for _, r := range list {
		d.Rows = append(d.Rows, responseRow{Response: r, To: maskedTo(r.To)})
		if r.State != questionnaires.StateCompleted || r.Scores == nil {
			continue
		}
		title, ok := titles[r.Questionnaire]
		if !ok {
			title = r.Questionnaire
			if def, err := c.opts.Questionnaires.Definition(rctx, u.Tenant, r.Questionnaire, 0); err == nil {
				title = def.Title.In(u.Locale)
			} else if !errors.Is(err, questionnaires.ErrNotFound) {
				return err
			}
			titles[r.Questionnaire] = title
		}
		d.Points = append(d.Points, historyPoint{Response: r, Title: title})
	}
	slices.Reverse(d.Points)
	return render(http.StatusOK)
}
