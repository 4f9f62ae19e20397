package twiliosim

import (
	"context"
	"errors"
	"net/url"
	"testing"
	"time"
)

// These tests reach past the URL pre-check to prove the dialer itself
// refuses non-loopback addresses (e.g. a "localhost" resolving elsewhere).

func TestDialGuardAllowsOnlyLoopbackAddresses(t *testing.T) {
	tests := []struct {
		address string
		allowed bool
	}{
		{"127.0.0.1:80", true},
		{"127.8.9.10:443", true},
		{"[::1]:8080", true},
		{"192.0.2.1:80", false},
		{"[2001:db8::1]:80", false},
		{"10.0.0.1:80", false},
		{"not-an-address", false},
	}
	for _, tt := range tests {
		t.Run(tt.address, func(t *testing.T) {
			err := loopbackOnly("tcp", tt.address, nil)
			if (err == nil) != tt.allowed {
				t.Errorf("loopbackOnly(%q) = %v, want allowed=%v", tt.address, err, tt.allowed)
			}
		})
	}
}

func TestCallbackClientRefusesNonLoopbackEvenWithoutThePreCheck(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err := s.post(ctx, "http://192.0.2.1/x", url.Values{"a": {"b"}})
	if !errors.Is(err, errNonLoopback) {
		t.Fatalf("post = %v, want errNonLoopback", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("refusal took %v; the connection must not be attempted", d)
	}
}
