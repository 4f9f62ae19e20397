package console

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/invalid"
	"github.com/patientmsg/gateway/internal/questionnaires"
)

// ResponsesShown is how many of a questionnaire's newest responses its
// page lists and sums up.
const ResponsesShown = 200

// questionnairesPage lists the questionnaires the tenant can send, its
// own and the built-in ones, as GET /v1/questionnaires does.
func (c *Console) questionnairesPage(ctx *fiber.Ctx) error {
	u := userOf(ctx)
	defs, err := c.opts.Questionnaires.List(ctx.UserContext(), u.Tenant)
	if err != nil {
		return err
	}
	return c.render(ctx, http.StatusOK, "questionnaires", pageData{Title: "questionnaires.title", Nav: "questionnaires", User: u, Data: defs})
}

// labelled is a label and how many have it.
type labelled struct {
	Label string
	N     int
}

// questionnaireData is a questionnaire's page: its newest responses, and
// what they add up to.
type questionnaireData struct {
	*questionnaires.Definition
	Rows []responseRow
	// States, Bands and Levels count the responses by state, the
	// completed ones by band and the responses by risk level.
	States, Bands, Levels []labelled
	// Completed of Total responses listed: the response rate.
	Completed, Total int
	// Form is the filter as asked; Errors map its fields to the catalogue
	// key of why they cannot be read.
	Form                             responsesForm
	Errors                           map[string]string
	Channels, StateNames, LevelNames []string
}

// RateShown says whether the response rate means something: not when
// the responses are chosen by their state or risk.
func (d questionnaireData) RateShown() bool { return d.Form.State == "" && d.Form.Risk == "" }

// Filtered says whether the page lists only some of the responses.
func (d questionnaireData) Filtered() bool {
	return d.Form.State != "" || d.Form.Risk != "" || d.Form.To != ""
}

// responsesForm is the filter of a questionnaire's page: a plain GET form.
// To is what the person typed, echoed only into its own field.
type responsesForm struct {
	State, Risk, To, Channel string
}

// lookupChannels are the channels a patient's address is looked up on:
// those questionnaires and their web forms' links are sent on.
func lookupChannels() []string {
	var out []string
	for _, ch := range append(slices.Clone(questionnaires.Channels), questionnaires.FormVia...) {
		if _, ok := channels.SpecOf(ch); ok && !slices.Contains(out, ch) {
			out = append(out, ch)
		}
	}
	return out
}

// filter reads the form as GET /v1/questionnaires/{name}/responses reads
// its filters; errs maps a bad field to the catalogue key of why.
func (f responsesForm) filter(name string) (questionnaires.Filter, map[string]string) {
	out := questionnaires.Filter{Questionnaire: name, State: f.State, RiskLevel: f.Risk}
	errs := map[string]string{}
	if f.State != "" && !slices.Contains(questionnaires.States, f.State) {
		errs["state"] = "questionnaire.bad_state"
	}
	if f.Risk != "" && questionnaires.LevelRank(f.Risk) == 0 {
		errs["risk_level"] = "questionnaire.bad_risk"
	}
	if f.To != "" {
		if !slices.Contains(lookupChannels(), f.Channel) {
			errs["channel"] = "messages.bad_channel"
		}
		who, err := questionnaires.PatientOf(f.Channel, f.To)
		var ie *invalid.Error
		if errors.As(err, &ie) && ie.Errors[0].Field == "to" {
			errs["to"] = "messages.bad_to"
		}
		out.Who, out.Channel = who, f.Channel
	}
	return out, errs
}

// Rate is the share of the responses listed that were answered to the end
// (an integer percent).
func (d questionnaireData) Rate() int {
	if d.Total == 0 {
		return 0
	}
	return d.Completed * 100 / d.Total
}

// responseRow is a response in a questionnaire's list: the address masked.
type responseRow struct {
	*questionnaires.Response
	To string
}

// questionnairePage shows a questionnaire's newest responses with their
// state, total, band and risk level, and their sums: responses by state
// (the response rate), completed ones by band, by risk level.
func (c *Console) questionnairePage(ctx *fiber.Ctx) error {
	u := userOf(ctx)
	rctx := ctx.UserContext()
	def, err := c.opts.Questionnaires.Definition(rctx, u.Tenant, ctx.Params("name"), 0)
	if errors.Is(err, questionnaires.ErrNotFound) {
		return notFound()
	} else if err != nil {
		return err
	}
	form := responsesForm{State: ctx.Query("state"), Risk: ctx.Query("risk_level"), To: strings.TrimSpace(ctx.Query("to")), Channel: ctx.Query("channel")}
	f, errs := form.filter(def.Name)
	d := questionnaireData{Definition: def, Form: form, Errors: errs, Channels: lookupChannels(),
		StateNames: questionnaires.States, LevelNames: questionnaires.Levels}
	if len(errs) > 0 {
		return c.render(ctx, http.StatusUnprocessableEntity, "questionnaire", pageData{Title: "questionnaire.title", Nav: "questionnaires", User: u, Data: d})
	}
	page, err := c.opts.Questionnaires.Find(rctx, u.Tenant, f, ResponsesShown)
	if err != nil {
		return err
	}
	list := page.Responses
	d.Total = len(list)
	states, bands, levels := map[string]int{}, map[string]int{}, map[string]int{}
	for _, r := range list {
		d.Rows = append(d.Rows, responseRow{Response: r, To: maskedTo(r.To)})
		states[r.State]++
		if r.State == questionnaires.StateCompleted {
			d.Completed++
			if r.Scores != nil && r.Scores.Band != "" {
				bands[r.Scores.Band]++
			}
		}
		if r.RiskLevel != "" {
			levels[r.RiskLevel]++
		}
	}
	for _, s := range questionnaires.States {
		d.States = append(d.States, labelled{s, states[s]})
	}
	for _, b := range def.Bands { // in the definition's order
		if !slices.ContainsFunc(d.Bands, func(l labelled) bool { return l.Label == b.Label }) {
			d.Bands = append(d.Bands, labelled{b.Label, bands[b.Label]})
		}
	}
	for _, l := range []string{"urgent", "high", "moderate", "low"} {
		if levels[l] > 0 {
			d.Levels = append(d.Levels, labelled{l, levels[l]})
		}
	}
	return c.render(ctx, http.StatusOK, "questionnaire", pageData{Title: "questionnaire.title", Nav: "questionnaires", User: u, Data: d})
}

// answerRow is an answer with its question's text.
type answerRow struct {
	questionnaires.Answer
	Text, Shown string
}

// responsePage shows one response: its answers with their questions, its
// scores, band and risk rules fired, as GET
// /v1/questionnaire-responses/{id} does (the address masked).
func (c *Console) responsePage(ctx *fiber.Ctx) error {
	u := userOf(ctx)
	rctx := ctx.UserContext()
	r, err := c.opts.Questionnaires.GetResponse(rctx, u.Tenant, ctx.Params("id"))
	if errors.Is(err, questionnaires.ErrResponseNotFound) {
		return notFound()
	} else if err != nil {
		return err
	}
	def, err := c.opts.Questionnaires.Definition(rctx, u.Tenant, r.Questionnaire, r.Version)
	if err != nil && !errors.Is(err, questionnaires.ErrNotFound) {
		return err
	}
	var answers []answerRow
	for _, a := range r.Answers {
		row := answerRow{Answer: a, Shown: a.Key}
		if a.Number != nil {
			row.Shown = strconv.FormatFloat(*a.Number, 'f', -1, 64)
		} else if a.Text != "" {
			row.Shown = a.Text
		}
		if def != nil {
			if q := def.Question(a.Question); q != nil {
				row.Text = q.Text.In(u.Locale)
				for _, o := range q.Options {
					if o.Key == a.Key && row.Shown == a.Key {
						row.Shown = a.Key + " · " + o.Text.In(u.Locale)
					}
				}
			}
		}
		answers = append(answers, row)
	}
	return c.render(ctx, http.StatusOK, "response", pageData{Title: "response.title", Nav: "questionnaires", User: u,
		Data: struct {
			*questionnaires.Response
			To      string
			Answers []answerRow
		}{r, maskedTo(r.To), answers}})
}
