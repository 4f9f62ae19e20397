package console

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/templates"
)

// tplRow is a template in the list.
type tplRow struct {
	Name, Description, Source string
	Locales, Channels         []string
	Variables                 int
}

// templatesPage lists the tenant's templates, its own and the built-in
// ones, as GET /v1/templates does.
func (c *Console) templatesPage(ctx *fiber.Ctx) error {
	if c.opts.Templates == nil {
		return notFound()
	}
	u := userOf(ctx)
	list, err := c.opts.Templates.List(ctx.UserContext(), u.Tenant)
	if err != nil {
		return err
	}
	rows := make([]tplRow, 0, len(list))
	for _, t := range list {
		rows = append(rows, tplRow{Name: t.Name, Description: t.Description, Source: t.Source, Locales: t.LocaleTags(),
			Channels: t.FormChannels(), Variables: len(t.Variables)})
	}
	return c.render(ctx, http.StatusOK, "tpls", pageData{Title: "tpls.title", Nav: "templates", User: u,
		Data: struct{ Rows []tplRow }{rows}})
}

// tplData is a template's page: the template, its document as PUT
// /v1/templates/{name} takes it, the preview form and its result.
type tplData struct {
	*templates.Template
	Doc string
	// SaveAs and DocError are the edit form's, posted back when refused.
	SaveAs   string
	DocError string
	Saved    bool
	// Locale and Vars are the preview form's; Preview its result.
	Locale  string
	Vars    map[string]string
	Preview *templates.Preview
	// PreviewChannels are the preview's channels in the usual order.
	PreviewChannels []string
}

// document is a template as PUT /v1/templates/{name} takes it.
func document(t *templates.Template) string {
	c := *t
	c.Source = ""
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(&c); err != nil {
		return ""
	}
	return b.String()
}

// tplOf reads the template the route names, the tenant's or else the
// built-in one.
func (c *Console) tplOf(ctx *fiber.Ctx) (*templates.Template, error) {
	if c.opts.Templates == nil {
		return nil, notFound()
	}
	t, err := c.opts.Templates.Get(ctx.UserContext(), userOf(ctx).Tenant, ctx.Params("name"))
	if errors.Is(err, templates.ErrNotFound) {
		return nil, notFound()
	}
	return t, err
}

// newTplData is a template's page with its examples as the preview's
// values, in its first locale.
func newTplData(t *templates.Template) tplData {
	d := tplData{Template: t, Doc: document(t), SaveAs: t.Name, Vars: map[string]string{}}
	if tags := t.LocaleTags(); len(tags) > 0 {
		d.Locale = tags[0]
	}
	for _, v := range t.Variables {
		d.Vars[v.Name] = v.Example
	}
	return d
}

func (c *Console) renderTpl(ctx *fiber.Ctx, status int, d tplData) error {
	return c.render(ctx, status, "tpl", pageData{Title: "tpl.title", Nav: "templates", User: userOf(ctx), Data: d})
}

// templatePage shows a template with a preview of its examples.
func (c *Console) templatePage(ctx *fiber.Ctx) error {
	t, err := c.tplOf(ctx)
	if err != nil {
		return err
	}
	d := newTplData(t)
	d.Saved = ctx.Query("saved") != ""
	if err := c.previewInto(ctx, &d); err != nil {
		return err
	}
	return c.renderTpl(ctx, http.StatusOK, d)
}

// previewInto renders the page's template with its form's locale and values
// through messaging.Service.PreviewTemplate, as POST
// /v1/templates/{name}/preview does.
func (c *Console) previewInto(ctx *fiber.Ctx, d *tplData) error {
	p, err := c.opts.Messages.PreviewTemplate(ctx.UserContext(), userOf(ctx).Tenant, d.Name, d.Locale, d.Vars)
	if err != nil {
		return err
	}
	d.Preview = p
	for _, ch := range templates.Channels {
		if p.Channels[ch] != nil {
			d.PreviewChannels = append(d.PreviewChannels, ch)
		}
	}
	return nil
}

// previewTemplate previews the template with the locale and values posted.
func (c *Console) previewTemplate(ctx *fiber.Ctx) error {
	t, err := c.tplOf(ctx)
	if err != nil {
		return err
	}
	d := newTplData(t)
	d.Locale = strings.TrimSpace(ctx.FormValue("locale"))
	for _, v := range t.Variables {
		d.Vars[v.Name] = ctx.FormValue("var_" + v.Name)
		if d.Vars[v.Name] == "" {
			delete(d.Vars, v.Name)
		}
	}
	if err := c.previewInto(ctx, &d); err != nil {
		return err
	}
	return c.renderTpl(ctx, http.StatusOK, d)
}

// saveTemplate stores the posted document as the tenant's template of the
// name given (its own name, or another to make a new one), through
// templates.Store.Put, as PUT /v1/templates/{name} does.
func (c *Console) saveTemplate(ctx *fiber.Ctx) error {
	t, err := c.tplOf(ctx)
	if err != nil {
		return err
	}
	u := userOf(ctx)
	d := newTplData(t)
	d.SaveAs, d.Doc = strings.TrimSpace(ctx.FormValue("save_as")), ctx.FormValue("doc")
	refuse := func(status int, msg string) error {
		d.DocError = msg
		if err := c.previewInto(ctx, &d); err != nil {
			return err
		}
		return c.renderTpl(ctx, status, d)
	}
	if !templates.ValidName(d.SaveAs) {
		return refuse(http.StatusUnprocessableEntity, "a template name is 1-64 lowercase letters, digits and '_'")
	}
	saved, err := c.opts.Templates.Put(ctx.UserContext(), u.Tenant, d.SaveAs, []byte(d.Doc))
	var pe *templates.ParseError
	switch {
	case errors.As(err, &pe):
		return refuse(http.StatusUnprocessableEntity, pe.Error())
	case errors.Is(err, templates.ErrTooLarge):
		return refuse(http.StatusRequestEntityTooLarge, err.Error())
	case errors.Is(err, templates.ErrTooMany):
		return refuse(http.StatusConflict, err.Error())
	case err != nil:
		return err
	}
	c.log.Info("template saved from the console", "tenant", u.Tenant, "template", saved.Name, "user_id", u.ID)
	return ctx.Redirect(Prefix+"/templates/"+saved.Name+"?saved=1", http.StatusSeeOther)
}
