package redact

import (
	"strings"
	"testing"
)

func TestMaskedFormsRevealOnlyWhatSupportNeeds(t *testing.T) {
	cases := []struct {
		name, in, want string
	}{
		{"a North American number keeps +1 and the last two digits", "+14155550100", "+1••••••••00"},
		{"a Chinese mobile keeps +86", "+8613800138000", "+86•••••••••00"},
		{"a three-digit country code is kept whole", "+353851234567", "+353•••••••67"},
		{"a too-short number is hidden entirely", "+1234", "•••••"},
		{"an empty number stays empty", "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Phone(c.in); got != c.want {
				t.Fatalf("Phone(%q) = %q, want %q", c.in, got, c.want)
			}
		})
	}
	if got := Email("jane.doe@example.org"); got != "j•••@example.org" {
		t.Fatalf("Email = %q", got)
	}
	if got := Email("not-an-address"); strings.Contains(got, "address") {
		t.Fatalf("Email of a non-address leaked it: %q", got)
	}
	if got := Secret("oABC123openid"); got != "[redacted 13 chars]" {
		t.Fatalf("Secret = %q", got)
	}
}

func TestMaskedPhoneNeverContainsTheSubscriberNumber(t *testing.T) {
	for _, n := range []string{"+14155550100", "+447700900123", "+8613800138000", "+33612345678"} {
		got := Phone(n)
		if strings.Contains(got, n[len(n)-7:]) {
			t.Fatalf("Phone(%q) = %q still shows the subscriber digits", n, got)
		}
	}
}
