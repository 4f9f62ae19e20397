package egress

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// receiver is a loopback HTTP server that counts the connections it was
// ever offered (accepted TCP connections, before any request).
type receiver struct {
	srv   *httptest.Server
	conns atomic.Int64
	port  int
}

func listen(t *testing.T, addr string, h http.Handler) *receiver {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s here: %v", addr, err)
	}
	if h == nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	}
	r := &receiver{srv: httptest.NewUnstartedServer(h)}
	_ = r.srv.Listener.Close()
	r.srv.Listener = ln
	r.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			r.conns.Add(1)
		}
	}
	r.srv.Start()
	t.Cleanup(r.srv.Close)
	r.port = ln.Addr().(*net.TCPAddr).Port
	return r
}

// seen is how many connections reached the receiver, after a moment for
// any in flight to be accepted.
func (r *receiver) seen() int64 {
	time.Sleep(50 * time.Millisecond)
	return r.conns.Load()
}

func post(c *http.Client, rawURL string) (*http.Response, error) {
	resp, err := c.Post(rawURL, "application/json", strings.NewReader(`{"id":"evt"}`))
	if err == nil {
		resp.Body.Close()
	}
	return resp, err
}

func prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}

// Addresses this machine reaches on loopback are posted to for real: the
// receiver would see the connection, and sees none unless allowed.
func TestLoopbackInAnyFormIsRefusedAtConnectWithNoPacketSent(t *testing.T) {
	cases := []struct {
		name   string
		listen string
		url    string // %d is the receiver's port
		allow  []netip.Prefix
	}{
		{"127.0.0.1", "127.0.0.1:0", "http://127.0.0.1:%d/hook", prefixes("127.0.0.0/8")},
		{"another 127/8 address", "127.0.0.2:0", "http://127.0.0.2:%d/hook", prefixes("127.0.0.0/8")},
		{"0.0.0.0 (this host)", "127.0.0.1:0", "http://0.0.0.0:%d/hook", nil},
		{"[::1]", "[::1]:0", "http://[::1]:%d/hook", prefixes("::1/128")},
		{"IPv4-mapped ::ffff:127.0.0.1", "127.0.0.1:0", "http://[::ffff:127.0.0.1]:%d/hook", prefixes("127.0.0.0/8")},
		{"localhost, resolved at connect time", "127.0.0.1:0", "http://localhost:%d/hook", prefixes("127.0.0.0/8")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := listen(t, c.listen, nil)
			target := strings.Replace(c.url, "%d", strconv.Itoa(r.port), 1)
			_, err := post(Policy{}.Client(5*time.Second), target)
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("POST %s = %v, want a refusal", target, err)
			}
			if n := r.seen(); n != 0 {
				t.Fatalf("the receiver saw %d connections; a refused address must see none", n)
			}
			if got := Reason(err); !strings.HasPrefix(got, "refused: private address (") || strings.Contains(got, strconv.Itoa(r.port)) {
				t.Fatalf("Reason = %q: want the refusal without the address", got)
			}
			if c.allow == nil {
				return // never allowed
			}
			// The same URL with the network allowed reaches the receiver:
			// the refusal above was the policy's, not the network's.
			resp, err := post(Policy{Allow: c.allow}.Client(5*time.Second), target)
			if err != nil || resp.StatusCode != http.StatusNoContent {
				t.Fatalf("with %v allowed: %v %v", c.allow, resp, err)
			}
			if n := r.seen(); n != 1 {
				t.Fatalf("with the network allowed the receiver saw %d connections, want 1", n)
			}
		})
	}
}

// standIn is a Control hook for addresses a test cannot reach: the socket
// goes to the loopback receiver (test traffic stays on 127.0.0.0/8), and
// the policy judges it as if it went to pretend, at the same moment (after
// DNS, before the connection's first packet).
func standIn(t *testing.T, p Policy, pretend netip.Addr) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil || !ap.Addr().IsLoopback() {
			t.Errorf("the test dialled %s; only loopback is allowed", address)
			return errors.New("test: not loopback")
		}
		return p.Control(network, netip.AddrPortFrom(pretend, ap.Port()).String(), c)
	}
}

func TestInnerNetworksAreRefusedAtConnectUnlessAllowed(t *testing.T) {
	cases := []struct {
		name    string
		pretend string
		allow   []netip.Prefix
	}{
		{"cloud metadata 169.254.169.254", "169.254.169.254", prefixes("169.254.169.254/32")},
		{"RFC 1918 10.x", "10.0.0.5", prefixes("10.0.0.0/8")},
		{"RFC 1918 172.16.x", "172.16.9.9", prefixes("172.16.0.0/12")},
		{"RFC 1918 192.168.x", "192.168.1.20", prefixes("192.168.1.20/32")},
		{"carrier-grade NAT 100.64.x", "100.64.0.7", prefixes("100.64.0.0/10")},
		{"unique local fc00::", "fc00::1", prefixes("fc00::/7")},
		{"IPv6 link-local fe80::", "fe80::1", prefixes("fe80::/10")},
		{"IPv4-mapped private ::ffff:10.0.0.5", "::ffff:10.0.0.5", prefixes("10.0.0.0/8")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := listen(t, "127.0.0.1:0", nil)
			target := "http://127.0.0.1:" + strconv.Itoa(r.port) + "/hook?token=s3cret"
			pretend := netip.MustParseAddr(c.pretend)

			_, err := post(newClient(newTransport(standIn(t, Policy{}, pretend)), 5*time.Second), target)
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("POST = %v, want a refusal", err)
			}
			if n := r.seen(); n != 0 {
				t.Fatalf("the receiver saw %d connections; a refused address must see none", n)
			}
			if got := Reason(err); strings.Contains(got, "s3cret") || strings.Contains(got, c.pretend) || !strings.HasPrefix(got, "refused: private address") {
				t.Fatalf("Reason = %q", got)
			}

			allowed := Policy{Allow: c.allow}
			resp, err := post(newClient(newTransport(standIn(t, allowed, pretend)), 5*time.Second), target)
			if err != nil || resp.StatusCode != http.StatusNoContent {
				t.Fatalf("with %v allowed: %v %v", c.allow, resp, err)
			}
			if n := r.seen(); n != 1 {
				t.Fatalf("with the network allowed the receiver saw %d connections, want 1", n)
			}
		})
	}
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	for _, code := range []int{301, 302, 303, 307, 308} {
		t.Run(http.StatusText(code), func(t *testing.T) {
			inner := listen(t, "127.0.0.1:0", nil)
			to := "http://127.0.0.1:" + strconv.Itoa(inner.port) + "/admin"
			first := listen(t, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, to, code)
			}))
			c := Policy{Allow: prefixes("127.0.0.0/8")}.Client(5 * time.Second)
			resp, err := post(c, "http://127.0.0.1:"+strconv.Itoa(first.port)+"/hook")
			if err != nil || resp.StatusCode != code {
				t.Fatalf("POST = %v %v, want the %d itself", resp, err, code)
			}
			if n := inner.seen(); n != 0 {
				t.Fatalf("the redirect target saw %d connections", n)
			}
		})
	}
}

func TestAProxyFromTheEnvironmentIsNotUsed(t *testing.T) {
	proxy := listen(t, "127.0.0.1:0", nil)
	t.Setenv("HTTP_PROXY", "http://127.0.0.1:"+strconv.Itoa(proxy.port))
	t.Setenv("http_proxy", "http://127.0.0.1:"+strconv.Itoa(proxy.port))
	t.Setenv("NO_PROXY", "")
	t.Setenv("no_proxy", "")
	ep := listen(t, "127.0.0.1:0", nil)
	// A name, so that ProxyFromEnvironment's loopback exemption does not apply.
	resp, err := post(Policy{Allow: prefixes("127.0.0.0/8")}.Client(5*time.Second), "http://localhost:"+strconv.Itoa(ep.port)+"/hook")
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("POST = %v %v", resp, err)
	}
	if proxy.seen() != 0 || ep.seen() != 1 {
		t.Fatalf("proxy saw %d, endpoint %d: want 0 and 1", proxy.seen(), ep.seen())
	}
}

func TestReasonTellsWhatWentWrongWithoutTheURLOrTheAddress(t *testing.T) {
	refused := &url.Error{Op: "Post", URL: "http://in.example/h?token=s3cret",
		Err: &net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 80}, Err: &RefusedError{Kind: "RFC 1918"}}}
	connRefused := &url.Error{Op: "Post", URL: "http://x.example/h?token=s3cret",
		Err: &net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(203, 0, 113, 5), Port: 80}, Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}}}
	dns := &url.Error{Op: "Post", URL: "http://nx.example/h?token=s3cret",
		Err: &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "nx.example", Server: "10.0.0.2:53", IsNotFound: true}}}
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"a refused connection", refused, "refused: private address (RFC 1918)"},
		{"a refused connection, wrapped", errors.Join(errors.New("post"), refused), "refused: private address (RFC 1918)"},
		{"a closed port", connRefused, "could not connect: connection refused"},
		{"an unknown name", dns, "could not resolve the host name: no such host"},
		{"a timeout", &url.Error{Op: "Post", URL: "http://x.example/?token=s3cret", Err: timeoutError{}}, "timed out"},
		{"anything else", &url.Error{Op: "Post", URL: "http://x.example/?token=s3cret", Err: errors.New("tls: bad certificate")}, "tls: bad certificate"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Reason(c.err); got != c.want {
				t.Fatalf("Reason = %q, want %q", got, c.want)
			}
		})
	}
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }
