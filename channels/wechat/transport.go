package wechat

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/silenceper/wechat/v2/util"
)

// How requests of this package reach the provider.
//
// silenceper/wechat keeps its HTTP plumbing in package-level state only:
// util.SetURIModifier and util.DefaultHTTPClient are globals, and the
// official-account message calls (Manager.Send, Template.Send) take no
// context. A global URI modifier cannot tell two Channels with different
// APIURLs apart, nor carry a Channel's Transport, the worker's context or a
// per-call timeout.
//
// The one per-instance hook the library offers is the access token handle:
// the token it returns is pasted verbatim into the request URI
// ("…/send?access_token=%s"). So each API call gets its own record here,
// and the token handed to the library carries the call's id as a URI
// fragment ("TOKEN#gw-wechat-call-42"). util.DefaultHTTPClient is replaced,
// once per process, by a client whose transport (dispatcher) finds the call
// by that fragment and lets the call's own transport take over: it points
// the request at the Channel's APIURL, binds it to the worker's context and
// timeout, sends it through the Channel's Transport, and keeps the HTTP
// status and the raw answer, whose errcode is parsed from JSON instead of
// from the library's formatted error text. Fragments are never sent on the
// wire, so the provider sees exactly the request the library built.
//
// Requests without such a fragment (other silenceper users in the process)
// go to http.DefaultTransport untouched, which is the library's default.
// If other code replaces util.DefaultHTTPClient afterwards, Send notices and
// refuses to send rather than reach the real API by accident.

const callFragmentPrefix = "gw-wechat-call-"

// maxCapturedBody bounds how much of an answer is kept for classification;
// WeChat's JSON answers are a few hundred bytes.
const maxCapturedBody = 64 << 10

var (
	installOnce sync.Once
	libClient   *http.Client
	inflight    sync.Map // fragment → *apiCall
	callSeq     atomic.Uint64
)

// installDispatcher routes silenceper's HTTP client through the dispatcher.
func installDispatcher() {
	installOnce.Do(func() {
		libClient = &http.Client{
			Transport: dispatcher{},
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
		util.DefaultHTTPClient = libClient
	})
}

// dispatcherInstalled reports whether silenceper still uses our client.
func dispatcherInstalled() bool { return util.DefaultHTTPClient == libClient }

var errNoDispatcher = errors.New("wechat: silenceper's util.DefaultHTTPClient was replaced by other code; refusing to send")

var errFinishedCall = errors.New("wechat: request of a call that has already finished")

type dispatcher struct{}

func (dispatcher) RoundTrip(req *http.Request) (*http.Response, error) {
	frag := req.URL.Fragment
	if !strings.HasPrefix(frag, callFragmentPrefix) {
		return http.DefaultTransport.RoundTrip(req)
	}
	v, ok := inflight.Load(frag)
	if !ok {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, errFinishedCall
	}
	return v.(*apiCall).roundTrip(req)
}

// apiCall is one HTTP exchange with the provider, made by the library.
type apiCall struct {
	id     string
	ctx    context.Context
	cancel context.CancelFunc
	base   http.RoundTripper
	target *url.URL // nil: leave the host alone

	// traced: the transport reports connection events; written: the
	// request was fully written. Trace callbacks may run on other goroutines.
	traced, written atomic.Bool

	mu       sync.Mutex
	sent     bool
	status   int
	body     []byte
	complete bool // the whole answer was read

	ctxErr error // the context's error when the call ended
}

// beginCall registers a call bound to ctx and timeout; end it with end().
func beginCall(ctx context.Context, base http.RoundTripper, target *url.URL, timeout time.Duration) *apiCall {
	c := &apiCall{id: callFragmentPrefix + strconv.FormatUint(callSeq.Add(1), 10), base: base, target: target}
	ctx, c.cancel = context.WithTimeout(ctx, timeout)
	c.ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GetConn: func(string) { c.traced.Store(true) },
		WroteRequest: func(i httptrace.WroteRequestInfo) {
			if i.Err == nil {
				c.written.Store(true)
			}
		},
	})
	inflight.Store(c.id, c)
	return c
}

// mark appends the call's fragment to a URI (or to a token pasted at the
// end of one).
func (c *apiCall) mark(s string) string { return s + "#" + c.id }

func (c *apiCall) end() {
	inflight.Delete(c.id)
	c.ctxErr = c.ctx.Err() // before cancel, which would make it Canceled
	c.cancel()
}

func (c *apiCall) roundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(c.ctx)
	r.URL.Fragment, r.URL.RawFragment = "", ""
	if c.target != nil {
		r.URL.Scheme = c.target.Scheme
		r.URL.Host = c.target.Host
		r.Host = c.target.Host
		if p := strings.TrimSuffix(c.target.Path, "/"); p != "" {
			r.URL.Path = p + r.URL.Path
			r.URL.RawPath = ""
		}
	}
	c.mu.Lock()
	c.sent = true
	c.mu.Unlock()
	resp, err := c.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.status = resp.StatusCode
	c.mu.Unlock()
	resp.Body = &capturedBody{rc: resp.Body, call: c}
	return resp, nil
}

// unconfirmed reports whether the request may have reached the provider:
// it was attempted, and the transport did not show that it never was
// written.
func (c *apiCall) unconfirmed() bool {
	c.mu.Lock()
	sent := c.sent
	c.mu.Unlock()
	return sent && (!c.traced.Load() || c.written.Load())
}

// answer returns the HTTP status and, when it was read to the end, the body.
func (c *apiCall) answer() (status int, body []byte, complete bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status, c.body, c.complete
}

type capturedBody struct {
	rc   io.ReadCloser
	call *apiCall
}

func (b *capturedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	c := b.call
	c.mu.Lock()
	if room := maxCapturedBody - len(c.body); room > 0 {
		c.body = append(c.body, p[:min(n, room)]...)
	}
	if errors.Is(err, io.EOF) {
		c.complete = true
	}
	c.mu.Unlock()
	return n, err
}

func (b *capturedBody) Close() error { return b.rc.Close() }

// scrubbed returns an error safe to keep: *url.Error repeats the request
// URI, which carries the access token or the app secret.
func scrubbed(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
