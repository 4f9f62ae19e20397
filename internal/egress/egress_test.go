package egress

import (
	"errors"
	"net/netip"
	"testing"
)

func TestClassifyNamesEveryNonPublicRange(t *testing.T) {
	cases := []struct {
		name string
		addr string
		kind string // "" is public
	}{
		{"IPv4 loopback", "127.0.0.1", "loopback"},
		{"the top of IPv4 loopback", "127.255.255.254", "loopback"},
		{"IPv4 unspecified", "0.0.0.0", kindUnspecified},
		{"this network", "0.1.2.3", "this network"},
		{"cloud metadata (link-local)", "169.254.169.254", "link-local"},
		{"RFC 1918 10/8", "10.1.2.3", "RFC 1918"},
		{"RFC 1918 172.16/12", "172.31.255.1", "RFC 1918"},
		{"RFC 1918 192.168/16", "192.168.1.10", "RFC 1918"},
		{"carrier-grade NAT", "100.64.0.1", "carrier-grade NAT"},
		{"the top of carrier-grade NAT", "100.127.255.254", "carrier-grade NAT"},
		{"IETF protocol assignments", "192.0.0.8", "IETF protocol assignments"},
		{"TEST-NET-1", "192.0.2.1", "documentation"},
		{"TEST-NET-3", "203.0.113.9", "documentation"},
		{"benchmarking", "198.19.0.1", "benchmarking"},
		{"IPv4 multicast", "224.0.0.1", kindMulticast},
		{"limited broadcast", "255.255.255.255", kindBroadcast},
		{"class E", "240.0.0.1", "reserved"},
		{"IPv6 loopback", "::1", "loopback"},
		{"IPv6 unspecified", "::", kindUnspecified},
		{"IPv4-mapped loopback", "::ffff:127.0.0.1", "loopback"},
		{"IPv4-mapped metadata", "::ffff:169.254.169.254", "link-local"},
		{"IPv4-mapped private", "::ffff:10.0.0.1", "RFC 1918"},
		{"IPv4-compatible loopback", "::127.0.0.1", "IPv4-compatible"},
		{"NAT64 of loopback", "64:ff9b::7f00:1", "loopback"},
		{"NAT64 of a private address", "64:ff9b::a00:1", "RFC 1918"},
		{"6to4 of loopback", "2002:7f00:1::1", "loopback"},
		{"6to4 of metadata", "2002:a9fe:a9fe::1", "link-local"},
		{"unique local fc00::", "fc00::1", "unique local"},
		{"unique local fd00::", "fd12:3456::1", "unique local"},
		{"IPv6 link-local", "fe80::1", "link-local"},
		{"IPv6 link-local with a zone", "fe80::1%eth0", "link-local"},
		{"site-local", "fec0::1", "site-local"},
		{"IPv6 multicast", "ff02::1", kindMulticast},
		{"IPv6 documentation", "2001:db8::1", "documentation"},
		{"Teredo", "2001::1", "IETF protocol assignments"},
		{"discard-only", "100::1", "discard-only"},
		{"outside global unicast", "4000::1", "reserved"},
		{"public IPv4", "93.184.215.14", ""},
		{"public IPv4 next to CGNAT", "100.128.0.1", ""},
		{"public IPv4 next to 172.16/12", "172.32.0.1", ""},
		{"public IPv6", "2606:4700::1111", ""},
		{"NAT64 of a public address", "64:ff9b::5db8:d70e", ""},
		{"IPv4-mapped public", "::ffff:93.184.215.14", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Classify(netip.MustParseAddr(c.addr)); got != c.kind {
				t.Fatalf("Classify(%s) = %q, want %q", c.addr, got, c.kind)
			}
		})
	}
}

func TestTheAllowListOpensItsNetworksButNeverUnspecifiedMulticastOrBroadcast(t *testing.T) {
	p := Policy{Allow: []netip.Prefix{
		netip.MustParsePrefix("10.20.0.0/16"), netip.MustParsePrefix("192.168.5.7/32"),
		netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("fd00:1::/64"),
		netip.MustParsePrefix("0.0.0.0/8"), netip.MustParsePrefix("224.0.0.0/4"), netip.MustParsePrefix("ff00::/8"),
		netip.MustParsePrefix("::/128"), netip.MustParsePrefix("255.255.255.255/32"),
	}}
	cases := []struct {
		name    string
		addr    string
		allowed bool
	}{
		{"inside an allowed /16", "10.20.3.4", true},
		{"next to an allowed /16", "10.21.0.1", false},
		{"the one allowed host", "192.168.5.7", true},
		{"its neighbour", "192.168.5.8", false},
		{"allowed loopback", "127.0.0.1", true},
		{"allowed loopback, IPv4-mapped", "::ffff:127.0.0.1", true},
		{"IPv6 loopback is not in the list", "::1", false},
		{"inside an allowed IPv6 /64", "fd00:1::5", true},
		{"another unique local network", "fd00:2::5", false},
		{"metadata is not in the list", "169.254.169.254", false},
		{"0.0.0.0 even when listed", "0.0.0.0", false},
		{":: even when listed", "::", false},
		{"multicast even when listed", "224.0.0.1", false},
		{"IPv6 multicast even when listed", "ff02::1", false},
		{"broadcast even when listed", "255.255.255.255", false},
		{"a public address", "93.184.215.14", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := p.CheckAddr(netip.MustParseAddr(c.addr))
			if (err == nil) != c.allowed {
				t.Fatalf("CheckAddr(%s) = %v, want allowed=%v", c.addr, err, c.allowed)
			}
			if err != nil && !errors.Is(err, ErrRefused) {
				t.Fatalf("a refusal must match ErrRefused: %v", err)
			}
		})
	}
}

func TestARefusalNamesTheRangeNotTheAddress(t *testing.T) {
	err := Policy{}.CheckAddr(netip.MustParseAddr("10.9.8.7"))
	if err == nil || err.Error() != "refused: private address (RFC 1918)" {
		t.Fatalf("CheckAddr = %v", err)
	}
	if err := (Policy{}).Control("tcp4", "10.9.8.7:443", nil); err == nil || !errors.Is(err, ErrRefused) {
		t.Fatalf("Control = %v", err)
	}
	if err := (Policy{}).Control("tcp", "not-an-address", nil); !errors.Is(err, ErrRefused) {
		t.Fatalf("an address Control cannot read must be refused, got %v", err)
	}
}
