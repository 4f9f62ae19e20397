package gateway

import (
	"encoding/json"
	"errors"
	"io"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/internal/admission"
)

func TestRateLimitHeaders(t *testing.T) {
	cases := []struct {
		name          string
		state         admission.RateState
		policy, limit string
	}{
		{"a fresh tenant at 100/s with a burst of 200",
			admission.RateState{Rate: admission.Rate{PerSecond: 100, Burst: 200}, Remaining: 199, Reset: 10 * time.Millisecond},
			`"tenant";q=200;w=2`, `"tenant";r=199;t=1`},
		{"a tenant that used its burst",
			admission.RateState{Rate: admission.Rate{PerSecond: 100, Burst: 200}, Remaining: 0, Reset: 2 * time.Second},
			`"tenant";q=200;w=2`, `"tenant";r=0;t=2`},
		{"a slow rate with a default burst",
			admission.RateState{Rate: admission.Rate{PerSecond: 0.5}, Remaining: 1, Reset: 1500 * time.Millisecond},
			`"tenant";q=1;w=2`, `"tenant";r=1;t=2`},
		{"a full quota resets in 0 s",
			admission.RateState{Rate: admission.Rate{PerSecond: 10, Burst: 5}, Remaining: 5},
			`"tenant";q=5;w=1`, `"tenant";r=5;t=0`},
		{"no limit, no headers", admission.RateState{}, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			policy, limit := rateLimitHeaders(tc.state)
			if policy != tc.policy || limit != tc.limit {
				t.Fatalf("RateLimit-Policy %q RateLimit %q, want %q %q", policy, limit, tc.policy, tc.limit)
			}
		})
	}
}

func TestHowEachRequestIsAdmitted(t *testing.T) {
	routine := requestAdmission{guarded: true, class: admission.Routine}
	urgent := requestAdmission{exempt: true, guarded: true, class: admission.Urgent}
	cases := []struct {
		name, method, path string
		want               requestAdmission
	}{
		{"reading a message meets the rate only", "GET", "/v1/messages/01JD", requestAdmission{}},
		{"the broadcast event stream", "GET", "/v1/broadcasts/bc_1/events", requestAdmission{}},
		{"a message is decided by its priority", "POST", "/v1/messages", requestAdmission{message: true}},
		{"whatever the case of its path", "POST", "/V1/Messages/", requestAdmission{message: true}},
		{"canceling a message is never refused", "POST", "/v1/messages/01JD/cancel", requestAdmission{exempt: true}},
		{"nor canceling a plan", "POST", "/v1/followups/fu_1/cancel", requestAdmission{exempt: true}},
		{"nor canceling a broadcast", "POST", "/v1/broadcasts/bc_1/cancel", requestAdmission{exempt: true}},
		{"a broadcast is crisis traffic", "POST", "/v1/broadcasts", urgent},
		{"a preview writes nothing", "POST", "/v1/broadcasts/preview", requestAdmission{}},
		{"nor does a template preview", "POST", "/v1/templates/x/preview", requestAdmission{}},
		{"acknowledging an escalation is urgent", "POST", "/v1/escalations/esc_1/ack", urgent},
		{"recording a patient's consent is urgent", "PUT", "/v1/contacts/p-1/consent", requestAdmission{guarded: true, class: admission.Urgent}},
		{"and so from the console", "POST", "/console/contacts/p-1/consent", requestAdmission{guarded: true, class: admission.Urgent}},
		{"looking a contact up in the console meets the rate only", "GET", "/console/contacts", requestAdmission{}},
		{"a follow-up plan is routine", "POST", "/v1/followups", routine},
		{"an audience upload is routine", "POST", "/v1/audiences", routine},
		{"a template is routine", "PUT", "/v1/templates/x", routine},
		{"so is deleting one", "DELETE", "/v1/templates/x", routine},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := admissionOf(tc.method, tc.path); got != tc.want {
				t.Fatalf("%s %s: %+v, want %+v", tc.method, tc.path, got, tc.want)
			}
		})
	}
}

func TestRefusalsAreProblemsThatSayWhenToComeBack(t *testing.T) {
	cases := []struct {
		name       string
		err        error
		status     int
		typ        string
		retryAfter string
	}{
		{"over the tenant's rate",
			&admission.RateLimitedError{Tenant: "a", State: admission.RateState{Rate: admission.Rate{PerSecond: 100, Burst: 200}, Wait: 10 * time.Millisecond}},
			429, "/problems/rate-limited", "1"},
		{"a full backlog",
			&admission.BacklogFullError{Tenant: "a", Channel: "sms", Queued: 14400, Cap: 14400, Hours: 4, Wait: 3 * time.Second},
			429, "/problems/backlog-full", "3"},
		{"bulk refused by the memory guard",
			&admission.StoreFullError{Class: admission.Bulk, Memory: admission.Memory{Used: 85, Max: 100}, Threshold: 0.8},
			503, "/problems/store-full", "30"},
		{"crisis refused in the last few percent",
			&admission.StoreFullError{Class: admission.Urgent, Memory: admission.Memory{Used: 98, Max: 100}, Threshold: 0.97},
			503, "/problems/store-full", "5"},
		{"an unexpected error is a 503 too, never a 500", errors.New("boom"), 503, "/problems/internal", "5"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			app := fiber.New(fiber.Config{ErrorHandler: errorHandler})
			app.Get("/", func(*fiber.Ctx) error { return refusal(tc.err) })
			resp, err := app.Test(httptest.NewRequest("GET", "/", nil))
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			var p Problem
			_ = json.Unmarshal(raw, &p)
			if resp.StatusCode != tc.status || p.Type != tc.typ || p.Status != tc.status || p.Detail == "" {
				t.Fatalf("%d %s", resp.StatusCode, raw)
			}
			if got := resp.Header.Get("Retry-After"); got != tc.retryAfter {
				t.Fatalf("Retry-After %q, want %q", got, tc.retryAfter)
			}
			if ct := resp.Header.Get("Content-Type"); ct != ProblemContentType {
				t.Fatalf("Content-Type %q", ct)
			}
		})
	}
	if refusal(nil) != nil {
		t.Fatal("no refusal for nil")
	}
}
