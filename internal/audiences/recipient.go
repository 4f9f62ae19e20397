// Package audiences keeps the recipient lists of crisis broadcasts: a
// crisis team uploads a CSV file of patients or staff, the gateway checks
// and normalises every row, stores the recipients in Redis for a limited
// time under an audience id, and broadcast workers read them back in
// chunks to fan the broadcast out.
//
// # The CSV file
//
// The first line is a header row naming the columns, in any case and with
// surrounding spaces ignored. The columns read are phone, email,
// wechat_openid (at least one of these three must be present), locale,
// timezone and external_id. A name column is accepted and ignored: a
// broadcast needs an address, not a name, so names are never kept. Other
// columns are ignored too; every ignored column is reported once. The file
// is UTF-8 (a byte order mark is tolerated) with CRLF or LF line ends,
// separated by commas (a header with semicolons or tabs and no comma
// selects that separator, as spreadsheets in some locales write it).
//
// Every row that cannot be used is skipped and reported by its physical
// line number in the file (the header is line 1; a quoted field spanning
// several lines moves the following rows down accordingly) with the
// reason: an invalid phone number, email address, WeChat openid, time zone
// or locale, a row without any address, a row with the wrong number of
// fields, a field that is too long, malformed quotes. A row sharing a
// phone number, email address or openid with an earlier row is reported
// as a duplicate of that row and skipped. Rows whose fields are all empty
// are blank lines and are skipped silently.
//
// A file may have at most 20 MiB, 64 columns, 200,000 recipients (and
// twice as many rows) and 1 KiB in each field that is read; ParseOptions
// may change the first and the third.
//
// # Privacy
//
// Recipients are personal data: this package never logs them, and neither
// may its callers. Key names contain only audience ids. The reasons of
// RowError and ValidationError quote the offending value only for the
// phone, email, timezone and locale fields, so that the uploader can find
// and fix it; they never quote an openid, an external id or an ignored
// column. These reasons are meant for the uploader alone (the API response
// to the upload): they must not be logged either. Only the counts of a
// ParseResult are safe to log.
package audiences

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/patientmsg/gateway/internal/address"
	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/schedule"
)

// Limits of one recipient's fields.
const (
	MaxPhoneLen      = address.MaxPhoneLen
	MaxEmailLen      = address.MaxEmailLen
	MaxOpenIDLen     = address.MaxOpenIDLen
	MaxLocaleLen     = address.MaxLocaleLen
	MaxTimeZoneLen   = 64  // bytes of an IANA time zone name
	MaxExternalIDLen = 128 // bytes of the clinic's own reference
)

// Recipient is one person of an audience. Phone is in E.164 form
// (+8613800138000), Email has a lower-case domain, Locale is a canonical
// BCP 47 tag and TimeZone an IANA name. ExternalID is the clinic's own
// reference for the person (a staff or record number), so that delivery
// reports can be matched to its records. At least one of Phone, Email and
// WeChatOpenID is set.
type Recipient struct {
	Phone        string `json:"phone,omitempty"`
	Email        string `json:"email,omitempty"`
	WeChatOpenID string `json:"wechat_openid,omitempty"`
	Locale       string `json:"locale,omitempty"`
	TimeZone     string `json:"timezone,omitempty"`
	ExternalID   string `json:"external_id,omitempty"`
}

// Identities returns the recipient's addresses present, in the order
// phone, email, WeChat, normalised as the consent ledger keys them.
func (r Recipient) Identities() []consent.Identity {
	ids := make([]consent.Identity, 0, 3)
	if r.Phone != "" {
		ids = append(ids, consent.Normalise(consent.Identity{Kind: consent.Phone, Value: r.Phone}))
	}
	if r.Email != "" {
		ids = append(ids, consent.Normalise(consent.Identity{Kind: consent.Email, Value: r.Email}))
	}
	if r.WeChatOpenID != "" {
		ids = append(ids, consent.Normalise(consent.Identity{Kind: consent.WeChat, Value: r.WeChatOpenID}))
	}
	return ids
}

// FieldError is one problem with one field of a recipient. Field is the
// JSON and CSV name of the field ("phone", "timezone"; "" for a problem of
// the whole recipient, such as having no address). Reason is a sentence
// for the uploader that names the field; see the package documentation
// for which values it may quote.
type FieldError struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

// ValidationError lists every problem ValidateRecipient found with one
// recipient, in field order.
type ValidationError []FieldError

// Error joins the reasons with "; ". It may quote a value the uploader
// gave: return it to the uploader, never log it.
func (e ValidationError) Error() string {
	reasons := make([]string, len(e))
	for i, f := range e {
		reasons[i] = f.Reason
	}
	return strings.Join(reasons, "; ")
}

// ValidateRecipient checks a recipient and normalises it in place: spaces
// around every field are trimmed, the phone number is put in E.164 form,
// the email domain is lower-cased and the locale made canonical. A phone
// number without a leading + is read as a national number of defaultRegion
// (an ISO 3166 region code such as "US" or "CN"); with defaultRegion ""
// (or a region code libphonenumber does not know) such numbers are refused.
// On error it returns a ValidationError and leaves r unchanged.
//
// It serves both the CSV upload and audiences given inline in a broadcast
// request. Normalising twice gives the same recipient.
func ValidateRecipient(r *Recipient, defaultRegion string) error {
	var errs ValidationError
	bad := func(field, format string, a ...any) {
		errs = append(errs, FieldError{Field: field, Reason: fmt.Sprintf(format, a...)})
	}
	out := Recipient{
		Phone:        strings.TrimSpace(r.Phone),
		Email:        strings.TrimSpace(r.Email),
		WeChatOpenID: strings.TrimSpace(r.WeChatOpenID),
		Locale:       strings.TrimSpace(r.Locale),
		TimeZone:     strings.TrimSpace(r.TimeZone),
		ExternalID:   strings.TrimSpace(r.ExternalID),
	}
	if out.Phone != "" {
		if p, reason := normalisePhone(out.Phone, defaultRegion); reason != "" {
			bad("phone", "%s", reason)
		} else {
			out.Phone = p
		}
	}
	if out.Email != "" {
		if e, ok := address.Email(out.Email); !ok {
			bad("email", "email %s is not a valid address", quote(out.Email))
		} else {
			out.Email = e
		}
	}
	if out.WeChatOpenID != "" && !address.OpenID(out.WeChatOpenID) {
		bad("wechat_openid", "wechat_openid is not a WeChat openid (letters, digits, '-' and '_', at most %d)", MaxOpenIDLen)
	}
	if out.Locale != "" {
		if l, ok := address.Locale(out.Locale); !ok {
			bad("locale", "locale %s is not a language tag such as en, zh-CN or es-419", quote(out.Locale))
		} else {
			out.Locale = l
		}
	}
	if out.TimeZone != "" {
		if !validZone(out.TimeZone) {
			bad("timezone", "timezone %s is not an IANA time zone such as Asia/Shanghai or America/New_York", quote(out.TimeZone))
		}
	}
	if out.ExternalID != "" {
		switch {
		case len(out.ExternalID) > MaxExternalIDLen:
			bad("external_id", "external_id is longer than %d bytes", MaxExternalIDLen)
		case !printable(out.ExternalID):
			bad("external_id", "external_id contains control characters or is not valid UTF-8")
		}
	}
	if out.Phone == "" && out.Email == "" && out.WeChatOpenID == "" {
		bad("", "no address: a recipient needs a phone, email or wechat_openid")
	}
	if len(errs) > 0 {
		return errs
	}
	*r = out
	return nil
}

// normalisePhone returns the E.164 form of a phone number, or a reason why
// it is not usable, quoting it for the uploader.
func normalisePhone(s, defaultRegion string) (string, string) {
	e, err := address.Phone(s, defaultRegion)
	switch {
	case err == nil:
		return e, ""
	case errors.Is(err, address.ErrPhoneTooLong):
		return "", fmt.Sprintf("phone %s is not a valid number (longer than %d characters)", quote(s), MaxPhoneLen)
	case errors.Is(err, address.ErrPhoneScientific):
		return "", fmt.Sprintf("phone %s is not a valid number: %v", quote(s), err)
	case errors.Is(err, address.ErrNoCountryCode):
		return "", fmt.Sprintf("phone %s has no country code: write it in international form, starting with + and the country code", quote(s))
	}
	return "", fmt.Sprintf("phone %s is not a valid number", quote(s))
}

// validZone reports whether s names an IANA time zone.
func validZone(s string) bool {
	if len(s) > MaxTimeZoneLen || !printable(s) {
		return false
	}
	_, err := schedule.LoadZone(s)
	return err == nil
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

// quote returns s in Go quotes, clipped to 40 characters, for a reason
// shown to the uploader.
func quote(s string) string {
	const max = 40
	if utf8.RuneCountInString(s) > max {
		rs := []rune(s)
		s = string(rs[:max]) + "…"
	}
	return fmt.Sprintf("%q", s)
}
