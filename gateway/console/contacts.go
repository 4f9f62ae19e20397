package console

import (
	"time"

	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/internal/address"
	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/contacts"
	"github.com/patientmsg/gateway/internal/redact"
)

// MaxEvidence is the most characters of evidence an opt-in takes, as PUT
// /v1/contacts/{id}/consent.
const MaxEvidence = 1000

// lookupKinds are the identities a contact is looked up by, in the form's
// order.
var lookupKinds = []consent.Kind{consent.Phone, consent.Email, consent.WeChat}

// identityRow is one address of the contact with its consent.
type identityRow struct {
	Kind consent.Kind
	// Shown is the address as the page shows it: masked, but for the one
	// that was looked up.
	Shown    string
	Searched bool
	consent.State
}

// contactData is the contacts page's.
type contactData struct {
	By string // phone, email or wechat
	Q  string // the address looked up
	// Error is a catalogue key: the lookup or the form was refused.
	Error string
	// Contact is nil before a lookup and when none was found.
	Contact    *contacts.Contact
	Identities []identityRow
	// Plans are the contact's active follow-up plans.
	Plans    []planRow
	NotFound bool
	Recorded bool
	// The opt-in form, posted back when refused.
	Evidence string
	Identity string
}

// OptedOut reports whether any of the contact's addresses is opted out.
func (d contactData) OptedOut() bool {
	for _, r := range d.Identities {
		if r.OptedOut {
			return true
		}
	}
	return false
}

// Kinds are the identity kinds of the lookup form.
func (d contactData) Kinds() []consent.Kind { return lookupKinds }

// searchedIdentity normalises the looked-up address as GET /v1/contacts
// does.
func (c *Console) searchedIdentity(by, q string) (consent.Identity, bool) {
	q = strings.TrimSpace(q)
	switch consent.Kind(by) {
	case consent.Phone:
		e164, err := address.Phone(q, c.opts.DefaultRegion)
		return consent.Identity{Kind: consent.Phone, Value: e164}, err == nil
	case consent.Email:
		addr, ok := address.Email(q)
		return consent.Identity{Kind: consent.Email, Value: addr}, ok
	case consent.WeChat:
		return consent.Identity{Kind: consent.WeChat, Value: q}, q != "" && address.OpenID(q)
	}
	return consent.Identity{}, false
}

// contactsPage looks a contact up by one address (?by=phone&q=…) and shows
// it with its consent.
func (c *Console) contactsPage(ctx *fiber.Ctx) error {
	d := contactData{By: ctx.Query("by", string(consent.Phone)), Q: strings.TrimSpace(ctx.Query("q")), Recorded: ctx.Query("recorded") != ""}
	if d.Q == "" {
		return c.renderContact(ctx, http.StatusOK, d)
	}
	id, ok := c.searchedIdentity(d.By, d.Q)
	if !ok {
		d.Error = "contacts.bad_" + d.By
		if !validKind(d.By) {
			d.Error = "contacts.bad_kind"
		}
		return c.renderContact(ctx, http.StatusUnprocessableEntity, d)
	}
	ct, err := c.opts.Contacts.Find(ctx.UserContext(), userOf(ctx).Tenant, id)
	if errors.Is(err, contacts.ErrNotFound) {
		d.NotFound = true
		return c.renderContact(ctx, http.StatusNotFound, d)
	}
	if err != nil {
		return err
	}
	if err := c.fillContact(ctx, &d, ct, id); err != nil {
		return err
	}
	return c.renderContact(ctx, http.StatusOK, d)
}

// contactPage shows the tenant's contact named in the path, every address
// masked (404 for any other tenant's).
func (c *Console) contactPage(ctx *fiber.Ctx) error {
	ct, err := c.contactOf(ctx)
	if err != nil {
		return err
	}
	d := contactData{By: string(consent.Phone), Recorded: ctx.Query("recorded") != ""}
	if err := c.fillContact(ctx, &d, ct, consent.Identity{}); err != nil {
		return err
	}
	return c.renderContact(ctx, http.StatusOK, d)
}

func (c *Console) contactOf(ctx *fiber.Ctx) (contacts.Contact, error) {
	ct, err := c.opts.Contacts.Get(ctx.UserContext(), userOf(ctx).Tenant, ctx.Params("id"))
	if errors.Is(err, contacts.ErrNotFound) {
		return ct, notFound()
	}
	return ct, err
}

// fillContact adds the contact and its consent, as GET
// /v1/contacts/{id}/consent reads it, to the page.
func (c *Console) fillContact(ctx *fiber.Ctx, d *contactData, ct contacts.Contact, searched consent.Identity) error {
	d.Contact = &ct
	for _, id := range ct.Identities {
		st, err := c.opts.Consent.Get(ctx.UserContext(), userOf(ctx).Tenant, id)
		if err != nil {
			return err
		}
		row := identityRow{Kind: id.Kind, Shown: masked(id), State: st}
		if searched.Valid() && consent.Normalise(id) == consent.Normalise(searched) {
			row.Shown, row.Searched = id.Value, true
		}
		// Newest change first.
		for i, j := 0, len(row.Changes)-1; i < j; i, j = i+1, j-1 {
			row.Changes[i], row.Changes[j] = row.Changes[j], row.Changes[i]
		}
		d.Identities = append(d.Identities, row)
	}
	if c.opts.Followups == nil {
		return nil
	}
	plans, err := c.opts.Followups.ActiveFor(ctx.UserContext(), userOf(ctx).Tenant, ct.Identities)
	if err != nil {
		return err
	}
	now := time.Now()
	for _, p := range plans {
		d.Plans = append(d.Plans, planRowOf(p, now))
	}
	return nil
}

// masked is an address as the API masks a message's recipient.
func masked(id consent.Identity) string {
	switch id.Kind {
	case consent.Phone:
		return redact.Phone(id.Value)
	case consent.Email:
		return redact.Email(id.Value)
	}
	return redact.Secret(id.Value)
}

func validKind(k string) bool {
	for _, v := range lookupKinds {
		if string(v) == k {
			return true
		}
	}
	return false
}

func (c *Console) renderContact(ctx *fiber.Ctx, status int, d contactData) error {
	if !validKind(d.By) {
		d.By = string(consent.Phone)
	}
	return c.render(ctx, status, "contacts", pageData{Title: "contacts.title", Nav: "contacts", User: userOf(ctx), Data: d})
}

// recordOptIn records a patient's opt-in with its evidence through the
// consent ledger, as PUT /v1/contacts/{id}/consent does with opted_out
// false: on every address of the contact, or on the one kind chosen.
// Whether an opt-in may follow an opt-out is the ledger's to decide.
func (c *Console) recordOptIn(ctx *fiber.Ctx) error {
	u := userOf(ctx)
	ct, err := c.contactOf(ctx)
	if err != nil {
		return err
	}
	evidence := strings.TrimSpace(ctx.FormValue("evidence"))
	identity := ctx.FormValue("identity")
	by, q := ctx.FormValue("by"), ctx.FormValue("q")
	var refused string
	switch {
	case evidence == "":
		refused = "contacts.evidence_missing"
	case len(evidence) > MaxEvidence:
		refused = "contacts.evidence_long"
	case identity != "" && !validKind(identity):
		refused = "contacts.bad_kind"
	}
	if refused != "" {
		d := contactData{By: by, Q: q, Error: refused, Evidence: evidence, Identity: identity}
		searched, _ := c.searchedIdentity(by, q)
		if err := c.fillContact(ctx, &d, ct, searched); err != nil {
			return err
		}
		return c.renderContact(ctx, http.StatusUnprocessableEntity, d)
	}
	recordedBy := u.Email
	if u.Name != "" {
		recordedBy = u.Name + " <" + u.Email + ">"
	}
	// The source is the API's: the console is the tenant recording it,
	// and the history's sources are a published list.
	full := evidence + " (recorded in the console by " + recordedBy + ")"
	changed, err := contacts.RecordConsent(ctx.UserContext(), c.opts.Consent, c.publisher(), u.Tenant, ct, consent.Kind(identity), false, full)
	if err != nil {
		return err
	}
	for _, id := range changed {
		c.log.Info("opt-in recorded from the console", "tenant", u.Tenant, "contact_id", ct.ID, "kind", string(id.Kind), "user_id", u.ID)
	}
	next := Prefix + "/contacts/" + url.PathEscape(ct.ID) + "?recorded=1"
	if searched, ok := c.searchedIdentity(by, q); ok && c.belongsTo(ct, searched) {
		next = Prefix + "/contacts?" + url.Values{"by": {by}, "q": {q}, "recorded": {"1"}}.Encode()
	}
	return ctx.Redirect(next, http.StatusSeeOther)
}

// belongsTo reports whether the address is one of the contact's.
func (c *Console) belongsTo(ct contacts.Contact, id consent.Identity) bool {
	for _, x := range ct.Identities {
		if consent.Normalise(x) == consent.Normalise(id) {
			return true
		}
	}
	return false
}

// publisher is the webhook publisher as the contacts package takes it:
// nil, not a nil pointer, when no webhook is configured.
func (c *Console) publisher() contacts.Publisher {
	if c.opts.Events == nil {
		return nil
	}
	return c.opts.Events
}
