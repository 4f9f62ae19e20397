package gateway

import (
	"errors"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/internal/incidents"
)

// incidentJSON is an incident as the API shows it.
type incidentJSON struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	State   string `json:"state"`
	Cadence string `json:"cadence,omitempty"`
	// NextUpdateDue is when the next update is due (open, with a
	// cadence); Overdue says it has passed.
	NextUpdateDue *time.Time `json:"next_update_due,omitempty"`
	Overdue       bool       `json:"overdue"`
	OpenedAt      time.Time  `json:"opened_at"`
	LastUpdateAt  time.Time  `json:"last_update_at"`
	ClosedAt      *time.Time `json:"closed_at,omitempty"`
	// Broadcasts are its broadcasts in the order sent, each with its
	// roster (GET /v1/incidents/{id}); the list gives their ids only.
	BroadcastIDs []string     `json:"broadcast_ids"`
	Broadcasts   []rosterJSON `json:"broadcasts,omitempty"`
}

func incidentOf(inc *incidents.Incident, now time.Time) incidentJSON {
	v := incidentJSON{ID: inc.ID, Name: inc.Name, State: inc.State, Overdue: inc.Overdue(now), OpenedAt: inc.OpenedAt,
		LastUpdateAt: inc.LastUpdateAt, BroadcastIDs: inc.Broadcasts}
	if inc.Cadence > 0 {
		v.Cadence = incidents.FormatCadence(inc.Cadence)
	}
	if due := inc.NextDue(); !due.IsZero() {
		v.NextUpdateDue = &due
	}
	if !inc.ClosedAt.IsZero() {
		v.ClosedAt = &inc.ClosedAt
	}
	if v.BroadcastIDs == nil {
		v.BroadcastIDs = []string{}
	}
	return v
}

func (s *Server) incidentProblem(err error) error {
	switch {
	case errors.Is(err, incidents.ErrNotFound):
		return problem(404, "not-found", "no incident with this id for your API key")
	case errors.Is(err, incidents.ErrClosed):
		return problem(409, "incident-closed", "the incident is closed already")
	}
	return s.domainProblem(err)
}

// POST /v1/incidents {"name": "River flood", "cadence": "6h"}: opens an
// incident; broadcasts are linked to it with their incident_id.
func (s *Server) openIncident(c *fiber.Ctx) error {
	var in struct {
		Name    string `json:"name"`
		Cadence string `json:"cadence"`
	}
	if p := decodeJSON(c, &in); p != nil {
		return p
	}
	inc, err := s.opts.Incidents.Open(c.UserContext(), tenantOf(c), in.Name, in.Cadence)
	if err != nil {
		return s.incidentProblem(err)
	}
	return c.Status(fiber.StatusCreated).JSON(incidentOf(inc, s.opts.Now()))
}

// GET /v1/incidents?limit=20: the tenant's incidents, newest first.
func (s *Server) listIncidents(c *fiber.Ctx) error {
	limit, err := queryLimit(c, 20, 100)
	if err != nil {
		return err
	}
	list, err := s.opts.Incidents.List(c.UserContext(), tenantOf(c), limit)
	if err != nil {
		return s.unavailable(err)
	}
	now := s.opts.Now()
	out := make([]incidentJSON, len(list))
	for i, inc := range list {
		out[i] = incidentOf(inc, now)
	}
	return c.JSON(fiber.Map{"incidents": out})
}

// GET /v1/incidents/{id}: the incident with each broadcast's roster.
func (s *Server) getIncident(c *fiber.Ctx) error {
	ctx, tenant := c.UserContext(), tenantOf(c)
	inc, err := s.opts.Incidents.Get(ctx, tenant, c.Params("id"))
	if err != nil {
		return s.incidentProblem(err)
	}
	sums, err := s.opts.Broadcasts.Summaries(ctx, tenant, inc.Broadcasts)
	if err != nil {
		return s.unavailable(err)
	}
	v := incidentOf(inc, s.opts.Now())
	v.Broadcasts = make([]rosterJSON, 0, len(sums))
	for _, sum := range sums {
		v.Broadcasts = append(v.Broadcasts, rosterOf(sum))
	}
	return c.JSON(v)
}

// POST /v1/incidents/{id}/close: no update is due any more.
func (s *Server) closeIncident(c *fiber.Ctx) error {
	inc, err := s.opts.Incidents.Close(c.UserContext(), tenantOf(c), c.Params("id"))
	if err != nil {
		return s.incidentProblem(err)
	}
	return c.JSON(incidentOf(inc, s.opts.Now()))
}
