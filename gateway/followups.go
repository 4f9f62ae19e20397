package gateway

import (
	"context"
	"errors"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/internal/followups"
	"github.com/patientmsg/gateway/internal/ledger"
)

// POST /v1/followups: creates one scheduled message per step (quiet hours
// apply to each), or records why a step was skipped.
func (s *Server) createFollowup(c *fiber.Ctx) error {
	var in followups.Request
	if p := decodeJSON(c, &in); p != nil {
		return p
	}
	plan, err := s.opts.Plans.Create(c.UserContext(), tenantOf(c), &in)
	if err != nil {
		return s.domainProblem(err)
	}
	view, err := s.planView(c.UserContext(), plan)
	if err != nil {
		return s.unavailable(err)
	}
	return c.Status(fiber.StatusCreated).JSON(view)
}

// planStepJSON is a step as the API shows it, with its message's status.
type planStepJSON struct {
	followups.Step
	Status ledger.Status `json:"message_status,omitempty"`
	SendAt *time.Time    `json:"send_at,omitempty"`
	// Deferred says the step waits for the end of quiet hours.
	Deferred string `json:"deferred,omitempty"`
}

type planJSON struct {
	ID         string         `json:"id"`
	ContactID  string         `json:"contact_id,omitempty"`
	Anchor     time.Time      `json:"anchor"`
	TimeZone   string         `json:"timezone"`
	StopOn     []string       `json:"stop_on"`
	PastDue    string         `json:"past_due"`
	State      string         `json:"state"`
	StopReason string         `json:"stop_reason,omitempty"`
	CreatedAt  time.Time      `json:"created_at"`
	UpdatedAt  time.Time      `json:"updated_at"`
	Steps      []planStepJSON `json:"steps"`
}

// planView is a plan as the API shows it, with its messages' status.
func (s *Server) planView(ctx context.Context, p *followups.Plan) (planJSON, error) {
	pv, err := s.opts.Plans.View(ctx, p)
	if err != nil {
		return planJSON{}, err
	}
	v := planJSON{ID: p.ID, ContactID: p.ContactID, Anchor: p.Anchor, TimeZone: p.TimeZone, StopOn: p.StopOn,
		PastDue: p.PastDue, State: pv.State, StopReason: p.StopReason, CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt,
		Steps: make([]planStepJSON, 0, len(pv.Steps))}
	if v.StopOn == nil {
		v.StopOn = []string{}
	}
	for _, st := range pv.Steps {
		v.Steps = append(v.Steps, planStepJSON{Step: st.Step, Status: st.Status, SendAt: st.SendAt, Deferred: st.Deferred})
	}
	return v, nil
}

// GET /v1/followups/{id}
func (s *Server) getFollowup(c *fiber.Ctx) error {
	p, err := s.opts.Followups.Get(c.UserContext(), tenantOf(c), c.Params("id"))
	if errors.Is(err, followups.ErrNotFound) {
		return problem(404, "not-found", "no follow-up plan with this id for your API key")
	} else if err != nil {
		return s.unavailable(err)
	}
	v, err := s.planView(c.UserContext(), p)
	if err != nil {
		return s.unavailable(err)
	}
	return c.JSON(v)
}

// POST /v1/followups/{id}/cancel: cancels the steps not sent yet.
func (s *Server) cancelFollowup(c *fiber.Ctx) error {
	ctx, tenant := c.UserContext(), tenantOf(c)
	p, err := s.opts.Plans.Cancel(ctx, tenant, c.Params("id"), ledger.CanceledByAPI)
	switch {
	case errors.Is(err, followups.ErrNotFound):
		return problem(404, "not-found", "no follow-up plan with this id for your API key")
	case errors.Is(err, followups.ErrNotActive):
		return problem(409, "not-cancelable", "the plan is no longer active (completed, canceled or stopped)")
	case err != nil:
		return s.unavailable(err)
	}
	v, err := s.planView(ctx, p)
	if err != nil {
		return s.unavailable(err)
	}
	return c.JSON(v)
}
