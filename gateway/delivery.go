package gateway

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/internal/messaging"
	"github.com/patientmsg/gateway/internal/ratelimit"
	"github.com/patientmsg/gateway/templates"
)

// GET /v1/settings
func (s *Server) getSettings(c *fiber.Ctx) error {
	set, err := s.opts.Messages.SettingsOf(c.UserContext(), tenantOf(c))
	if err != nil {
		return s.unavailable(err)
	}
	return c.JSON(set)
}

// PUT /v1/settings: the whole settings object; absent fields take the
// gateway's defaults.
func (s *Server) putSettings(c *fiber.Ctx) error {
	if s.opts.Tenants == nil {
		return problem(404, "not-found", "tenant settings are not available on this gateway")
	}
	set := s.opts.Tenants.Defaults()
	if p := decodeJSON(c, &set); p != nil {
		return p
	}
	if err := s.opts.Tenants.Check(set); err != nil {
		field, detail, _ := strings.Cut(err.Error(), ": ")
		return validationProblem([]FieldError{{Field: field, Detail: detail}})
	}
	if err := s.opts.Tenants.Put(c.UserContext(), tenantOf(c), set); err != nil {
		return s.unavailable(err)
	}
	return c.JSON(set)
}

// senderJSON is one sender in GET /v1/senders.
type senderJSON struct {
	Key                 string     `json:"key"`
	Channel             string     `json:"channel"`
	ConfiguredPerSecond float64    `json:"configured_per_second"`
	EffectivePerSecond  float64    `json:"effective_per_second"`
	PerDay              int64      `json:"per_day"`
	UsedToday           int64      `json:"used_today"`
	BackoffUntil        *time.Time `json:"backoff_until"`
	LastThrottleAt      *time.Time `json:"last_throttle_at"`
	LastThrottleCode    string     `json:"last_throttle_code,omitempty"`
	Throttles           int64      `json:"throttles"`
	// Slowed says the provider asked this sender to slow down and it has
	// not yet climbed back to its configured rate.
	Slowed bool `json:"slowed"`
}

func senderView(x ratelimit.SenderStatus) senderJSON {
	return senderJSON{Key: x.Key, Channel: x.Channel, ConfiguredPerSecond: x.ConfiguredPerSecond,
		EffectivePerSecond: x.EffectivePerSecond, PerDay: x.PerDay, UsedToday: x.UsedToday, BackoffUntil: x.BackoffUntil,
		LastThrottleAt: x.LastThrottleAt, LastThrottleCode: x.LastThrottleCode, Throttles: x.Throttles,
		Slowed: x.EffectivePerSecond < x.ConfiguredPerSecond}
}

// GET /v1/senders: every paced sender with its configured and current rate.
// Senders are shared by all tenants of the gateway.
func (s *Server) listSenders(c *fiber.Ctx) error {
	out := []senderJSON{}
	if s.opts.Senders != nil {
		st, err := s.opts.Senders.Status(c.UserContext())
		if err != nil {
			return s.unavailable(err)
		}
		for _, x := range st {
			out = append(out, senderView(x))
		}
	}
	return c.JSON(fiber.Map{"senders": out})
}

func (s *Server) templateStore() (*templates.Store, error) {
	if s.opts.Templates == nil {
		return nil, problem(404, "not-found", "templates are not available on this gateway")
	}
	return s.opts.Templates, nil
}

// templateSummary is one template in GET /v1/templates.
type templateSummary struct {
	Name        string               `json:"name"`
	Description string               `json:"description,omitempty"`
	Source      string               `json:"source"`
	Locales     []string             `json:"locales"`
	Channels    []string             `json:"channels"`
	Variables   []templates.Variable `json:"variables"`
}

func summaryOf(t *templates.Template) templateSummary {
	sum := templateSummary{Name: t.Name, Description: t.Description, Source: t.Source, Variables: t.Variables,
		Locales: t.LocaleTags(), Channels: t.FormChannels()}
	if sum.Variables == nil {
		sum.Variables = []templates.Variable{}
	}
	return sum
}

// GET /v1/templates
func (s *Server) listTemplates(c *fiber.Ctx) error {
	st, err := s.templateStore()
	if err != nil {
		return err
	}
	list, err := st.List(c.UserContext(), tenantOf(c))
	if err != nil {
		return s.unavailable(err)
	}
	out := make([]templateSummary, 0, len(list))
	for _, t := range list {
		out = append(out, summaryOf(t))
	}
	return c.JSON(fiber.Map{"templates": out})
}

// GET /v1/templates/{name}: the whole document, as PUT takes it.
func (s *Server) getTemplate(c *fiber.Ctx) error {
	st, err := s.templateStore()
	if err != nil {
		return err
	}
	t, err := st.Get(c.UserContext(), tenantOf(c), c.Params("name"))
	if errors.Is(err, templates.ErrNotFound) {
		return problem(404, "not-found", fmt.Sprintf("no template %q; GET /v1/templates lists them", messaging.Clip(c.Params("name"))))
	} else if err != nil {
		return s.unavailable(err)
	}
	return c.JSON(t)
}

// PUT /v1/templates/{name}: the tenant's own template (it overrides a
// built-in of the same name for this tenant only).
func (s *Server) putTemplate(c *fiber.Ctx) error {
	st, err := s.templateStore()
	if err != nil {
		return err
	}
	body, p := jsonBody(c)
	if p != nil {
		return p
	}
	name := c.Params("name")
	if !templates.ValidName(name) {
		return validationProblem([]FieldError{{Field: "name", Detail: "a template name is 1-64 lowercase letters, digits and '_'"}})
	}
	t, err := st.Put(c.UserContext(), tenantOf(c), name, body)
	switch {
	case errors.Is(err, templates.ErrTooMany):
		return problem(409, "too-many-templates", err.Error())
	case errors.Is(err, templates.ErrTooLarge):
		return problem(413, "too-large", err.Error())
	case errors.Is(err, templates.ErrInvalidTemplate):
		return validationProblem([]FieldError{{Field: "template", Detail: strings.TrimPrefix(err.Error(), "invalid template: ")}})
	case err != nil:
		var pe *templates.ParseError
		if errors.As(err, &pe) {
			return validationProblem([]FieldError{{Field: "template", Detail: pe.Error()}})
		}
		return s.unavailable(err)
	}
	return c.JSON(t)
}

// DELETE /v1/templates/{name}
func (s *Server) deleteTemplate(c *fiber.Ctx) error {
	st, err := s.templateStore()
	if err != nil {
		return err
	}
	err = st.Delete(c.UserContext(), tenantOf(c), c.Params("name"))
	switch {
	case errors.Is(err, templates.ErrBuiltinReadOnly):
		return problem(409, "builtin-template", "built-in templates cannot be deleted; PUT one of the same name to override it for your tenant")
	case errors.Is(err, templates.ErrNotFound):
		return problem(404, "not-found", fmt.Sprintf("no template %q of this tenant", messaging.Clip(c.Params("name"))))
	case err != nil:
		return s.unavailable(err)
	}
	return c.SendStatus(fiber.StatusNoContent)
}

// previewRequest is the body of POST /v1/templates/{name}/preview.
type previewRequest struct {
	Locale string            `json:"locale"`
	Vars   map[string]string `json:"vars"`
}

// POST /v1/templates/{name}/preview: every channel's rendered text, SMS
// segments and encoding, PHI findings and missing or unknown variables.
func (s *Server) previewTemplate(c *fiber.Ctx) error {
	if _, err := s.templateStore(); err != nil {
		return err
	}
	var req previewRequest
	if p := decodeOptionalJSON(c, &req); p != nil {
		return p
	}
	p, err := s.opts.Messages.PreviewTemplate(c.UserContext(), tenantOf(c), c.Params("name"), req.Locale, req.Vars)
	if errors.Is(err, templates.ErrNotFound) {
		return problem(404, "not-found", fmt.Sprintf("no template %q; GET /v1/templates lists them", messaging.Clip(c.Params("name"))))
	} else if err != nil {
		return s.unavailable(err)
	}
	return c.JSON(p)
}
