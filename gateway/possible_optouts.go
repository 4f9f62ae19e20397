package gateway

import (
	"errors"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/contacts"
)

// listPossibleOptOuts lists the replies that may be a wish to stop and
// that staff have not resolved, nearest deadline first:
// GET /v1/possible-opt-outs?limit=.
func (s *Server) listPossibleOptOuts(c *fiber.Ctx) error {
	limit, err := queryLimit(c, 100, 500)
	if err != nil {
		return err
	}
	list, err := s.opts.Consent.PossibleOptOuts(c.UserContext(), tenantOf(c), limit)
	if err != nil {
		return s.unavailable(err)
	}
	return c.JSON(fiber.Map{"possible_opt_outs": list})
}

// resolvePossibleOptOut records staff's decision on a possible opt-out:
// POST /v1/possible-opt-outs/:id/resolve {"outcome":"opted_out"|"not_an_opt_out","by":"…"}.
func (s *Server) resolvePossibleOptOut(c *fiber.Ctx) error {
	var in struct {
		Outcome string `json:"outcome"`
		By      string `json:"by"`
	}
	if p := decodeJSON(c, &in); p != nil {
		return p
	}
	if len(in.By) > 200 {
		return validationProblem([]FieldError{{Field: "by", Detail: "is at most 200 characters"}})
	}
	tenant := tenantOf(c)
	p, err := contacts.ResolvePossible(c.UserContext(), s.opts.Consent, publisher(s.opts.Events), tenant, c.Params("id"), in.Outcome, in.By)
	switch {
	case errors.Is(err, consent.ErrBadOutcome):
		return validationProblem([]FieldError{{Field: "outcome", Detail: "must be opted_out or not_an_opt_out"}})
	case errors.Is(err, consent.ErrPossibleNotFound):
		return problem(404, "not-found", "no possible opt-out with this id for your API key")
	case errors.Is(err, consent.ErrAlreadyResolved):
		return problem(409, "already-resolved", "this possible opt-out was resolved already")
	case err != nil:
		return s.unavailable(err)
	}
	return c.JSON(p)
}
