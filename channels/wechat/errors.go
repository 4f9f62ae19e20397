package wechat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/silenceper/wechat/v2/util"

	"github.com/patientmsg/gateway/channels"
)

// followUp is what Send does about an errcode besides returning its class.
type followUp int

const (
	noFollowUp followUp = iota
	// refreshToken: invalidate the shared token, fetch a new one and retry
	// the call once.
	refreshToken
	// closeWindow: the user's customer-service window is closed or used up;
	// in auto mode the message goes out as a template instead.
	closeWindow
	// untilMidnight: the daily quota resets at midnight China time.
	untilMidnight
	// unsubscribed: the user did not subscribe to the subscribe message's
	// template, or no longer does; in auto mode the message goes out as a
	// template instead.
	unsubscribed
)

type errRule struct {
	class channels.Class
	what  string
	then  followUp
}

// errcodes maps WeChat errcodes, which arrive inside HTTP 200 answers, to
// what the gateway does about them. Codes not listed are permanent: WeChat
// rejected this request and repeating it will not help.
//
// The token endpoint's answers use the same table, but a permanent class
// there becomes retryable: a missing token says nothing about the message,
// and rejected app credentials are the gateway's configuration, retried with
// backoff (and logged loudly) so messages go out once it is fixed.
var errcodes = map[int64]errRule{
	-1:    {channels.Retryable, "WeChat is busy", noFollowUp},
	40001: {channels.Retryable, "WeChat rejected the access token", refreshToken},
	40014: {channels.Retryable, "WeChat found the access token invalid", refreshToken},
	42001: {channels.Retryable, "the access token has expired", refreshToken},
	45009: {channels.Throttled, "the official account's daily API quota is used up", untilMidnight},
	45015: {channels.Permanent, "the user has not interacted with the official account within 48 hours: the customer-service window is closed", closeWindow},
	45047: {channels.Permanent, "the customer-service message quota of the user's window is used up", closeWindow},
	43004: {channels.OptedOut, "the user no longer follows the official account", noFollowUp},
	43101: {channels.Permanent, "the user has not subscribed to the subscribe message's template, or turned it off", unsubscribed},
	40003: {channels.Permanent, "the openid is not valid for this official account", noFollowUp},
	40037: {channels.Permanent, "the template id is not valid", noFollowUp},
	47003: {channels.Permanent, "the template data does not match the template", noFollowUp},
	44004: {channels.Permanent, "the message text is empty", noFollowUp},
	45002: {channels.Permanent, "the message text is too long", noFollowUp},
	40013: {channels.Permanent, "WeChat rejected the app id", noFollowUp},
	40125: {channels.Permanent, "WeChat rejected the app secret", noFollowUp},
	40164: {channels.Permanent, "the gateway's IP address is not on the official account's whitelist", noFollowUp},
	48001: {channels.Permanent, "the official account is not authorised for this API", noFollowUp},
}

func ruleFor(code int64) errRule {
	if r, ok := errcodes[code]; ok {
		return r
	}
	return errRule{channels.Permanent, "WeChat rejected the request", noFollowUp}
}

// answer is WeChat's JSON answer: {"errcode":N,"errmsg":"…"}, with msgid for
// template sends and access_token/expires_in for token requests.
type answer struct {
	ErrCode int64
	ErrMsg  string
	MsgID   int64
}

// parseAnswer reads a WeChat JSON answer. An answer without errcode is a
// success (the token endpoint leaves it out); anything that is not a JSON
// object, or whose fields have the wrong types, is an error.
func parseAnswer(body []byte) (answer, error) {
	var raw struct {
		ErrCode json.RawMessage `json:"errcode"`
		ErrMsg  *string         `json:"errmsg"`
		MsgID   json.RawMessage `json:"msgid"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&raw); err != nil {
		return answer{}, fmt.Errorf("wechat: unreadable answer: %w", err)
	}
	if dec.More() {
		return answer{}, errors.New("wechat: unreadable answer: data after the JSON object")
	}
	var a answer
	var err error
	if a.ErrCode, err = jsonInt(raw.ErrCode); err != nil {
		return answer{}, fmt.Errorf("wechat: errcode: %w", err)
	}
	if a.MsgID, err = jsonInt(raw.MsgID); err != nil {
		return answer{}, fmt.Errorf("wechat: msgid: %w", err)
	}
	if raw.ErrMsg != nil {
		a.ErrMsg = *raw.ErrMsg
	}
	return a, nil
}

// jsonInt reads a JSON integer literal; absent or null is 0. Strings,
// fractions and exponents are refused (WeChat sends none of them).
func jsonInt(raw json.RawMessage) (int64, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%.40q is not an integer", raw)
	}
	return n, nil
}

// outcome is a classified API call.
type outcome struct {
	err   *channels.SendError // nil on success
	then  followUp
	msgID int64
}

// china is China Standard Time, where WeChat's daily quotas reset. China
// has no daylight saving time, so a fixed zone is exact and needs no tzdata.
var china = time.FixedZone("CST", 8*3600)

// untilChinaMidnight is the time from now to the next midnight in China.
func untilChinaMidnight(now time.Time) time.Duration {
	local := now.In(china)
	next := time.Date(local.Year(), local.Month(), local.Day()+1, 0, 0, 0, 0, china)
	return next.Sub(now)
}

// classify turns a finished API call into an outcome. libErr is what the
// library returned; the class comes from the HTTP status and the errcode of
// the answer the call captured, never from error text. hide are values that
// must not appear in stored messages (openid, token).
func classify(c *apiCall, libErr error, api string, now time.Time, hide ...string) outcome {
	status, body, complete := c.answer()
	switch {
	case status == 0 || (status == http.StatusOK && !complete):
		if libErr == nil {
			libErr = errors.New("no answer")
		}
		return outcome{err: transportError(c, libErr)}
	case status != http.StatusOK:
		se := &channels.SendError{Code: "http_" + strconv.Itoa(status), HTTPStatus: status,
			Message: "WeChat answered " + strconv.Itoa(status) + " " + http.StatusText(status)}
		switch {
		case status == http.StatusTooManyRequests:
			se.Class = channels.Throttled
		case status >= 500:
			se.Class = channels.Retryable
		default:
			se.Class = channels.Permanent
		}
		return outcome{err: se}
	}
	a, err := parseAnswer(body)
	if err != nil {
		return outcome{err: &channels.SendError{Class: channels.Retryable, Code: "bad_response", HTTPStatus: status,
			Unconfirmed: true, Message: "WeChat's answer could not be read; it may have accepted the message", Err: err}}
	}
	if a.ErrCode == 0 {
		return outcome{msgID: a.MsgID}
	}
	r := ruleFor(a.ErrCode)
	msg := sanitize(a.ErrMsg, hide...)
	se := &channels.SendError{Class: r.class, Code: strconv.FormatInt(a.ErrCode, 10), HTTPStatus: status,
		Message: r.what, Err: util.NewCommonError(api, a.ErrCode, msg)}
	if msg != "" {
		se.Message += " (" + msg + ")"
	}
	if r.then == untilMidnight {
		se.RetryAfter = untilChinaMidnight(now)
	}
	return outcome{err: se, then: r.then}
}

// transportError classifies a call that got no (complete) answer.
func transportError(c *apiCall, err error) *channels.SendError {
	err = scrubbed(err)
	unconfirmed := c.unconfirmed()
	var ne net.Error
	switch {
	case errors.Is(c.ctxErr, context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout()):
		return &channels.SendError{Class: channels.Retryable, Code: "timeout", Unconfirmed: unconfirmed,
			Message: "no answer from WeChat in time; it may have accepted the message", Err: err}
	case errors.Is(c.ctxErr, context.Canceled) || errors.Is(err, context.Canceled):
		return &channels.SendError{Class: channels.Retryable, Code: "canceled", Unconfirmed: unconfirmed,
			Message: "the send was interrupted (shutdown)", Err: err}
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return &channels.SendError{Class: channels.Retryable, Code: "connect", Message: "could not connect to WeChat", Err: err}
	}
	return &channels.SendError{Class: channels.Retryable, Code: "transport", Unconfirmed: unconfirmed,
		Message: "the call to WeChat failed before an answer", Err: err}
}

// sanitize makes provider text safe to store: values of the request
// (openid, token) are masked and the length is bounded.
func sanitize(s string, hide ...string) string {
	for _, h := range hide {
		if h != "" {
			s = strings.ReplaceAll(s, h, "[redacted]")
		}
	}
	const maxLen = 200
	if len(s) > maxLen {
		cut := maxLen
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}
