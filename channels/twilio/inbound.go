package twilio

import (
	"context"
	"encoding/xml"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/ledger"
)

// InboundPath is where Twilio posts the messages patients send to the
// account's numbers (configure it as the number's "A message comes in"
// webhook: GATEWAY_PUBLIC_URL + InboundPath, HTTP POST).
const InboundPath = "/webhooks/twilio/sms"

// InboundSMS is a parsed incoming-message webhook.
type InboundSMS struct {
	MessageSid string
	AccountSid string
	From, To   string
	Body       string
}

// ErrMalformedInbound is returned for a webhook that is not an incoming message.
var ErrMalformedInbound = errors.New("twilio: malformed inbound message")

// ParseInbound reads Twilio's incoming-message form.
func ParseInbound(form url.Values) (InboundSMS, error) {
	in := InboundSMS{MessageSid: form.Get("MessageSid"), AccountSid: form.Get("AccountSid"),
		From: form.Get("From"), To: form.Get("To"), Body: form.Get("Body")}
	if in.MessageSid == "" {
		in.MessageSid = form.Get("SmsSid")
	}
	switch {
	case !validSid(in.MessageSid, "SM") && !validSid(in.MessageSid, "MM"):
		return in, ErrMalformedInbound
	case in.From == "" || len(in.From) > 64 || in.To == "" || len(in.To) > 64:
		return in, ErrMalformedInbound
	case len(in.Body) > 64<<10 || !utf8.ValidString(in.Body):
		return in, ErrMalformedInbound
	}
	return in, nil
}

// twimlMessage renders the immediate answer: one <Message>, or none.
func twimlMessage(text string) []byte {
	type msg struct {
		XMLName xml.Name `xml:"Response"`
		Message *string  `xml:"Message,omitempty"`
	}
	m := msg{}
	if text != "" {
		m.Message = &text
	}
	b, _ := xml.Marshal(m)
	return append([]byte(xml.Header), b...)
}

func (s *SMS) handleInbound(ctx context.Context, rcv channels.Receiver, r channels.WebhookRequest) channels.WebhookResponse {
	if !s.ValidSignature(r) {
		s.log.Warn("inbound message rejected: bad or missing signature")
		return forbidden
	}
	xmlOK := channels.WebhookResponse{Status: http.StatusOK, ContentType: "text/xml", Body: twimlMessage("")}
	in, err := ParseInbound(r.Form)
	if err != nil {
		s.log.Warn("inbound message not understood", "err", err)
		return xmlOK
	}
	if in.AccountSid != "" && in.AccountSid != s.cfg.AccountSID {
		s.log.Warn("inbound message for another account ignored")
		return xmlOK
	}
	res, err := rcv.Inbound(ctx, channels.InboundMessage{Channel: s.Name(), ProviderID: in.MessageSid,
		From: ledger.Recipient{Phone: strings.TrimSpace(in.From)}, To: in.To, Body: in.Body})
	if err != nil {
		// Twilio retries a message webhook that failed; the MessageSid
		// makes the retry idempotent.
		s.log.Error("inbound message not recorded", "provider_id", in.MessageSid, "err", err)
		return channels.WebhookResponse{Status: http.StatusServiceUnavailable, ContentType: "text/plain", Body: []byte("try again\n")}
	}
	s.log.Info("inbound message", "provider_id", in.MessageSid, "duplicate", res.Duplicate, "replied", res.Reply != "")
	xmlOK.Body = twimlMessage(res.Reply)
	return xmlOK
}
