package main

import (
	"bytes"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/patientmsg/gateway/internal/config"
)

func TestHelpListsTheCommandsAndEveryVariable(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"--help"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"serve", "worker", "all", "dev", "exit status 2"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("help lacks %q:\n%s", want, out.String())
		}
	}
	for _, s := range config.Settings() {
		line := regexp.MustCompile(`(?m)^  ` + s.Name + `(  +(.*))?$`).FindStringSubmatch(out.String())
		if line == nil {
			t.Errorf("help does not list %s", s.Name)
		} else if s.Default != "" && !strings.HasPrefix(line[2], s.Default) {
			t.Errorf("help gives %s the default %q, want %q", s.Name, line[2], s.Default)
		}
	}
	for _, cmd := range []string{"serve", "worker", "all", "dev"} {
		out.Reset()
		if code := run([]string{cmd, "--help"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "gateway "+cmd) {
			t.Fatalf("%s --help: exit %d, %q", cmd, code, out.String())
		}
	}
}

// validEnv is a configuration every command accepts (nothing is started:
// each case makes one setting bad).
var validEnv = map[string]string{
	"GATEWAY_PUBLIC_URL": "https://gateway.example-clinic.test",
	"GATEWAY_API_KEYS":   "clinic-a:aaaaaaaaaaaaaaaaaaaa",
	"TWILIO_ACCOUNT_SID": "AC0123456789abcdef0123456789abcdef",
	"TWILIO_AUTH_TOKEN":  "0123456789abcdef0123456789abcdef",
	"TWILIO_FROM":        "+14155550100",
}

func TestAnInvalidConfigurationStopsWithAClearMessage(t *testing.T) {
	cases := []struct {
		name, cmd string
		env       map[string]string
		mention   string
	}{
		{"no public URL", "serve", map[string]string{"GATEWAY_PUBLIC_URL": "", "TWILIO_FROM": ""}, "GATEWAY_PUBLIC_URL is required"},
		{"recordings kept longer than their messages", "all", map[string]string{"RECORDING_RETENTION": "60d"}, "RECORDING_RETENTION=1440h0m0s: must not exceed GATEWAY_RETENTION"},
		{"a retention that is not a duration", "worker", map[string]string{"GATEWAY_RETENTION": "forever"}, "GATEWAY_RETENTION=\"forever\""},
		{"a locale fallback loop", "serve", map[string]string{"TEMPLATE_LOCALE_FALLBACKS": "zh-HK=zh-TW;zh-TW=zh-HK"}, "TEMPLATE_LOCALE_FALLBACKS"},
		{"an SMTP URL of an unknown scheme", "worker", map[string]string{"SMTP_URL": "http://mail.example-clinic.test", "EMAIL_FROM": "Clinic <noreply@example-clinic.test>"}, "SMTP_URL must start with smtp://"},
		{"a sender address outside ASCII", "worker", map[string]string{"SMTP_URL": "smtps://mail.example-clinic.test", "EMAIL_FROM": "诊所 <通知@example-clinic.test>"}, "EMAIL_FROM"},
		{"a Redis database that is not a number", "all", map[string]string{"REDIS_URL": "redis://127.0.0.1:6379/first"}, "REDIS_URL: redis: invalid database number"},
		{"a configuration file that does not exist", "serve", map[string]string{"GATEWAY_CONFIG_FILE": "/nonexistent/gateway.env"}, "GATEWAY_CONFIG_FILE"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, s := range config.Settings() {
				t.Setenv(s.Name, "")
			}
			for k, v := range validEnv {
				t.Setenv(k, v)
			}
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			var out, errb bytes.Buffer
			code := run([]string{c.cmd}, &out, &errb)
			if code != 2 || !strings.Contains(errb.String(), "configuration is not valid") || !strings.Contains(errb.String(), c.mention) {
				t.Fatalf("exit %d, stderr %q; want 2 and a message mentioning %q", code, errb.String(), c.mention)
			}
			if strings.Contains(errb.String(), validEnv["TWILIO_AUTH_TOKEN"]) {
				t.Fatalf("the message reveals the auth token: %q", errb.String())
			}
		})
	}
	var out, errb bytes.Buffer
	if code := run([]string{"launch"}, &out, &errb); code != 2 {
		t.Fatalf("unknown command exit %d", code)
	}
}

// TestTheProductionBinaryLinksNoSimulator: the simulators and the embedded
// Redis are for `go tool task dev` and the tests, never in what a clinic runs.
func TestTheProductionBinaryLinksNoSimulator(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasSuffix(dep, "sim") || strings.Contains(dep, "miniredis") || strings.Contains(dep, "channeltest") || strings.Contains(dep, "redistest") {
			t.Errorf("the production binary links %s", dep)
		}
	}
	if !strings.Contains(string(out), "github.com/patientmsg/gateway/channels/twilio\n") {
		t.Fatalf("go list -deps does not list the channels; is the check looking at the right thing?\n%s", out)
	}
}
