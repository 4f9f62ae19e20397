package service_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/webhooks"
)

type clinicEndpoint struct {
	mu     sync.Mutex
	events []webhooks.Event
	bad    []string
	fail   int // answer 500 to this many requests first
	secret string
}

func (c *clinicEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail > 0 {
		c.fail--
		http.Error(w, "busy", 500)
		return
	}
	if err := webhooks.Verify(c.secret, r.Header.Get(webhooks.SignatureHeader), body, time.Now(), webhooks.DefaultTolerance); err != nil {
		c.bad = append(c.bad, err.Error())
		http.Error(w, "bad signature", 401)
		return
	}
	var ev webhooks.Event
	_ = json.Unmarshal(body, &ev)
	c.events = append(c.events, ev)
}

func (c *clinicEndpoint) types() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, e := range c.events {
		out = append(out, e.Type)
	}
	return out
}

// has reports whether an event whose data contains part was received.
func (c *clinicEndpoint) has(part string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ev := range c.events {
		if strings.Contains(string(ev.Data), part) {
			return true
		}
	}
	return false
}

func (e *env) registerWebhook(url string) string {
	e.t.Helper()
	a := e.do("PUT", "/v1/webhook", keyA, `{"url":"`+url+`"}`)
	secret, _ := a.Body["secret"].(string)
	if a.Status != 200 || !strings.HasPrefix(secret, "whsec_") {
		e.t.Fatalf("PUT /v1/webhook = %d %s", a.Status, a.Raw)
	}
	return secret
}

func waitUntil(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(30 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestClinicWebhooksReceiveSignedStatusReplyAndOptOutEvents(t *testing.T) {
	e := start(t, config.RoleAll)
	ep := &clinicEndpoint{fail: 1}
	srv := httptest.NewServer(ep)
	defer srv.Close()
	ep.mu.Lock()
	ep.secret = e.registerWebhook(srv.URL + "/hooks/gateway")
	ep.mu.Unlock()
	id := e.send(keyA, smsBody(patientPhone, "Day 1 check: how are you?"))
	e.waitFor(id, ledger.StatusDelivered, 10*time.Second)
	e.inbound(patientPhone, "better, thanks", e.sim.AuthToken())
	e.inbound(patientPhone, "STOP", e.sim.AuthToken())

	waitUntil(t, 15*time.Second, "delivered status, reply and opt-out events", func() bool {
		got := strings.Join(ep.types(), ",")
		return ep.has(`"status":"delivered"`) && strings.Contains(got, "message.reply") && strings.Contains(got, "contact.opted_out")
	})
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if len(ep.bad) != 0 {
		t.Fatalf("signatures did not verify: %v", ep.bad)
	}
	var delivered bool
	for _, ev := range ep.events {
		if ev.Type == "message.status" && strings.Contains(string(ev.Data), `"status":"delivered"`) && strings.Contains(string(ev.Data), id) {
			delivered = true
		}
	}
	if !delivered {
		t.Fatalf("no delivered status event among %v", ep.events)
	}
	if got := e.do("GET", "/v1/webhook", keyA, ""); strings.Contains(got.Raw, "whsec_") {
		t.Fatalf("the secret must only be shown when set: %s", got.Raw)
	}
	if strings.Contains(e.logs.String(), ep.secret) {
		t.Fatal("the webhook secret appears in the logs")
	}
}

func TestAnEndpointThatKeepsFailingGetsItsEventsDeadLettered(t *testing.T) {
	e := start(t, config.RoleAll, func(c *config.Config) { c.WebhookAttempts = 2 })
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", 503) }))
	defer srv.Close()
	e.registerWebhook(srv.URL)
	id := e.send(keyA, smsBody(patientPhone, "hi"))
	e.waitFor(id, ledger.StatusDelivered, 10*time.Second)
	waitUntil(t, 20*time.Second, "a dead letter", func() bool {
		return strings.Contains(e.do("GET", "/v1/webhook/dead", keyA, "").Raw, "endpoint answered 503")
	})
	if other := e.do("GET", "/v1/webhook/dead", keyB, ""); strings.Contains(other.Raw, "503") {
		t.Fatalf("another tenant sees the dead letters: %s", other.Raw)
	}
}
