package email

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/patientmsg/gateway/internal/redact"
)

// Security is how the connection to the SMTP server is protected.
type Security int

// Connection security, chosen by the SMTP_URL scheme.
const (
	// StartTLS (smtp://, port 587 by default) upgrades with STARTTLS and
	// refuses a server that does not offer it: there is no plain-text
	// fallback.
	StartTLS Security = iota + 1
	// ImplicitTLS (smtps://, port 465 by default) speaks TLS from the
	// first byte.
	ImplicitTLS
	// Insecure (smtp+insecure://, port 25 by default) is plain text, for
	// development and tests only, and only to a loopback host.
	Insecure
)

func (s Security) String() string {
	switch s {
	case StartTLS:
		return "starttls"
	case ImplicitTLS:
		return "tls"
	case Insecure:
		return "insecure"
	}
	return "unknown"
}

func (s Security) scheme() string {
	switch s {
	case ImplicitTLS:
		return "smtps"
	case Insecure:
		return "smtp+insecure"
	}
	return "smtp"
}

// Endpoint is a parsed SMTP_URL. Its String and GoString forms hide the
// password (and mask a user name that is an email address), so it is safe
// to log or print with %v / %+v / %#v.
type Endpoint struct {
	Security Security
	Host     string
	Port     int
	// Username and Password are for SMTP AUTH; both empty means no AUTH.
	Username string
	Password string
}

// Address is host:port, for dialling.
func (e Endpoint) Address() string { return net.JoinHostPort(e.Host, strconv.Itoa(e.Port)) }

// String is the URL for display, with the password replaced by "xxxxx"
// and a user name that is an email address masked.
func (e Endpoint) String() string {
	s := e.Security.scheme() + "://"
	if e.Username != "" {
		user := e.Username
		if strings.Contains(user, "@") {
			user = redact.Email(user)
		}
		s += user + ":xxxxx@"
	}
	return s + e.Address()
}

// GoString is String, so %#v does not print the password either.
func (e Endpoint) GoString() string { return e.String() }

// errURL prefixes every ParseURL error so the message names the setting.
func errURL(format string, args ...any) error {
	return fmt.Errorf("SMTP_URL "+format, args...)
}

// ParseURL validates an SMTP_URL:
//
//	smtp://user:pass@host:587          STARTTLS required (port 587 by default)
//	smtps://user:pass@host:465         implicit TLS (port 465 by default)
//	smtp+insecure://[user:pass@]host:port  plain text, loopback hosts only
//
// User name and password are percent-decoded (encode "@", ":", "/" in
// them). Errors name SMTP_URL and never contain the password: they quote
// nothing from the URL except, for a well-formed URL, its host name.
func ParseURL(raw string) (Endpoint, error) {
	if strings.TrimSpace(raw) == "" {
		return Endpoint{}, errURL("is required, e.g. smtp://user:password@smtp.example.org:587")
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error quotes the whole URL, password included: say why
		// without it.
		return Endpoint{}, errURL("is not a valid URL (percent-encode special characters in the user name and password)")
	}
	var ep Endpoint
	switch strings.ToLower(u.Scheme) {
	case "smtp":
		ep.Security, ep.Port = StartTLS, 587
	case "smtps":
		ep.Security, ep.Port = ImplicitTLS, 465
	case "smtp+insecure":
		ep.Security, ep.Port = Insecure, 25
	default:
		return Endpoint{}, errURL("must start with smtp:// (STARTTLS), smtps:// (implicit TLS) or smtp+insecure:// (loopback development only)")
	}
	if u.Opaque != "" {
		return Endpoint{}, errURL("must have the form %s://user:password@host:port", ep.Security.scheme())
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return Endpoint{}, errURL("must be only scheme, credentials, host and port (no path, query or fragment)")
	}
	host := u.Hostname()
	if host == "" {
		return Endpoint{}, errURL("has no host")
	}
	if !validHost(host) {
		return Endpoint{}, errURL("has an invalid host name")
	}
	ep.Host = host
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return Endpoint{}, errURL("has an invalid port (want 1-65535)")
		}
		ep.Port = n
	} else if strings.HasSuffix(u.Host, ":") {
		return Endpoint{}, errURL("has an empty port")
	}
	if u.User != nil {
		ep.Username = u.User.Username()
		pass, hasPass := u.User.Password()
		ep.Password = pass
		switch {
		case ep.Username == "" && ep.Password == "":
			return Endpoint{}, errURL("has an empty user name and password; leave out the \"@\" for no authentication")
		case ep.Username == "":
			return Endpoint{}, errURL("has a password but no user name")
		case !hasPass || ep.Password == "":
			return Endpoint{}, errURL("has a user name but no password")
		}
		if strings.ContainsAny(ep.Username+ep.Password, "\x00\r\n") {
			return Endpoint{}, errURL("has control characters in the user name or password")
		}
	}
	if ep.Security == Insecure && !isLoopbackHost(ep.Host) {
		return Endpoint{}, errURL("uses smtp+insecure://, which sends mail and credentials in clear text and is allowed only to "+
			"a loopback host (localhost, 127.0.0.1, ::1), not %q: use smtp:// (STARTTLS) or smtps://", ep.Host)
	}
	return ep, nil
}

// validHost accepts an IP address or an ASCII DNS name.
func validHost(h string) bool {
	if net.ParseIP(h) != nil {
		return true
	}
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// isLoopbackHost reports whether host is localhost or a loopback IP.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// errNotLoopback is returned when an smtp+insecure:// host resolves to an
// address that is not loopback.
var errNotLoopback = errors.New("smtp+insecure:// may only connect to a loopback address")
