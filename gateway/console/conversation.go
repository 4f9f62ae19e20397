package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/internal/admission"
	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/contacts"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/messaging"
	"github.com/patientmsg/gateway/internal/users"
)

// ConversationShown is how many lines of a conversation the page shows,
// as GET /v1/contacts/{id}/conversation: the last 100.
const ConversationShown = 100

// MaxAnswer is the most characters of an answer the form takes; the
// channel's own limit, checked by the domain, may be lower.
const MaxAnswer = 1600

// conversationLine is a message to the contact or a reply from them, as
// GET /v1/contacts/{id}/conversation shows it.
type conversationLine struct {
	Kind    string // "message" or "reply"
	ID      string
	At      time.Time
	Channel string
	Body    string
	Status  ledger.Status // messages
	Option  string        // replies
}

// conversationData is the conversation page's.
type conversationData struct {
	Contact contacts.Contact
	// Addresses are the contact's, masked as the API masks a recipient.
	Addresses []string
	Lines     []conversationLine
	// Channels are those the patient replied on: the answer goes back on
	// one of them, to the address the reply came from.
	Channels []string
	// The answer form: its idempotency key (new on every render, posted
	// back when refused), and what was typed.
	Key     string
	Channel string
	Body    string
	// Error is a catalogue key; Details the domain's reasons, in English.
	Error   string
	Details []string
	// Sent is the message just queued, after the redirect.
	Sent *ledger.Message
}

// conversationOf reads the contact's conversation as the API's
// getConversation does: the messages to each of its addresses and the
// replies from them, oldest first, the last ConversationShown; a message
// or reply past its retention is left out. It also tells, per channel,
// the address the patient last replied from.
func (c *Console) conversationOf(ctx context.Context, tenant string, ct contacts.Contact) ([]conversationLine, map[string]consent.Identity, error) {
	entries, err := c.opts.Replies.Thread(ctx, c.opts.Ledger, tenant, ct.Identities, ConversationShown)
	if err != nil {
		return nil, nil, err
	}
	lines := make([]conversationLine, 0, len(entries))
	from := map[string]consent.Identity{}
	for _, e := range entries {
		lines = append(lines, conversationLine{Kind: e.Kind, ID: e.ID, At: e.At, Channel: e.Channel, Body: e.Body, Status: e.Status, Option: e.Option})
		if e.Kind == "reply" {
			from[e.Channel] = e.From
		}
	}
	return lines, from, nil
}

// fillConversation adds the contact and its conversation to the page, and
// a new idempotency key when the form has none.
func (c *Console) fillConversation(ctx *fiber.Ctx, d *conversationData, ct contacts.Contact) (map[string]consent.Identity, error) {
	d.Contact = ct
	for _, id := range ct.Identities {
		d.Addresses = append(d.Addresses, masked(id))
	}
	lines, from, err := c.conversationOf(ctx.UserContext(), userOf(ctx).Tenant, ct)
	if err != nil {
		return nil, err
	}
	d.Lines = lines
	d.Channels = d.Channels[:0]
	for ch := range from {
		d.Channels = append(d.Channels, ch)
	}
	sort.Strings(d.Channels)
	if !users.ValidToken(d.Key) {
		if d.Key, err = newKey(); err != nil {
			return nil, err
		}
	}
	return from, nil
}

// newKey is a form's idempotency key: 32 random bytes.
func newKey() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func (c *Console) renderConversation(ctx *fiber.Ctx, status int, d conversationData) error {
	return c.render(ctx, status, "conversation", pageData{Title: "conversation.title", Nav: "inbox", User: userOf(ctx), Data: d})
}

// conversationPage shows the tenant's contact's conversation across its
// channels (404 for any other tenant's contact), with the answer form for
// those who may answer.
func (c *Console) conversationPage(ctx *fiber.Ctx) error {
	ct, err := c.contactOf(ctx)
	if err != nil {
		return err
	}
	d := conversationData{}
	if _, err := c.fillConversation(ctx, &d, ct); err != nil {
		return err
	}
	if id := ctx.Query("sent"); id != "" {
		m, err := c.opts.Ledger.Get(ctx.UserContext(), userOf(ctx).Tenant, id)
		switch {
		case err == nil:
			d.Sent = m
		case !errors.Is(err, ledger.ErrNotFound):
			return err
		}
	}
	return c.renderConversation(ctx, http.StatusOK, d)
}

// answer sends staff's answer to the patient through the domain function
// behind POST /v1/messages (messaging.Service.Accept): the draft is
// validated, quiet hours and the tenant's backlog apply as for the API.
// It goes on a channel the patient replied on, to the address the reply
// came from. The form's key is the message's idempotency key: a second
// submit of the same form makes no second message.
func (c *Console) answer(ctx *fiber.Ctx) error {
	u := userOf(ctx)
	ct, err := c.contactOf(ctx)
	if err != nil {
		return err
	}
	posted := ctx.FormValue("key")
	d := conversationData{Key: posted, Channel: ctx.FormValue("channel"), Body: ctx.FormValue("body")}
	from, err := c.fillConversation(ctx, &d, ct)
	if err != nil {
		return err
	}
	refuse := func(status int, key string, details ...string) error {
		d.Error, d.Details = key, details
		return c.renderConversation(ctx, status, d)
	}
	to, ok := from[d.Channel]
	switch {
	case posted != d.Key: // not a key this page gave: the form has a new one
		return refuse(http.StatusUnprocessableEntity, "conversation.stale")
	case strings.TrimSpace(d.Body) == "":
		return refuse(http.StatusUnprocessableEntity, "conversation.body_missing")
	case len([]rune(d.Body)) > MaxAnswer:
		return refuse(http.StatusUnprocessableEntity, "conversation.body_long")
	case !ok:
		return refuse(http.StatusUnprocessableEntity, "conversation.bad_channel")
	}
	// The worker would suppress it at send time; say so now, and queue
	// nothing.
	out, err := c.opts.Consent.OptedOut(ctx.UserContext(), u.Tenant, to)
	if err != nil {
		return err
	}
	if out {
		c.log.Info("answer from the console refused: the patient opted out", "tenant", u.Tenant, "contact_id", ct.ID, "channel", d.Channel, "user_id", u.ID)
		return refuse(http.StatusConflict, "conversation.opted_out")
	}
	body := d.Body
	draft := &messaging.Draft{Channel: d.Channel, To: messaging.ToAddress(d.Channel, to.Value), Body: &body}
	sum := sha256.Sum256([]byte(ct.ID + "\x00" + d.Channel + "\x00" + body))
	ttl := c.opts.IdempotencyTTL
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	a, err := c.opts.Messages.Accept(ctx.UserContext(), u.Tenant, draft,
		messaging.Idempotency{Key: "console:" + d.Key, BodyHash: hex.EncodeToString(sum[:]), TTL: ttl})
	var (
		inv  *messaging.InvalidError
		full *admission.BacklogFullError
	)
	switch {
	case errors.Is(err, ledger.ErrIdempotencyMismatch):
		return refuse(http.StatusUnprocessableEntity, "conversation.already_sent")
	case errors.As(err, &inv):
		var details []string
		for _, fe := range inv.Errors {
			details = append(details, fe.Field+": "+fe.Detail)
		}
		return refuse(http.StatusUnprocessableEntity, "conversation.invalid", details...)
	case errors.As(err, &full):
		return &StatusError{Status: http.StatusTooManyRequests, Key: "conversation.backlog_full", RetryAfter: full.RetryAfter()}
	case err != nil:
		return err
	}
	c.log.Info("answer sent from the console", "tenant", u.Tenant, "contact_id", ct.ID, "msg_id", a.ID, "channel", d.Channel,
		"user_id", u.ID, "replayed", a.Replayed)
	return ctx.Redirect(Prefix+"/contacts/"+url.PathEscape(ct.ID)+"/conversation?sent="+url.QueryEscape(a.ID), http.StatusSeeOther)
}
