package templates

import (
	"errors"
	"fmt"
	"html"
	"net/url"
	"slices"
	"strings"
)

// Errors of rendering.
var (
	// ErrNoForm: the template (in the chosen locale) has no form for the
	// channel.
	ErrNoForm = errors.New("no form for this channel")
	// ErrUnknownChannel: the channel is not sms, voice, wechat or email.
	ErrUnknownChannel = errors.New("unknown channel")
	// ErrInvalidTemplate: a template built in code (not by Parse) has a
	// malformed placeholder or uses an undeclared variable.
	ErrInvalidTemplate = errors.New("invalid template")
)

// VarError says which variables a request left out or gave in vain.
type VarError struct {
	Template string
	// Missing are variables the form uses that are not optional and were
	// not given.
	Missing []string
	// Unknown are variables given that the template does not declare.
	Unknown []string
}

func (e *VarError) Error() string {
	var parts []string
	if len(e.Missing) > 0 {
		parts = append(parts, "missing variables "+strings.Join(e.Missing, ", "))
	}
	if len(e.Unknown) > 0 {
		parts = append(parts, "unknown variables "+strings.Join(e.Unknown, ", ")+" (not declared by the template)")
	}
	return fmt.Sprintf("template %q: %s", e.Template, strings.Join(parts, "; "))
}

// PHIError refuses variables marked phi in a channel that does not keep
// them private.
//
// Decision: SMS and WeChat are refused by default. An SMS sits unencrypted
// on the carrier's systems and shows on the lock screen of a phone that may
// be shared; a WeChat message passes through and is kept by a third-party
// platform and also shows in notifications. A tenant that has its patients'
// agreement may allow PHI in them (the message is then sent and the render
// carries a warning). Voice and email are allowed: a call speaks to
// whoever answers the patient's own number, nothing stays on a lock screen,
// and the call's text is not stored by the carrier; an email reaches the
// patient's own mailbox, behind the patient's own login, and its content is
// what the patient asked the clinic to send there. Templates still keep
// PHI to the minimum in those channels.
type PHIError struct {
	Template string
	Channel  string
	// Vars are the phi variables the channel's form uses, sorted.
	Vars []string
}

func (e *PHIError) Error() string {
	return fmt.Sprintf("template %q: variables %s are marked phi and are not sent by %s unless the tenant allows PHI in %s",
		e.Template, strings.Join(e.Vars, ", "), e.Channel, e.Channel)
}

// ValueError says a variable's value cannot be sent.
type ValueError struct {
	Var     string
	Problem string
}

func (e *ValueError) Error() string { return fmt.Sprintf("variable %s %s", e.Var, e.Problem) }

// OutputError says the rendered message breaks a limit of its channel,
// e.g. an SMS longer than 1,600 characters or a subject with a line break.
type OutputError struct {
	Template string
	Channel  string
	// Field is the rendered field ("email.subject").
	Field   string
	Problem string
}

func (e *OutputError) Error() string {
	return fmt.Sprintf("template %q rendered for %s: %s %s", e.Template, e.Channel, e.Field, e.Problem)
}

// Rendered is a template rendered for one channel and locale.
type Rendered struct {
	Template string `json:"template"`
	// Locale is the locale variant used (see Chain).
	Locale  string `json:"locale"`
	Channel string `json:"channel"`
	// Body is the SMS text, the voice text, the WeChat customer-service text
	// or the email's text part.
	Body string `json:"body,omitempty"`
	// Subject and HTML are the email's subject and HTML part.
	Subject string `json:"subject,omitempty"`
	HTML    string `json:"html,omitempty"`
	// Voice is the rendered voice form (text, gather, record).
	Voice *VoiceForm `json:"voice,omitempty"`
	// WeChat is the rendered WeChat form (template message and/or text).
	WeChat *WeChatForm `json:"wechat,omitempty"`
	// ExpectReply is the template's default question, for channels whose
	// answers reach the gateway (not email).
	ExpectReply *ExpectReply `json:"expect_reply,omitempty"`
	// Warnings say what was sent that deserves attention (PHI sent in SMS
	// or WeChat because the tenant allows it).
	Warnings []string `json:"warnings,omitempty"`
}

// phiChannel says whether variables marked phi are refused in a channel by
// default (see PHIError for the decision).
func phiChannel(channel string) bool { return channel == ChannelSMS || channel == ChannelWeChat }

// validChannel says whether channel is one templates have forms for.
func validChannel(channel string) bool { return slices.Contains(Channels, channel) }

// Render renders t for a channel in the locale the chain picks for locale.
//
// It is strict: a variable the channel's form uses that vars does not give
// and that is not optional is a *VarError (Missing), and so is a variable in
// vars the template does not declare (Unknown); a value that is blank,
// longer than MaxValueChars or holds control characters other than newline
// and tab is a *ValueError; a phi variable in an SMS or WeChat form is a
// *PHIError unless allowPHI (then a warning); a rendered message over its
// channel's limits is an *OutputError. A template without a form for the
// channel is ErrNoForm; locale failures are ErrBadLocale and ErrNoLocale.
//
// Values are inserted as given, except in email HTML, where they are
// HTML-escaped, and in a WeChat URL, where they are percent-encoded.
// Variables declared but not used by the channel's form are accepted and
// ignored, so one set of variables serves every channel.
func (t *Template) Render(chain Chain, channel, locale string, vars map[string]string, allowPHI bool) (*Rendered, error) {
	if !validChannel(channel) {
		return nil, fmt.Errorf("%w %q: want sms, voice, wechat or email", ErrUnknownChannel, channel)
	}
	loc, forms, err := chain.Pick(t, locale)
	if err != nil {
		return nil, err
	}
	if !forms.has(channel) {
		return nil, fmt.Errorf("%w: template %q has no %s form in locale %s", ErrNoForm, t.Name, channel, loc)
	}
	decl := t.declared()
	used, err := forms.uses(channel)
	if err != nil {
		return nil, fmt.Errorf("%w %q: locales.%s.%v", ErrInvalidTemplate, t.Name, loc, err)
	}
	ve := &VarError{Template: t.Name}
	for _, name := range used {
		v := decl[name]
		if v == nil {
			return nil, fmt.Errorf("%w %q: locales.%s.%s uses {{%s}}, which is not declared", ErrInvalidTemplate, t.Name, loc, channel, name)
		}
		if _, given := vars[name]; !given && !v.Optional {
			ve.Missing = append(ve.Missing, name)
		}
	}
	for _, name := range sortedKeys(vars) {
		if decl[name] == nil {
			ve.Unknown = append(ve.Unknown, name)
		}
	}
	if len(ve.Missing) > 0 || len(ve.Unknown) > 0 {
		return nil, ve
	}
	for _, name := range sortedKeys(vars) {
		if msg := checkValue(vars[name]); msg != "" {
			return nil, &ValueError{Var: name, Problem: msg}
		}
	}
	var warnings []string
	if phiChannel(channel) {
		if phi := phiUsed(decl, used); len(phi) > 0 {
			if !allowPHI {
				return nil, &PHIError{Template: t.Name, Channel: channel, Vars: phi}
			}
			warnings = append(warnings, phiWarning(channel, phi))
		}
	}
	out, _, err := renderForm(forms, channel, t.valueOf(vars, decl))
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrInvalidTemplate, t.Name, err)
	}
	if ps := checkOutput(channel, out); len(ps) > 0 {
		return nil, &OutputError{Template: t.Name, Channel: channel, Field: ps[0].Field, Problem: ps[0].Message}
	}
	r := &Rendered{Template: t.Name, Locale: loc, Channel: channel, Warnings: warnings}
	switch channel {
	case ChannelSMS:
		r.Body = out.SMS
	case ChannelVoice:
		r.Body, r.Voice = out.Voice.Text, out.Voice
	case ChannelWeChat:
		r.Body, r.WeChat = out.WeChat.Text, out.WeChat
	case ChannelEmail:
		r.Body, r.Subject, r.HTML = out.Email.Text, out.Email.Subject, out.Email.HTML
	}
	if channel != ChannelEmail { // email replies do not reach the gateway
		r.ExpectReply = t.ExpectReply.clone()
	}
	return r, nil
}

// declared indexes t's variables by name.
func (t *Template) declared() map[string]*Variable {
	m := make(map[string]*Variable, len(t.Variables))
	for i := range t.Variables {
		if _, dup := m[t.Variables[i].Name]; !dup {
			m[t.Variables[i].Name] = &t.Variables[i]
		}
	}
	return m
}

// valueOf returns the lookup of a variable's value: the given one, else
// an optional variable's default.
func (t *Template) valueOf(vars map[string]string, decl map[string]*Variable) func(string) (string, bool) {
	return func(name string) (string, bool) {
		if v, ok := vars[name]; ok {
			return v, true
		}
		if d := decl[name]; d != nil && d.Optional {
			return d.Default, true
		}
		return "", false
	}
}

// phiUsed lists the used variables marked phi, sorted.
func phiUsed(decl map[string]*Variable, used []string) []string {
	var phi []string
	for _, name := range used {
		if v := decl[name]; v != nil && v.PHI {
			phi = append(phi, name)
		}
	}
	slices.Sort(phi)
	return phi
}

func phiWarning(channel string, vars []string) string {
	return fmt.Sprintf("%s marked phi, sent by %s because the tenant allows PHI in %s", strings.Join(vars, ", "), channel, channel)
}

// renderForm renders a copy of one channel's form of f. value gives a
// variable's value; a variable without one is rendered as the visible
// marker {{name}} and listed in missing. Values are HTML-escaped in email
// HTML and percent-encoded in URLs.
func renderForm(f *Forms, channel string, value func(string) (string, bool)) (out *Forms, missing []string, err error) {
	out = &Forms{}
	switch channel {
	case ChannelSMS:
		out.SMS = f.SMS
	case ChannelVoice:
		out.Voice = f.clone().Voice
	case ChannelWeChat:
		out.WeChat = f.clone().WeChat
	case ChannelEmail:
		out.Email = f.clone().Email
	}
	out.eachChannelField(channel, func(path string, kind fieldKind, s string) string {
		if err != nil {
			return s
		}
		r, miss, e := expand(s, func(name string) (string, bool) {
			v, ok := value(name)
			if !ok {
				return "", false
			}
			switch kind {
			case kindHTML:
				v = html.EscapeString(v)
			case kindURL:
				v = strings.ReplaceAll(url.QueryEscape(v), "+", "%20")
			}
			return v, true
		})
		if e != nil {
			err = fmt.Errorf("%s %w", path, e)
			return s
		}
		missing = append(missing, miss...)
		return r
	})
	if err != nil {
		return nil, nil, err
	}
	return out, missing, nil
}
