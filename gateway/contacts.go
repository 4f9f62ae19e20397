package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/contacts"
	"github.com/patientmsg/gateway/internal/webhooks"
)

// contactJSON is a contact as the API shows it to its own tenant.
type contactJSON struct {
	ID           string    `json:"id"`
	Phone        string    `json:"phone,omitempty"`
	Email        string    `json:"email,omitempty"`
	WeChatOpenID string    `json:"wechat_openid,omitempty"`
	Locale       string    `json:"locale,omitempty"`
	TimeZone     string    `json:"timezone,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

func contactView(c contacts.Contact) contactJSON {
	v := contactJSON{ID: c.ID, Locale: c.Locale, TimeZone: c.TimeZone, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt}
	for _, i := range c.Identities {
		switch i.Kind {
		case consent.Phone:
			v.Phone = i.Value
		case consent.Email:
			v.Email = i.Value
		case consent.WeChat:
			v.WeChatOpenID = i.Value
		}
	}
	return v
}

func (s *Server) putContact(c *fiber.Ctx) error {
	tenant, id := tenantOf(c), c.Params("id")
	if !contacts.ValidID(id) {
		return problem(400, "bad-contact-id", "a contact id is 1-64 letters, digits, '-', '_' or '.', e.g. your medical record number")
	}
	var in contacts.Input
	if p := decodeJSON(c, &in); p != nil {
		return p
	}
	ct, err := in.Contact(id)
	if err != nil {
		return s.domainProblem(err)
	}
	saved, err := s.opts.Contacts.Put(c.UserContext(), tenant, ct)
	var taken *contacts.IdentityTakenError
	if errors.As(err, &taken) {
		return problem(409, "identity-taken", "the "+string(taken.Identity.Kind)+" already belongs to contact "+taken.Owner+"; remove it there first")
	}
	if err != nil {
		return s.unavailable(err)
	}
	return c.JSON(contactView(saved))
}

func (s *Server) getContact(c *fiber.Ctx) error {
	ct, err := s.opts.Contacts.Get(c.UserContext(), tenantOf(c), c.Params("id"))
	if errors.Is(err, contacts.ErrNotFound) {
		return problem(404, "not-found", "no contact with this id for your API key")
	}
	if err != nil {
		return s.unavailable(err)
	}
	return c.JSON(contactView(ct))
}

// findContact looks a contact up by exactly one identity.
func (s *Server) findContact(c *fiber.Ctx) error {
	ids, p := identityQuery(c)
	if p != nil {
		return p
	}
	ct, err := s.opts.Contacts.Find(c.UserContext(), tenantOf(c), ids[0])
	if errors.Is(err, contacts.ErrNotFound) {
		return problem(404, "not-found", "no contact has this identity")
	}
	if err != nil {
		return s.unavailable(err)
	}
	return c.JSON(contactView(ct))
}

type consentJSON struct {
	Contact    string          `json:"contact"`
	Identities []consent.State `json:"identities"`
}

func (s *Server) contactConsent(c *fiber.Ctx, ct contacts.Contact) error {
	out := consentJSON{Contact: ct.ID, Identities: []consent.State{}}
	for _, id := range ct.Identities {
		st, err := s.opts.Consent.Get(c.UserContext(), tenantOf(c), id)
		if err != nil {
			return s.unavailable(err)
		}
		out.Identities = append(out.Identities, st)
	}
	return c.JSON(out)
}

func (s *Server) getConsent(c *fiber.Ctx) error {
	ct, err := s.opts.Contacts.Get(c.UserContext(), tenantOf(c), c.Params("id"))
	if errors.Is(err, contacts.ErrNotFound) {
		return problem(404, "not-found", "no contact with this id for your API key")
	}
	if err != nil {
		return s.unavailable(err)
	}
	return s.contactConsent(c, ct)
}

// consentIn is the body of PUT /v1/contacts/{id}/consent.
type consentIn struct {
	OptedOut *bool  `json:"opted_out"`
	Evidence string `json:"evidence"`
	// Identity limits the change to one kind (phone, email, wechat); all when empty.
	Identity string `json:"identity"`
}

func (s *Server) putConsent(c *fiber.Ctx) error {
	tenant := tenantOf(c)
	var in consentIn
	if p := decodeJSON(c, &in); p != nil {
		return p
	}
	ct, err := s.opts.Contacts.Get(c.UserContext(), tenant, c.Params("id"))
	if errors.Is(err, contacts.ErrNotFound) {
		return problem(404, "not-found", "no contact with this id for your API key")
	}
	if err != nil {
		return s.unavailable(err)
	}
	var errs []FieldError
	if in.OptedOut == nil {
		errs = append(errs, FieldError{Field: "opted_out", Detail: "is required: true records an opt-out, false an opt-in"})
	}
	if strings.TrimSpace(in.Evidence) == "" || len(in.Evidence) > 1000 {
		errs = append(errs, FieldError{Field: "evidence", Detail: "is required (at most 1000 characters): what shows the patient's choice, e.g. \"signed consent form, visit 2026-11-20\""})
	}
	if in.Identity != "" && in.Identity != string(consent.Phone) && in.Identity != string(consent.Email) && in.Identity != string(consent.WeChat) {
		errs = append(errs, FieldError{Field: "identity", Detail: "must be phone, email or wechat"})
	}
	if len(errs) > 0 {
		return validationProblem(errs)
	}
	if _, err := contacts.RecordConsent(c.UserContext(), s.opts.Consent, publisher(s.opts.Events), tenant, ct, consent.Kind(in.Identity), *in.OptedOut, in.Evidence); err != nil {
		return s.unavailable(err)
	}
	return s.contactConsent(c, ct)
}

// exportConsent streams every recorded consent state of the tenant as JSON lines.
func (s *Server) exportConsent(c *fiber.Ctx) error {
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	enc := json.NewEncoder(w)
	if err := s.opts.Consent.Export(c.UserContext(), tenantOf(c), func(st consent.State) error { return enc.Encode(st) }); err != nil {
		return s.unavailable(err)
	}
	_ = w.Flush()
	c.Set(fiber.HeaderContentType, "application/x-ndjson")
	c.Set(fiber.HeaderCacheControl, "private, no-store")
	return c.Send(buf.Bytes())
}

// conversationEntry is one line of GET /v1/contacts/{id}/conversation.
// getConversation lists the messages to a contact's identities and the
// replies from them, oldest first (the last 100). Bodies are shown: the
// caller is the owning tenant.
func (s *Server) getConversation(c *fiber.Ctx) error {
	tenant := tenantOf(c)
	ct, err := s.opts.Contacts.Get(c.UserContext(), tenant, c.Params("id"))
	if errors.Is(err, contacts.ErrNotFound) {
		return problem(404, "not-found", "no contact with this id for your API key")
	}
	if err != nil {
		return s.unavailable(err)
	}
	out, err := s.opts.Replies.Thread(c.UserContext(), s.opts.Ledger, tenant, ct.Identities, 100)
	if err != nil {
		return s.unavailable(err)
	}
	return c.JSON(fiber.Map{"contact": ct.ID, "entries": out})
}

// publisher is the webhook publisher as contacts.RecordConsent takes it:
// nil when none is configured (not a nil pointer in an interface).
func publisher(p *webhooks.Publisher) contacts.Publisher {
	if p == nil {
		return nil
	}
	return p
}
