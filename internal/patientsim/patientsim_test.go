package patientsim

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestListensOnLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "localhost:0"} {
		if err := New(Options{}).Listen(addr); err == nil {
			t.Fatalf("Listen(%q) was allowed", addr)
		}
	}
}

func TestRefusesNonLoopbackRequests(t *testing.T) {
	h := New(Options{}).Handler()
	for _, c := range []struct{ remote, host string }{
		{"192.0.2.7:5000", "127.0.0.1:9"},
		{"127.0.0.1:5000", "evil.example:9"},
	} {
		req := httptest.NewRequest("GET", "/dev/patients/+14155550100/messages", nil)
		req.RemoteAddr, req.Host = c.remote, c.host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusForbidden {
			t.Fatalf("from %s to %s: %d, want 403", c.remote, c.host, rec.Code)
		}
	}
}

func TestValidatesInput(t *testing.T) {
	h := New(Options{Region: "US"}).Handler()
	for _, c := range []struct{ path, body string }{
		{"/dev/patients/12/sms", `{"body":"1"}`},
		{"/dev/patients/+14155550100/sms", `{}`},
		{"/dev/patients/+14155550100/sms", `{"body":"` + strings.Repeat("x", MaxBody+1) + `"}`},
	} {
		req := httptest.NewRequest("POST", c.path, strings.NewReader(c.body))
		req.RemoteAddr, req.Host = "127.0.0.1:5000", "127.0.0.1:9"
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusBadRequest {
			t.Fatalf("POST %s: %d, want 400", c.path, rec.Code)
		}
	}
}

func TestTwimlReply(t *testing.T) {
	b := []byte(`<?xml version="1.0" encoding="UTF-8"?><Response><Message>You are unsubscribed.</Message></Response>`)
	if got := twimlReply(b); got != "You are unsubscribed." {
		t.Fatalf("got %q", got)
	}
	if got := twimlReply([]byte(`<Response></Response>`)); got != "" {
		t.Fatalf("got %q", got)
	}
}
