package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nyaruka/phonenumbers"

	"github.com/patientmsg/gateway/ledger"
	"github.com/patientmsg/gateway/sms"
	"github.com/patientmsg/gateway/workers"
)

// Request limits.
const (
	MaxMetadataBytes = 4 << 10
	MaxCallbackURL   = 2048
	MaxScheduleAhead = 365 * 24 * time.Hour
	// PastSendAtTolerance: a send_at this little in the past (clock skew) means now.
	PastSendAtTolerance = 5 * time.Minute
)

// MessageRequest is the body of POST /v1/messages.
type MessageRequest struct {
	Channel     string          `json:"channel"`
	To          *RecipientIn    `json:"to"`
	Body        *string         `json:"body"`
	Priority    string          `json:"priority"`
	SendAt      *string         `json:"send_at"`
	Metadata    json.RawMessage `json:"metadata"`
	CallbackURL *string         `json:"callback_url"`
}

// RecipientIn is the "to" object.
type RecipientIn struct {
	Phone *string `json:"phone"`
}

// ValidMessage is a decoded, validated and normalised message request.
type ValidMessage struct {
	Channel     string
	To          ledger.Recipient
	Body        string
	Priority    string
	SendAt      *time.Time
	Metadata    json.RawMessage
	CallbackURL string
	SMS         sms.Info
}

// DecodeMessage parses and validates a POST /v1/messages body. channels are
// the configured channel names. It never panics; every failure is a 4xx Problem.
func DecodeMessage(body []byte, channels []string, now time.Time) (*ValidMessage, *Problem) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, problem(400, "malformed-json", "the request body is empty; send a JSON object")
	}
	if !utf8.Valid(body) {
		return nil, problem(400, "malformed-json", "the request body is not valid UTF-8")
	}
	var req MessageRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, jsonProblem(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, problem(400, "malformed-json", "the request body has data after the JSON object")
	}
	var errs []FieldError
	bad := func(field, format string, a ...any) {
		errs = append(errs, FieldError{Field: field, Detail: fmt.Sprintf(format, a...)})
	}
	v := &ValidMessage{Channel: req.Channel, Priority: req.Priority}

	switch {
	case req.Channel == "":
		bad("channel", "is required; one of: %s", strings.Join(channels, ", "))
	case !contains(channels, req.Channel):
		bad("channel", "%q is not a configured channel; configured: %s", clip(req.Channel), strings.Join(channels, ", "))
	}

	if req.To == nil {
		bad("to", "is required: the recipient, e.g. {\"phone\": \"+14155550100\"}")
	} else if v.Channel == "sms" {
		if req.To.Phone == nil || strings.TrimSpace(*req.To.Phone) == "" {
			bad("to.phone", "is required for the sms channel")
		} else if e164, ok := normalisePhone(*req.To.Phone); !ok {
			bad("to.phone", "is not a valid phone number; give it in international form with the country code, e.g. +14155550100")
		} else {
			v.To.Phone = e164
		}
	}

	switch {
	case req.Body == nil || strings.TrimSpace(*req.Body) == "":
		bad("body", "is required and must not be blank")
	case !utf8.ValidString(*req.Body):
		bad("body", "is not valid UTF-8")
	default:
		v.Body = *req.Body
		v.SMS = sms.Analyze(v.Body)
		if v.SMS.Chars > sms.MaxChars {
			bad("body", "has %d characters; the limit is %d", v.SMS.Chars, sms.MaxChars)
		}
	}

	if v.Priority == "" {
		v.Priority = workers.PriorityNormal
	} else if !contains(workers.Priorities, v.Priority) {
		bad("priority", "%q is not a priority; use crisis, high, normal or bulk", clip(v.Priority))
	}

	if req.SendAt != nil {
		t, err := time.Parse(time.RFC3339, *req.SendAt)
		switch {
		case err != nil:
			bad("send_at", "is not an RFC 3339 time such as 2026-11-23T10:00:00+08:00")
		case t.Before(now.Add(-PastSendAtTolerance)):
			bad("send_at", "is in the past")
		case t.After(now.Add(MaxScheduleAhead)):
			bad("send_at", "is more than 365 days ahead")
		case t.After(now):
			u := t.UTC()
			v.SendAt = &u
		}
	}

	if len(req.Metadata) > 0 && !bytes.Equal(req.Metadata, []byte("null")) {
		switch {
		case len(req.Metadata) > MaxMetadataBytes:
			bad("metadata", "is %d bytes; the limit is %d", len(req.Metadata), MaxMetadataBytes)
		case req.Metadata[0] != '{':
			bad("metadata", "must be a JSON object")
		default:
			v.Metadata = append(json.RawMessage(nil), req.Metadata...)
		}
	}

	if req.CallbackURL != nil && *req.CallbackURL != "" {
		u, err := url.Parse(*req.CallbackURL)
		switch {
		case len(*req.CallbackURL) > MaxCallbackURL:
			bad("callback_url", "is longer than %d characters", MaxCallbackURL)
		case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "":
			bad("callback_url", "must be an absolute http(s) URL, e.g. https://ehr.example-clinic.org/hooks/messages")
		case u.User != nil:
			bad("callback_url", "must not contain credentials")
		default:
			v.CallbackURL = u.String()
		}
	}
	if len(errs) > 0 {
		return nil, validationProblem(errs)
	}
	return v, nil
}

// normalisePhone parses an international number into E.164.
func normalisePhone(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if len(s) > 32 || !strings.HasPrefix(s, "+") {
		return "", false
	}
	n, err := phonenumbers.Parse(s, "")
	if err != nil || !phonenumbers.IsValidNumber(n) {
		return "", false
	}
	return phonenumbers.Format(n, phonenumbers.E164), true
}

func jsonProblem(err error) *Problem {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return problem(400, "malformed-json", fmt.Sprintf("the body is not valid JSON (at byte %d): %v", se.Offset, se))
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			return problem(400, "malformed-json", "the body must be a JSON object")
		}
		return problem(400, "malformed-json", fmt.Sprintf("field %s must be a JSON %s, not %s", field, jsonType(te.Type.Kind().String()), te.Value))
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return problem(400, "malformed-json", "the body ends before the JSON object does")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return problem(400, "unknown-field", "the request has a field this API does not know: "+clip(strings.TrimPrefix(err.Error(), "json: unknown field "))+"; see the API reference")
	}
	return problem(400, "malformed-json", "the body is not a valid message request")
}

func jsonType(kind string) string {
	switch kind {
	case "string":
		return "string"
	case "ptr", "struct", "map":
		return "object"
	case "slice":
		return "string"
	}
	return kind
}

func clip(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return strings.ToValidUTF8(s, "�")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
