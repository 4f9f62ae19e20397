package console

import (
	"errors"
	"net/http"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/contacts"
	"github.com/patientmsg/gateway/internal/replies"
)

// OptOutsShown is how many unresolved possible opt-outs the page lists,
// nearest deadline first.
const OptOutsShown = 200

// optOutRow is a possible opt-out with the words of its reply.
type optOutRow struct {
	consent.PossibleOptOut
	// Body is the patient's reply ("" when it is past its retention).
	Body    string
	Address string // masked
	Overdue bool
}

// optOutsPage lists the replies that may be a wish to stop and that
// staff have not resolved, nearest deadline first, as
// GET /v1/possible-opt-outs does.
func (c *Console) optOutsPage(ctx *fiber.Ctx) error {
	u := userOf(ctx)
	rctx := ctx.UserContext()
	list, err := c.opts.Consent.PossibleOptOuts(rctx, u.Tenant, OptOutsShown)
	if err != nil {
		return err
	}
	now := time.Now()
	rows := make([]optOutRow, 0, len(list))
	for _, p := range list {
		row := optOutRow{PossibleOptOut: p, Address: masked(p.From), Overdue: now.After(p.Deadline)}
		if r, err := c.opts.Replies.Get(rctx, u.Tenant, p.ID); err == nil {
			row.Body = r.Body
		} else if !errors.Is(err, replies.ErrBadCursor) {
			return err
		}
		rows = append(rows, row)
	}
	return c.render(ctx, http.StatusOK, "optouts", pageData{Title: "optouts.title", Nav: "optouts", User: u,
		Data: struct {
			Rows     []optOutRow
			Resolved string
		}{rows, ctx.Query("resolved")}})
}

// resolveOptOut records staff's decision on a possible opt-out, as
// POST /v1/possible-opt-outs/{id}/resolve does, recording who.
func (c *Console) resolveOptOut(ctx *fiber.Ctx) error {
	u := userOf(ctx)
	by := u.Email
	if u.Name != "" {
		by = u.Name + " <" + u.Email + ">"
	}
	outcome := ctx.FormValue("outcome")
	p, err := contacts.ResolvePossible(ctx.UserContext(), c.opts.Consent, c.publisher(), u.Tenant, ctx.Params("id"), outcome, by)
	switch {
	case errors.Is(err, consent.ErrPossibleNotFound):
		return notFound()
	case errors.Is(err, consent.ErrBadOutcome):
		return &StatusError{Status: http.StatusUnprocessableEntity, Key: "optouts.bad_outcome"}
	case errors.Is(err, consent.ErrAlreadyResolved):
		return ctx.Redirect(Prefix+"/opt-outs?resolved=already", http.StatusSeeOther)
	case err != nil:
		return err
	}
	c.log.Info("possible opt-out resolved from the console", "tenant", u.Tenant, "reply_id", p.ID, "outcome", p.Outcome, "user_id", u.ID)
	return ctx.Redirect(Prefix+"/opt-outs?resolved="+p.Outcome, http.StatusSeeOther)
}
