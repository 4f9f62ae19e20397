package egress

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// ParseNetworks parses the operator's allowed networks: CIDR prefixes or
// single addresses, separated by commas or white space, e.g.
// "10.20.0.0/16, 192.168.5.7/32, fd00:1::/64". A prefix must have no bits
// set past its length (10.20.1.0/16 is refused: 10.20.0.0/16 or
// 10.20.1.0/24 was meant). IPv4-mapped IPv6 prefixes are turned into IPv4
// ones. Errors name the entry by its position.
func ParseNetworks(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	items := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r' })
	for i, item := range items {
		p, err := parseNetwork(item)
		if err != nil {
			return nil, fmt.Errorf("entry %d %q: %w", i+1, clip(item), err)
		}
		out = append(out, p)
	}
	return out, nil
}

func parseNetwork(item string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(item, "/") {
		var err error
		if p, err = netip.ParsePrefix(item); err != nil {
			return netip.Prefix{}, errors.New("want a network in CIDR form such as 10.20.0.0/16, or one address such as 192.168.5.7")
		}
		if m := p.Masked(); m != p {
			return netip.Prefix{}, fmt.Errorf("has bits set past the prefix length; the network is %s (or give the address alone)", m)
		}
	} else {
		a, err := netip.ParseAddr(item)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, errors.New("want a network in CIDR form such as 10.20.0.0/16, or one address such as 192.168.5.7")
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if a := p.Addr(); a.Is4In6() {
		// Masked, so at least /96: the ::ffff: part is inside the prefix.
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p, nil
}

// Narrowest prefix lengths an allowed network may have: no wider than the
// widest private range (10.0.0.0/8, fc00::/7), so that no setting turns the
// guard off for everything.
const (
	minBits4 = 8
	minBits6 = 7
)

// CheckNetworks refuses allowed networks that are not valid or so wide
// that they would open (nearly) every address.
func CheckNetworks(nets []netip.Prefix) error {
	for _, n := range nets {
		switch {
		case !n.IsValid():
			return fmt.Errorf("%s is not a network", n)
		case n.Addr().Is4() && n.Bits() < minBits4, n.Addr().Is6() && n.Bits() < minBits6:
			return fmt.Errorf("%s is too wide: it would let tenants' webhooks reach (nearly) any address; list the networks the gateway must reach, each /%d (IPv4) or /%d (IPv6) or narrower", n, minBits4, minBits6)
		}
	}
	return nil
}

func clip(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return strings.ToValidUTF8(s, "�")
}
