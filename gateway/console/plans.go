package console

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/followups"
	"github.com/patientmsg/gateway/internal/ledger"
)

// PlansShown is how many of the tenant's follow-up plans the plans page
// lists, newest first.
const PlansShown = 100

// planRow is a plan in the list: who (masked), its state and its next
// step.
type planRow struct {
	ID, Who, State string
	CreatedAt      time.Time
	Steps          int
	// Next is when its next scheduled step is due (zero: none).
	Next time.Time
}

// who is a plan's recipient, masked as the API masks a message's.
func who(ids []consent.Identity) string {
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		out = append(out, masked(id))
	}
	return strings.Join(out, ", ")
}

func planRowOf(p *followups.Plan, now time.Time) planRow {
	r := planRow{ID: p.ID, Who: who(p.Identities), State: p.State, CreatedAt: p.CreatedAt, Steps: len(p.Steps)}
	for _, st := range p.Steps {
		if st.State == followups.StepScheduled && st.DueAt.After(now) && (r.Next.IsZero() || st.DueAt.Before(r.Next)) {
			r.Next = st.DueAt
		}
	}
	return r
}

// plansPage lists the tenant's newest follow-up plans.
func (c *Console) plansPage(ctx *fiber.Ctx) error {
	u := userOf(ctx)
	list, err := c.opts.Followups.List(ctx.UserContext(), u.Tenant, PlansShown)
	if err != nil {
		return err
	}
	now := time.Now()
	rows := make([]planRow, 0, len(list))
	for _, p := range list {
		rows = append(rows, planRowOf(p, now))
	}
	return c.render(ctx, http.StatusOK, "plans", pageData{Title: "plans.title", Nav: "plans", User: u,
		Data: struct{ Rows []planRow }{rows}})
}

// planOf reads the plan the route names; another tenant's is not found.
func (c *Console) planOf(ctx *fiber.Ctx) (*followups.Plan, error) {
	p, err := c.opts.Followups.Get(ctx.UserContext(), userOf(ctx).Tenant, ctx.Params("id"))
	if errors.Is(err, followups.ErrNotFound) {
		return nil, notFound()
	}
	return p, err
}

// planPage shows a plan's steps with their messages' status, as GET
// /v1/followups/{id} does, and the button to cancel it.
func (c *Console) planPage(ctx *fiber.Ctx) error {
	p, err := c.planOf(ctx)
	if err != nil {
		return err
	}
	v, err := c.opts.Plans.View(ctx.UserContext(), p)
	if err != nil {
		return err
	}
	return c.render(ctx, http.StatusOK, "plan", pageData{Title: "plan.title", Nav: "plans", User: userOf(ctx),
		Data: struct {
			*followups.View
			Who      string
			Canceled string
		}{v, who(p.Identities), ctx.Query("canceled")}})
}

// cancelPlan cancels a plan's steps not sent yet, as POST
// /v1/followups/{id}/cancel does (through followups.Planner.Cancel).
func (c *Console) cancelPlan(ctx *fiber.Ctx) error {
	u := userOf(ctx)
	p, err := c.opts.Plans.Cancel(ctx.UserContext(), u.Tenant, ctx.Params("id"), ledger.CanceledFromConsole)
	outcome := "1"
	switch {
	case errors.Is(err, followups.ErrNotFound):
		return notFound()
	case errors.Is(err, followups.ErrNotActive):
		outcome = "already"
	case err != nil:
		return err
	default:
		c.log.Info("follow-up plan canceled from the console", "tenant", u.Tenant, "plan_id", p.ID, "user_id", u.ID)
	}
	return ctx.Redirect(Prefix+"/plans/"+ctx.Params("id")+"?canceled="+outcome, http.StatusSeeOther)
}
