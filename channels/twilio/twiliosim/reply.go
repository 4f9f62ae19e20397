package twiliosim

import (
	"fmt"
	"net/http"
	"time"
)

// Reply is a scripted answer to one message-create request (see
// Server.Script). The zero Reply is a success with default behaviour.
type Reply struct {
	// Status is the HTTP status to answer: 0 or 201 for success, or an
	// error status in 400..599.
	Status int
	// Code is the Twilio error code of an error reply. 0 selects Twilio's
	// generic code for Status (20003 for 401, 20004 for 405, otherwise
	// 20000+Status, e.g. 20429 or 20500).
	Code int
	// Message is the error message of an error reply; empty selects the
	// HTTP status text.
	Message string
	// RetryAfter, if set, is sent as the Retry-After header.
	RetryAfter string
	// Latency delays the answer; 0 uses the default set by SetLatency and
	// a negative value answers at once.
	Latency time.Duration
	// Final is the final callback status of a success: "" (the default
	// set by SetFinal), "delivered", "undelivered", "failed", or "sent"
	// (no final callback).
	Final string
	// FinalErrorCode is posted as ErrorCode with an undelivered or failed
	// final status; 0 selects 30003 (undelivered) or 30008 (failed).
	FinalErrorCode int
	// DropCallbacks suppresses the status callbacks of a success.
	DropCallbacks bool
}

// Fail returns an error Reply with the given HTTP status, Twilio error code
// and message (code 0 and empty msg select defaults, see Reply).
func Fail(status, code int, msg string) Reply {
	return Reply{Status: status, Code: code, Message: msg}
}

// Throttle returns Twilio's rate-limit answer: 429, code 20429, with the
// given Retry-After header value (none when empty).
func Throttle(retryAfter string) Reply {
	return Reply{Status: http.StatusTooManyRequests, Code: CodeTooManyRequests,
		Message: "Too Many Requests", RetryAfter: retryAfter}
}

// Deliver returns a success Reply whose final callback status is final,
// with errorCode as its ErrorCode for undelivered or failed.
func Deliver(final string, errorCode int) Reply {
	return Reply{Final: final, FinalErrorCode: errorCode}
}

// success reports whether r creates a message.
func (r Reply) success() bool {
	return r.Status == 0 || r.Status == http.StatusCreated
}

// mustValidate panics on a Reply the simulator cannot honour.
func (r Reply) mustValidate() {
	if !r.success() && (r.Status < 400 || r.Status > 599) {
		panic(fmt.Sprintf("twiliosim: unsupported reply status %d", r.Status))
	}
	if !validFinal(r.Final) {
		panic(fmt.Sprintf("twiliosim: unsupported final status %q", r.Final))
	}
}

// errorCode returns the Twilio code of an error reply.
func (r Reply) errorCode() int {
	if r.Code != 0 {
		return r.Code
	}
	return defaultCode(r.Status)
}

// errorMessage returns the message of an error reply.
func (r Reply) errorMessage() string {
	if r.Message != "" {
		return r.Message
	}
	return http.StatusText(r.Status)
}

// defaultCode maps an HTTP status to Twilio's generic error code.
func defaultCode(status int) int {
	switch status {
	case http.StatusUnauthorized:
		return CodeAuthenticate
	case http.StatusMethodNotAllowed:
		return CodeMethodNotAllowed
	default:
		return 20000 + status
	}
}

// validFinal reports whether s is an acceptable Reply.Final.
func validFinal(s string) bool {
	switch s {
	case "", StatusSent, StatusDelivered, StatusUndelivered, StatusFailed:
		return true
	}
	return false
}

// finalErrorCode returns the ErrorCode posted with final, 0 if none.
func finalErrorCode(final string, code int) int {
	switch final {
	case StatusUndelivered:
		if code == 0 {
			return CodeUnreachable
		}
		return code
	case StatusFailed:
		if code == 0 {
			return CodeUnknownFailure
		}
		return code
	}
	return 0
}
