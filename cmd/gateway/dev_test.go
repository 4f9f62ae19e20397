//go:build dev

package main

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/channels/channeltest"
)

func TestDevModeDeliversThePrintedCurlExample(t *testing.T) {
	m, out, logs := startDevTest(t, regexp.MustCompile(`(?s)API\s+(http://127\.0\.0\.1:\d+).*API key\s+(\S+)`))
	api, key := m[1], m[2]
	// A drill's "need help" answers page someone: dev sets the rules.
	req, _ := http.NewRequest("GET", api+"/v1/escalation-rules", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Options []string                 `json:"options"`
		OnCall  []struct{ Phone string } `json:"on_call"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&rules)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(rules.Options) != 1 || rules.Options[0] != "need_help" || len(rules.OnCall) != 1 {
		t.Fatalf("dev's escalation rules: %d %+v", resp.StatusCode, rules)
	}
	// Every printed example reaches its channel's final success.
	bodies := regexp.MustCompile(`-d '([^']+)'`).FindAllStringSubmatch(out.String(), -1)
	if len(bodies) != 5 {
		t.Fatalf("want an example per channel and a template, found %d", len(bodies))
	}
	want := map[string]string{"sms": "delivered", "voice": "delivered", "wechat": "delivered", "email": "delivered"}
	for _, b := range bodies {
		var ex struct{ Channel string }
		_ = json.Unmarshal([]byte(b[1]), &ex)
		id := postExample(t, api, key, b[1])
		if got := waitStatus(t, api, key, id, want[ex.Channel]); got != want[ex.Channel] {
			t.Fatalf("the %s example ended %q, want %q\n%s", ex.Channel, got, want[ex.Channel], logs.String())
		}
	}
	// The SMTP server's reports come back through the inbound mail
	// listener dev runs: the email above was reported delivered, a magic
	// unknown mailbox is refused and one that bounces fails.
	if !regexp.MustCompile(`Inbound mail\s+listener at 127\.0\.0\.1:\d+`).MatchString(out.String()) {
		t.Fatalf("dev does not show its inbound mail listener:\n%s", out.String())
	}
	for _, to := range []string{devMailUnknown, devMailBounce} {
		id := postExample(t, api, key, `{"channel":"email","to":{"email":"`+to+`"},"subject":"x","body":"x"}`)
		if got := waitStatus(t, api, key, id, "failed"); got != "failed" {
			t.Fatalf("an email to %s ended %q\n%s", to, got, logs.String())
		}
	}
	if !strings.Contains(out.String(), "dev SMTP: received mail") {
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline) && !strings.Contains(out.String(), "dev SMTP: received mail"); {
			time.Sleep(100 * time.Millisecond)
		}
		if !strings.Contains(out.String(), "dev SMTP: received mail") {
			t.Fatal("dev mode did not show the received mail")
		}
	}
}

// startDevTest runs `dev` as `go tool task dev` does (on a free port, no
// quiet hours, so examples go out whatever the time of day), waits until
// its banner matches re and returns the match and what dev printed and
// logged. Dev is stopped at the end of the test, which fails unless it
// stops cleanly.
func startDevTest(t *testing.T, re *regexp.Regexp) (m []string, out, logs *channeltest.LogBuffer) {
	t.Helper()
	t.Setenv("GATEWAY_ADDR", "127.0.0.1:0")
	t.Setenv("QUIET_HOURS", "off")
	ctx, cancel := context.WithCancel(context.Background())
	out, logs = &channeltest.LogBuffer{}, &channeltest.LogBuffer{}
	done := make(chan error, 1)
	go func() { done <- runDev(ctx, out, logs) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("dev stopped with %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("dev did not stop")
		}
	})
	for deadline := time.Now().Add(10 * time.Second); m == nil && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		m = re.FindStringSubmatch(out.String())
	}
	if m == nil {
		t.Fatalf("dev printed no %s:\n%s\n%s", re, out.String(), logs.String())
	}
	return m, out, logs
}

func postExample(t *testing.T, api, key, body string) string {
	t.Helper()
	req, _ := http.NewRequest("POST", api+"/v1/messages", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var acc struct{ ID string }
	_ = json.NewDecoder(resp.Body).Decode(&acc)
	if resp.StatusCode != 202 || acc.ID == "" {
		t.Fatalf("POST %s = %d", body, resp.StatusCode)
	}
	return acc.ID
}

func waitStatus(t *testing.T, api, key, id, want string) string {
	t.Helper()
	status := ""
	for deadline := time.Now().Add(15 * time.Second); status != want && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		req, _ := http.NewRequest("GET", api+"/v1/messages/"+id, nil)
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
	return status
}

func TestDevStopsOnAnInvalidSettingWithStatus2(t *testing.T) {
	cases := []struct {
		name, key, value, mention string
	}{
		{"a setting that does not parse", "GATEWAY_RETENTION", "forever", `GATEWAY_RETENTION="forever"`},
		{"recordings kept longer than their messages (found when dev builds the gateway)", "RECORDING_RETENTION", "60d", "RECORDING_RETENTION"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("GATEWAY_ADDR", "127.0.0.1:0")
			t.Setenv(c.key, c.value)
			var out, errb channeltest.LogBuffer
			if code := run([]string{"dev"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), c.mention) {
				t.Fatalf("exit %d, stderr %q; want 2 and a message naming %s", code, errb.String(), c.key)
			}
		})
	}
}
