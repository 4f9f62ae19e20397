package email

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"syscall"
	"time"

	mail "github.com/wneessen/go-mail"
	"github.com/wneessen/go-mail/smtp"

	"github.com/patientmsg/gateway/channels"
)

// conn is one pooled SMTP connection: a go-mail Client dialled once and
// then used for many messages, by one sender at a time.
type conn struct {
	id        uint64
	mc        *mail.Client
	idleSince time.Time

	mu      sync.Mutex
	net     *trackedConn // set by the dial function
	aborted bool
}

// attach records the TCP connection the dial function opened; false when
// the send was already abandoned (the connection must then be closed).
func (c *conn) attach(tc *trackedConn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.aborted {
		return false
	}
	c.net = tc
	return true
}

// abort makes every pending and future read or write on the connection
// fail at once. go-mail's Send takes no context, so this is how a
// cancelled or expired context interrupts it; the connection is then
// poisoned and is discarded.
func (c *conn) abort() {
	c.mu.Lock()
	c.aborted = true
	nc := c.net
	c.mu.Unlock()
	if nc != nil {
		nc.abort()
	}
}

func (c *conn) wasAborted() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.aborted
}

// ioErr is the first read or write error on the connection, nil if none.
func (c *conn) ioErr() error {
	c.mu.Lock()
	nc := c.net
	c.mu.Unlock()
	if nc == nil {
		return nil
	}
	return nc.firstErr()
}

// send sends one message, interrupted if ctx ends first.
func (c *conn) send(ctx context.Context, msg *mail.Msg) error {
	stop := context.AfterFunc(ctx, c.abort)
	defer stop()
	return c.mc.Send(msg)
}

// reset sends RSET to check a connection is in a clean state after a
// refused message before it goes back to the pool.
func (c *conn) reset(ctx context.Context) bool {
	stop := context.AfterFunc(ctx, c.abort)
	defer stop()
	return c.mc.Reset() == nil && !c.wasAborted()
}

// drop closes the connection without a goodbye: it is broken or poisoned.
func (c *conn) drop() {
	c.mu.Lock()
	nc := c.net
	c.mu.Unlock()
	if nc != nil {
		_ = nc.Close()
	}
}

// quit says goodbye (QUIT) with a short deadline, then closes.
func (c *conn) quit() {
	c.mu.Lock()
	nc, aborted := c.net, c.aborted
	c.mu.Unlock()
	if nc == nil {
		return
	}
	if !aborted && c.mc != nil {
		_ = nc.SetDeadline(time.Now().Add(quitTimeout))
		_ = c.mc.Close()
	}
	_ = nc.Close()
}

// quitTimeout bounds the QUIT exchange when an idle connection is closed.
const quitTimeout = 2 * time.Second

// pastDeadline is a deadline that has passed: I/O fails immediately.
var pastDeadline = time.Unix(1, 0)

// trackedConn remembers the first I/O error (go-mail's SendError keeps no
// wrapped error, so this is how a timeout is told from a reset) and can be
// aborted: once aborted, no later SetDeadline (go-mail renews the deadline
// before each message) can revive it.
type trackedConn struct {
	net.Conn

	mu      sync.Mutex
	err     error
	aborted bool
}

func (t *trackedConn) Read(p []byte) (int, error) {
	n, err := t.Conn.Read(p)
	if err != nil {
		t.record(err)
	}
	return n, err
}

func (t *trackedConn) Write(p []byte) (int, error) {
	n, err := t.Conn.Write(p)
	if err != nil {
		t.record(err)
	}
	return n, err
}

func (t *trackedConn) record(err error) {
	t.mu.Lock()
	if t.err == nil {
		t.err = err
	}
	t.mu.Unlock()
}

func (t *trackedConn) firstErr() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

func (t *trackedConn) abort() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.aborted = true
	_ = t.Conn.SetDeadline(pastDeadline)
}

func (t *trackedConn) SetDeadline(d time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.aborted {
		d = pastDeadline
	}
	return t.Conn.SetDeadline(d)
}

func (t *trackedConn) SetReadDeadline(d time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.aborted {
		d = pastDeadline
	}
	return t.Conn.SetReadDeadline(d)
}

func (t *trackedConn) SetWriteDeadline(d time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.aborted {
		d = pastDeadline
	}
	return t.Conn.SetWriteDeadline(d)
}

// loopbackOnly is the dialer's Control hook for smtp+insecure://: the
// resolved address must be loopback, so a "localhost" that resolves
// elsewhere is refused too.
func loopbackOnly(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		return errNotLoopback
	}
	return nil
}

// authChooser picks the AUTH mechanism among those the server offers
// (after STARTTLS, so the list cannot be tampered with), preferring the
// most widely supported: PLAIN, LOGIN, then SCRAM-SHA-256 and CRAM-MD5.
// go-mail's own discovery assumes go-mail dialled the TLS connection,
// which it does not here. One chooser serves one connection.
type authChooser struct {
	user, pass, host string
	plainText        bool // smtp+insecure:// to loopback only
	chosen           smtp.Auth
}

// errNoAuthMechanism is returned when credentials are configured but the
// server offers no mechanism the channel speaks (or no AUTH at all).
var errNoAuthMechanism = errors.New("the SMTP server offers no supported AUTH mechanism (PLAIN, LOGIN, SCRAM-SHA-256, CRAM-MD5)")

func (a *authChooser) Start(si *smtp.ServerInfo) (string, []byte, error) {
	offered := map[string]bool{}
	for _, m := range si.Auth {
		offered[m] = true
	}
	switch {
	case offered["PLAIN"]:
		a.chosen = smtp.PlainAuth("", a.user, a.pass, a.host, a.plainText)
	case offered["LOGIN"]:
		a.chosen = smtp.LoginAuth(a.user, a.pass, a.host, a.plainText)
	case offered["SCRAM-SHA-256"]:
		a.chosen = smtp.ScramSHA256Auth(a.user, a.pass)
	case offered["CRAM-MD5"]:
		a.chosen = smtp.CRAMMD5Auth(a.user, a.pass)
	default:
		return "", nil, errNoAuthMechanism
	}
	return a.chosen.Start(si)
}

func (a *authChooser) Next(fromServer []byte, more bool) ([]byte, error) {
	if a.chosen == nil {
		return nil, errNoAuthMechanism
	}
	return a.chosen.Next(fromServer, more)
}

// pool keeps at most size connections open: idle ones on a stack (the most
// recently used is reused first, so surplus ones age out), busy ones with
// their senders. A sender holds a slot while it has a connection.
type pool struct {
	dial        func(ctx context.Context) (*conn, *channels.SendError)
	idleTimeout time.Duration
	slots       chan struct{}
	done        chan struct{}
	janitorDone chan struct{}

	mu     sync.Mutex
	idle   []*conn
	closed bool
}

func newPool(size int, idleTimeout time.Duration, dial func(ctx context.Context) (*conn, *channels.SendError)) *pool {
	p := &pool{dial: dial, idleTimeout: idleTimeout, slots: make(chan struct{}, size),
		done: make(chan struct{}), janitorDone: make(chan struct{})}
	go p.janitor()
	return p
}

// errClosed is the failure of a send after Close.
func errClosed() *channels.SendError {
	return &channels.SendError{Class: channels.Retryable, Code: CodeClosed, Message: "the email channel is shut down"}
}

// get returns a connection: an idle one unless fresh is set, otherwise a
// new one. reused tells which.
func (p *pool) get(ctx context.Context, fresh bool) (c *conn, reused bool, se *channels.SendError) {
	select {
	case p.slots <- struct{}{}:
	case <-p.done:
		return nil, false, errClosed()
	case <-ctx.Done():
		return nil, false, ctxError(ctx, false, "waiting for a free SMTP connection")
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.slots
		return nil, false, errClosed()
	}
	var stale []*conn
	if fresh && len(p.idle) > 0 {
		// The new connection replaces the oldest idle one, so the pool
		// never holds more than its size.
		stale = append(stale, p.idle[0])
		p.idle = slices.Delete(p.idle, 0, 1)
	}
	for !fresh && len(p.idle) > 0 {
		c = p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if time.Since(c.idleSince) < p.idleTimeout {
			break
		}
		stale, c = append(stale, c), nil
	}
	p.mu.Unlock()
	for _, s := range stale {
		go s.quit()
	}
	if c != nil {
		return c, true, nil
	}
	c, se = p.dial(ctx)
	if se != nil {
		<-p.slots
		return nil, false, se
	}
	return c, false, nil
}

// release gives a connection back: to the idle stack when keep is set and
// the pool is open, closed otherwise.
func (p *pool) release(c *conn, keep bool) {
	p.mu.Lock()
	if keep && !p.closed {
		c.idleSince = time.Now()
		p.idle = append(p.idle, c)
		p.mu.Unlock()
		<-p.slots
		return
	}
	closed := p.closed
	p.mu.Unlock()
	<-p.slots
	if keep && closed {
		c.quit()
		return
	}
	c.drop()
}

// janitor closes connections idle for longer than idleTimeout.
func (p *pool) janitor() {
	defer close(p.janitorDone)
	t := time.NewTicker(max(p.idleTimeout/2, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-t.C:
		}
		p.mu.Lock()
		var stale []*conn
		kept := p.idle[:0]
		for _, c := range p.idle {
			if time.Since(c.idleSince) >= p.idleTimeout {
				stale = append(stale, c)
			} else {
				kept = append(kept, c)
			}
		}
		clear(p.idle[len(kept):])
		p.idle = kept
		p.mu.Unlock()
		for _, c := range stale {
			c.quit()
		}
	}
}

// close closes the idle connections and stops pooling: busy ones are
// closed when their senders release them.
func (p *pool) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	close(p.done)
	<-p.janitorDone
	var wg sync.WaitGroup
	for _, c := range idle {
		wg.Go(c.quit)
	}
	wg.Wait()
}
