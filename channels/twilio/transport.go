package twilio

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// callTransport is built for one API call: it points twilio-go (whose base
// URL is fixed) at the configured API host, binds the call to the worker's
// context (twilio-go takes none), and keeps what twilio-go's error type
// drops: the HTTP status and Retry-After.
type callTransport struct {
	base   http.RoundTripper
	target *url.URL // nil: leave the host alone
	ctx    context.Context

	status     int
	retryAfter time.Duration
	wrote      bool
}

func (t *callTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(t.ctx)
	if t.target != nil {
		r.URL.Scheme = t.target.Scheme
		r.URL.Host = t.target.Host
		r.Host = t.target.Host
	}
	t.wrote = true
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	t.status = resp.StatusCode
	t.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	return resp, nil
}

// parseRetryAfter reads delay-seconds or an HTTP date; 0 when absent or bad.
// It is capped at one hour so a bad header cannot park a message for days.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.Atoi(v); err == nil {
		d = time.Duration(n) * time.Second
	} else if at, err := http.ParseTime(v); err == nil {
		d = at.Sub(now)
	}
	if d < 0 {
		return 0
	}
	return min(d, time.Hour)
}
