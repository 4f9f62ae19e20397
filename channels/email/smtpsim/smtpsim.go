// Package smtpsim is an in-process SMTP submission server for tests and the
// gateway's dev mode. It is a real SMTP server (emersion/go-smtp) on a
// loopback port, so the email channel's real client (wneessen/go-mail)
// talks to it end to end: EHLO, optional STARTTLS (or implicit TLS) with a
// certificate generated in memory, optional AUTH PLAIN, many messages per
// connection with RSET between them.
//
// It records what it received (envelope, raw MIME, parsed headers, decoded
// text and HTML parts, time; MessagesTo lists one recipient's), counts TCP connections, and can be scripted to
// refuse a greeting, a sender, a recipient or a message with a chosen reply
// code, or to go silent. Like a real MTA it offers DSN (RFC 3461; not with
// Options.NoDSN), refuses unknown mailboxes at RCPT TO (550 5.1.1) and,
// for mailboxes set to bounce, accepts the message and then sends a
// delivery status notification (RFC 3464) to its envelope sender; for any
// other mailbox whose RCPT TO asked NOTIFY=SUCCESS it sends a success
// notification (Action: delivered, 2.0.0) the same way. It can also send a
// scripted abuse report (ARF) and a scripted reply (SetMailbox, Complain,
// Reply). It listens on 127.0.0.1 only and dials out only to
// Options.ReturnMTA, a loopback address.
// It logs ids and sizes, never addresses or message content.
package smtpsim

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Stage is the point of an SMTP session a Fault applies to.
type Stage int

// Stages a Fault can target.
const (
	// AtConnect answers a new connection's greeting with the fault's code
	// (421, 554) and closes it; with Hang the connection is accepted and
	// never greeted.
	AtConnect Stage = iota + 1
	// AtMail answers MAIL FROM.
	AtMail
	// AtRcpt answers RCPT TO.
	AtRcpt
	// AtData answers the end of the message content (after the final dot),
	// so the content was transferred but is not accepted.
	AtData
)

func (s Stage) String() string {
	switch s {
	case AtConnect:
		return "connect"
	case AtMail:
		return "mail"
	case AtRcpt:
		return "rcpt"
	case AtData:
		return "data"
	}
	return "stage(" + strconv.Itoa(int(s)) + ")"
}

// Fault is one scripted failure. Each fault is used once, by the next
// session that reaches its stage.
type Fault struct {
	At Stage
	// Code is the SMTP reply code (421, 451, 550, 554...).
	Code int
	// Message is the reply text; a default is used when empty.
	Message string
	// Hang answers nothing until the client gives up or the server closes.
	Hang bool
}

// Options configures a Server. The zero value is a plain server without
// TLS or authentication.
type Options struct {
	// Username and Password, when set, offer AUTH PLAIN and require it
	// before MAIL FROM (530 otherwise); wrong credentials get 535.
	Username, Password string
	// TLS offers STARTTLS with a self-signed certificate for 127.0.0.1,
	// ::1 and localhost, generated in memory (see ClientTLSConfig).
	TLS bool
	// ImplicitTLS speaks TLS from the first byte (smtps://, port 465
	// style) with the same kind of certificate, instead of STARTTLS.
	ImplicitTLS bool
	// NoDSN leaves DSN (RFC 3461) out of the EHLO answer, as a relay
	// without it: a client then sends no NOTIFY or RET (and one that did
	// would be refused with 504), and no success notification is sent.
	NoDSN bool
	// ReturnMTA is the loopback host:port of the mail exchanger that
	// notifications, complaints and replies are sent to (the gateway's
	// inbound listener); without it they cannot be sent.
	ReturnMTA string
	// Logger receives debug records (connection and message counts, sizes,
	// Message-IDs; never addresses or content). Nil discards them.
	Logger *slog.Logger
}

// Received is one message the server accepted.
type Received struct {
	// From is the envelope sender (MAIL FROM).
	From string
	// To are the envelope recipients (RCPT TO).
	To []string
	// Notify is what each recipient of To asked by RCPT TO's NOTIFY
	// ("SUCCESS,FAILURE,DELAY", "NEVER"), "" where it asked nothing.
	Notify []string
	// Ret is MAIL FROM's RET ("HDRS", "FULL"), "" when not given.
	Ret string
	// Raw is the message exactly as transferred (CRLF line ends).
	Raw []byte
	// Header is the parsed top-level header; nil when Raw did not parse.
	Header mail.Header
	// Subject is the Subject header with RFC 2047 words decoded.
	Subject string
	// ContentType is the top-level media type ("text/plain",
	// "multipart/alternative").
	ContentType string
	// Text and HTML are the decoded text/plain and text/html parts
	// (the first of each).
	Text, HTML string
	// Parts lists the media types of the leaf parts in order.
	Parts []string
	// ParseErr says why Raw could not be fully parsed; empty when it could.
	ParseErr string
	// Conn numbers the TCP connection that carried the message (1 is the
	// first the server accepted).
	Conn int
	// TLS reports whether the message arrived over TLS.
	TLS bool
	// User is the authenticated user name, empty without AUTH.
	User string
	// At is when the server accepted the message.
	At time.Time
}

// Server is a running SMTP simulator. All methods are safe for concurrent
// use.
type Server struct {
	opts     Options
	ln       *countingListener
	srv      *smtp.Server
	cert     *x509.Certificate
	log      *slog.Logger
	closing  chan struct{}
	served   chan struct{}
	closeErr error
	once     sync.Once

	mu       sync.Mutex
	script   []Fault
	messages []Received
	arrived  chan struct{} // closed and replaced whenever a message arrives
	accepted int
	open     map[*trackedConn]struct{}
	held     []net.Conn // accepted and left silent (AtConnect Hang)
	// mailboxes are the addresses set with SetMailbox; sent is what was
	// sent to the ReturnMTA.
	mailboxes map[string]Mailbox
	sent      []Sent
}

// New starts a simulator on 127.0.0.1 with an ephemeral port. It panics if
// it cannot listen or make its certificate, like httptest.NewServer. Call
// Close when done.
func New(opts Options) *Server {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("smtpsim: listen on loopback: %v", err))
	}
	s := &Server{
		opts:    opts,
		log:     opts.Logger,
		closing: make(chan struct{}),
		served:  make(chan struct{}),
		arrived: make(chan struct{}),
		open:    map[*trackedConn]struct{}{},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("comp", "smtpsim")
	s.ln = &countingListener{Listener: l, s: s}

	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Domain = "smtpsim.localhost"
	srv.MaxMessageBytes = 25 << 20
	srv.MaxRecipients = 100
	srv.EnableSMTPUTF8 = true
	srv.EnableDSN = !opts.NoDSN
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	srv.ErrorLog = slogPrinter{s.log}
	if opts.TLS || opts.ImplicitTLS {
		cert, tlsCert, err := selfSigned()
		if err != nil {
			l.Close()
			panic(fmt.Sprintf("smtpsim: certificate: %v", err))
		}
		s.cert = cert
		tlsCfg := &tls.Config{Certificates: []tls.Certificate{tlsCert}, MinVersion: tls.VersionTLS12}
		if opts.ImplicitTLS {
			s.ln.tls = tlsCfg
		} else {
			srv.TLSConfig = tlsCfg
		}
	} else {
		// Plain-text AUTH is acceptable here: the listener is loopback only.
		srv.AllowInsecureAuth = true
	}
	s.srv = srv
	go func() {
		defer close(s.served)
		_ = srv.Serve(s.ln)
	}()
	return s
}

// Addr is the host:port the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is an SMTP_URL the email channel accepts to reach this server:
// smtps:// with Options.ImplicitTLS, smtp:// (STARTTLS) with Options.TLS,
// smtp+insecure:// otherwise, with the credentials when Options has them.
// With TLS the client must trust ClientTLSConfig's root.
func (s *Server) URL() string {
	u := url.URL{Scheme: "smtp+insecure", Host: s.Addr()}
	switch {
	case s.opts.ImplicitTLS:
		u.Scheme = "smtps"
	case s.opts.TLS:
		u.Scheme = "smtp"
	}
	if s.opts.Username != "" {
		u.User = url.UserPassword(s.opts.Username, s.opts.Password)
	}
	return u.String()
}

// ClientTLSConfig is a client configuration trusting the server's
// certificate (nil without Options.TLS).
func (s *Server) ClientTLSConfig() *tls.Config {
	if s.cert == nil {
		return nil
	}
	pool := x509.NewCertPool()
	pool.AddCert(s.cert)
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// Script queues faults; each is used by the next session reaching its
// stage, in order.
func (s *Server) Script(faults ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.script = append(s.script, faults...)
}

// Reject makes the next RCPT TO fail with code and msg.
func (s *Server) Reject(rcptCode int, msg string) {
	s.Script(Fault{At: AtRcpt, Code: rcptCode, Message: msg})
}

// Messages returns a copy of the messages accepted so far, in order.
func (s *Server) Messages() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Received(nil), s.messages...)
}

// MessagesTo returns a copy of the messages accepted for the envelope
// recipient addr (RCPT TO, compared without regard to case), in order.
func (s *Server) MessagesTo(addr string) []Received {
	addr = strings.TrimSpace(addr)
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Received
	for _, m := range s.messages {
		if slices.ContainsFunc(m.To, func(to string) bool { return strings.EqualFold(to, addr) }) {
			out = append(out, m)
		}
	}
	return out
}

// WaitFor waits until at least n messages were accepted, or timeout. It
// returns the messages accepted so far, and an error when there are fewer
// than n.
func (s *Server) WaitFor(n int, timeout time.Duration) ([]Received, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		got := append([]Received(nil), s.messages...)
		arrived := s.arrived
		s.mu.Unlock()
		if len(got) >= n {
			return got, nil
		}
		select {
		case <-arrived:
		case <-deadline.C:
			return got, fmt.Errorf("smtpsim: %d messages after %s, want %d", len(got), timeout, n)
		case <-s.closing:
			return got, errors.New("smtpsim: server closed")
		}
	}
}

// Connections is how many TCP connections the server has accepted.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

// Open is how many connections are open right now.
func (s *Server) Open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.open) + len(s.held)
}

// DropConnections closes every open connection from the server side, as a
// server restart or an idle timeout would, without answering.
func (s *Server) DropConnections() {
	s.mu.Lock()
	conns := make([]net.Conn, 0, len(s.open)+len(s.held))
	for c := range s.open {
		conns = append(conns, c)
	}
	conns = append(conns, s.held...)
	s.held = nil
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// Close stops the server and closes every connection.
func (s *Server) Close() error {
	s.once.Do(func() {
		close(s.closing)
		s.closeErr = s.srv.Close()
		// Serve may not have registered the listener with go-smtp yet.
		_ = s.ln.Close()
		s.DropConnections()
		<-s.served
	})
	return s.closeErr
}

// nextFault takes the first scripted fault for stage, if any.
func (s *Server) nextFault(stage Stage) (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.script {
		if f.At == stage {
			s.script = append(s.script[:i], s.script[i+1:]...)
			return f, true
		}
	}
	return Fault{}, false
}

// hang blocks until the server closes.
func (s *Server) hang() { <-s.closing }

// err is the fault as go-smtp's error. A Message starting with an enhanced
// status code ("5.1.1 no such user") sends that code; otherwise go-smtp
// adds X.0.0.
func (f Fault) err() error {
	msg := f.Message
	if msg == "" {
		msg = "scripted failure at " + f.At.String()
	}
	enh := smtp.EnhancedCodeNotSet
	if first, rest, ok := strings.Cut(msg, " "); ok {
		if parts := strings.Split(first, "."); len(parts) == 3 {
			var code smtp.EnhancedCode
			valid := true
			for i, p := range parts {
				n, err := strconv.Atoi(p)
				valid = valid && err == nil && n >= 0 && n < 1000
				code[i] = n
			}
			if valid && code[0] == f.Code/100 {
				enh, msg = code, rest
			}
		}
	}
	return &smtp.SMTPError{Code: f.Code, EnhancedCode: enh, Message: msg}
}

// countingListener counts and tracks accepted connections and serves
// AtConnect faults before go-smtp sees the connection.
type countingListener struct {
	net.Listener
	s   *Server
	tls *tls.Config // implicit TLS, nil otherwise
}

func (l *countingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		s := l.s
		s.mu.Lock()
		s.accepted++
		id := s.accepted
		s.mu.Unlock()
		s.log.Debug("connection accepted", "conn", id)
		if f, ok := s.nextFault(AtConnect); ok {
			if f.Hang {
				s.mu.Lock()
				s.held = append(s.held, c)
				s.mu.Unlock()
				continue
			}
			msg := f.Message
			if msg == "" {
				msg = "scripted failure at connect"
			}
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = fmt.Fprintf(c, "%d %s\r\n", f.Code, msg)
			_ = c.Close()
			continue
		}
		tc := &trackedConn{Conn: c, s: s, id: id}
		s.mu.Lock()
		s.open[tc] = struct{}{}
		s.mu.Unlock()
		if l.tls != nil {
			// go-smtp runs the handshake itself for a *tls.Conn.
			return tls.Server(tc, l.tls), nil
		}
		return tc, nil
	}
}

// trackedConn removes itself from the open set when closed.
type trackedConn struct {
	net.Conn
	s    *Server
	id   int
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.open, c)
		c.s.mu.Unlock()
	})
	return c.Conn.Close()
}

// session is one SMTP session (one per connection; go-smtp resets it
// between messages).
type session struct {
	s      *Server
	conn   *smtp.Conn
	connID int
	user   string
	from   string
	ret    string
	to     []string
	notify []string
}

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	id := 0
	raw := c.Conn()
	if tc, ok := raw.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	if tc, ok := raw.(*trackedConn); ok {
		id = tc.id
	}
	return &session{s: s, conn: c, connID: id}, nil
}

// AuthMechanisms offers PLAIN when the server has credentials.
func (ss *session) AuthMechanisms() []string {
	if ss.s.opts.Username == "" {
		return nil
	}
	return []string{sasl.Plain}
}

// Auth checks PLAIN credentials.
func (ss *session) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain || ss.s.opts.Username == "" {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(_, username, password string) error {
		if username != ss.s.opts.Username || password != ss.s.opts.Password {
			ss.s.log.Debug("authentication failed", "conn", ss.connID)
			return smtp.ErrAuthFailed
		}
		ss.user = username
		return nil
	}), nil
}

func (ss *session) Mail(from string, opts *smtp.MailOptions) error {
	if ss.s.opts.Username != "" && ss.user == "" {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	}
	if f, ok := ss.s.nextFault(AtMail); ok {
		if f.Hang {
			ss.s.hang()
		}
		return f.err()
	}
	ss.from = from
	if opts != nil {
		ss.ret = string(opts.Return)
	}
	return nil
}

func (ss *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if f, ok := ss.s.nextFault(AtRcpt); ok {
		if f.Hang {
			ss.s.hang()
		}
		return f.err()
	}
	if ss.s.mailbox(to).Unknown {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "Recipient address rejected: User unknown"}
	}
	notify := ""
	if opts != nil {
		words := make([]string, len(opts.Notify))
		for i, n := range opts.Notify {
			words[i] = string(n)
		}
		notify = strings.Join(words, ",")
	}
	ss.to = append(ss.to, to)
	ss.notify = append(ss.notify, notify)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if f, ok := ss.s.nextFault(AtData); ok {
		if f.Hang {
			ss.s.hang()
		}
		return f.err()
	}
	_, isTLS := ss.conn.TLSConnectionState()
	rec := Received{From: ss.from, To: append([]string(nil), ss.to...), Notify: append([]string(nil), ss.notify...), Ret: ss.ret,
		Raw: raw, Conn: ss.connID, TLS: isTLS, User: ss.user, At: time.Now()}
	parse(&rec)
	s := ss.s
	s.mu.Lock()
	s.messages = append(s.messages, rec)
	n := len(s.messages)
	close(s.arrived)
	s.arrived = make(chan struct{})
	s.mu.Unlock()
	var msgID string
	if rec.Header != nil {
		msgID = rec.Header.Get("Message-Id")
	}
	s.log.Debug("message accepted", "conn", ss.connID, "n", n, "bytes", len(raw), "message_id", msgID)
	for i, to := range rec.To {
		s.reportLater(rec, to, rec.Notify[i], s.mailbox(to))
	}
	return nil
}

func (ss *session) Reset() {
	ss.from, ss.ret = "", ""
	ss.to, ss.notify = nil, nil
}

func (ss *session) Logout() error { return nil }

// parse fills the parsed fields of rec from rec.Raw.
func parse(rec *Received) {
	m, err := mail.ReadMessage(bytes.NewReader(rec.Raw))
	if err != nil {
		rec.ParseErr = err.Error()
		return
	}
	rec.Header = m.Header
	dec := &mime.WordDecoder{}
	if subj, err := dec.DecodeHeader(m.Header.Get("Subject")); err == nil {
		rec.Subject = subj
	} else {
		rec.ParseErr = "subject: " + err.Error()
	}
	ct := m.Header.Get("Content-Type")
	if ct == "" {
		ct = "text/plain"
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		rec.ParseErr = "content-type: " + err.Error()
		return
	}
	rec.ContentType = mt
	if err := walk(rec, ct, m.Header.Get("Content-Transfer-Encoding"), m.Body, 0); err != nil {
		rec.ParseErr = err.Error()
	}
}

// walk decodes one MIME entity, descending into multiparts.
func walk(rec *Received, contentType, cte string, body io.Reader, depth int) error {
	if depth > 10 {
		return errors.New("multipart nesting too deep")
	}
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return fmt.Errorf("content-type: %w", err)
	}
	if strings.HasPrefix(mt, "multipart/") {
		mr := multipart.NewReader(body, params["boundary"])
		for {
			p, err := mr.NextRawPart()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("multipart: %w", err)
			}
			pct := p.Header.Get("Content-Type")
			if pct == "" {
				pct = "text/plain"
			}
			if err := walk(rec, pct, p.Header.Get("Content-Transfer-Encoding"), p, depth+1); err != nil {
				return err
			}
		}
	}
	rec.Parts = append(rec.Parts, mt)
	var r io.Reader
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "quoted-printable":
		r = quotedprintable.NewReader(body)
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, newlineStripper{body})
	default:
		r = body
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("%s body: %w", mt, err)
	}
	switch {
	case mt == "text/plain" && rec.Text == "":
		rec.Text = string(b)
	case mt == "text/html" && rec.HTML == "":
		rec.HTML = string(b)
	}
	return nil
}

// newlineStripper drops CR and LF so base64 bodies with line breaks decode.
type newlineStripper struct{ r io.Reader }

func (n newlineStripper) Read(p []byte) (int, error) {
	for {
		k, err := n.r.Read(p)
		j := 0
		for _, b := range p[:k] {
			if b != '\r' && b != '\n' {
				p[j] = b
				j++
			}
		}
		if j > 0 || err != nil {
			return j, err
		}
	}
}

// selfSigned makes a certificate for the loopback names, valid one day.
func selfSigned() (*x509.Certificate, tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "smtpsim test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	return cert, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, nil
}

// slogPrinter adapts go-smtp's error log to slog at debug level: a client
// hanging up mid-session is routine in tests.
type slogPrinter struct{ l *slog.Logger }

func (p slogPrinter) Printf(format string, v ...any) {
	p.l.Debug("smtp server", "detail", fmt.Sprintf(format, v...))
}

func (p slogPrinter) Println(v ...any) {
	p.l.Debug("smtp server", "detail", strings.TrimSpace(fmt.Sprintln(v...)))
}
