package gateway

import (
	"errors"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/internal/escalation"
)

func (s *Server) putEscalationRules(c *fiber.Ctx) error {
	var r escalation.Rules
	if p := decodeJSON(c, &r); p != nil {
		return p
	}
	if err := r.Check(); err != nil {
		return s.domainProblem(err)
	}
	if err := s.opts.Escalator.PutRules(c.UserContext(), tenantOf(c), r); err != nil {
		return s.unavailable(err)
	}
	return c.JSON(r)
}

func (s *Server) getEscalationRules(c *fiber.Ctx) error {
	r, err := s.opts.Escalator.GetRules(c.UserContext(), tenantOf(c))
	if errors.Is(err, escalation.ErrNoRules) {
		return problem(404, "not-found", "no urgent-reply rules are set; PUT /v1/escalation-rules sets them")
	}
	if err != nil {
		return s.unavailable(err)
	}
	return c.JSON(r)
}

func (s *Server) listEscalations(c *fiber.Ctx) error {
	if st := c.Query("state", "open"); st != "open" {
		return problem(400, "bad-query", "state must be open")
	}
	list, err := s.opts.Escalator.Open(c.UserContext(), tenantOf(c))
	if err != nil {
		return s.unavailable(err)
	}
	return c.JSON(fiber.Map{"escalations": list})
}

func (s *Server) ackEscalation(c *fiber.Ctx) error {
	var in struct {
		By string `json:"by"`
	}
	if p := decodeOptionalJSON(c, &in); p != nil {
		return p
	}
	esc, err := s.opts.Escalator.Ack(c.UserContext(), tenantOf(c), c.Params("id"), in.By)
	if errors.Is(err, escalation.ErrNotFound) {
		return problem(404, "not-found", "no escalation with this id for your API key")
	}
	if err != nil {
		return s.unavailable(err)
	}
	return c.JSON(esc)
}
