package gateway

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/ledger"
)

// mountWebhooks serves every route the channels declare.
func (s *Server) mountWebhooks() {
	rcv := receiver{l: s.opts.Ledger}
	for _, r := range s.opts.Channels.Routes(rcv) {
		s.app.Add(r.Method, r.Path, s.webhook(r))
	}
}

func (s *Server) webhook(r channels.Route) fiber.Handler {
	return func(c *fiber.Ctx) error {
		req := channels.WebhookRequest{
			URL:    s.opts.PublicURL + string(c.Request().RequestURI()),
			Header: http.Header{},
			Body:   append([]byte(nil), c.Body()...),
		}
		c.Request().Header.VisitAll(func(k, v []byte) { req.Header.Add(string(k), string(v)) })
		req.Query, _ = url.ParseQuery(string(c.Request().URI().QueryString()))
		if strings.HasPrefix(string(c.Request().Header.ContentType()), fiber.MIMEApplicationForm) {
			form, err := url.ParseQuery(string(req.Body))
			if err != nil {
				return c.Status(400).SendString("malformed form body\n")
			}
			req.Form = form
		} else {
			req.Form = url.Values{}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp := r.Handle(ctx, req)
		if resp.ContentType != "" {
			c.Set(fiber.HeaderContentType, resp.ContentType)
		}
		return c.Status(resp.Status).Send(resp.Body)
	}
}

// receiver applies what webhooks report to the ledger.
type receiver struct{ l *ledger.Ledger }

func (r receiver) ProviderStatus(ctx context.Context, id string, u ledger.ProviderUpdate) (ledger.Applied, error) {
	if id == "" {
		found, err := r.l.MessageIDByProvider(ctx, u.Channel, u.ProviderID)
		if errors.Is(err, ledger.ErrNotFound) {
			return ledger.AppliedUnknown, nil
		}
		if err != nil {
			return ledger.AppliedUnknown, err
		}
		id = found
	}
	return r.l.ApplyProviderUpdate(ctx, id, u)
}
