package console

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/internal/audiences"
	"github.com/patientmsg/gateway/internal/broadcasts"
	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/contacts"
	"github.com/patientmsg/gateway/internal/escalation"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/messaging"
	"github.com/patientmsg/gateway/internal/replies"
	"github.com/patientmsg/gateway/internal/users"
)

// signinData is the sign-in page's.
type signinData struct {
	Token   string
	Next    string
	Email   string
	Error   string // catalogue key
	Minutes int    // a lock's minutes left
	Expired bool
}

// signinPage shows the sign-in form. Before there is a session, its CSRF
// token is a random value in a cookie of its own that the form posts back
// (double submit).
func (c *Console) signinPage(ctx *fiber.Ctx) error {
	return c.renderSignin(ctx, http.StatusOK, signinData{Next: safeNext(ctx.Query("next")), Expired: ctx.Query("expired") != ""})
}

func (c *Console) renderSignin(ctx *fiber.Ctx, status int, d signinData) error {
	token := ctx.Cookies(c.signinCookie())
	if !users.ValidToken(token) {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		token = base64.RawURLEncoding.EncodeToString(b)
		c.setCookie(ctx, c.signinCookie(), token, time.Hour)
	}
	d.Token = token
	return c.render(ctx, status, "signin", pageData{Title: "signin.title", Data: d})
}

// safeNext keeps a page to return to after sign-in only when it is one of
// the console's own.
func safeNext(next string) string {
	if strings.HasPrefix(next, Prefix+"/") && !strings.HasPrefix(next, "//") && !strings.ContainsAny(next, "\\\r\n") &&
		!strings.HasPrefix(next, Prefix+"/signin") {
		return next
	}
	return Prefix + "/broadcasts"
}

func (c *Console) signin(ctx *fiber.Ctx) error {
	cookie := ctx.Cookies(c.signinCookie())
	posted := ctx.FormValue("csrf")
	if cookie == "" || subtle.ConstantTimeCompare([]byte(cookie), []byte(posted)) != 1 {
		return &StatusError{Status: http.StatusForbidden, Key: "error.csrf"}
	}
	email := strings.TrimSpace(ctx.FormValue("email"))
	d := signinData{Next: safeNext(ctx.FormValue("next")), Email: email}
	u, _, token, err := c.opts.Users.SignIn(ctx.UserContext(), email, ctx.FormValue("password"))
	var locked *users.LockedError
	switch {
	case errors.As(err, &locked):
		c.log.Warn("console sign-in refused: too many failures for this login")
		d.Error, d.Minutes = "signin.locked", max(1, int(time.Until(locked.Until).Round(time.Minute)/time.Minute))
		return c.renderSignin(ctx, http.StatusTooManyRequests, d)
	case errors.Is(err, users.ErrBadCredentials):
		c.log.Info("console sign-in refused: wrong email address or password")
		d.Error = "signin.wrong"
		return c.renderSignin(ctx, http.StatusUnauthorized, d)
	case err != nil:
		return err
	}
	c.log.Info("console sign-in", "tenant", u.Tenant, "user_id", u.ID, "role", string(u.Role))
	c.setCookie(ctx, c.sessionCookie(), token, c.opts.Users.Config().MaxAge)
	c.clearCookie(ctx, c.signinCookie())
	return ctx.Redirect(d.Next, http.StatusSeeOther)
}

func (c *Console) signout(ctx *fiber.Ctx) error {
	if err := c.opts.Users.SignOut(ctx.UserContext(), ctx.Cookies(c.sessionCookie())); err != nil {
		return err
	}
	c.log.Info("console sign-out", "tenant", userOf(ctx).Tenant, "user_id", userOf(ctx).ID)
	c.clearCookie(ctx, c.sessionCookie())
	return ctx.Redirect(Prefix+"/signin", http.StatusSeeOther)
}

// broadcastRow is a broadcast in the list.
type broadcastRow struct {
	*broadcasts.Summary
	Roster broadcasts.Roster
}

// broadcastTable is the template "broadcast-table"'s: the rows, the
// table's id and caption key, and the page (for its times' zone).
type broadcastTable struct {
	Page        pageData
	ID, Caption string
	Rows        []broadcastRow
}

func (c *Console) broadcastsPage(ctx *fiber.Ctx) error {
	u := userOf(ctx)
	list, err := c.opts.Broadcasts.Recent(ctx.UserContext(), u.Tenant, 50)
	if err != nil {
		return err
	}
	rows := make([]broadcastRow, len(list))
	for i, sum := range list {
		rows[i] = broadcastRow{Summary: sum, Roster: sum.Roster()}
	}
	return c.render(ctx, http.StatusOK, "broadcasts", pageData{Title: "broadcasts.title", Nav: "broadcasts", User: u, Data: rows})
}

// broadcastOf is the tenant's broadcast named in the path (404 for any
// other tenant's).
func (c *Console) broadcastOf(ctx *fiber.Ctx) (*broadcasts.Summary, error) {
	sum, err := c.opts.Broadcasts.Get(ctx.UserContext(), userOf(ctx).Tenant, ctx.Params("id"))
	if errors.Is(err, broadcasts.ErrNotFound) {
		return nil, notFound()
	}
	return sum, err
}

// NeedHelp is the poll meaning whose people the roster lists to call back.
const NeedHelp = "need_help"

// NeedHelpShown is how many of them the roster lists (the report has all).
const NeedHelpShown = 100

// rosterData is the live roster's.
type rosterData struct {
	*broadcasts.Summary
	Roster broadcasts.Roster
	// Meanings are the poll's meanings, in answer order.
	Meanings []string
	NeedHelp []*broadcasts.Person
	// NeedHelpCount counts them all.
	NeedHelpCount int64
	Canceled      string // catalogue key of a cancel's outcome
}

func (c *Console) rosterOf(ctx context.Context, sum *broadcasts.Summary) (rosterData, error) {
	d := rosterData{Summary: sum, Roster: sum.Roster()}
	if sum.Poll != nil {
		for _, k := range sortedKeys(sum.Poll.Options) {
			d.Meanings = append(d.Meanings, sum.Poll.Options[k])
		}
		if set, ok := sum.ListSet(NeedHelp); ok {
			d.NeedHelpCount = d.Roster.Poll[NeedHelp]
			if d.NeedHelpCount > 0 {
				people, err := c.opts.Broadcasts.List(ctx, sum.ID, set, -1, NeedHelpShown)
				if err != nil {
					return d, err
				}
				d.NeedHelp = people
			}
		}
	}
	return d, nil
}

func (c *Console) rosterPage(ctx *fiber.Ctx) error {
	sum, err := c.broadcastOf(ctx)
	if err != nil {
		return err
	}
	d, err := c.rosterOf(ctx.UserContext(), sum)
	if err != nil {
		return err
	}
	d.Canceled = map[string]string{"1": "roster.canceled", "again": "roster.canceled_before"}[ctx.Query("canceled")]
	return c.render(ctx, http.StatusOK, "roster", pageData{Title: "roster.title", Nav: "broadcasts", User: userOf(ctx), Data: d})
}

func (c *Console) report(ctx *fiber.Ctx) error {
	sum, err := c.broadcastOf(ctx)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	if err := c.opts.Broadcasts.WriteReport(ctx.UserContext(), sum.ID, &b); err != nil {
		return err
	}
	ctx.Set(fiber.HeaderContentType, "text/csv; charset=utf-8")
	ctx.Set(fiber.HeaderContentDisposition, `attachment; filename="`+sum.ID+`-report.csv"`)
	return ctx.Send(b.Bytes())
}

// cancel stops a broadcast, as POST /v1/broadcasts/{id}/cancel does.
func (c *Console) cancel(ctx *fiber.Ctx) error {
	sum, err := c.broadcastOf(ctx)
	if err != nil {
		return err
	}
	outcome := "1"
	err = c.opts.Broadcast.Cancel(ctx.UserContext(), sum.ID)
	if errors.Is(err, broadcasts.ErrAlreadyCanceled) {
		outcome = "again"
	} else if err != nil {
		return err
	}
	u := userOf(ctx)
	c.log.Info("broadcast canceled from the console", "tenant", u.Tenant, "broadcast_id", sum.ID, "user_id", u.ID)
	return ctx.Redirect(Prefix+"/broadcasts/"+sum.ID+"?canceled="+outcome, http.StatusSeeOther)
}

// escalationRow is an open escalation with the reply that opened it.
type escalationRow struct {
	*escalation.Escalation
	Deadline time.Time
	Overdue  bool
	Reply    *replies.Reply
}

func (c *Console) escalationsPage(ctx *fiber.Ctx) error {
	u := userOf(ctx)
	rctx := ctx.UserContext()
	open, err := c.opts.Escalator.Open(rctx, u.Tenant)
	if err != nil {
		return err
	}
	rules, err := c.opts.Escalator.GetRules(rctx, u.Tenant)
	if err != nil && !errors.Is(err, escalation.ErrNoRules) {
		return err
	}
	now := time.Now()
	rows := make([]escalationRow, 0, len(open))
	for _, esc := range open {
		row := escalationRow{Escalation: esc, Deadline: esc.Deadline(rules)}
		row.Overdue = now.After(row.Deadline)
		if r, err := c.opts.Replies.Get(rctx, u.Tenant, esc.ReplyID); err == nil {
			row.Reply = &r
		} else if !errors.Is(err, replies.ErrBadCursor) {
			return err
		}
		rows = append(rows, row)
	}
	// Newest first: the one that just came in is on top.
	for i, j := 0, len(rows)-1; i < j; i, j = i+1, j-1 {
		rows[i], rows[j] = rows[j], rows[i]
	}
	return c.render(ctx, http.StatusOK, "escalations", pageData{Title: "escalations.title", Nav: "escalations", User: u,
		Data: struct {
			Rows  []escalationRow
			Acked string
		}{rows, ctx.Query("acked")}})
}

// ack acknowledges an escalation, as POST /v1/escalations/{id}/ack does,
// recording who: the account's name and address.
func (c *Console) ack(ctx *fiber.Ctx) error {
	u := userOf(ctx)
	by := u.Email
	if u.Name != "" {
		by = u.Name + " <" + u.Email + ">"
	}
	esc, err := c.opts.Escalator.Ack(ctx.UserContext(), u.Tenant, ctx.Params("id"), by)
	if errors.Is(err, escalation.ErrNotFound) {
		return notFound()
	}
	if err != nil {
		return err
	}
	c.log.Info("escalation acknowledged from the console", "tenant", u.Tenant, "escalation_id", esc.ID, "user_id", u.ID)
	return ctx.Redirect(Prefix+"/escalations?acked="+esc.ID, http.StatusSeeOther)
}

// inboxRow is a reply with the question it answers.
type inboxRow struct {
	replies.Reply
	// Question is the text of the message the patient answered ("" when
	// it is past its retention).
	Question string
	// Contact is the id of the contact the reply came from, whose
	// conversation it links to ("" when none has its address).
	Contact string
}

// InboxPage is how many replies the inbox shows at once.
const InboxPage = 50

func (c *Console) inboxPage(ctx *fiber.Ctx) error {
	u := userOf(ctx)
	rctx := ctx.UserContext()
	list, err := c.opts.Replies.Recent(rctx, u.Tenant, ctx.Query("before"), InboxPage)
	if errors.Is(err, replies.ErrBadCursor) {
		return notFound()
	}
	if err != nil {
		return err
	}
	rows := make([]inboxRow, len(list))
	questions := map[string]string{}
	contactOf := map[consent.Identity]string{}
	for i, r := range list {
		rows[i].Reply = r
		id, seen := contactOf[r.From]
		if !seen {
			ct, err := c.opts.Contacts.Find(rctx, u.Tenant, r.From)
			switch {
			case err == nil:
				id = ct.ID
			case !errors.Is(err, contacts.ErrNotFound):
				return err
			}
			contactOf[r.From] = id
		}
		rows[i].Contact = id
		if r.InReplyTo == "" {
			continue
		}
		q, seen := questions[r.InReplyTo]
		if !seen {
			m, err := c.opts.Ledger.Get(rctx, u.Tenant, r.InReplyTo)
			switch {
			case err == nil:
				q = m.Body
			case !errors.Is(err, ledger.ErrNotFound):
				return err
			}
			questions[r.InReplyTo] = q
		}
		rows[i].Question = q
	}
	older := ""
	if len(list) == InboxPage {
		older = list[len(list)-1].ID
	}
	return c.render(ctx, http.StatusOK, "inbox", pageData{Title: "inbox.title", Nav: "inbox", User: u,
		Data: struct {
			Rows  []inboxRow
			Older string
			Paged bool
		}{rows, older, ctx.Query("before") != ""}})
}

// invalidFields maps a domain refusal's fields to their details.
func invalidFields(err error) (map[string]string, bool) {
	var inv *messaging.InvalidError
	if !errors.As(err, &inv) {
		return nil, false
	}
	out := map[string]string{}
	for _, fe := range inv.Errors {
		if prev, ok := out[fe.Field]; ok {
			out[fe.Field] = prev + "; " + fe.Detail
		} else {
			out[fe.Field] = fe.Detail
		}
	}
	return out, true
}

// audienceOf reads the tenant's uploaded audience ("" id: none).
func (c *Console) audienceOf(ctx context.Context, tenant, id string) (*audiences.Audience, error) {
	if id == "" {
		return nil, nil
	}
	a, err := c.opts.Audiences.Get(ctx, tenant, id)
	if errors.Is(err, audiences.ErrNotFound) {
		return nil, nil
	}
	return a, err
}
