package messaging

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/patientmsg/gateway/internal/contacts"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/schedule"
	"github.com/patientmsg/gateway/internal/tenants"
	"github.com/patientmsg/gateway/templates"
	"github.com/patientmsg/gateway/workers"
)

// composed is a message request made ready to validate: its template
// expanded, with what is known about the recipient.
type composed struct {
	settings tenants.Settings
	contact  *contacts.Contact
	template string
	locale   string // the template's locale variant used
}

// settingsOf returns a tenant's delivery settings; without a settings store,
// no quiet hours apply.
func (s *Service) settingsOf(ctx context.Context, tenant string) (tenants.Settings, error) {
	if s.Tenants == nil {
		return tenants.Settings{QuietHours: "off", CrisisInQuietHours: tenants.CrisisSend, TimeZone: "UTC"}, nil
	}
	return s.Tenants.Get(ctx, tenant)
}

// compose prepares a draft for validation: it looks up the recipient's
// contact (locale, time zone) and renders the template, if any, into the
// draft's fields. A template problem is an *InvalidError naming the field.
func (s *Service) compose(ctx context.Context, tenant string, req *Draft, checked *ledger.Recipient) (*composed, error) {
	set, err := s.settingsOf(ctx, tenant)
	if err != nil {
		return nil, err
	}
	c := &composed{settings: set}
	// The contact is read only when it can tell something the request does
	// not: the locale of a template, or the time zone for quiet hours.
	prio := req.Priority
	if prio == "" {
		prio = workers.PriorityNormal
	}
	needLocale := req.Template != nil && req.Locale == nil
	needZone := set.QuietFor(prio) != ""
	if s.Contacts != nil && req.To != nil && req.Channel != "" && (needLocale || needZone) {
		var to ledger.Recipient
		if checked != nil {
			to = *checked
		} else {
			decodeRecipient(req.Channel, req.To, &to, func(string, string, ...any) {})
		}
		if id := workers.IdentityOf(req.Channel, to); id.Value != "" {
			ct, err := s.Contacts.Find(ctx, tenant, id)
			switch {
			case err == nil:
				c.contact = &ct
			case !errors.Is(err, contacts.ErrNotFound):
				return nil, err
			}
		}
	}
	if req.Template == nil {
		return c, nil
	}
	return c, s.expandTemplate(ctx, tenant, req, c)
}

// expandTemplate renders the named template for the request's channel into
// body, subject, html, gather, record, wechat and (unless given)
// expect_reply.
func (s *Service) expandTemplate(ctx context.Context, tenant string, req *Draft, c *composed) error {
	var errs []FieldError
	bad := func(field, format string, a ...any) {
		errs = append(errs, FieldError{Field: field, Detail: fmt.Sprintf(format, a...)})
	}
	for field, given := range map[string]bool{"body": req.Body != nil, "subject": req.Subject != nil, "html": req.HTML != nil,
		"gather": req.Gather != nil, "record": req.Record != nil, "wechat": req.WeChat != nil} {
		if given {
			bad(field, "cannot be given with a template: the template provides it")
		}
	}
	if len(errs) > 0 {
		return &InvalidError{Errors: sorted(errs)}
	}
	if s.Templates == nil {
		return Invalid("template", "templates are not available on this gateway")
	}
	name := strings.TrimSpace(*req.Template)
	t, err := s.Templates.Get(ctx, tenant, name)
	if errors.Is(err, templates.ErrNotFound) {
		return Invalid("template", fmt.Sprintf("%q is not a template of this tenant or a built-in one; GET /v1/templates lists them", Clip(name)))
	} else if err != nil {
		return err
	}
	locale := ""
	if req.Locale != nil {
		locale = *req.Locale
	} else if c.contact != nil {
		locale = c.contact.Locale
	}
	r, err := t.Render(s.TemplateChain, req.Channel, locale, req.Vars, c.settings.AllowPHI)
	if err != nil {
		return TemplateError(name, req.Channel, err)
	}
	c.template, c.locale = t.Name, r.Locale
	if req.Locale == nil {
		l := r.Locale
		req.Locale = &l // the voice speaks the language the text is in
	}
	switch req.Channel {
	case templates.ChannelSMS:
		req.Body = &r.Body
	case templates.ChannelVoice:
		if v := r.Voice; v != nil {
			req.Body = &v.Text
			if g := v.Gather; g != nil {
				req.Gather = &ledger.Gather{Prompt: g.Prompt, Digits: g.Digits}
			}
			if rec := v.Record; rec != nil {
				req.Record = &ledger.Record{Prompt: rec.Prompt, MaxLength: rec.MaxLength}
			}
		}
	case templates.ChannelWeChat:
		if w := r.WeChat; w != nil {
			kind := "auto"
			switch {
			case w.TemplateID == "":
				kind = "custom"
			case w.Text == "":
				kind = "template"
			}
			req.WeChat = &WeChatFields{Kind: kind, TemplateID: w.TemplateID, Data: w.Data, URL: w.URL}
			if w.Text != "" {
				req.Body = &w.Text
			}
		}
	case templates.ChannelEmail:
		req.Body, req.Subject = &r.Body, &r.Subject
		if r.HTML != "" {
			req.HTML = &r.HTML
		}
	}
	if req.ExpectReply == nil && r.ExpectReply != nil {
		req.ExpectReply = &Expect{Options: r.ExpectReply.Options, Within: r.ExpectReply.Within}
	}
	return nil
}

// TemplateError explains why a template could not be rendered for a
// channel: the fields to fix.
func TemplateError(name, channel string, err error) *InvalidError {
	var ve *templates.VarError
	var pe *templates.PHIError
	var vale *templates.ValueError
	var oe *templates.OutputError
	switch {
	case errors.As(err, &ve):
		var errs []FieldError
		for _, m := range ve.Missing {
			errs = append(errs, FieldError{Field: "vars." + m, Detail: fmt.Sprintf("is required by template %q", name)})
		}
		for _, u := range ve.Unknown {
			errs = append(errs, FieldError{Field: "vars." + Clip(u), Detail: fmt.Sprintf("is not a variable of template %q; GET /v1/templates/%s lists them", name, name)})
		}
		if len(errs) > 0 {
			return &InvalidError{Errors: errs}
		}
	case errors.As(err, &pe):
		return Invalid("template", fmt.Sprintf(
			"template %q puts %s, marked as protected health information, into a %s message; the tenant does not allow that (minimum necessary: use a form without it, or allow_phi_in_sms_wechat in PUT /v1/settings)",
			name, strings.Join(pe.Vars, ", "), pe.Channel))
	case errors.As(err, &vale):
		return Invalid("vars."+Clip(vale.Var), vale.Problem)
	case errors.As(err, &oe):
		return Invalid("template", oe.Error())
	case errors.Is(err, templates.ErrNoForm):
		return Invalid("template", fmt.Sprintf("template %q has no %s form; use another channel or template", name, channel))
	case errors.Is(err, templates.ErrUnknownChannel):
		return Invalid("channel", fmt.Sprintf("templates have no %q form", Clip(channel)))
	case errors.Is(err, templates.ErrBadLocale):
		return Invalid("locale", "is not a language tag such as en-US or zh-CN")
	case errors.Is(err, templates.ErrNoLocale):
		return Invalid("locale", fmt.Sprintf("template %q has no variant for this locale or its fallbacks", name))
	}
	return Invalid("template", err.Error())
}

// applyQuietHours resolves the recipient's time zone and, when the message
// would reach them inside the tenant's quiet window, defers it to the
// window's end. The window is recorded with the message, so a worker holds
// back a retry that drifts into it as well.
func (s *Service) applyQuietHours(req *ledger.Request, c *composed, requestZone string) {
	window := c.settings.QuietFor(req.Priority)
	if window == "" {
		return // nothing holds the message back: no zone needed (crisis traffic, quiet hours off)
	}
	contactZone := ""
	if c.contact != nil {
		contactZone = c.contact.TimeZone
	}
	loc, source := schedule.ResolveZone(contactZone, requestZone, req.To.Phone, c.settings.TimeZone, s.DefaultZone)
	req.TimeZone, req.ZoneSource = loc.String(), source
	req.QuietHours = window
	w, _ := schedule.ParseWindow(window)
	at := req.CreatedAt
	if req.SendAt != nil {
		at = *req.SendAt
	}
	until, inside := w.Defer(at, loc)
	if !inside {
		return
	}
	u := until.UTC()
	req.SendAt = &u
	req.Deferred = fmt.Sprintf("quiet hours (%s in the recipient's time zone %s, from the %s): deferred to %s",
		window, loc, source, until.In(loc).Format("2006-01-02 15:04 MST"))
}
