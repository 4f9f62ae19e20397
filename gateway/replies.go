package gateway

import (
	"errors"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/contacts"
	"github.com/patientmsg/gateway/internal/replies"
)

// replyJSON is a patient's answer as its tenant sees it.
type replyJSON struct {
	ID         string           `json:"id"`
	Channel    string           `json:"channel"`
	From       consent.Identity `json:"from"`
	Contact    string           `json:"contact,omitempty"`
	Body       string           `json:"body"`
	ReceivedAt time.Time        `json:"received_at"`
	InReplyTo  string           `json:"in_reply_to"`
	// Option is the meaning of the answer when it matched an option of the
	// question's expect_reply ("confirm"); absent for free text.
	Option string `json:"option,omitempty"`
	// PossibleOptOut is set when the reply may be a wish to stop, with the
	// deadline by which staff resolve it (GET /v1/possible-opt-outs).
	PossibleOptOut *replies.PossibleOptOut `json:"possible_opt_out,omitempty"`
}

// listReplies is the pollable reply feed: GET /v1/replies?after=<cursor>.
func (s *Server) listReplies(c *fiber.Ctx) error {
	limit, err := queryLimit(c, 100, 500)
	if err != nil {
		return err
	}
	tenant := tenantOf(c)
	list, err := s.opts.Replies.List(c.UserContext(), tenant, c.Query("after"), limit)
	if errors.Is(err, replies.ErrBadCursor) {
		return problem(400, "bad-query", "after must be the id of a reply this feed returned")
	}
	if err != nil {
		return s.unavailable(err)
	}
	out := struct {
		Replies []replyJSON `json:"replies"`
		Next    string      `json:"next,omitempty"`
	}{Replies: []replyJSON{}, Next: c.Query("after")}
	for _, r := range list {
		v := replyJSON{ID: r.ID, Channel: r.Channel, From: r.From, Body: r.Body, ReceivedAt: r.ReceivedAt, InReplyTo: r.InReplyTo, Option: r.Option, PossibleOptOut: r.PossibleOptOut}
		if s.opts.Contacts != nil {
			if ct, err := s.opts.Contacts.Find(c.UserContext(), tenant, r.From); err == nil {
				v.Contact = ct.ID
			} else if !errors.Is(err, contacts.ErrNotFound) {
				return s.unavailable(err)
			}
		}
		out.Replies = append(out.Replies, v)
		out.Next = r.ID
	}
	return c.JSON(out)
}
