package gateway

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/metrics"
)

// mountWebhooks serves every route the channels declare; what the
// providers report goes to the receiver (package inbound).
func (s *Server) mountWebhooks() {
	for _, r := range s.opts.Channels.Routes(s.opts.Inbound) {
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
		// Status callbacks and patients' messages are admitted until Redis'
		// last few percent; then the provider is asked to try again later.
		// A call in progress is never cut off by the guard.
		if !liveCall(r.Path) {
			if after, refused := s.webhookRefused(ctx); refused {
				s.opts.Metrics.Webhook(r.Path, metrics.WebhookRefused)
				return webhookTryAgain(c, after)
			}
		}
		began := s.webhookBegin()
		resp := r.Handle(ctx, req)
		s.opts.Metrics.Webhook(r.Path, webhookResult(resp.Status))
		if resp.Status < 300 && s.webhookReplicated(ctx, c, r.Path, began) {
			return nil
		}
		if resp.Status >= 500 {
			// Every 5xx is a 503 with Retry-After: the provider tries again
			// (a push that does not decrypt, a configuration error, too).
			resp.Status = http.StatusServiceUnavailable
			c.Set(fiber.HeaderRetryAfter, strconv.Itoa(seconds(DefaultRetryAfter)))
		}
		if resp.ContentType != "" {
			c.Set(fiber.HeaderContentType, resp.ContentType)
		}
		return c.Status(resp.Status).Send(resp.Body)
	}
}

// webhookResult is what a channel's answer says of a webhook request: the
// channels answer a bad or missing signature 403 (401 for basic auth).
func webhookResult(status int) string {
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return metrics.WebhookRejected
	case status < 400:
		return metrics.WebhookVerified
	}
	return metrics.WebhookFailed
}

// liveCall reports whether a webhook route is a step of a call in
// progress (its TwiML, a keypad answer, the end of a recording), which
// the patient is waiting on.
func liveCall(path string) bool {
	for _, step := range []string{"/voice/twiml", "/voice/gather", "/voice/record"} {
		if strings.HasSuffix(path, step) {
			return true
		}
	}
	return false
}

// webhookTryAgain answers a provider 503 with Retry-After (as the
// channels do when Redis is unavailable).
func webhookTryAgain(c *fiber.Ctx, after time.Duration) error {
	c.Set(fiber.HeaderRetryAfter, strconv.Itoa(max(seconds(after), 1)))
	c.Set(fiber.HeaderContentType, "text/plain")
	return c.Status(http.StatusServiceUnavailable).SendString("try again\n")
}
