// Package egress holds the one way the gateway reaches a URL a tenant
// chose (its webhook endpoint, a message's callback_url): an HTTP client
// whose connections may only go to public addresses, unless the operator
// allows a network. The address is checked when the connection is made,
// after DNS (a net.Dialer Control hook), so a name that resolves to an
// inner address, now or after a DNS change, is refused like the address
// itself, before any packet is sent. Redirects are not followed.
//
// Registration uses the same rules without DNS (Policy.CheckURL): what can
// never be delivered to (a refused IP literal, localhost) is refused at
// once; a name is checked again each time it is connected to.
package egress

import (
	"errors"
	"net/netip"
)

// Policy decides which addresses outbound requests to tenants' URLs may
// reach. Its zero value allows public addresses only.
type Policy struct {
	// Allow lists networks the operator opens although they are not public
	// (GATEWAY_WEBHOOK_ALLOW_NETWORKS), e.g. the hospital network of its
	// integration engine. Unspecified, multicast and broadcast addresses
	// stay refused even inside them.
	Allow []netip.Prefix
}

// ErrRefused matches (errors.Is) every *RefusedError.
var ErrRefused = errors.New("refused: private address")

// RefusedError says an address is not one the gateway posts to. It names
// the kind of range, never the address (which may come from the gateway's
// own DNS).
type RefusedError struct {
	// Kind is the range, e.g. "loopback", "RFC 1918", "link-local".
	Kind string
}

func (e *RefusedError) Error() string { return ErrRefused.Error() + " (" + e.Kind + ")" }

// Is makes errors.Is(err, ErrRefused) true.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

// Kinds of address that no allow-list opens: none of them is a single host
// that could serve a webhook.
const (
	kindUnspecified = "unspecified"
	kindMulticast   = "multicast"
	kindBroadcast   = "broadcast"
)

// CheckAddr returns nil when a connection to a may be made, else a
// *RefusedError.
func (p Policy) CheckAddr(a netip.Addr) error {
	a = a.WithZone("")
	if !a.IsValid() {
		return &RefusedError{Kind: "invalid"}
	}
	a = a.Unmap()
	kind := Classify(a)
	if kind == "" {
		return nil
	}
	if kind != kindUnspecified && kind != kindMulticast && kind != kindBroadcast && p.allows(a) {
		return nil
	}
	return &RefusedError{Kind: kind}
}

func (p Policy) allows(a netip.Addr) bool {
	for _, n := range p.Allow {
		if n.Contains(a) {
			return true
		}
	}
	return false
}

type special struct {
	net  netip.Prefix
	kind string
}

// specials are the ranges that are not public unicast, most specific
// first (IANA's IPv4 and IPv6 special-purpose address registries).
var specials = []special{
	// IPv4
	{netip.MustParsePrefix("0.0.0.0/32"), kindUnspecified},
	{netip.MustParsePrefix("0.0.0.0/8"), "this network"},
	{netip.MustParsePrefix("10.0.0.0/8"), "RFC 1918"},
	{netip.MustParsePrefix("100.64.0.0/10"), "carrier-grade NAT"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},
	{netip.MustParsePrefix("172.16.0.0/12"), "RFC 1918"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignments"},
	{netip.MustParsePrefix("192.0.2.0/24"), "documentation"},
	{netip.MustParsePrefix("192.88.99.0/24"), "6to4 relay anycast"},
	{netip.MustParsePrefix("192.168.0.0/16"), "RFC 1918"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking"},
	{netip.MustParsePrefix("198.51.100.0/24"), "documentation"},
	{netip.MustParsePrefix("203.0.113.0/24"), "documentation"},
	{netip.MustParsePrefix("224.0.0.0/4"), kindMulticast},
	{netip.MustParsePrefix("255.255.255.255/32"), kindBroadcast},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},
	// IPv6 (IPv4-mapped addresses are unmapped before they get here;
	// NAT64 and 6to4 addresses are judged by the IPv4 address they carry)
	{netip.MustParsePrefix("::/128"), kindUnspecified},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("::/96"), "IPv4-compatible"},
	{netip.MustParsePrefix("::ffff:0:0:0/96"), "IPv4-translated"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "local-use NAT64"},
	{netip.MustParsePrefix("100::/64"), "discard-only"},
	{netip.MustParsePrefix("2001:db8::/32"), "documentation"},
	{netip.MustParsePrefix("2001::/23"), "IETF protocol assignments"},
	{netip.MustParsePrefix("3fff::/20"), "documentation"},
	{netip.MustParsePrefix("5f00::/16"), "segment routing"},
	{netip.MustParsePrefix("fc00::/7"), "unique local"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("fec0::/10"), "site-local"},
	{netip.MustParsePrefix("ff00::/8"), kindMulticast},
}

var (
	nat64      = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour  = netip.MustParsePrefix("2002::/16")
	globalIPv6 = netip.MustParsePrefix("2000::/3")
)

// Classify names the kind of non-public range a holds, or "" for a public
// unicast address. An IPv4-mapped IPv6 address is judged as its IPv4
// address, and so are NAT64 (64:ff9b::/96) and 6to4 (2002::/16) addresses.
func Classify(a netip.Addr) string {
	a = a.WithZone("").Unmap()
	if !a.IsValid() {
		return "invalid"
	}
	if a.Is6() {
		b := a.As16()
		switch {
		case nat64.Contains(a):
			return Classify(netip.AddrFrom4([4]byte(b[12:16])))
		case sixToFour.Contains(a):
			return Classify(netip.AddrFrom4([4]byte(b[2:6])))
		}
	}
	for _, s := range specials {
		if s.net.Contains(a) {
			return s.kind
		}
	}
	if a.Is6() && !globalIPv6.Contains(a) {
		return "reserved" // outside IANA's global unicast space
	}
	return ""
}
