package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestDevModeDeliversThePrintedCurlExample(t *testing.T) {
	t.Setenv("GATEWAY_ADDR", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	var out, logs syncBuffer
	done := make(chan error, 1)
	go func() { done <- runDev(ctx, &out, &logs) }()

	re := regexp.MustCompile(`(?s)API\s+(http://127\.0\.0\.1:\d+).*API key\s+(\S+)`)
	var m []string
	for deadline := time.Now().Add(10 * time.Second); m == nil && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		m = re.FindStringSubmatch(out.String())
	}
	if m == nil {
		cancel()
		t.Fatalf("dev printed no API address and key:\n%s\n%s", out.String(), logs.String())
	}
	api, key := m[1], m[2]
	// The body of the printed curl command.
	body := regexp.MustCompile(`-d '([^']+)'`).FindStringSubmatch(out.String())[1]
	req, _ := http.NewRequest("POST", api+"/v1/messages", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var acc struct{ ID string }
	_ = json.NewDecoder(resp.Body).Decode(&acc)
	resp.Body.Close()
	if resp.StatusCode != 202 || acc.ID == "" {
		t.Fatalf("POST = %d", resp.StatusCode)
	}
	status := ""
	for deadline := time.Now().Add(10 * time.Second); status != "delivered" && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		req, _ := http.NewRequest("GET", api+"/v1/messages/"+acc.ID, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var v struct{ Status string }
		_ = json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		status = v.Status
	}
	if status != "delivered" {
		t.Fatalf("the dev example ended %q, want delivered\n%s", status, logs.String())
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("dev stopped with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("dev did not stop")
	}
}
