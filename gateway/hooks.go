package gateway

import (
	"errors"
	"fmt"
	"net/url"

	"github.com/gofiber/fiber/v2"
	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/inbound"
	"github.com/patientmsg/gateway/internal/messaging"
)

type webhookIn struct {
	URL    string `json:"url"`
	Rotate bool   `json:"rotate_secret"`
}

// putWebhook registers the tenant's endpoint and answers its signing secret.
func (s *Server) putWebhook(c *fiber.Ctx) error {
	var in webhookIn
	if p := decodeJSON(c, &in); p != nil {
		return p
	}
	u, err := url.Parse(in.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || len(in.URL) > messaging.MaxCallbackURL {
		return validationProblem([]FieldError{{Field: "url", Detail: "must be an absolute http(s) URL without credentials, e.g. https://ehr.example-clinic.org/hooks/gateway"}})
	}
	if p := s.clinicURLProblem("url", u.String()); p != nil {
		return p
	}
	ep, err := s.opts.Webhooks.Put(c.UserContext(), tenantOf(c), u.String(), in.Rotate)
	if err != nil {
		return s.unavailable(err)
	}
	s.opts.Events.Forget(tenantOf(c))
	return c.JSON(ep)
}

// clinicURLProblem is the 422 of a URL the gateway will never post to: an
// address it refuses, localhost and the like (package egress).
func (s *Server) clinicURLProblem(field, raw string) *Problem {
	var invalid *messaging.InvalidError
	if errors.As(s.opts.Messages.CheckClinicURL(field, raw), &invalid) {
		return validationProblem(invalid.Errors)
	}
	return nil
}

func (s *Server) getWebhook(c *fiber.Ctx) error {
	ep, err := s.opts.Webhooks.Get(c.UserContext(), tenantOf(c))
	if errors.Is(err, redis.Nil) {
		return problem(404, "not-found", "no webhook endpoint is registered; PUT /v1/webhook registers one")
	}
	if err != nil {
		return s.unavailable(err)
	}
	return c.JSON(fiber.Map{"url": ep.URL}) // the secret is shown only when set
}

func (s *Server) deadWebhooks(c *fiber.Ctx) error {
	limit, err := queryLimit(c, 100, 1000)
	if err != nil {
		return err
	}
	dead, err := s.opts.Webhooks.Dead(c.UserContext(), tenantOf(c), limit)
	if err != nil {
		return s.unavailable(err)
	}
	return c.JSON(fiber.Map{"dead": dead})
}

// putHelpText sets the tenant's answer to HELP/INFO, per language ("en", "zh").
func (s *Server) putHelpText(c *fiber.Ctx) error {
	var in map[string]string
	if p := decodeJSON(c, &in); p != nil {
		return p
	}
	err := s.opts.HelpTexts.Set(c.UserContext(), tenantOf(c), in)
	var bad *inbound.HelpTextError
	switch {
	case errors.As(err, &bad):
		return validationProblem([]FieldError{{Field: bad.Lang, Detail: fmt.Sprintf("languages are en and zh; a help text is 1-%d characters", inbound.MaxHelpText)}})
	case errors.Is(err, inbound.ErrNoHelpText):
		return validationProblem([]FieldError{{Field: "en", Detail: "give at least one help text, e.g. {\"en\": \"Riverside Clinic: call 555-0100. Reply STOP to opt out.\"}"}})
	case err != nil:
		return s.unavailable(err)
	}
	return c.JSON(in)
}
