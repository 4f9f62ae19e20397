package egress

import (
	"errors"
	"net/netip"
	"net/url"
	"strings"
)

// URLError says why a URL is refused at registration; its text completes
// a sentence about the field ("url: …").
type URLError struct{ Detail string }

func (e *URLError) Error() string { return e.Detail }

// loopbackNames are names that mean this host wherever they are resolved
// (RFC 6761 reserves localhost and *.localhost; the others are in the
// /etc/hosts of common systems).
var loopbackNames = map[string]bool{
	"localhost": true, "localhost.localdomain": true, "ip6-localhost": true, "ip6-loopback": true,
}

// innerSuffixes end names that only a local network resolves (mDNS
// RFC 6762, RFC 8375, ICANN's .internal, a common default domain), as do
// single-label names. With no allowed network they can never be delivered to.
var innerSuffixes = []string{".local", ".internal", ".localdomain", ".home.arpa"}

var (
	loopback4 = netip.MustParseAddr("127.0.0.1")
	loopback6 = netip.IPv6Loopback()
)

// CheckURL refuses, at registration and without DNS, a URL that can never
// be delivered to: one that is not an absolute http(s) URL, has
// credentials, or whose host is an IP address the policy refuses (in any
// notation), localhost (or *.localhost), a numeric host name that is not a
// plain IP address, or (when no network is allowed) a name only a local
// network resolves. Other names are checked each time they are connected to.
//
// Events carry patients' replies, so the URL must be https://; plain http
// is taken only for an address in a network the operator allows (an
// integration engine on the hospital network), where TLS may not be.
func (p Policy) CheckURL(u *url.URL) error {
	if err := p.checkURL(u); err != nil {
		return err
	}
	if u.Scheme == "http" && !p.plainHTTPAllowed(strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")) {
		return &URLError{"must be an https:// URL: events carry patients' replies; plain http is taken only for an IP address in a network the operator allows (GATEWAY_WEBHOOK_ALLOW_NETWORKS)"}
	}
	return nil
}

// plainHTTPAllowed reports whether host is an address (or a loopback name)
// inside an allowed network.
func (p Policy) plainHTTPAllowed(host string) bool {
	if loopbackNames[host] || strings.HasSuffix(host, ".localhost") {
		return p.allows(loopback4) || p.allows(loopback6)
	}
	a, err := netip.ParseAddr(host)
	return err == nil && p.allows(a)
}

func (p Policy) checkURL(u *url.URL) error {
	switch {
	case u == nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "":
		return &URLError{"must be an absolute http(s) URL"}
	case u.User != nil:
		return &URLError{"must not contain credentials"}
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if host == "" {
		return &URLError{"must name a host"}
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return p.refusal(p.CheckAddr(a))
	}
	if strings.ContainsAny(host, "%[]") {
		return &URLError{"does not name a valid host"}
	}
	if loopbackNames[host] || strings.HasSuffix(host, ".localhost") {
		// Allowed only when a loopback address is.
		if p.CheckAddr(loopback4) == nil || p.CheckAddr(loopback6) == nil {
			return nil
		}
		return p.refusal(&RefusedError{Kind: "loopback"})
	}
	if numericHost(host) {
		// 2130706433, 127.1, 0x7f.0.0.1, 0177.0.0.1: forms some resolvers
		// read as IPv4 addresses.
		return &URLError{"is a number that is not a plain IP address; write the address in dotted form, e.g. 203.0.113.10, or use the host name"}
	}
	if len(p.Allow) == 0 && innerName(host) {
		return &URLError{"names a host only a local network can resolve; the gateway posts only to public addresses unless its operator allows a network (GATEWAY_WEBHOOK_ALLOW_NETWORKS)"}
	}
	return nil
}

func (p Policy) refusal(err error) error {
	var r *RefusedError
	if errors.As(err, &r) {
		return &URLError{"points to an address the gateway does not post to (" + r.Kind + "); it posts only to public addresses unless its operator allows the network (GATEWAY_WEBHOOK_ALLOW_NETWORKS)"}
	}
	return err
}

// numericHost reports whether every dot-separated label of host is a
// decimal, octal or hexadecimal number (no public name has a numeric
// top-level label).
func numericHost(host string) bool {
	for _, label := range strings.Split(host, ".") {
		digits := label
		if h, ok := strings.CutPrefix(label, "0x"); ok {
			digits = h
			if digits == "" {
				continue // "0x" alone reads as 0 in inet_aton
			}
			if strings.Trim(digits, "0123456789abcdef") != "" {
				return false
			}
			continue
		}
		if digits == "" || strings.Trim(digits, "0123456789") != "" {
			return false
		}
	}
	return true
}

func innerName(host string) bool {
	if !strings.Contains(host, ".") {
		return true
	}
	for _, s := range innerSuffixes {
		if strings.HasSuffix(host, s) {
			return true
		}
	}
	return false
}
