package twilio

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/twilio/twilio-go/client"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/ledger"
)

// StatusCallback is a parsed Twilio message status callback.
type StatusCallback struct {
	MessageID     string // the gateway's id, from the callback URL's query
	MessageSid    string
	MessageStatus string
	Status        ledger.Status // the gateway status it maps to; "" when it maps to none
	ErrorCode     string
	AccountSid    string
	ErrorMessage  string
}

// ErrMalformed is returned for callbacks that are not Twilio's.
var ErrMalformed = errors.New("twilio: malformed status callback")

// providerStatuses maps Twilio's MessageStatus values to gateway statuses.
var providerStatuses = map[string]ledger.Status{
	"accepted":    ledger.StatusSent,
	"scheduled":   ledger.StatusSent,
	"queued":      ledger.StatusSent,
	"sending":     ledger.StatusSent,
	"sent":        ledger.StatusSent,
	"delivered":   ledger.StatusDelivered,
	"read":        ledger.StatusDelivered,
	"undelivered": ledger.StatusUndelivered,
	"failed":      ledger.StatusFailed,
	"canceled":    ledger.StatusCanceled,
}

// ParseStatusCallback reads a status callback's form and the query of the
// URL Twilio was given.
func ParseStatusCallback(form, query url.Values) (StatusCallback, error) {
	cb := StatusCallback{
		MessageID:     query.Get("m"),
		MessageSid:    form.Get("MessageSid"),
		MessageStatus: strings.ToLower(form.Get("MessageStatus")),
		ErrorCode:     form.Get("ErrorCode"),
		AccountSid:    form.Get("AccountSid"),
	}
	if cb.MessageSid == "" {
		cb.MessageSid = form.Get("SmsSid")
	}
	if cb.MessageStatus == "" {
		cb.MessageStatus = strings.ToLower(form.Get("SmsStatus"))
	}
	if !validSid(cb.MessageSid, "SM") && !validSid(cb.MessageSid, "MM") {
		return cb, ErrMalformed
	}
	if cb.MessageStatus == "" || len(cb.MessageStatus) > 32 {
		return cb, ErrMalformed
	}
	if len(cb.ErrorCode) > 8 || strings.Trim(cb.ErrorCode, "0123456789") != "" {
		return cb, ErrMalformed
	}
	if cb.ErrorCode == "0" {
		cb.ErrorCode = ""
	}
	cb.Status = providerStatuses[cb.MessageStatus]
	if cb.ErrorCode != "" {
		cb.ErrorMessage = errorDescriptions[cb.ErrorCode]
		if cb.ErrorMessage == "" {
			cb.ErrorMessage = "Twilio error " + cb.ErrorCode
		}
	}
	return cb, nil
}

var errorDescriptions = map[string]string{
	"30001": "queue overflow",
	"30002": "account suspended",
	"30003": "unreachable destination handset",
	"30004": "message blocked",
	"30005": "unknown destination handset",
	"30006": "landline or unreachable carrier",
	"30007": "carrier filtering",
	"30008": "unknown error",
	"21610": "recipient has opted out",
}

func validSid(s, prefix string) bool {
	if len(s) != 34 || !strings.HasPrefix(s, prefix) {
		return false
	}
	for _, r := range s[2:] {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F') {
			return false
		}
	}
	return true
}

// ValidSignature checks X-Twilio-Signature against the public URL Twilio called.
func (s *SMS) ValidSignature(r channels.WebhookRequest) bool {
	return validSignature(s.validator, r)
}

// validSignature checks a webhook's X-Twilio-Signature with validator.
func validSignature(validator client.RequestValidator, r channels.WebhookRequest) bool {
	sig := r.Header.Get("X-Twilio-Signature")
	if sig == "" {
		return false
	}
	params := make(map[string]string, len(r.Form))
	for k, v := range r.Form {
		if len(v) != 1 {
			return false // Twilio never repeats a parameter
		}
		params[k] = v[0]
	}
	return validator.Validate(r.URL, params, sig)
}

// Routes declares the status callback webhook.
func (s *SMS) Routes(rcv channels.Receiver) []channels.Route {
	return []channels.Route{
		{Method: http.MethodPost, Path: StatusPath, Handle: func(ctx context.Context, r channels.WebhookRequest) channels.WebhookResponse {
			return s.handleStatus(ctx, rcv, r)
		}},
		{Method: http.MethodPost, Path: InboundPath, Handle: func(ctx context.Context, r channels.WebhookRequest) channels.WebhookResponse {
			return s.handleInbound(ctx, rcv, r)
		}},
	}
}

var (
	okEmpty   = channels.WebhookResponse{Status: http.StatusOK, ContentType: "text/plain"}
	forbidden = channels.WebhookResponse{Status: http.StatusForbidden, ContentType: "text/plain", Body: []byte("invalid signature\n")}
)

func (s *SMS) handleStatus(ctx context.Context, rcv channels.Receiver, r channels.WebhookRequest) channels.WebhookResponse {
	if !s.ValidSignature(r) {
		s.log.Warn("status callback rejected: bad or missing signature")
		return forbidden
	}
	cb, err := ParseStatusCallback(r.Form, r.Query)
	if err != nil {
		// Signed by Twilio but not understood: answering an error would only
		// make Twilio retry the same body.
		s.log.Warn("status callback not understood", "err", err)
		return okEmpty
	}
	if cb.AccountSid != "" && cb.AccountSid != s.cfg.AccountSID {
		s.log.Warn("status callback for another account ignored")
		return okEmpty
	}
	if cb.Status == "" {
		s.log.Info("status callback with an unmapped status ignored", "provider_status", cb.MessageStatus, "provider_id", cb.MessageSid)
		return okEmpty
	}
	applied, err := rcv.ProviderStatus(ctx, cb.MessageID, ledger.ProviderUpdate{
		Channel: s.Name(), ProviderID: cb.MessageSid, Status: cb.Status, ProviderStatus: cb.MessageStatus,
		ErrorCode: cb.ErrorCode, ErrorMessage: cb.ErrorMessage,
	})
	switch {
	case errors.Is(err, ledger.ErrProviderMismatch), errors.Is(err, ledger.ErrNotFound):
		s.log.Warn("status callback does not match the message", "msg_id", cb.MessageID, "provider_id", cb.MessageSid)
		return okEmpty
	case err != nil:
		// Redis is unreachable: a 5xx makes Twilio retry the callback later.
		s.log.Error("status callback not recorded", "msg_id", cb.MessageID, "err", err)
		return channels.WebhookResponse{Status: http.StatusServiceUnavailable, ContentType: "text/plain", Body: []byte("try again\n")}
	}
	s.log.Debug("status callback", "msg_id", cb.MessageID, "provider_id", cb.MessageSid, "provider_status", cb.MessageStatus, "applied", int(applied))
	return okEmpty
}
