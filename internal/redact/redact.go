// Package redact turns personal data into forms safe to log or to show to
// API callers: a phone number keeps its country code and last two digits,
// an e-mail address its first letter and domain, anything else only its
// length. Logs carry ids and these forms, never the clear value.
package redact

import (
	"strings"
	"unicode/utf8"
)

// Phone masks an E.164 number: "+14155550100" → "+1••••••••00". The country
// code (one to three digits) stays visible so support staff can tell which
// carrier route is involved.
func Phone(e164 string) string {
	if e164 == "" {
		return ""
	}
	digits := strings.TrimPrefix(e164, "+")
	if len(digits) < 6 {
		return strings.Repeat("•", utf8.RuneCountInString(e164))
	}
	cc := countryCodeLen(digits)
	keep := 2
	return "+" + digits[:cc] + strings.Repeat("•", len(digits)-cc-keep) + digits[len(digits)-keep:]
}

// countryCodeLen returns the length of the ITU country calling code at the
// start of digits (E.164 codes are prefix-free: 1, 7, 2x/3x/4x partly, …).
// It errs on the short side, which only reveals less.
func countryCodeLen(d string) int {
	switch d[0] {
	case '1', '7':
		return 1
	}
	two := d[:2]
	switch two {
	case "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46", "47", "48", "49",
		"51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63", "64", "65", "66",
		"81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98":
		return 2
	}
	return 3
}

// Email masks an address: "jane.doe@example.org" → "j•••@example.org".
func Email(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 {
		return Secret(addr)
	}
	r, _ := utf8.DecodeRuneInString(addr)
	return string(r) + "•••" + addr[at:]
}

// Secret hides a value entirely but its length class, for tokens, openids
// and message bodies: "[redacted 12 chars]".
func Secret(v string) string {
	if v == "" {
		return ""
	}
	return "[redacted " + itoa(utf8.RuneCountInString(v)) + " chars]"
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}
