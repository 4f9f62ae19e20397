// Package returnpath makes and reads the per-message addresses and links
// of email that bring its outcome back to the gateway: the return path
// (bounce+<id>.<sig>@domain, the envelope sender delivery status
// notifications go to), the Reply-To (reply+<id>.<sig>@domain) and the
// one-click unsubscribe token of a bulk email's List-Unsubscribe link.
//
// Each is signed with a key derived from the operator's secret
// (EMAIL_RETURN_SECRET): a forged address or token, or one whose message
// id was changed, does not verify, so nobody can attach a bounce, a
// complaint or an unsubscription to a message they did not receive. The
// token is also opaque: it does not show the message id.
package returnpath

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"strings"

	"github.com/oklog/ulid/v2"
)

// MinSecret is the shortest secret accepted, in bytes.
const MinSecret = 32

// Kind is what an address is for.
type Kind string

// Address kinds: the local part's prefix before "+".
const (
	Bounce Kind = "bounce"
	Reply  Kind = "reply"
)

// sigLen is the signature's length in bytes (80 bits).
const sigLen = 10

// sigEncoding writes signatures in lower case: some mail systems lower
// the case of local parts.
var sigEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Keys signs and verifies the addresses of one return domain.
type Keys struct {
	domain string
	mac    []byte
	block  cipher.Block
}

// New derives the keys from secret (at least MinSecret bytes) for the
// return domain (ASCII, lower-cased here).
func New(secret, domain string) (*Keys, error) {
	if len(secret) < MinSecret {
		return nil, errors.New("EMAIL_RETURN_SECRET must be at least 32 characters")
	}
	domain = strings.ToLower(strings.TrimSpace(domain))
	if domain != "" && !validDomain(domain) {
		return nil, errors.New("EMAIL_RETURN_DOMAIN must be an ASCII domain name, e.g. mail.example-clinic.org")
	}
	block, err := aes.NewCipher(derive(secret, "patientmsg email unsubscribe token"))
	if err != nil {
		return nil, err
	}
	return &Keys{domain: domain, mac: derive(secret, "patientmsg email return path"), block: block}, nil
}

// CheckDomain validates a return domain as New does.
func CheckDomain(domain string) error {
	if !validDomain(strings.ToLower(strings.TrimSpace(domain))) {
		return errors.New("EMAIL_RETURN_DOMAIN must be an ASCII domain name, e.g. mail.example-clinic.org")
	}
	return nil
}

func derive(secret, label string) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(label))
	return m.Sum(nil)
}

// validDomain accepts dot-separated LDH labels.
func validDomain(d string) bool {
	if d == "" || len(d) > 253 {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// Domain is the return domain ("" when the keys only sign tokens).
func (k *Keys) Domain() string { return k.domain }

// Address is the signed address of kind for the message id (a ULID), e.g.
// "bounce+01jabc….k4x2…@mail.example-clinic.org". It is "" without a
// return domain or for an id that is not a message id.
func (k *Keys) Address(kind Kind, id string) string {
	u, err := ulid.ParseStrict(id)
	if k.domain == "" || err != nil {
		return ""
	}
	lower := strings.ToLower(u.String())
	return string(kind) + "+" + lower + "." + k.sign(kind, u) + "@" + k.domain
}

func (k *Keys) sign(kind Kind, u ulid.ULID) string {
	m := hmac.New(sha256.New, k.mac)
	m.Write([]byte(kind))
	m.Write([]byte{0})
	m.Write(u[:])
	return sigEncoding.EncodeToString(m.Sum(nil)[:sigLen])
}

// Parse reads an address made by Address: its kind and message id (in
// the ledger's upper case). ok is false for an address of another
// domain, of an unknown kind, or whose signature does not match.
func (k *Keys) Parse(addr string) (kind Kind, id string, ok bool) {
	addr = strings.TrimSpace(strings.Trim(strings.TrimSpace(addr), "<>"))
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || k.domain == "" || !strings.EqualFold(addr[at+1:], k.domain) {
		return "", "", false
	}
	local := strings.ToLower(addr[:at])
	prefix, rest, found := strings.Cut(local, "+")
	if !found {
		return "", "", false
	}
	kind = Kind(prefix)
	if kind != Bounce && kind != Reply {
		return "", "", false
	}
	idPart, sig, found := strings.Cut(rest, ".")
	if !found {
		return "", "", false
	}
	u, err := ulid.ParseStrict(strings.ToUpper(idPart))
	if err != nil || !hmac.Equal([]byte(sig), []byte(k.sign(kind, u))) {
		return "", "", false
	}
	return kind, u.String(), true
}

// Token is the one-click unsubscribe token of a message (a ULID): 43
// URL-safe characters that neither show the id nor can be made without
// the secret. It is "" for an id that is not a message id.
func (k *Keys) Token(id string) string {
	u, err := ulid.ParseStrict(id)
	if err != nil {
		return ""
	}
	var b [32]byte
	k.block.Encrypt(b[:16], u[:])
	copy(b[16:], k.tokenMAC(b[:16]))
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (k *Keys) tokenMAC(ciphertext []byte) []byte {
	m := hmac.New(sha256.New, k.mac)
	m.Write([]byte("unsubscribe\x00"))
	m.Write(ciphertext)
	return m.Sum(nil)[:16]
}

// ParseToken returns the message id of a token made by Token; ok is false
// for anything else.
func (k *Keys) ParseToken(token string) (id string, ok bool) {
	if len(token) != 43 {
		return "", false
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(b) != 32 || !hmac.Equal(b[16:], k.tokenMAC(b[:16])) {
		return "", false
	}
	var u ulid.ULID
	k.block.Decrypt(u[:], b[:16])
	return u.String(), true
}
