// Package messaging is the one way a message is made: a Draft (what the
// API, a broadcast, a follow-up plan or an escalation wants to send) is
// composed (contact, template, locale), validated, given its quiet hours,
// written to the ledger and queued. Every failure of a draft is an
// *InvalidError naming its fields; any other error is the store's.
package messaging

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/address"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/schedule"
	"github.com/patientmsg/gateway/workers"
)

// Request limits.
const (
	MaxMetadataBytes = 4 << 10
	MaxCallbackURL   = 2048
	// MaxScheduleAhead bounds send_at: far enough for any follow-up plan
	// (a 5-year check), near enough to catch a mistyped year.
	MaxScheduleAhead = 5 * 366 * 24 * time.Hour
	// PastSendAtTolerance: a send_at this little in the past (clock skew) means now.
	PastSendAtTolerance = 5 * time.Minute
)

// Limits of the fields that belong to one channel (the body's is the
// channel's Spec).
const (
	MaxSubjectChars = 250
	MaxRecordLength = 300 // seconds of a recorded answer
	MaxTemplateData = 20  // fields of a WeChat template message
)

// Draft is a message to make. Its JSON form is the body of POST
// /v1/messages.
type Draft struct {
	Channel     string          `json:"channel"`
	To          *To             `json:"to"`
	Body        *string         `json:"body"`
	Priority    string          `json:"priority"`
	SendAt      *string         `json:"send_at"`
	Metadata    json.RawMessage `json:"metadata"`
	CallbackURL *string         `json:"callback_url"`
	Locale      *string         `json:"locale"`
	Subject     *string         `json:"subject"`
	HTML        *string         `json:"html"`
	Gather      *ledger.Gather  `json:"gather"`
	Record      *ledger.Record  `json:"record"`
	WeChat      *WeChatFields   `json:"wechat"`
	ExpectReply *Expect         `json:"expect_reply"`
	// Template names a template to render the channel's texts from, with
	// Vars; it replaces body, subject, html, gather, record and wechat.
	Template *string           `json:"template"`
	Vars     map[string]string `json:"vars"`
}

// Expect is the "expect_reply" object: the answers a message asks for.
type Expect struct {
	Options map[string]string `json:"options"`
	Within  string            `json:"within"`
	Code    string            `json:"code"`
}

// To is the "to" object: the recipient's address as given.
type To struct {
	Phone        *string `json:"phone"`
	Email        *string `json:"email"`
	WeChatOpenID *string `json:"wechat_openid"`
	// TimeZone is the recipient's IANA time zone, for quiet hours.
	TimeZone *string `json:"timezone"`
}

// ToAddress is the "to" of a message on a channel to an address of the
// channel's kind.
func ToAddress(channel, addr string) *To {
	to := &To{}
	spec, _ := channels.SpecOf(channel)
	switch spec.Address {
	case channels.Phone:
		to.Phone = &addr
	case channels.Email:
		to.Email = &addr
	case channels.WeChatOpenID:
		to.WeChatOpenID = &addr
	}
	return to
}

// WeChatFields is the "wechat" object.
type WeChatFields struct {
	Kind       string            `json:"kind"`
	TemplateID string            `json:"template_id"`
	Data       map[string]string `json:"data"`
	URL        string            `json:"url"`
	Subscribe  *SubscribeFields  `json:"subscribe"`
}

// SubscribeFields is the "wechat.subscribe" object: a subscribe message.
type SubscribeFields struct {
	TemplateID string            `json:"template_id"`
	Data       map[string]string `json:"data"`
	Page       string            `json:"page"`
}

// Valid is a decoded, validated and normalised message request.
type Valid struct {
	Channel     string
	To          ledger.Recipient
	Body        string
	Priority    string
	SendAt      *time.Time
	Metadata    json.RawMessage
	CallbackURL string
	Locale      string
	Subject     string
	HTML        string
	WeChat      *ledger.WeChatOptions
	Voice       *ledger.VoiceOptions
	ExpectReply *ledger.ExpectReply
	// Units and Encoding are what the body costs its sender, on channels
	// that count more than one unit a message (SMS segments).
	Units    int
	Encoding string
	// TimeZone is the recipient's zone the request gave ("" when none).
	TimeZone string
}

// Validate checks and normalises a draft; channels are the configured
// channel names. Every failure is an *InvalidError listing each bad field.
func (req *Draft) Validate(channels []string, now time.Time) (*Valid, error) {
	return req.validate(channels, now, nil)
}

// validate is Validate; a checked recipient's addresses (normalised by
// package address before) are taken as they are instead of req.To's.
func (req *Draft) validate(channels []string, now time.Time, checked *ledger.Recipient) (*Valid, error) {
	var errs []FieldError
	bad := func(field, format string, a ...any) {
		errs = append(errs, FieldError{Field: field, Detail: fmt.Sprintf(format, a...)})
	}
	v := &Valid{Channel: req.Channel, Priority: req.Priority}

	switch {
	case req.Channel == "":
		bad("channel", "is required; one of: %s", strings.Join(channels, ", "))
	case !slices.Contains(channels, req.Channel):
		bad("channel", "%q is not a configured channel; configured: %s", Clip(req.Channel), strings.Join(channels, ", "))
	}

	if req.To == nil {
		bad("to", "is required: the recipient, e.g. {\"phone\": \"+14155550100\"}")
	} else {
		if checked != nil {
			useChecked(v.Channel, *checked, &v.To, bad)
		} else {
			decodeRecipient(v.Channel, req.To, &v.To, bad)
		}
		if tz := req.To.TimeZone; tz != nil {
			if _, err := schedule.LoadZone(strings.TrimSpace(*tz)); err != nil {
				bad("to.timezone", "is not an IANA time zone such as Asia/Shanghai or America/New_York")
			} else {
				v.TimeZone = strings.TrimSpace(*tz)
			}
		}
	}
	if req.Vars != nil && req.Template == nil {
		bad("vars", "only apply with a template; give the template's name in template")
	}
	decodeChannelFields(req, v, bad)

	if v.Priority == "" {
		v.Priority = workers.PriorityNormal
	} else if !slices.Contains(workers.Priorities, v.Priority) {
		bad("priority", "%q is not a priority; use crisis, high, normal or bulk", Clip(v.Priority))
	}

	if req.SendAt != nil {
		t, err := time.Parse(time.RFC3339, *req.SendAt)
		switch {
		case err != nil:
			bad("send_at", "is not an RFC 3339 time such as 2026-11-23T10:00:00+08:00")
		case t.Before(now.Add(-PastSendAtTolerance)):
			bad("send_at", "is in the past")
		case t.After(now.Add(MaxScheduleAhead)):
			bad("send_at", "is more than %d days ahead", int(MaxScheduleAhead/(24*time.Hour)))
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
		return nil, &InvalidError{Errors: errs}
	}
	return v, nil
}

// useChecked takes the address the channel needs from a recipient whose
// addresses were normalised before.
func useChecked(channel string, r ledger.Recipient, out *ledger.Recipient, bad func(field, format string, a ...any)) {
	spec, ok := channels.SpecOf(channel)
	if !ok {
		return // the channel itself was refused
	}
	v := spec.Address.Of(r)
	if v == "" {
		bad("to."+string(spec.Address), "is required for the %s channel", channel)
		return
	}
	switch spec.Address {
	case channels.Phone:
		out.Phone = v
	case channels.Email:
		out.Email = v
	case channels.WeChatOpenID:
		out.WeChatOpenID = v
	}
}

// decodeRecipient checks that "to" has the address the channel needs, and
// only that.
func decodeRecipient(channel string, to *To, out *ledger.Recipient, bad func(field, format string, a ...any)) {
	spec, ok := channels.SpecOf(channel)
	if !ok {
		return // the channel itself was refused
	}
	need := string(spec.Address)
	given := map[string]*string{"phone": to.Phone, "email": to.Email, "wechat_openid": to.WeChatOpenID}
	for _, name := range []string{"phone", "email", "wechat_openid"} {
		if given[name] != nil && name != need {
			bad("to."+name, "does not apply to the %s channel, which needs to.%s", channel, need)
		}
	}
	val := given[need]
	if val == nil || strings.TrimSpace(*val) == "" {
		bad("to."+need, "is required for the %s channel", channel)
		return
	}
	switch spec.Address {
	case channels.Phone:
		if e164, err := address.Phone(*val, ""); err == nil {
			out.Phone = e164
		} else {
			bad("to.phone", "is not a valid phone number; give it in international form with the country code, e.g. +14155550100")
		}
	case channels.Email:
		if addr, ok := address.Email(*val); ok {
			out.Email = addr
		} else {
			bad("to.email", "is not a valid email address such as patient@example.org")
		}
	case channels.WeChatOpenID:
		if id := strings.TrimSpace(*val); address.OpenID(id) {
			out.WeChatOpenID = id
		} else {
			bad("to.wechat_openid", "is not a WeChat openid (letters, digits, '-' and '_', at most 64)")
		}
	}
}

// decodeChannelFields checks the body and the fields that belong to one channel.
func decodeChannelFields(req *Draft, v *Valid, bad func(field, format string, a ...any)) {
	only := func(field string, present bool, channel string) bool {
		if present && v.Channel != channel && v.Channel != "" {
			bad(field, "only applies to the %s channel", channel)
			return false
		}
		return present
	}
	if req.Locale != nil {
		if tag, ok := address.Locale(*req.Locale); ok {
			v.Locale = tag
		} else {
			bad("locale", "is not a language tag such as en-US or zh-CN")
		}
	}

	bodyOptional := v.Channel == "wechat" && req.WeChat != nil && req.WeChat.Kind == "template"
	switch {
	case req.Body == nil || strings.TrimSpace(*req.Body) == "":
		if !bodyOptional {
			bad("body", "is required and must not be blank")
		}
	case !utf8.ValidString(*req.Body):
		bad("body", "is not valid UTF-8")
	default:
		v.Body = *req.Body
		chars := utf8.RuneCountInString(v.Body)
		if spec, ok := channels.SpecOf(v.Channel); ok {
			if spec.Units != nil {
				v.Units, v.Encoding = spec.Units(v.Body)
			}
			if chars > spec.MaxChars {
				bad("body", "has %d characters; the limit for %s is %d", chars, v.Channel, spec.MaxChars)
			}
		}
	}

	if only("subject", req.Subject != nil, "email") {
		switch subj := strings.TrimSpace(*req.Subject); {
		case subj == "":
			bad("subject", "must not be blank")
		case utf8.RuneCountInString(subj) > MaxSubjectChars || strings.ContainsAny(subj, "\r\n"):
			bad("subject", "must be one line of at most %d characters", MaxSubjectChars)
		default:
			v.Subject = subj
		}
	} else if v.Channel == "email" {
		bad("subject", "is required for the email channel")
	}
	if only("html", req.HTML != nil, "email") {
		v.HTML = *req.HTML
	}

	gather, record := only("gather", req.Gather != nil, "voice"), only("record", req.Record != nil, "voice")
	if gather || record {
		v.Voice = &ledger.VoiceOptions{}
	}
	if gather {
		g := *req.Gather
		switch {
		case strings.TrimSpace(g.Prompt) == "":
			bad("gather.prompt", "is required: the question the patient answers with a key")
		case utf8.RuneCountInString(g.Prompt) > channels.MaxVoiceChars:
			bad("gather.prompt", "is longer than %d characters", channels.MaxVoiceChars)
		case g.Digits == "" || strings.Trim(g.Digits, "0123456789*#") != "" || len(g.Digits) > 12:
			bad("gather.digits", "must list 1 to 12 accepted keys of 0-9, * and #, e.g. \"123\"")
		case g.Timeout < 0 || g.Timeout > 60:
			bad("gather.timeout", "must be from 1 to 60 seconds (0 or absent: 5)")
		default:
			if g.Timeout == 0 {
				g.Timeout = 5
			}
			v.Voice.Gather = &g
		}
	}
	if record {
		r := *req.Record
		switch {
		case strings.TrimSpace(r.Prompt) == "":
			bad("record.prompt", "is required: what the patient is asked to say")
		case utf8.RuneCountInString(r.Prompt) > channels.MaxVoiceChars:
			bad("record.prompt", "is longer than %d characters", channels.MaxVoiceChars)
		case r.MaxLength < 0 || r.MaxLength > MaxRecordLength:
			bad("record.max_length", "must be from 1 to %d seconds (0 or absent: 60)", MaxRecordLength)
		default:
			if r.MaxLength == 0 {
				r.MaxLength = 60
			}
			v.Voice.Record = &r
		}
	}

	if req.ExpectReply != nil {
		v.ExpectReply = decodeExpectReply(req.ExpectReply, bad)
	}

	if only("wechat", req.WeChat != nil, "wechat") {
		w := req.WeChat
		o := &ledger.WeChatOptions{Kind: w.Kind, TemplateID: strings.TrimSpace(w.TemplateID), Data: w.Data, URL: w.URL}
		if o.Kind == "" {
			o.Kind = "auto"
		}
		switch {
		case o.Kind != "auto" && o.Kind != "custom" && o.Kind != "template" && o.Kind != "subscribe":
			bad("wechat.kind", "must be auto, custom, subscribe or template")
		case o.Kind == "template" && o.TemplateID == "":
			bad("wechat.template_id", "is required for a template message")
		case o.Kind == "subscribe" && (w.Subscribe == nil || strings.TrimSpace(w.Subscribe.TemplateID) == ""):
			bad("wechat.subscribe.template_id", "is required for a subscribe message")
		case len(o.Data) > MaxTemplateData:
			bad("wechat.data", "has more than %d fields", MaxTemplateData)
		case o.Kind == "custom" && (o.TemplateID != "" || len(o.Data) > 0 || w.Subscribe != nil):
			bad("wechat", "template_id, data and subscribe only apply to template and subscribe messages")
		case o.Kind == "subscribe" && (o.TemplateID != "" || len(o.Data) > 0 || o.URL != ""):
			bad("wechat", "a subscribe message is given in wechat.subscribe; template_id, data and url are the template message's")
		}
		checkData("wechat.data", o.Data, bad)
		checkURL("wechat.url", o.URL, bad)
		if sub := w.Subscribe; sub != nil {
			o.Subscribe = &ledger.WeChatSubscribe{TemplateID: strings.TrimSpace(sub.TemplateID), Data: sub.Data, Page: sub.Page}
			switch {
			case o.Subscribe.TemplateID == "" && o.Kind != "subscribe":
				bad("wechat.subscribe.template_id", "is required with wechat.subscribe")
			case len(sub.TemplateID) > 128:
				bad("wechat.subscribe.template_id", "is longer than 128 characters")
			case len(sub.Data) > MaxTemplateData:
				bad("wechat.subscribe.data", "has more than %d fields", MaxTemplateData)
			}
			checkData("wechat.subscribe.data", sub.Data, bad)
			checkURL("wechat.subscribe.page", sub.Page, bad)
		}
		v.WeChat = o
	}
}

// checkData checks the fields of a template or subscribe message.
func checkData(field string, data map[string]string, bad func(field, format string, a ...any)) {
	for k, val := range data {
		if k == "" || len(k) > 32 || utf8.RuneCountInString(val) > 200 || !utf8.ValidString(val) {
			bad(field, "field names must be 1-32 characters and values at most 200 characters")
			return
		}
	}
}

// checkURL checks a link a WeChat message opens.
func checkURL(field, link string, bad func(field, format string, a ...any)) {
	if link == "" {
		return
	}
	if u, err := url.Parse(link); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		bad(field, "must be an absolute http(s) URL")
	}
}

// decodeExpectReply checks the answers a question asks for.
func decodeExpectReply(in *Expect, bad func(field, format string, a ...any)) *ledger.ExpectReply {
	out := &ledger.ExpectReply{Options: map[string]string{}, Within: 48 * 3600, Code: in.Code}
	if len(in.Options) == 0 || len(in.Options) > 20 {
		bad("expect_reply.options", "must map 1 to 20 answers to their meaning, e.g. {\"1\": \"confirm\", \"2\": \"reschedule\"}")
	}
	for k, v := range in.Options {
		if k == "" || len(k) > 16 || strings.ContainsAny(k, " \t\n") || v == "" || utf8.RuneCountInString(v) > 64 {
			bad("expect_reply.options", "keys are 1-16 characters without spaces; meanings 1-64 characters")
			break
		}
		out.Options[k] = v
	}
	if in.Within != "" {
		d, err := time.ParseDuration(in.Within)
		if days, ok := strings.CutSuffix(in.Within, "d"); ok {
			n, perr := strconv.Atoi(days)
			d, err = time.Duration(n)*24*time.Hour, perr
		}
		if err != nil || d < time.Minute || d > 30*24*time.Hour {
			bad("expect_reply.within", "must be a duration from 1m to 30d, e.g. 48h")
		} else {
			out.Within = int(d / time.Second)
		}
	}
	if in.Code != "" && (len(in.Code) > 8 || strings.Trim(strings.ToUpper(in.Code), "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != "") {
		bad("expect_reply.code", "must be 1-8 letters or digits")
	}
	return out
}

// Clip shortens a value quoted back in an error (64 bytes, valid UTF-8).
func Clip(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return strings.ToValidUTF8(s, "�")
}
