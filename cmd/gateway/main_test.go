package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestHelpListsTheCommandsAndEveryVariable(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"--help"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"serve", "worker", "all", "dev", "GATEWAY_PUBLIC_URL", "TWILIO_API_URL"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("help lacks %q:\n%s", want, out.String())
		}
	}
	for _, cmd := range []string{"serve", "worker", "all", "dev"} {
		out.Reset()
		if code := run([]string{cmd, "--help"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "gateway "+cmd) {
			t.Fatalf("%s --help: exit %d, %q", cmd, code, out.String())
		}
	}
}

func TestAnInvalidConfigurationStopsWithAClearMessage(t *testing.T) {
	t.Setenv("GATEWAY_PUBLIC_URL", "")
	t.Setenv("TWILIO_FROM", "")
	var out, errb bytes.Buffer
	code := run([]string{"serve"}, &out, &errb)
	if code != 2 || !strings.Contains(errb.String(), "GATEWAY_PUBLIC_URL is required") {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
	if code := run([]string{"launch"}, &out, &errb); code != 2 {
		t.Fatalf("unknown command exit %d", code)
	}
}
