package address

import (
	"errors"
	"strings"
	"testing"
)

func TestPhone(t *testing.T) {
	for _, c := range []struct {
		in, region, want string
		err              error
	}{
		{" +44 7911 123456 ", "", "+447911123456", nil},
		{"+86 138-0013-8000", "", "+8613800138000", nil},
		{"＋８６ １３８ ００１３ ８０００", "", "+8613800138000", nil},
		{"(415) 555-0100", "US", "+14155550100", nil},
		{"(415) 555-0100", "", "", ErrNoCountryCode},
		{"(415) 555-0100", "XX", "", ErrNoCountryCode},
		{"8.61381E+12", "CN", "", ErrPhoneScientific},
		{"+1-800-FLOWERS", "", "", ErrNotAPhone},
		{"+1 415 555 0100 ext. 12", "", "", ErrNotAPhone},
		{"+999 1234567", "", "", ErrNotAPhone},
		{"+" + strings.Repeat("1", 40), "", "", ErrPhoneTooLong},
	} {
		got, err := Phone(c.in, c.region)
		if got != c.want || !errors.Is(err, c.err) {
			t.Errorf("Phone(%q, %q) = %q, %v; want %q, %v", c.in, c.region, got, err, c.want, c.err)
		}
	}
	if !IsE164("+14155550100") || IsE164("+1 415 555 0100") || IsE164("4155550100") {
		t.Fatal("IsE164 accepts only a valid number in its E.164 form")
	}
}

func TestEmailOpenIDAndLocale(t *testing.T) {
	for in, want := range map[string]string{"Jane@Example.ORG": "Jane@example.org", " pat@clinic.test ": "pat@clinic.test",
		"Jane <jane@example.org>": "", "no-at-sign": "", "a@localhost": "", "a@b.": "", "a\x00@b.org": ""} {
		got, ok := Email(in)
		if got != want || ok != (want != "") {
			t.Errorf("Email(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	for in, ok := range map[string]bool{"oX7bQ5mVw2Lk9pRt3Yz8Na1Cd4Eg": true, "o-_9": true, "": false, "o ABC": false,
		strings.Repeat("a", 65): false, "用户": false} {
		if OpenID(in) != ok {
			t.Errorf("OpenID(%q) = %v", in, !ok)
		}
	}
	for in, want := range map[string]string{"zh_CN": "zh-CN", "EN-us": "en-US", "es-419": "es-419", "und": "", "not a locale": "", "": ""} {
		got, ok := Locale(in)
		if got != want || ok != (want != "") {
			t.Errorf("Locale(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

// FuzzPhone: whatever is written in a phone field, the result is a valid
// E.164 number that normalises to itself, or a refusal.
func FuzzPhone(f *testing.F) {
	for _, s := range []string{"+14155550100", "(415) 555-0100", "8.61381E+12", "+86 138-0013-8000", "＋８６１３８００１３８０００", "1-800-FLOWERS"} {
		f.Add(s, "US")
	}
	f.Fuzz(func(t *testing.T, s, region string) {
		e, err := Phone(s, region)
		if err != nil {
			if e != "" {
				t.Fatalf("a number and an error: %q %v", e, err)
			}
			return
		}
		if !strings.HasPrefix(e, "+") || len(e) > 16 || !IsE164(e) {
			t.Fatalf("Phone(%q, %q) = %q, not E.164", s, region, e)
		}
	})
}

// FuzzEmailAndLocale: a normalised value normalises to itself.
func FuzzEmailAndLocale(f *testing.F) {
	f.Add("Jane@Example.ORG")
	f.Add("zh_CN")
	f.Fuzz(func(t *testing.T, s string) {
		if e, ok := Email(s); ok {
			if again, ok := Email(e); !ok || again != e {
				t.Fatalf("Email(%q) = %q, which normalises to %q %v", s, e, again, ok)
			}
		}
		if l, ok := Locale(s); ok {
			if again, ok := Locale(l); !ok || again != l {
				t.Fatalf("Locale(%q) = %q, which normalises to %q %v", s, l, again, ok)
			}
		}
	})
}
