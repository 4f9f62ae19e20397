package email

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	gomail "github.com/wneessen/go-mail"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/returnpath"
	"github.com/patientmsg/gateway/internal/webhooks"
)

// returns gives a message its signed return path and Reply-To, and bulk
// mail its List-Unsubscribe: one-click (RFC 8058) by the https link when
// the channel signs tokens, and by mail.
func (c *Channel) returns(msg *gomail.Msg, m channels.Message) {
	k := c.cfg.Returns
	mailto := c.unsubscribe
	if k != nil {
		if bounce := k.Address(returnpath.Bounce, m.ID); bounce != "" {
			_ = msg.EnvelopeFrom(bounce)
		}
		if reply := k.Address(returnpath.Reply, m.ID); reply != "" {
			_ = msg.ReplyTo(reply)
			mailto = "<mailto:" + reply + "?subject=unsubscribe>"
		}
	}
	if m.Priority != PriorityBulk {
		return
	}
	if tok := c.unsubscribeToken(m.ID); tok != "" {
		msg.SetGenHeader(gomail.HeaderListUnsubscribe, "<"+c.cfg.PublicURL+"/u/"+tok+">, "+mailto)
		msg.SetGenHeader(gomail.HeaderListUnsubscribePost, "List-Unsubscribe=One-Click")
		return
	}
	msg.SetGenHeader(gomail.HeaderListUnsubscribe, mailto)
}

func (c *Channel) unsubscribeToken(id string) string {
	if c.cfg.Returns == nil || c.cfg.PublicURL == "" {
		return ""
	}
	return c.cfg.Returns.Token(id)
}

// Unsubscribe opts out the recipient of the message an unsubscribe token
// (the /u/{token} link of a bulk email) names, as a one-click
// unsubscription; known is false for a token the gateway did not make,
// or one whose message is gone with the retention.
func (c *Channel) Unsubscribe(ctx context.Context, rcv channels.Receiver, token string) (known bool, err error) {
	if c.cfg.Returns == nil {
		return false, nil
	}
	id, ok := c.cfg.Returns.ParseToken(token)
	if !ok {
		return false, nil
	}
	err = Apply(ctx, rcv, Event{Kind: EventUnsubscribe, MessageID: id, Evidence: "one-click List-Unsubscribe"})
	if errors.Is(err, ErrNotEmail) {
		return false, nil
	}
	if err != nil {
		return true, err
	}
	c.log.Info("email unsubscription applied", "msg_id", id)
	return true, nil
}

// Events webhook: relays that report outcomes by webhook instead of mail.
const (
	// EventsPath is the route of the events webhook.
	EventsPath = "/webhooks/email/events"
	// SignatureHeader carries "t=<unix seconds>,v1=<hex HMAC-SHA256 of
	// "<t>." + body with EMAIL_WEBHOOK_SECRET>", the scheme of the
	// gateway's own webhooks (webhooks.Sign).
	SignatureHeader = "X-Gateway-Signature"
	// SignatureTolerance is how far the signature's time may be from now.
	SignatureTolerance  = 5 * time.Minute
	maxEventsPerRequest = 100
)

// webhookEvent is one event of the webhook's body.
type webhookEvent struct {
	Type string `json:"type"`
	// MessageID is the gateway's id (the X-Gateway-Message-Id header of
	// every email); ReturnPath, the bounce+ address, may name it instead.
	MessageID    string `json:"message_id"`
	ReturnPath   string `json:"return_path"`
	Status       string `json:"status"`
	Diagnostic   string `json:"diagnostic"`
	FeedbackType string `json:"feedback_type"`
}

// Routes serves the events webhook when the channel has a webhook secret.
func (c *Channel) Routes(rcv channels.Receiver) []channels.Route {
	if c.cfg.WebhookSecret == "" {
		return nil
	}
	return []channels.Route{{Method: http.MethodPost, Path: EventsPath, Handle: func(ctx context.Context, r channels.WebhookRequest) channels.WebhookResponse {
		return c.events(ctx, rcv, r, time.Now())
	}}}
}

func jsonAnswer(status int, v any) channels.WebhookResponse {
	b, _ := json.Marshal(v)
	return channels.WebhookResponse{Status: status, ContentType: "application/json", Body: b}
}

// events applies a signed batch of events: {"events": [{"type": "bounce",
// "message_id": "01J…", "status": "5.1.1", "diagnostic": "…"}, …]}.
// The whole batch is checked before any of it is applied; an event about
// a message the gateway does not know is skipped, and a failure to apply
// answers 503 so that the relay sends the batch again (applying is
// idempotent).
func (c *Channel) events(ctx context.Context, rcv channels.Receiver, r channels.WebhookRequest, now time.Time) channels.WebhookResponse {
	if webhooks.Verify(c.cfg.WebhookSecret, r.Header.Get(SignatureHeader), r.Body, now, SignatureTolerance) != nil {
		c.log.Info("email events webhook refused: bad or missing signature")
		return jsonAnswer(http.StatusForbidden, map[string]string{"error": "bad or missing " + SignatureHeader})
	}
	var body struct {
		Events []webhookEvent `json:"events"`
	}
	if err := json.Unmarshal(r.Body, &body); err != nil || len(body.Events) == 0 || len(body.Events) > maxEventsPerRequest {
		return jsonAnswer(http.StatusBadRequest, map[string]string{"error": "want {\"events\": [...]} with 1 to 100 events"})
	}
	evs := make([]Event, len(body.Events))
	for i, we := range body.Events {
		ev, problem := c.eventOf(we)
		if problem != "" {
			return jsonAnswer(http.StatusBadRequest, map[string]string{"error": "events[" + strconv.Itoa(i) + "]: " + problem})
		}
		evs[i] = ev
	}
	applied, unknown := 0, 0
	for _, ev := range evs {
		err := Apply(ctx, rcv, ev)
		switch {
		case errors.Is(err, ErrNotEmail):
			unknown++
		case err != nil:
			c.log.Warn("email event not applied; the relay will retry", "msg_id", ev.MessageID, "kind", ev.Kind, "err", err)
			return jsonAnswer(http.StatusServiceUnavailable, map[string]string{"error": "try again"})
		default:
			applied++
			c.log.Info("email event applied", "msg_id", ev.MessageID, "kind", ev.Kind, "status", ev.Status)
		}
	}
	return jsonAnswer(http.StatusOK, map[string]int{"applied": applied, "unknown": unknown})
}

// eventOf checks one webhook event; problem says what is wrong with it.
func (c *Channel) eventOf(we webhookEvent) (ev Event, problem string) {
	ev = Event{Kind: we.Type, MessageID: strings.ToUpper(strings.TrimSpace(we.MessageID))}
	if ev.MessageID == "" && we.ReturnPath != "" && c.cfg.Returns != nil {
		if kind, id, ok := c.cfg.Returns.Parse(we.ReturnPath); ok && kind == returnpath.Bounce {
			ev.MessageID = id
		} else {
			return ev, "return_path is not a return path of this gateway"
		}
	}
	if ev.MessageID == "" {
		return ev, "message_id or return_path is required"
	}
	switch we.Type {
	case EventBounce, EventDelay:
		status := strings.TrimSpace(we.Status)
		if !statusCode.MatchString(status) || we.Type == EventBounce && status[0] == '4' || we.Type == EventDelay && status[0] != '4' {
			return ev, "status must be an enhanced status code, 5.x.x for a bounce and 4.x.x for a delay"
		}
		ev.Status, ev.Diagnostic = status, cleanDiagnostic(we.Diagnostic)
	case EventDelivered:
		status := strings.TrimSpace(we.Status)
		if status == "" {
			status = "2.0.0"
		}
		if !statusCode.MatchString(status) || status[0] != '2' {
			return ev, "status must be an enhanced status code 2.x.x for a delivery"
		}
		ev.Status = status
	case EventComplaint:
		ev.Evidence = "relay webhook"
		if ft := cleanDiagnostic(we.FeedbackType); ft != "" && len(ft) <= 32 {
			ev.Evidence += ", feedback type " + ft
		}
	case EventUnsubscribe:
		ev.Evidence = "relay webhook"
	default:
		return ev, "type must be bounce, delay, delivered, complaint or unsubscribe"
	}
	return ev, ""
}
