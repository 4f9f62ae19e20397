package service_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/ledger"
)

// countingEndpoint is a loopback clinic endpoint that counts the
// connections it was ever offered.
type countingEndpoint struct {
	srv   *httptest.Server
	conns atomic.Int64
}

func newCountingEndpoint(t *testing.T, h http.Handler) *countingEndpoint {
	t.Helper()
	c := &countingEndpoint{srv: httptest.NewUnstartedServer(h)}
	c.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			c.conns.Add(1)
		}
	}
	c.srv.Start()
	t.Cleanup(c.srv.Close)
	return c
}

func deadErrors(e *env) []string {
	var out struct {
		Dead []struct {
			LastError string `json:"last_error"`
		} `json:"dead"`
	}
	_ = json.Unmarshal([]byte(e.do("GET", "/v1/webhook/dead", keyA, "").Raw), &out)
	var errs []string
	for _, d := range out.Dead {
		errs = append(errs, d.LastError)
	}
	return errs
}

// The harness allows 127.0.0.0/8 (its endpoints listen there); every other
// non-public address is refused at registration, naming the field.
func TestClinicURLsTheGatewayWillNeverPostToAreRefusedAtRegistration(t *testing.T) {
	e := start(t, config.RoleAPI)
	cases := []struct {
		name string
		url  string
		kind string // what the refusal says
	}{
		{"cloud metadata", "http://169.254.169.254/latest/meta-data/", "link-local"},
		{"an RFC 1918 address", "https://10.0.0.5/hooks", "RFC 1918"},
		{"another RFC 1918 address", "https://192.168.1.20/hooks", "RFC 1918"},
		{"carrier-grade NAT", "https://100.64.0.7/hooks", "carrier-grade NAT"},
		{"unique local IPv6", "https://[fc00::1]/hooks", "unique local"},
		{"IPv6 loopback (not in the allowed network)", "http://[::1]:8080/hooks", "loopback"},
		{"0.0.0.0", "http://0.0.0.0:8080/hooks", "unspecified"},
		{"IPv4-mapped metadata", "http://[::ffff:169.254.169.254]/", "link-local"},
		{"a decimal address", "http://2130706433/hooks", "dotted form"},
		{"plain http to a public host (replies would travel in clear)", "http://ehr.example-clinic.org/hooks", "https://"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, req := range []struct{ method, path, field, body string }{
				{"PUT", "/v1/webhook", "url", `{"url":"` + c.url + `"}`},
				{"POST", "/v1/messages", "callback_url", smsBody(patientPhone, "hi", "callback_url", c.url)},
			} {
				a := e.do(req.method, req.path, keyA, req.body)
				if a.Status != http.StatusUnprocessableEntity || a.Header.Get("Content-Type") != "application/problem+json" {
					t.Fatalf("%s %s = %d %s, want a 422 problem", req.method, req.path, a.Status, a.Raw)
				}
				errs, _ := a.Body["errors"].([]any)
				first, _ := func() (map[string]any, bool) {
					if len(errs) == 0 {
						return nil, false
					}
					m, ok := errs[0].(map[string]any)
					return m, ok
				}()
				if first["field"] != req.field || !strings.Contains(first["detail"].(string), c.kind) {
					t.Fatalf("%s %s: the problem must name %s and say %q: %s", req.method, req.path, req.field, c.kind, a.Raw)
				}
			}
		})
	}
	if got := e.do("GET", "/v1/webhook", keyA, ""); got.Status != http.StatusNotFound {
		t.Fatalf("a refused endpoint was stored: %d %s", got.Status, got.Raw)
	}
}

// With no network allowed (the default), a loopback endpoint is refused at
// registration, and one stored before (or a name that resolves to
// loopback) is refused when connecting: the endpoint sees no connection
// and the dead letter says why, not what an inner service answered.
func TestALoopbackEndpointIsRefusedAndTheDeadLetterSaysSo(t *testing.T) {
	e := start(t, config.RoleAll, func(c *config.Config) { c.WebhookAllowNetworks = nil; c.WebhookAttempts = 1 })
	inner := newCountingEndpoint(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "internal admin", http.StatusForbidden)
	}))
	for _, u := range []string{inner.srv.URL + "/admin", strings.Replace(inner.srv.URL, "127.0.0.1", "localhost", 1) + "/admin"} {
		a := e.do("PUT", "/v1/webhook", keyA, `{"url":"`+u+`"}`)
		if a.Status != http.StatusUnprocessableEntity || !strings.Contains(a.Raw, `"field":"url"`) || !strings.Contains(a.Raw, "loopback") {
			t.Fatalf("PUT /v1/webhook %s = %d %s, want 422 on url", u, a.Status, a.Raw)
		}
	}
	// As if registered before the gateway refused it.
	if _, err := e.svc.Webhooks.Put(context.Background(), "clinic-a", inner.srv.URL+"/admin?token=s3cret", false); err != nil {
		t.Fatal(err)
	}
	id := e.send(keyA, smsBody(patientPhone, "hi"))
	e.waitFor(id, ledger.StatusDelivered, 10*time.Second)
	waitUntil(t, 15*time.Second, "a dead letter", func() bool { return len(deadErrors(e)) > 0 })
	for _, got := range deadErrors(e) {
		if got != "refused: private address (loopback)" {
			t.Fatalf("dead letter last_error %q, want the refusal", got)
		}
	}
	if raw := e.do("GET", "/v1/webhook/dead", keyA, "").Raw; strings.Contains(raw, "answered") || strings.Contains(raw, "internal admin") {
		t.Fatalf("the dead letters tell the inner service's answer: %s", raw)
	}
	if n := inner.conns.Load(); n != 0 {
		t.Fatalf("the loopback endpoint saw %d connections", n)
	}
	if strings.Contains(e.logs.String(), "s3cret") {
		t.Fatal("the URL's query appears in the logs")
	}
}

// An allowed endpoint that redirects has failed: the redirect target gets
// nothing.
func TestARedirectingEndpointIsAFailedDelivery(t *testing.T) {
	e := start(t, config.RoleAll, func(c *config.Config) { c.WebhookAttempts = 1 })
	target := newCountingEndpoint(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	redirecting := newCountingEndpoint(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.srv.URL+"/internal", http.StatusTemporaryRedirect)
	}))
	e.registerWebhook(redirecting.srv.URL + "/hooks")
	id := e.send(keyA, smsBody(patientPhone, "hi"))
	e.waitFor(id, ledger.StatusDelivered, 10*time.Second)
	waitUntil(t, 15*time.Second, "a dead letter", func() bool { return len(deadErrors(e)) > 0 })
	for _, got := range deadErrors(e) {
		if got != "endpoint answered 307; redirects are not followed" {
			t.Fatalf("dead letter last_error %q", got)
		}
	}
	if redirecting.conns.Load() == 0 || target.conns.Load() != 0 {
		t.Fatalf("the endpoint saw %d connections, the redirect target %d: want some and none",
			redirecting.conns.Load(), target.conns.Load())
	}
}
