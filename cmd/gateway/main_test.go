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
	for _, want := range []string{"serve", "worker", "all", "dev"} {
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
