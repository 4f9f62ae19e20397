package gateway

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/gateway/console"

	"github.com/patientmsg/gateway/internal/admission"
)

// Admission control in front of the queues (package internal/admission):
// this file only maps its decisions to HTTP.

// Headers of the IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers).
const (
	HeaderRateLimitPolicy = "RateLimit-Policy"
	HeaderRateLimit       = "RateLimit"
)

// rateLimitHeaders are the RateLimit fields of a tenant's rate state, in
// their structured-field form: the policy ("tenant": q requests per w
// seconds, the burst and the time it takes to come back) and where the
// tenant stands (r requests left now, t seconds until the whole burst is
// back). Empty when the tenant has no limit.
func rateLimitHeaders(st admission.RateState) (policy, limit string) {
	if st.Rate.Unlimited() {
		return "", ""
	}
	return fmt.Sprintf(`"tenant";q=%d;w=%d`, st.Rate.Quota(), st.Rate.Window()),
		fmt.Sprintf(`"tenant";r=%d;t=%d`, st.Remaining, seconds(st.Reset))
}

func setRateLimitHeaders(c *fiber.Ctx, st admission.RateState) {
	if policy, limit := rateLimitHeaders(st); policy != "" {
		c.Set(HeaderRateLimitPolicy, policy)
		c.Set(HeaderRateLimit, limit)
	}
}

// seconds rounds d up to whole seconds (0 stays 0).
func seconds(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	return int((d + time.Second - 1) / time.Second)
}

// requestAdmission is how a route is admitted.
type requestAdmission struct {
	// exempt: counted against the tenant's rate but never refused by it.
	exempt bool
	// guarded: a write the memory guard checks, as class.
	guarded bool
	class   admission.Class
	// message: POST /v1/messages, whose priority decides both (see
	// admitMessage).
	message bool
}

// admissionOf classifies a /v1 request. Reads and previews write nothing
// and meet the rate only. Cancellations free the queues: never refused.
// Broadcasts are crisis traffic, and acknowledging an escalation or
// recording a patient's consent is as urgent: they pass the memory guard
// until its last threshold. Every other write is routine. A console
// action is admitted as the API route it mirrors (/console/broadcasts as
// /v1/broadcasts, a posted opt-in as PUT /v1/contacts/{id}/consent);
// signing out is never refused.
func admissionOf(method, path string) requestAdmission {
	path = strings.TrimSuffix(strings.ToLower(path), "/")
	if rest, ok := strings.CutPrefix(path, console.Prefix+"/"); ok {
		if rest == "signout" {
			return requestAdmission{exempt: true}
		}
		path = "/v1/" + rest
		if method == fiber.MethodPost && strings.HasPrefix(rest, "contacts/") && strings.HasSuffix(rest, "/consent") {
			method = fiber.MethodPut // a form posts what the API puts
		}
	}
	switch method {
	case fiber.MethodGet, fiber.MethodHead, fiber.MethodOptions:
		return requestAdmission{}
	}
	post := method == fiber.MethodPost
	switch {
	case post && path == "/v1/messages":
		return requestAdmission{message: true}
	case post && strings.HasSuffix(path, "/cancel"):
		return requestAdmission{exempt: true}
	case post && strings.HasSuffix(path, "/preview"):
		return requestAdmission{}
	case post && path == "/v1/broadcasts":
		return requestAdmission{exempt: true, guarded: true, class: admission.Urgent}
	case post && strings.HasPrefix(path, "/v1/escalations/") && strings.HasSuffix(path, "/ack"):
		return requestAdmission{exempt: true, guarded: true, class: admission.Urgent}
	case method == fiber.MethodPut && strings.HasPrefix(path, "/v1/contacts/") && strings.HasSuffix(path, "/consent"):
		return requestAdmission{guarded: true, class: admission.Urgent}
	}
	return requestAdmission{guarded: true, class: admission.Routine}
}

// admit applies the tenant's request rate to every /v1 request and the
// memory guard to writes. A new message is counted against the rate by
// the domain, once its priority is known (crisis passes), in the round
// trip that counts it in its tenant's backlog (createMessage).
func (s *Server) admit(c *fiber.Ctx) error {
	a := s.opts.Admission
	if a == nil {
		return c.Next()
	}
	ctx, tenant := c.UserContext(), tenantOf(c)
	how := admissionOf(c.Method(), c.Path())
	if how.message {
		return c.Next()
	}
	st, err := a.Rate(ctx, tenant, how.exempt)
	setRateLimitHeaders(c, st)
	if err != nil {
		return refusal(err)
	}
	if how.guarded {
		if err := a.CheckMemory(ctx, how.class); err != nil {
			return refusal(err)
		}
	}
	return c.Next()
}

// rateRequest counts against its tenant's rate a message request that
// ends before the domain counted it (a body that does not decode, the
// memory guard's refusal), and returns p.
func (s *Server) rateRequest(c *fiber.Ctx, tenant string, p error) error {
	if a := s.opts.Admission; a != nil {
		st, _ := a.Rate(c.UserContext(), tenant, false)
		setRateLimitHeaders(c, st)
	}
	return p
}

// admitMessage applies the memory guard to a message, by its priority's
// class.
func (s *Server) admitMessage(c *fiber.Ctx, priority string) error {
	a := s.opts.Admission
	if a == nil {
		return nil
	}
	return refusal(a.CheckMemory(c.UserContext(), admission.ClassOf(priority)))
}

// refusal is the problem answer of an admission refusal (nil for nil).
func refusal(err error) error {
	var (
		limited *admission.RateLimitedError
		full    *admission.BacklogFullError
		store   *admission.StoreFullError
	)
	switch {
	case err == nil:
		return nil
	case errors.As(err, &limited):
		r := limited.State.Rate
		p := problem(429, "rate-limited", fmt.Sprintf("your API key's tenant is over its request rate (%s requests per second, %d at once); "+
			"retry after Retry-After seconds, or spread the requests out (crisis messages are never refused for the rate)",
			strconv.FormatFloat(r.PerSecond, 'f', -1, 64), r.Quota()))
		p.RetryAfter = limited.RetryAfter()
		return p
	case errors.As(err, &full):
		p := problem(429, "backlog-full", fmt.Sprintf("your %s backlog is full: %d %s queued, the cap is %d (%s hours of the sender's capacity); "+
			"retry after Retry-After seconds (crisis messages are still accepted)",
			full.Channel, full.Queued, units(full.Channel), full.Cap, strconv.FormatFloat(full.Hours, 'f', -1, 64)))
		p.RetryAfter = full.RetryAfter()
		return p
	case errors.As(err, &store):
		return storeFull(fmt.Sprintf("the message store (Redis) is %.0f%% full: %s requests are refused from %.0f%%, so that crisis messages, "+
			"broadcasts, provider callbacks and patient replies keep the room left; nothing was queued, retry after Retry-After seconds",
			100*store.Memory.Ratio(), store.Class, 100*store.Threshold), store.RetryAfter())
	}
	return err
}

func storeFull(detail string, retryAfter time.Duration) *Problem {
	p := problem(503, "store-full", detail)
	p.RetryAfter = retryAfter
	return p
}

func units(channel string) string {
	if channel == "sms" {
		return "segments"
	}
	return "messages"
}

// memoryJSON is how much room Redis has left (in /readyz and a broadcast
// preview).
type memoryJSON struct {
	UsedBytes int64 `json:"used_bytes"`
	// MaxBytes is Redis' maxmemory; 0: none, and no guard.
	MaxBytes int64 `json:"max_bytes"`
	// UsedRatio is used / max (null without a maxmemory).
	UsedRatio *float64 `json:"used_ratio"`
	// Refusing lists the classes of request refused now: bulk, routine, urgent.
	Refusing []string `json:"refusing"`
}

// redisMemory is Redis' room left as this process last read it (nil
// without admission control or a reading).
func (s *Server) redisMemory(ctx context.Context) *memoryJSON {
	a := s.opts.Admission
	if a == nil {
		return nil
	}
	m, ok := a.Memory(ctx)
	if !ok {
		return nil
	}
	out := &memoryJSON{UsedBytes: m.Used, MaxBytes: m.Max, Refusing: []string{}}
	if m.Max > 0 {
		r := float64(int(m.Ratio()*10000+0.5)) / 10000
		out.UsedRatio = &r
	}
	for _, cl := range a.Refusing(m) {
		out.Refusing = append(out.Refusing, cl.String())
	}
	return out
}

// webhookRefused says whether a provider's callback or a patient's
// message is refused because Redis is in its last few percent (then the
// provider is answered 503 with Retry-After, and tries again).
func (s *Server) webhookRefused(ctx context.Context) (retryAfter time.Duration, refused bool) {
	if s.opts.Admission == nil {
		return 0, false
	}
	var full *admission.StoreFullError
	if err := s.opts.Admission.CheckMemory(ctx, admission.Urgent); errors.As(err, &full) {
		return full.RetryAfter(), true
	}
	return 0, false
}
