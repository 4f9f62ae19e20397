package gateway

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/gateway/console"

	"github.com/patientmsg/gateway/internal/messaging"
)

// Problem is an RFC 9457 problem details object. Type is a relative URI
// naming the kind of problem; README.md lists them.
type Problem struct {
	Type   string       `json:"type"`
	Title  string       `json:"title"`
	Status int          `json:"status"`
	Detail string       `json:"detail,omitempty"`
	Errors []FieldError `json:"errors,omitempty"`
	// RetryAfter is sent as the Retry-After header of a 429 or 503 (in
	// whole seconds, rounded up); those without one get
	// DefaultRetryAfter.
	RetryAfter time.Duration `json:"-"`
}

// DefaultRetryAfter is the Retry-After of a 429 or 503 that does not
// compute its own: every such answer says when to come back.
const DefaultRetryAfter = 5 * time.Second

// FieldError points at one bad field of a request.
type FieldError = messaging.FieldError

func (p *Problem) Error() string { return p.Title + ": " + p.Detail }

func problem(status int, slug, detail string) *Problem {
	return &Problem{Type: "/problems/" + slug, Title: http.StatusText(status), Status: status, Detail: detail}
}

func validationProblem(errs []FieldError) *Problem {
	p := problem(http.StatusUnprocessableEntity, "validation", errs[0].Field+": "+errs[0].Detail)
	if len(errs) > 1 {
		p.Detail += " (and more: see errors)"
	}
	p.Errors = errs
	return p
}

// ProblemContentType is the media type of error answers.
const ProblemContentType = "application/problem+json"

func writeProblem(c *fiber.Ctx, p *Problem) error {
	b, _ := json.Marshal(p)
	c.Status(p.Status)
	c.Set(fiber.HeaderContentType, ProblemContentType)
	if p.Status == http.StatusTooManyRequests || p.Status == http.StatusServiceUnavailable {
		ra := p.RetryAfter
		if ra <= 0 {
			ra = DefaultRetryAfter
		}
		c.Set(fiber.HeaderRetryAfter, strconv.Itoa(max(seconds(ra), 1)))
	}
	if p.Status == http.StatusUnauthorized {
		c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="gateway"`)
	}
	return c.Send(b)
}

// errorHandler turns every error Fiber sees into problem+json; the
// console answers its own requests' errors with HTML pages.
func (s *Server) errorHandler(c *fiber.Ctx, err error) error {
	if s.opts.Console != nil && console.Owns(c.Path()) {
		var p *Problem
		if errors.As(err, &p) {
			err = &console.StatusError{Status: p.Status, Detail: p.Detail, RetryAfter: p.RetryAfter}
		}
		return s.opts.Console.HandleError(c, err)
	}
	return errorHandler(c, err)
}

// errorHandler turns every error Fiber sees into problem+json.
func errorHandler(c *fiber.Ctx, err error) error {
	var p *Problem
	if errors.As(err, &p) {
		return writeProblem(c, p)
	}
	var fe *fiber.Error
	if errors.As(err, &fe) {
		switch fe.Code {
		case fiber.StatusRequestEntityTooLarge:
			return writeProblem(c, problem(fe.Code, "too-large", "the request body is larger than this gateway accepts (GATEWAY_MAX_REQUEST_BYTES)"))
		case fiber.StatusNotFound:
			return writeProblem(c, problem(fe.Code, "not-found", "no such endpoint: "+c.Method()+" "+c.Path()))
		case fiber.StatusMethodNotAllowed:
			return writeProblem(c, problem(fe.Code, "method-not-allowed", c.Method()+" is not allowed on "+c.Path()))
		}
		if fe.Code < 500 {
			return writeProblem(c, problem(fe.Code, "bad-request", fe.Message))
		}
	}
	return writeProblem(c, internalProblem())
}

// internalProblem answers a request the gateway failed to handle (an
// unexpected error or a panic, logged): 503 with Retry-After rather than
// 500, so that a client tries its crisis message again; no request gets a
// 5xx other than 503.
func internalProblem() *Problem {
	return problem(http.StatusServiceUnavailable, "internal", "the gateway failed to handle the request; it was logged. Retry after Retry-After seconds, with the same Idempotency-Key")
}

// domainProblem answers an error of the domain: a bad draft is 422 with
// its fields, an admission refusal 429 or 503, anything else the store's
// (503, unknown outcome).
func (s *Server) domainProblem(err error) error {
	var (
		invalid *messaging.InvalidError
		p       *Problem
	)
	switch {
	case err == nil:
		return nil
	case errors.As(err, &p):
		return p
	case errors.As(err, &invalid):
		return validationProblem(invalid.Errors)
	}
	if r := refusal(err); r != err {
		return r
	}
	return s.unavailable(err)
}

// queryLimit reads the ?limit= of a list: def when absent, a 400 problem
// unless it is a whole number from 1 to most.
func queryLimit(c *fiber.Ctx, def, most int) (int, error) {
	v := c.Query("limit")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > most {
		return 0, problem(400, "bad-query", "limit must be a whole number from 1 to "+strconv.Itoa(most))
	}
	return n, nil
}
