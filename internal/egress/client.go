package egress

import (
	"errors"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"syscall"
	"time"
)

// Control is a net.Dialer Control hook: it runs after DNS, for each
// address about to be connected to, and refuses (*RefusedError) those the
// policy does not allow, before the connection's first packet.
func (p Policy) Control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &RefusedError{Kind: "unparsable"} // fail closed
	}
	return p.CheckAddr(ap.Addr())
}

// Transport is an HTTP transport that connects only where the policy
// allows. It never uses a proxy (HTTP_PROXY and the like): a proxy would
// resolve the name and connect on the gateway's behalf, out of the check's
// reach.
func (p Policy) Transport() *http.Transport { return newTransport(p.Control) }

func newTransport(control func(network, address string, c syscall.RawConn) error) *http.Transport {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: control}
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
	}
}

// Client is the HTTP client for tenants' URLs: Transport's connections,
// and redirects not followed (a 3xx answer is returned as it is, for the
// caller to count as a failure), each request bounded by timeout.
func (p Policy) Client(timeout time.Duration) *http.Client {
	return newClient(p.Transport(), timeout)
}

func newClient(tr http.RoundTripper, timeout time.Duration) *http.Client {
	return &http.Client{Transport: tr, Timeout: timeout, CheckRedirect: NoRedirects}
}

// NoRedirects is an http.Client CheckRedirect that hands back the 3xx
// answer instead of following it: a redirect would carry a signed event
// to a URL nobody registered, possibly inward.
func NoRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// Reason is the text of a failed request that may be shown to the tenant
// (a dead letter) and logged: the refusal when the policy refused the
// connection; else what went wrong, without the URL (its query may hold a
// secret), the address connected to or the gateway's DNS server.
func Reason(err error) string {
	var refused *RefusedError
	if errors.As(err, &refused) {
		return refused.Error()
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		if dns.IsNotFound {
			return "could not resolve the host name: no such host"
		}
		if dns.IsTimeout {
			return "could not resolve the host name: timed out"
		}
		return "could not resolve the host name"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timed out"
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		var errno syscall.Errno
		if errors.As(op.Err, &errno) {
			return "could not connect: " + errno.Error()
		}
		return "could not connect"
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}
