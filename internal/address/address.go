// Package address owns the rules for what a message is addressed with:
// phone numbers (E.164), email addresses, WeChat openids, and the language
// tags of locales. The API, audience uploads, contacts and templates all
// normalise through it, so that one person written two ways is one person.
//
// Nothing here logs: the values are personal data.
package address

import (
	"errors"
	"net/mail"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/nyaruka/phonenumbers"
	"golang.org/x/text/language"
)

// Limits of one address.
const (
	MaxPhoneLen  = 32  // characters of a phone number as written
	MaxEmailLen  = 254 // bytes of an email address (RFC 5321 path limit)
	MaxOpenIDLen = 64  // bytes of a WeChat openid
	MaxLocaleLen = 35  // bytes of a BCP 47 language tag
)

// Why a phone number is refused. Each reads after "phone … is not a valid
// number" or stands alone; none quotes the number.
var (
	ErrPhoneTooLong    = errors.New("longer than 32 characters")
	ErrPhoneScientific = errors.New("a spreadsheet turned it into scientific notation; format the column as text and export again")
	ErrNoCountryCode   = errors.New("it has no country code: write it in international form, starting with + and the country code")
	ErrNotAPhone       = errors.New("not a valid phone number")
)

// scientific matches a number a spreadsheet has turned into scientific
// notation (8.61381E+12): the digits are lost and cannot be recovered.
var scientific = regexp.MustCompile(`^[0-9]+([.,][0-9]+)?[eE]\+?[0-9]+$`)

// Phone returns the E.164 form of a phone number (+8613800138000). A number
// without a leading + is read in defaultRegion (an ISO 3166 code such as
// US or CN); with no known region it is refused with ErrNoCountryCode.
// Letters are refused (libphonenumber would read 1-800-FLOWERS as keypad
// digits, or "ext." as an extension), and junk is refused before the
// costly parse.
func Phone(s, defaultRegion string) (string, error) {
	s = strings.TrimSpace(s)
	switch {
	case utf8.RuneCountInString(s) > MaxPhoneLen:
		return "", ErrPhoneTooLong
	case scientific.MatchString(s):
		return "", ErrPhoneScientific
	case !phoneShaped(s):
		return "", ErrNotAPhone
	}
	region := ""
	if !strings.HasPrefix(s, "+") && !strings.HasPrefix(s, "＋") {
		region = knownRegion(defaultRegion)
		if region == "" {
			return "", ErrNoCountryCode
		}
	}
	n, err := phonenumbers.Parse(s, region)
	if err != nil || !phonenumbers.IsValidNumber(n) {
		return "", ErrNotAPhone
	}
	return phonenumbers.Format(n, phonenumbers.E164), nil
}

// IsE164 reports whether s is a valid phone number already in its E.164
// form, as configuration values must be.
func IsE164(s string) bool {
	e, err := Phone(s, "")
	return err == nil && e == s
}

// phonePunctuation is what may separate the digits of a phone number, as
// libphonenumber reads it (ASCII and full-width dashes, slashes, dots,
// brackets, tildes and invisible spaces).
const phonePunctuation = "-‐‑‒–—―−ー－/／.．()（）[]［］~⁓∼～\u00ad\u200b\u2060"

// phoneShaped reports whether s has only what a phone number is written
// with: a leading plus sign, 3 to 17 digits (15 of E.164 after a 2-digit
// international prefix), spaces and punctuation.
func phoneShaped(s string) bool {
	digits := 0
	for i, c := range s {
		switch {
		case unicode.IsDigit(c):
			digits++
		case c == '+' || c == '＋':
			if i != 0 {
				return false
			}
		case unicode.IsSpace(c) || strings.ContainsRune(phonePunctuation, c):
		default:
			return false
		}
	}
	return digits >= 3 && digits <= 17
}

// knownRegion returns the upper-case region code when libphonenumber knows
// it, else "".
func knownRegion(region string) string {
	region = strings.ToUpper(strings.TrimSpace(region))
	if region == "" || phonenumbers.GetCountryCodeForRegion(region) == 0 {
		return ""
	}
	return region
}

// KnownRegion reports whether libphonenumber knows the region code.
func KnownRegion(region string) bool { return knownRegion(region) != "" }

// Email accepts a bare address (no display name, no comments) with a
// dotted domain, and returns it with the domain in lower case.
func Email(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if len(s) > MaxEmailLen || !printable(s) {
		return "", false
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s {
		return "", false
	}
	at := strings.LastIndexByte(s, '@')
	if at < 1 || !strings.Contains(s[at+1:], ".") || strings.HasSuffix(s, ".") {
		return "", false
	}
	return FoldEmail(s), true
}

// FoldEmail lower-cases an email address's domain (the local part is the
// mailbox owner's and may be case-sensitive).
func FoldEmail(s string) string {
	if at := strings.LastIndexByte(s, '@'); at > 0 {
		return s[:at] + strings.ToLower(s[at:])
	}
	return s
}

// OpenID reports whether s looks like a WeChat openid: 1 to 64 letters,
// digits, '-' and '_'.
func OpenID(s string) bool {
	if s == "" || len(s) > MaxOpenIDLen {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// Locale parses a BCP 47 language tag (zh-CN, zh_CN, es-419) and returns
// its canonical form; "und" is refused: it says nothing. The canonical form
// reads back as itself, so normalising twice gives the same tag.
func Locale(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > MaxLocaleLen {
		return "", false
	}
	tag, err := language.Parse(s)
	if err != nil || tag == language.Und {
		return "", false
	}
	canon := tag.String()
	if again, err := language.Parse(canon); err != nil || again.String() != canon {
		return "", false
	}
	return canon, true
}

// printable reports whether s is valid UTF-8 without control characters.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}
