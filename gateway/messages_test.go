package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/redistest"
)

// namedChannel is a channel that is only a name (nothing is sent here).
type namedChannel string

func (n namedChannel) Name() string { return string(n) }
func (n namedChannel) Send(context.Context, channels.Message) (channels.Result, error) {
	return channels.Result{}, nil
}

// listServer serves GET /v1/messages for clinic-a over a real ledger.
func listServer(t *testing.T) (*fiber.App, *ledger.Ledger) {
	t.Helper()
	l := ledger.New(redistest.Start(t).Client(), 24*time.Hour)
	s := &Server{opts: Options{Ledger: l, Channels: channels.NewRegistry(namedChannel("sms"), namedChannel("email"))},
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	app := fiber.New(fiber.Config{ErrorHandler: errorHandler})
	app.Get("/v1/messages", func(c *fiber.Ctx) error {
		c.Locals(tenantKey, "clinic-a")
		return c.Next()
	}, s.listMessages)
	return app, l
}

func TestListingMessagesFiltersThemAndRefusesWhatItCannotRead(t *testing.T) {
	app, l := listServer(t)
	t0 := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	var ids []string
	for i, r := range []ledger.Request{
		{Tenant: "clinic-a", Channel: "sms", To: ledger.Recipient{Phone: "+14155550100"}},
		{Tenant: "clinic-a", Channel: "email", To: ledger.Recipient{Email: "jane@example.org"}},
		{Tenant: "clinic-a", Channel: "sms", To: ledger.Recipient{Phone: "+14155550111"}},
		{Tenant: "clinic-b", Channel: "sms", To: ledger.Recipient{Phone: "+14155550100"}},
	} {
		r.Body, r.Priority, r.CreatedAt = "Day 7: how is the wound?", "normal", t0.Add(time.Duration(i)*24*time.Hour)
		r.Metadata = json.RawMessage(fmt.Sprintf(`{"followup_id":"fu_%d","followup_step":%d}`, i%2, i))
		id := ledger.NewID()
		if _, err := l.Create(t.Context(), id, r); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	cases := []struct {
		name   string
		query  url.Values
		status int
		want   []string // ids, or the problem's detail
	}{
		{"every message of the tenant, newest first", url.Values{}, 200, []string{ids[2], ids[1], ids[0]}},
		{"a patient's phone written with spaces", url.Values{"to": {"+1 415 555 0100"}}, 200, []string{ids[0]}},
		{"a channel and a time window", url.Values{"channel": {"sms"}, "since": {"2026-12-01T00:00:00Z"}, "until": {"2026-12-03T00:00:00+08:00"}}, 200, []string{ids[2]}},
		{"a status", url.Values{"status": {"delivered"}}, 200, []string{}},
		{"a metadata key's string value", url.Values{"metadata[followup_id]": {"fu_0"}}, 200, []string{ids[2], ids[0]}},
		{"a metadata key's number", url.Values{"metadata[followup_step]": {"1"}}, 200, []string{ids[1]}},
		{"a metadata key no message has", url.Values{"metadata[broadcast_id]": {"bc_1"}}, 200, []string{}},
		{"two metadata keys", url.Values{"metadata[followup_id]": {"fu_0"}, "metadata[followup_step]": {"0"}}, 400, []string{"one metadata"}},
		{"a metadata key without its brackets closed", url.Values{"metadata[followup_id": {"fu_0"}}, 400, []string{"metadata must be given as metadata["}},
		{"a phone without its country code", url.Values{"to": {"415 555 0100"}}, 400, []string{"to must be a phone number in international form"}},
		{"a channel that is not configured", url.Values{"channel": {"fax"}}, 400, []string{"channel must be one of email, sms"}},
		{"a status that does not exist", url.Values{"status": {"lost"}}, 400, []string{"status must be a message status"}},
		{"a date without its time", url.Values{"since": {"2026-12-01"}}, 400, []string{"since must be an RFC 3339 time"}},
		{"a window that ends before it begins", url.Values{"since": {"2026-12-02T00:00:00Z"}, "until": {"2026-12-01T00:00:00Z"}}, 400, []string{"since must be before until"}},
		{"a cursor that is not an id", url.Values{"before": {"yesterday"}}, 400, []string{"before must be a message id"}},
		{"a limit out of range", url.Values{"limit": {"101"}}, 400, []string{"limit must be a whole number"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, err := app.Test(httptest.NewRequest("GET", "/v1/messages?"+c.query.Encode(), nil))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.status, body)
			}
			if c.status != 200 {
				if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, ProblemContentType) || !strings.Contains(string(body), c.want[0]) ||
					!strings.Contains(string(body), `"/problems/bad-query"`) {
					t.Fatalf("%s %s, want a bad-query problem saying %q", ct, body, c.want[0])
				}
				return
			}
			var out struct {
				Messages []map[string]any `json:"messages"`
				Next     string           `json:"next"`
			}
			if err := json.Unmarshal(body, &out); err != nil {
				t.Fatal(err)
			}
			got := []string{}
			for _, m := range out.Messages {
				got = append(got, m["id"].(string))
			}
			if !slices.Equal(got, c.want) || out.Next != "" {
				t.Fatalf("listed %v next %q, want %v", got, out.Next, c.want)
			}
			if strings.Contains(string(body), "5550100") || strings.Contains(string(body), "jane@") || strings.Contains(string(body), "wound") {
				t.Fatalf("the list shows an address or a body: %s", body)
			}
		})
	}
	// A full page says where to go on, and the cursor goes on from there.
	resp, _ := app.Test(httptest.NewRequest("GET", "/v1/messages?limit=2", nil))
	var page struct{ Next string }
	_ = json.NewDecoder(resp.Body).Decode(&page)
	if page.Next != ids[1] {
		t.Fatalf("next %q, want %s", page.Next, ids[1])
	}
}
