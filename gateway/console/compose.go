package console

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/internal/audiences"
	"github.com/patientmsg/gateway/internal/broadcasts"
	"github.com/patientmsg/gateway/internal/incidents"
	"github.com/patientmsg/gateway/internal/users"
	"github.com/patientmsg/gateway/templates"
)

// cascadeSteps and pollRows are how many channels and poll answers the
// composer offers.
const (
	cascadeSteps = 4
	pollRows     = 4
)

// The body's locales in the composer.
const (
	localeEN = "en"
	localeZH = "zh-Hans"
)

// composeForm is the composer's fields: a broadcast request as a form.
type composeForm struct {
	AudienceID string
	// FollowUpOf is an earlier broadcast whose people are the audience
	// instead (OnlyNotSafe: those whose latest answer is not safe).
	FollowUpOf  string
	OnlyNotSafe bool
	// IncidentID is the incident the broadcast is an update of.
	IncidentID   string
	Name         string
	BodyEN       string
	BodyZH       string
	Channels     [cascadeSteps]string
	PollKeys     [pollRows]string
	PollMeanings [pollRows]string
	QuestionEN   string
	QuestionZH   string
	AckTimeout   string
	Priority     string
	// Template names a template to send instead of the texts, with Vars
	// (from the var_<name> fields).
	Template string
	Vars     map[string]string
}

// defaultForm is a new broadcast: SMS then a call, "1 safe, 2 need help",
// ten minutes to answer, crisis priority.
func defaultForm() composeForm {
	return composeForm{Channels: [cascadeSteps]string{"sms", "voice"}, PollKeys: [pollRows]string{"1", "2"},
		PollMeanings: [pollRows]string{"safe", NeedHelp}, AckTimeout: "10m", Priority: "crisis"}
}

func parseForm(ctx *fiber.Ctx) composeForm {
	v := func(k string) string { return strings.TrimSpace(ctx.FormValue(k)) }
	f := composeForm{AudienceID: v("audience"), FollowUpOf: v("follow_up_of"), OnlyNotSafe: v("only_not_safe") == "1", IncidentID: v("incident_id"), Name: v("name"), BodyEN: v("body_en"), BodyZH: v("body_zh"),
		QuestionEN: v("question_en"), QuestionZH: v("question_zh"), AckTimeout: v("ack_timeout"), Priority: v("priority")}
	for i := range cascadeSteps {
		f.Channels[i] = v(fmt.Sprintf("channel_%d", i+1))
	}
	if f.Template = v("template"); f.Template != "" {
		f.Vars = map[string]string{}
		ctx.Request().PostArgs().VisitAll(func(k, val []byte) {
			if name, ok := strings.CutPrefix(string(k), "var_"); ok && strings.TrimSpace(string(val)) != "" {
				f.Vars[name] = strings.TrimSpace(string(val))
			}
		})
	}
	for i := range pollRows {
		f.PollKeys[i] = v(fmt.Sprintf("poll_key_%d", i+1))
		f.PollMeanings[i] = v(fmt.Sprintf("poll_meaning_%d", i+1))
	}
	return f
}

// request is the broadcast request the form stands for: what the API
// would be sent. Empty fields are left out, so that the engine says what
// is missing.
func (f composeForm) request() *broadcasts.Request {
	r := &broadcasts.Request{Name: f.Name, AudienceID: f.AudienceID, FollowUpOf: f.FollowUpOf, OnlyNotSafe: f.OnlyNotSafe, IncidentID: f.IncidentID,
		AckTimeout: f.AckTimeout, Priority: f.Priority}
	for _, ch := range f.Channels {
		if ch != "" {
			r.Channels = append(r.Channels, ch)
		}
	}
	if f.Template != "" {
		t := f.Template
		r.Template, r.Vars = &t, f.Vars
	} else if f.BodyEN != "" || f.BodyZH != "" {
		r.Body = map[string]string{}
		if f.BodyEN != "" {
			r.Body[localeEN] = f.BodyEN
		}
		if f.BodyZH != "" {
			r.Body[localeZH] = f.BodyZH
		}
	}
	opts := map[string]string{}
	for i := range pollRows {
		if f.PollKeys[i] != "" || f.PollMeanings[i] != "" {
			opts[f.PollKeys[i]] = f.PollMeanings[i]
		}
	}
	if len(opts) > 0 {
		r.Poll = &broadcasts.Poll{Options: opts}
		if f.QuestionEN != "" || f.QuestionZH != "" {
			r.Poll.Question = broadcasts.Texts{}
			if f.QuestionEN != "" {
				r.Poll.Question[localeEN] = f.QuestionEN
			}
			if f.QuestionZH != "" {
				r.Poll.Question[localeZH] = f.QuestionZH
			}
		}
	}
	return r
}

// composeData is the composer's and the confirmation page's.
type composeData struct {
	Form     composeForm
	Audience *audiences.Audience
	// Earlier is the broadcast a follow-up goes to the people of.
	Earlier *broadcasts.Summary
	// Templates are those the composer offers; Chosen is the one picked
	// (nil: the texts are written), whose variables get a field each.
	Templates []*templates.Template
	Chosen    *templates.Template
	// Incident is the incident the broadcast is an update of.
	Incident *incidents.Incident
	// Channels are the configured channels, for the cascade's choices.
	Channels []string
	// Errors are the engine's refusals by field; Upload is an upload's.
	Errors map[string]string
	Upload string
	// Estimate is the preview (confirmation page).
	Estimate *broadcasts.Estimate
}

// Err is the refusal of any of the fields named, joined.
func (d composeData) Err(fields ...string) string {
	var out []string
	for f, detail := range d.Errors {
		for _, want := range fields {
			if f == want || strings.HasPrefix(f, want+".") {
				out = append(out, detail)
			}
		}
	}
	slices.Sort(out)
	return strings.Join(out, "; ")
}

func (c *Console) composeData(ctx *fiber.Ctx, f composeForm) (composeData, error) {
	a, err := c.audienceOf(ctx.UserContext(), userOf(ctx).Tenant, f.AudienceID)
	if err != nil {
		return composeData{}, err
	}
	if a == nil {
		f.AudienceID = ""
	}
	d := composeData{Form: f, Audience: a, Channels: c.opts.Broadcast.Channels.Names()}
	if c.opts.Templates != nil {
		tenant := userOf(ctx).Tenant
		if d.Templates, err = c.opts.Templates.List(ctx.UserContext(), tenant); err != nil {
			return d, err
		}
		if f.Template != "" {
			d.Chosen, err = c.opts.Templates.Get(ctx.UserContext(), tenant, f.Template)
			if err != nil && !errors.Is(err, templates.ErrNotFound) {
				return d, err // an unknown name is the engine's to refuse
			}
		}
	}
	if f.IncidentID != "" && c.opts.Incidents != nil {
		d.Incident, err = c.opts.Incidents.Get(ctx.UserContext(), userOf(ctx).Tenant, f.IncidentID)
		if errors.Is(err, incidents.ErrNotFound) {
			return d, notFound()
		} else if err != nil {
			return d, err
		}
	}
	if f.FollowUpOf != "" {
		d.Earlier, err = c.opts.Broadcasts.Get(ctx.UserContext(), userOf(ctx).Tenant, f.FollowUpOf)
		if errors.Is(err, broadcasts.ErrNotFound) {
			return d, notFound()
		} else if err != nil {
			return d, err
		}
	}
	return d, nil
}

// followUpForm is a follow-up of an earlier broadcast to those not yet
// safe: its cascade, poll, answer time and priority again, its name
// marked, the text left to write (what changed).
func followUpForm(earlier *broadcasts.Summary) composeForm {
	f := composeForm{FollowUpOf: earlier.ID, OnlyNotSafe: true, Priority: earlier.Priority}
	if earlier.AckTimeout > 0 { // "10m", not "10m0s"
		f.AckTimeout = strings.TrimSuffix(strings.TrimSuffix(earlier.AckTimeout.String(), "0s"), "0m")
	}
	if earlier.Name != "" {
		f.Name = "Follow-up: " + earlier.Name
	}
	for i, ch := range earlier.Channels {
		if i < cascadeSteps {
			f.Channels[i] = ch
		}
	}
	if earlier.Poll != nil {
		keys := make([]string, 0, len(earlier.Poll.Options))
		for k := range earlier.Poll.Options {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i < pollRows {
				f.PollKeys[i], f.PollMeanings[i] = k, earlier.Poll.Options[k]
			}
		}
		f.QuestionEN, f.QuestionZH = earlier.Poll.Question[localeEN], earlier.Poll.Question[localeZH]
	}
	return f
}

func (c *Console) renderCompose(ctx *fiber.Ctx, status int, d composeData) error {
	return c.render(ctx, status, "compose", pageData{Title: "compose.title", Nav: "compose", User: userOf(ctx), Data: d})
}

// composePage is a new broadcast (leads only: others see what they may
// not do).
func (c *Console) composePage(ctx *fiber.Ctx) error {
	if !userOf(ctx).Role.Can(users.SendBroadcasts) {
		return forbidden()
	}
	f := defaultForm()
	f.AudienceID = ctx.Query("audience")
	if of := ctx.Query("follow_up_of"); of != "" {
		f = composeForm{FollowUpOf: of}
	}
	f.IncidentID = ctx.Query("incident")
	d, err := c.composeData(ctx, f)
	if err != nil {
		return err
	}
	if d.Earlier != nil {
		d.Form = followUpForm(d.Earlier)
		d.Form.IncidentID = f.IncidentID
	}
	return c.renderCompose(ctx, http.StatusOK, d)
}

// composeAgain shows the composer with the fields posted (Edit on the
// confirmation page).
func (c *Console) composeAgain(ctx *fiber.Ctx) error {
	d, err := c.composeData(ctx, parseForm(ctx))
	if err != nil {
		return err
	}
	return c.renderCompose(ctx, http.StatusOK, d)
}

// uploadAudience stores an audience CSV, as POST /v1/audiences does, and
// shows the composer with its counts and every row skipped, by line.
func (c *Console) uploadAudience(ctx *fiber.Ctx) error {
	form := defaultForm()
	form.IncidentID = ctx.FormValue("incident_id")
	d, err := c.composeData(ctx, form)
	if err != nil {
		return err
	}
	fh, err := ctx.FormFile("file")
	if err != nil {
		d.Upload = "compose.upload_missing"
		return c.renderCompose(ctx, http.StatusUnprocessableEntity, d)
	}
	f, err := fh.Open()
	if err != nil {
		d.Upload = "compose.upload_missing"
		return c.renderCompose(ctx, http.StatusUnprocessableEntity, d)
	}
	defer f.Close()
	res, err := audiences.ParseCSV(f, audiences.ParseOptions{DefaultRegion: c.opts.DefaultRegion, MaxBytes: int64(c.opts.MaxUploadBytes)})
	switch {
	case errors.Is(err, audiences.ErrTooLarge):
		d.Errors = map[string]string{"file": err.Error()}
		return c.renderCompose(ctx, http.StatusRequestEntityTooLarge, d)
	case err != nil:
		d.Errors = map[string]string{"file": err.Error()}
		return c.renderCompose(ctx, http.StatusUnprocessableEntity, d)
	}
	if len(res.Recipients) == 0 {
		// Nothing to keep: the rows' errors are shown from the parse.
		d.Audience = &audiences.Audience{Rows: res.Rows, Invalid: res.Invalid, Duplicates: res.Duplicates, Errors: res.Errors,
			ErrorsOmitted: res.ErrorsOmitted, IgnoredColumns: res.IgnoredColumns}
		d.Upload = "compose.upload_empty"
		return c.renderCompose(ctx, http.StatusUnprocessableEntity, d)
	}
	a, err := c.opts.Audiences.Save(ctx.UserContext(), userOf(ctx).Tenant, res)
	if err != nil {
		return err
	}
	u := userOf(ctx)
	c.log.Info("audience uploaded from the console", "tenant", u.Tenant, "audience_id", a.ID, "count", a.Count, "invalid", a.Invalid, "user_id", u.ID)
	next := Prefix + "/broadcasts/new?audience=" + a.ID
	if d.Incident != nil {
		next += "&incident=" + d.Incident.ID
	}
	return ctx.Redirect(next, http.StatusSeeOther)
}

// preview estimates the broadcast with the engine's Preview (the checks of
// POST /v1/broadcasts/preview) and asks for confirmation: the people and
// the cost.
func (c *Console) preview(ctx *fiber.Ctx) error {
	d, err := c.composeData(ctx, parseForm(ctx))
	if err != nil {
		return err
	}
	est, err := c.opts.Broadcast.Preview(ctx.UserContext(), userOf(ctx).Tenant, d.Form.request())
	if fields, ok := invalidFields(err); ok {
		d.Errors = fields
		return c.renderCompose(ctx, http.StatusUnprocessableEntity, d)
	}
	if err != nil {
		return err
	}
	d.Estimate = &est
	return c.render(ctx, http.StatusOK, "confirm", pageData{Title: "confirm.title", Nav: "compose", User: userOf(ctx), Data: d})
}

// send creates the broadcast with the engine's Create (the checks of
// POST /v1/broadcasts) and shows its roster.
func (c *Console) send(ctx *fiber.Ctx) error {
	d, err := c.composeData(ctx, parseForm(ctx))
	if err != nil {
		return err
	}
	u := userOf(ctx)
	cfg, err := c.opts.Broadcast.Create(ctx.UserContext(), u.Tenant, d.Form.request())
	if fields, ok := invalidFields(err); ok {
		d.Errors = fields
		return c.renderCompose(ctx, http.StatusUnprocessableEntity, d)
	}
	if err != nil {
		return err
	}
	c.log.Info("broadcast sent from the console", "tenant", u.Tenant, "broadcast_id", cfg.ID, "recipients", cfg.Total, "user_id", u.ID)
	return ctx.Redirect(Prefix+"/broadcasts/"+cfg.ID, http.StatusSeeOther)
}
