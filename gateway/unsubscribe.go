package gateway

import (
	"bytes"
	"context"
	"html/template"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/gateway/patientform"
)

// One-click unsubscription (RFC 8058) from bulk email, at the link of its
// List-Unsubscribe header: POST /u/{token} opts the recipient out, as a
// mail client's one-click button or the page's own button posts it; GET
// only shows the page with that button, since mail scanners follow links.
// The token is the recipient's capability, never logged (the access log
// names the route template only).

// UnsubscribePath is where unsubscribe links point.
const UnsubscribePath = "/u/"

// Unsubscriber is a channel that takes one-click unsubscriptions (email).
type Unsubscriber interface {
	// Unsubscribe opts out the recipient of the message the token names;
	// known is false for a token the channel did not make.
	Unsubscribe(ctx context.Context, rcv channels.Receiver, token string) (known bool, err error)
}

func (s *Server) mountUnsubscribe() {
	for _, ch := range s.opts.Channels.All() {
		if u, ok := ch.(Unsubscriber); ok {
			s.app.Get(UnsubscribePath+":token", s.unsubscribePage)
			s.app.Post(UnsubscribePath+":token", func(c *fiber.Ctx) error { return s.unsubscribe(c, u) })
			return
		}
	}
}

// GET /u/{token}: the page that asks to confirm.
func (s *Server) unsubscribePage(c *fiber.Ctx) error {
	return s.renderUnsubscribe(c, "confirm")
}

// POST /u/{token}: opt out. A mail client's one-click POST carries
// List-Unsubscribe=One-Click; the page's button posts the same.
func (s *Server) unsubscribe(c *fiber.Ctx, u Unsubscriber) error {
	ctx, cancel := context.WithTimeout(c.UserContext(), RequestTimeout)
	defer cancel()
	known, err := u.Unsubscribe(ctx, s.opts.Inbound, c.Params("token"))
	switch {
	case err != nil:
		s.log.Error("unsubscription not recorded", "err", err)
		c.Status(fiber.StatusServiceUnavailable)
		c.Set(fiber.HeaderRetryAfter, "5")
		return s.renderUnsubscribe(c, "trouble")
	case !known:
		c.Status(fiber.StatusNotFound)
		return s.renderUnsubscribe(c, "unknown")
	}
	return s.renderUnsubscribe(c, "done")
}

var unsubscribeText = map[string]map[string]string{
	"en": {
		"title":   "Unsubscribe",
		"confirm": "Stop receiving these emails? Messages about your own care may still reach you in other ways.",
		"button":  "Unsubscribe",
		"done":    "You are unsubscribed. You will not receive these emails any more.",
		"unknown": "This unsubscribe link is not valid or has expired.",
		"trouble": "We could not record this just now. Please try again in a minute.",
	},
	"zh-Hans": {
		"title":   "退订",
		"confirm": "不再接收这些邮件？与您本人诊疗有关的消息仍可能通过其他方式送达。",
		"button":  "退订",
		"done":    "您已退订，今后不会再收到这些邮件。",
		"unknown": "此退订链接无效或已过期。",
		"trouble": "暂时无法记录您的请求，请一分钟后再试。",
	},
}

var unsubscribeTemplate = template.Must(template.New("u").Parse(`<!doctype html>
<html lang="{{.Lang}}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.T.title}}</title></head>
<body><main><h1>{{.T.title}}</h1>
{{if eq .Page "confirm"}}<p>{{.T.confirm}}</p>
<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click"><button type="submit">{{.T.button}}</button></form>
{{else}}<p>{{index .T .Page}}</p>{{end}}
</main></body></html>
`))

func (s *Server) renderUnsubscribe(c *fiber.Ctx, page string) error {
	lang := patientform.LocaleFrom(c.Get(fiber.HeaderAcceptLanguage))
	patientPage(c, "default-src 'none'; form-action 'self'")
	var b bytes.Buffer
	if err := unsubscribeTemplate.Execute(&b, map[string]any{"Lang": lang, "T": unsubscribeText[lang], "Page": page}); err != nil {
		return err
	}
	return c.Send(b.Bytes())
}

// patientPage sets the headers of an HTML page a patient opens from a
// link (the web form, the unsubscribe page): its content security
// policy, and never cached, framed, indexed or named in a referrer.
func patientPage(c *fiber.Ctx, csp string) {
	c.Set("Content-Security-Policy", csp)
	c.Set("X-Content-Type-Options", "nosniff")
	c.Set("Referrer-Policy", "no-referrer")
	c.Set("X-Frame-Options", "DENY")
	c.Set("X-Robots-Tag", "noindex, nofollow")
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderContentType, fiber.MIMETextHTMLCharsetUTF8)
}
