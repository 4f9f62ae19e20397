package egress

import (
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

func TestCheckURLRefusesWhatCanNeverBeDeliveredTo(t *testing.T) {
	strict := Policy{}
	hospital := Policy{Allow: prefixes("10.20.0.0/16", "192.168.5.7/32")}
	loop := Policy{Allow: prefixes("127.0.0.0/8")}
	cases := []struct {
		name   string
		policy Policy
		url    string
		detail string // "" accepted; else a part of the refusal
	}{
		{"a public name", strict, "https://ehr.example-clinic.org/hooks/gateway?k=1", ""},
		{"a public name with a port", strict, "https://ehr.example-clinic.org:8443/h", ""},
		{"a public IPv4 address", strict, "https://93.184.215.14/h", ""},
		{"a public IPv6 address", strict, "https://[2606:4700::1111]/h", ""},
		{"plain http to a public name", strict, "http://ehr.example-clinic.org/h", "https://"},
		{"plain http to a public address", strict, "http://93.184.215.14/h", "https://"},
		{"plain http to a name on an allowed network", hospital, "http://engine.example-clinic.org/h", "https://"},
		{"loopback", strict, "http://127.0.0.1:8080/h", "(loopback)"},
		{"loopback with a trailing dot", strict, "http://127.0.0.1./h", "(loopback)"},
		{"0.0.0.0", strict, "http://0.0.0.0/h", "(unspecified)"},
		{"IPv6 loopback", strict, "http://[::1]/h", "(loopback)"},
		{"IPv6 unspecified", strict, "http://[::]/h", "(unspecified)"},
		{"IPv4-mapped loopback", strict, "http://[::ffff:127.0.0.1]/h", "(loopback)"},
		{"IPv4-mapped loopback in hex", strict, "http://[::ffff:7f00:1]/h", "(loopback)"},
		{"cloud metadata", strict, "http://169.254.169.254/latest/meta-data/", "(link-local)"},
		{"RFC 1918 10.x", strict, "https://10.1.2.3/h", "(RFC 1918)"},
		{"RFC 1918 192.168.x", strict, "https://192.168.1.1/h", "(RFC 1918)"},
		{"carrier-grade NAT", strict, "https://100.64.1.1/h", "(carrier-grade NAT)"},
		{"unique local", strict, "https://[fc00::5]/h", "(unique local)"},
		{"IPv6 link-local with a zone", strict, "http://[fe80::1%25eth0]/h", "(link-local)"},
		{"localhost", strict, "http://localhost:8080/h", "(loopback)"},
		{"LOCALHOST with a trailing dot", strict, "http://LOCALHOST./h", "(loopback)"},
		{"a name under localhost", strict, "http://api.localhost/h", "(loopback)"},
		{"ip6-localhost", strict, "http://ip6-localhost/h", "(loopback)"},
		{"a decimal IPv4 address", strict, "http://2130706433/h", "dotted form"},
		{"a short IPv4 address", strict, "http://127.1/h", "dotted form"},
		{"a hex IPv4 address", strict, "http://0x7f.0.0.1/h", "dotted form"},
		{"an octal IPv4 address", strict, "http://0177.0.0.1/h", "dotted form"},
		{"a single-label name", strict, "http://metadata/computeMetadata/v1/", "local network"},
		{"an mDNS name", strict, "http://printer.local/h", "local network"},
		{"a .internal name", strict, "http://metadata.google.internal/h", "local network"},
		{"a home.arpa name", strict, "http://nas.home.arpa/h", "local network"},
		{"not http", strict, "ftp://example.org/h", "http(s)"},
		{"a relative URL", strict, "/hooks", "http(s)"},
		{"credentials", strict, "https://u:p@example.org/h", "credentials"},
		{"an allowed network", hospital, "https://10.20.3.4:8443/h", ""},
		{"an allowed host", hospital, "https://192.168.5.7/h", ""},
		{"plain http to an address on an allowed network", hospital, "http://10.20.3.4:8080/h", ""},
		{"next to an allowed host", hospital, "https://192.168.5.8/h", "(RFC 1918)"},
		{"loopback is still refused", hospital, "http://127.0.0.1/h", "(loopback)"},
		{"metadata is still refused", hospital, "http://169.254.169.254/h", "(link-local)"},
		{"a single-label name with networks allowed", hospital, "https://mirth:8443/h", ""},
		{"a .internal name with networks allowed", hospital, "https://mirth.hospital.internal/h", ""},
		{"localhost with networks allowed, loopback not", hospital, "http://localhost/h", "(loopback)"},
		{"allowed loopback", loop, "http://127.0.0.1:8080/h", ""},
		{"localhost when loopback is allowed", loop, "http://localhost:8080/h", ""},
		{"0.0.0.0 even when loopback is allowed", loop, "http://0.0.0.0:8080/h", "(unspecified)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			u, err := url.Parse(c.url)
			if err != nil {
				t.Fatalf("the case's URL: %v", err)
			}
			err = c.policy.CheckURL(u)
			switch {
			case c.detail == "" && err != nil:
				t.Fatalf("CheckURL(%s) = %v, want accepted", c.url, err)
			case c.detail != "" && (err == nil || !strings.Contains(err.Error(), c.detail)):
				t.Fatalf("CheckURL(%s) = %v, want a refusal saying %q", c.url, err, c.detail)
			}
			if err != nil && strings.Contains(err.Error(), u.Hostname()) && u.Hostname() != "" {
				t.Fatalf("the refusal repeats the host: %v", err)
			}
		})
	}
}

func TestParseNetworks(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want string // the prefixes joined by spaces; "" when refused
		err  string // a part of the error
	}{
		{"the example", "10.20.0.0/16,192.168.5.7/32", "10.20.0.0/16 192.168.5.7/32", ""},
		{"spaces and empty entries", " 10.20.0.0/16 , ,192.168.5.7/32, ", "10.20.0.0/16 192.168.5.7/32", ""},
		{"new lines", "10.20.0.0/16\n127.0.0.0/8", "10.20.0.0/16 127.0.0.0/8", ""},
		{"a single address", "192.168.5.7", "192.168.5.7/32", ""},
		{"a single IPv6 address", "fd00::7", "fd00::7/128", ""},
		{"an IPv6 network", "fd00:1::/64", "fd00:1::/64", ""},
		{"an IPv4-mapped network", "::ffff:10.0.0.0/104", "10.0.0.0/8", ""},
		{"an IPv4-mapped address", "::ffff:10.0.0.1", "10.0.0.1/32", ""},
		{"empty", "", "", ""},
		{"host bits set", "10.20.1.0/16", "", "entry 1 \"10.20.1.0/16\": has bits set past the prefix length; the network is 10.20.0.0/16"},
		{"not a network", "10.20.0.0/16,intranet", "", "entry 2 \"intranet\": want a network in CIDR form"},
		{"a bad length", "10.0.0.0/33", "", "entry 1"},
		{"a zone", "fe80::1%eth0", "", "entry 1"},
		{"the whole IPv4-mapped range", "::ffff:0:0/96", "0.0.0.0/0", ""},
		{"an IPv4-mapped prefix that is not a network", "::ffff:0:0/95", "", "bits set past the prefix length"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseNetworks(c.in)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("ParseNetworks(%q) = %v, %v; want an error saying %q", c.in, got, err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseNetworks(%q): %v", c.in, err)
			}
			var s []string
			for _, p := range got {
				s = append(s, p.String())
			}
			if strings.Join(s, " ") != c.want {
				t.Fatalf("ParseNetworks(%q) = %v, want %s", c.in, s, c.want)
			}
		})
	}
}

func TestCheckNetworksRefusesNetworksThatOpenEverything(t *testing.T) {
	cases := []struct {
		name string
		nets []netip.Prefix
		ok   bool
	}{
		{"hospital networks", prefixes("10.0.0.0/8", "192.168.5.7/32", "fc00::/7"), true},
		{"none", nil, true},
		{"every IPv4 address", prefixes("0.0.0.0/0"), false},
		{"half of them", prefixes("0.0.0.0/1"), false},
		{"every IPv6 address", prefixes("::/0"), false},
		{"an invalid prefix", []netip.Prefix{{}}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := CheckNetworks(c.nets); (err == nil) != c.ok {
				t.Fatalf("CheckNetworks(%v) = %v, want ok=%v", c.nets, err, c.ok)
			}
		})
	}
}

// FuzzParseNetworks: the operator's setting never panics the parser, and
// what it accepts is masked IPv4 or (not IPv4-mapped) IPv6 prefixes.
func FuzzParseNetworks(f *testing.F) {
	for _, s := range []string{"10.20.0.0/16,192.168.5.7/32", "fd00::/8 ::ffff:10.0.0.0/104", "1.2.3.4", "fe80::1%eth0/64", "10.0.0.0/33", ",,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		nets, err := ParseNetworks(s)
		if err != nil {
			return
		}
		for _, p := range nets {
			if !p.IsValid() || p != p.Masked() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
				t.Fatalf("ParseNetworks(%q) accepted %v", s, p)
			}
		}
	})
}

// FuzzCheckURL: no URL panics the check, and an accepted URL whose host
// is an IP literal is one the policy would connect to.
func FuzzCheckURL(f *testing.F) {
	for _, s := range []string{"https://ehr.example-clinic.org/h", "http://127.0.0.1:8080/h", "http://[::ffff:127.0.0.1]/",
		"http://[fe80::1%25eth0]/", "http://2130706433/", "http://localhost./", "http://0x7f.1/"} {
		f.Add(s)
	}
	p := Policy{Allow: prefixes("10.20.0.0/16")}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := url.Parse(raw)
		if err != nil {
			return
		}
		if p.CheckURL(u) != nil {
			return
		}
		host := strings.TrimSuffix(u.Hostname(), ".")
		if a, err := netip.ParseAddr(host); err == nil {
			if err := p.CheckAddr(a); err != nil {
				t.Fatalf("CheckURL accepted %q but its address is refused: %v", raw, err)
			}
		}
		if h := strings.ToLower(host); h == "localhost" || strings.HasSuffix(h, ".localhost") {
			t.Fatalf("CheckURL accepted %q", raw)
		}
	})
}
