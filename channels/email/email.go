// Package email delivers messages by SMTP submission with wneessen/go-mail:
// STARTTLS on 587 or implicit TLS on 465 (smtp+insecure:// to loopback for
// development), text or multipart/alternative text+HTML, a Message-ID the
// gateway chooses and reports as the provider id.
//
// Connections are pooled: each is dialled once (greeting, EHLO, STARTTLS,
// AUTH) and then carries many messages (go-mail sends RSET after each), one
// sender at a time; a broken one is discarded and redialled, idle ones are
// closed after IdleTimeout and on Close.
//
// Failures are classified by SMTP reply code in one table (errors.go).
// Nothing logged or stored carries an email address or a message body:
// logs have ids and redact.Email forms.
package email

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/mail"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	gomail "github.com/wneessen/go-mail"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/redact"
	"github.com/patientmsg/gateway/internal/returnpath"
)

// Defaults for the zero values of Config.
const (
	DefaultPoolSize    = 4
	DefaultTimeout     = 30 * time.Second
	DefaultIdleTimeout = 60 * time.Second
)

// PriorityBulk is the message priority (workers.PriorityBulk) that gets a
// List-Unsubscribe header: bulk mail is the non-transactional kind.
const PriorityBulk = "bulk"

// Config is an SMTP submission account.
type Config struct {
	// URL is SMTP_URL (see ParseURL): smtp://user:pass@host:587 (STARTTLS
	// required), smtps://user:pass@host:465 (implicit TLS), or
	// smtp+insecure://host:port (plain, loopback hosts only).
	URL string
	// From is EMAIL_FROM, e.g. "Clinic <noreply@example-clinic.org>"; its
	// domain ends every Message-ID, and bulk mail offers unsubscription to
	// it by mailto.
	From string
	// PoolSize is how many connections this process keeps open at most
	// (DefaultPoolSize when zero).
	PoolSize int
	// Timeout bounds connecting (through AUTH) and then each message's SMTP
	// exchange (DefaultTimeout when zero). A context deadline ends a send
	// sooner.
	Timeout time.Duration
	// IdleTimeout closes connections unused for that long
	// (DefaultIdleTimeout when zero).
	IdleTimeout time.Duration
	// TLSConfig, when set, is used for TLS (tests trust their CA here); its
	// ServerName defaults to the SMTP host.
	TLSConfig *tls.Config
	Logger    *slog.Logger
	// Rate is what the relay accepts from the gateway.
	Rate channels.Rate
	// Returns, when set, gives each message its own signed return path
	// (bounce+…@EMAIL_RETURN_DOMAIN, the envelope sender) and Reply-To
	// (reply+…), and signs the one-click unsubscribe links of bulk mail.
	Returns *returnpath.Keys
	// PublicURL is GATEWAY_PUBLIC_URL: bulk mail's one-click unsubscribe
	// link is PublicURL + "/u/" + token.
	PublicURL string
	// WebhookSecret, when set, serves POST /webhooks/email/events, signed
	// with it (EMAIL_WEBHOOK_SECRET).
	WebhookSecret string
	// NoDSN stops asking the relay for delivery status notifications
	// (EMAIL_DSN=false). Otherwise, with Returns' domain, every message
	// asks a relay that offers DSN (RFC 3461) for reports of success,
	// failure and delay (NOTIFY=SUCCESS,FAILURE,DELAY) with the headers
	// only (RET=HDRS), sent to its return path; a relay that does not
	// offer DSN is asked nothing.
	NoDSN bool
}

// Channel is the "email" channel. It is safe for concurrent use.
type Channel struct {
	cfg         Config
	ep          Endpoint
	tls         *tls.Config
	from        *mail.Address
	fromDomain  string
	unsubscribe string
	helo        string
	log         *slog.Logger
	pool        *pool
	connIDs     atomic.Uint64
}

// New validates cfg and returns the channel. No connection is opened until
// the first Send.
func New(cfg Config) (*Channel, error) {
	ep, err := ParseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	from, domain, err := parseFrom(cfg.From)
	if err != nil {
		return nil, err
	}
	if cfg.PoolSize < 0 || cfg.Timeout < 0 || cfg.IdleTimeout < 0 {
		return nil, errors.New("email: PoolSize, Timeout and IdleTimeout must not be negative")
	}
	if cfg.PoolSize == 0 {
		cfg.PoolSize = DefaultPoolSize
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.TLSConfig != nil {
		tlsCfg = cfg.TLSConfig.Clone()
	}
	if tlsCfg.ServerName == "" {
		tlsCfg.ServerName = ep.Host
	}
	local := from.Address[:strings.LastIndexByte(from.Address, '@')]
	c := &Channel{
		cfg:         cfg,
		ep:          ep,
		tls:         tlsCfg,
		from:        from,
		fromDomain:  domain,
		unsubscribe: "<mailto:" + url.PathEscape(local) + "@" + domain + "?subject=unsubscribe>",
		helo:        heloName(),
		log:         cfg.Logger.With("comp", "channel", "channel", "email"),
	}
	c.pool = newPool(cfg.PoolSize, cfg.IdleTimeout, c.dial)
	c.log.Info("email channel configured", "smtp", ep.String(), "security", ep.Security.String(), "pool", cfg.PoolSize,
		"dsn", c.requestsDSN())
	return c, nil
}

// CheckFrom validates EMAIL_FROM as New does, so a bad one is refused
// with the rest of the configuration at start-up.
func CheckFrom(raw string) error {
	_, _, err := parseFrom(raw)
	return err
}

// parseFrom validates EMAIL_FROM: one address with an ASCII domain (it
// goes into Message-IDs and the SMTP envelope).
func parseFrom(raw string) (*mail.Address, string, error) {
	if strings.TrimSpace(raw) == "" {
		return nil, "", errors.New(`EMAIL_FROM is required, e.g. "Clinic <noreply@example-clinic.org>"`)
	}
	a, err := mail.ParseAddress(raw)
	if err != nil {
		return nil, "", errors.New(`EMAIL_FROM is not a valid address, want e.g. "Clinic <noreply@example-clinic.org>"`)
	}
	at := strings.LastIndexByte(a.Address, '@')
	domain := strings.ToLower(a.Address[at+1:])
	if at <= 0 || !validHost(strings.Trim(domain, "[]")) {
		return nil, "", errors.New("EMAIL_FROM must have an ASCII domain (use the punycode form of an internationalized domain)")
	}
	for _, r := range a.Address {
		if r >= 0x80 {
			return nil, "", errors.New("EMAIL_FROM must be an ASCII address (the display name may be in any language)")
		}
	}
	return a, domain, nil
}

// heloName is the name the channel introduces itself with (EHLO).
func heloName() string {
	h, err := os.Hostname()
	if err != nil || !validHost(h) {
		return "localhost"
	}
	return h
}

// Name is the channel's API name.
func (c *Channel) Name() string { return "email" }

// Sender is the relay (its host and port, never the credentials) at its
// configured rate.
func (c *Channel) Sender() channels.Sender {
	host := "relay"
	if u, err := url.Parse(c.cfg.URL); err == nil && u.Host != "" {
		host = u.Host
	}
	return channels.Sender{ID: host, Rate: c.cfg.Rate}
}

// Send submits the message. Result.ProviderID is the Message-ID without
// angle brackets ("01J….K7Q…@example-clinic.org"); the header carries it
// as "<" + ProviderID + ">".
func (c *Channel) Send(ctx context.Context, m channels.Message) (channels.Result, error) {
	log := c.log.With("msg_id", m.ID, "tenant", m.Tenant)
	rcpt, se := recipient(m.To.Email)
	if se != nil {
		log.Info("email not sent", "class", se.Class.String(), "code", se.Code)
		return channels.Result{}, se
	}
	log = log.With("to", redact.Email(rcpt.Address))
	if m.Body == "" && m.HTML == "" {
		se := &channels.SendError{Class: channels.Permanent, Code: CodeEmptyBody, Message: "the message has neither text nor HTML"}
		log.Info("email not sent", "class", se.Class.String(), "code", se.Code)
		return channels.Result{}, se
	}
	if ctx.Err() != nil {
		return channels.Result{}, ctxError(ctx, false, "before sending")
	}
	msg, id := c.compose(m, rcpt)

	fresh := false
	for {
		conn, reused, se := c.pool.get(ctx, fresh)
		if se != nil {
			c.report(log, se, loudSetup(se))
			return channels.Result{}, se
		}
		err := conn.send(ctx, msg)
		if err == nil || msg.IsDelivered() {
			// Delivered even if the RSET after it failed; such a
			// connection is not reused.
			c.pool.release(conn, err == nil && !conn.wasAborted())
			log.Debug("email accepted", "provider_id", id, "conn", conn.id, "reused", reused)
			return channels.Result{ProviderID: id}, nil
		}
		out := classifySend(ctx, err, conn, rcpt.Address, rcpt.String())
		c.pool.release(conn, out.keep && !conn.wasAborted() && conn.reset(ctx))
		if out.redial && reused && !fresh {
			log.Debug("pooled SMTP connection failed before the message was sent; redialling", "conn", conn.id, "code", out.err.Code)
			fresh = true
			continue
		}
		c.report(log, out.err, out.loud)
		return channels.Result{}, out.err
	}
}

// report logs a failed send: configuration and server faults at error
// level, transient ones as warnings, refusals of the message as info.
func (c *Channel) report(log *slog.Logger, se *channels.SendError, loud bool) {
	attrs := []any{"class", se.Class.String(), "code", se.Code, "unconfirmed", se.Unconfirmed, "detail", se.Message}
	switch {
	case loud:
		log.Error("email not sent: SMTP configuration or server fault, retrying until fixed", attrs...)
	case se.Retryable():
		log.Warn("email not sent, will retry", attrs...)
	default:
		log.Info("email refused", attrs...)
	}
}

// recipient validates the address with net/mail; the display name, if
// any, is dropped.
func recipient(raw string) (*mail.Address, *channels.SendError) {
	if strings.TrimSpace(raw) == "" {
		return nil, &channels.SendError{Class: channels.Permanent, Code: CodeNoRecipient, Message: "the message has no email address"}
	}
	a, err := mail.ParseAddress(raw)
	if err != nil || len(a.Address) > 254 || strings.ContainsAny(a.Address, "\r\n\x00") {
		return nil, &channels.SendError{Class: channels.Permanent, Code: CodeInvalidRecipient,
			Message: "the recipient is not a valid email address"}
	}
	return &mail.Address{Address: a.Address}, nil
}

// compose builds the MIME message: text/plain, or multipart/alternative
// (text first, then HTML) when HTML is given.
func (c *Channel) compose(m channels.Message, rcpt *mail.Address) (*gomail.Msg, string) {
	msg := gomail.NewMsg(gomail.WithNoDefaultUserAgent())
	msg.FromMailAddress(c.from)
	msg.ToMailAddress(rcpt)
	msg.Subject(m.Subject)
	id := c.messageID(m.ID)
	msg.SetMessageIDWithValue(id)
	msg.SetDate()
	msg.SetGenHeader("Auto-Submitted", "auto-generated")
	if m.ID != "" {
		msg.SetGenHeader("X-Gateway-Message-Id", m.ID)
	}
	c.returns(msg, m)
	if languageTag.MatchString(m.Locale) {
		msg.SetGenHeader(gomail.HeaderContentLang, m.Locale)
	}
	switch {
	case m.Body == "":
		msg.SetBodyString(gomail.TypeTextHTML, m.HTML)
	case m.HTML == "":
		msg.SetBodyString(gomail.TypeTextPlain, m.Body)
	default:
		msg.SetBodyString(gomail.TypeTextPlain, m.Body)
		msg.AddAlternativeString(gomail.TypeTextHTML, m.HTML)
	}
	return msg, id
}

// languageTag is a BCP 47 tag's shape, enough to keep a header clean.
var languageTag = regexp.MustCompile(`^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8}){0,6}$`)

// messageID is "{gateway id}.{random}@{from domain}" (without the angle
// brackets). Characters of the gateway id that are not safe in a
// Message-ID are dropped.
func (c *Channel) messageID(gatewayID string) string {
	var b strings.Builder
	for _, r := range gatewayID {
		if b.Len() >= 64 {
			break
		}
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			b.WriteRune(r)
		}
	}
	if b.Len() > 0 {
		b.WriteByte('.')
	}
	b.WriteString(strings.ToLower(rand.Text()))
	return b.String() + "@" + c.fromDomain
}

// dial opens one SMTP session: TCP (loopback-checked for
// smtp+insecure://), TLS, EHLO, STARTTLS, AUTH.
func (c *Channel) dial(ctx context.Context) (*conn, *channels.SendError) {
	pc := &conn{id: c.connIDs.Add(1)}
	opts := []gomail.Option{
		gomail.WithPort(c.ep.Port),
		gomail.WithTimeout(c.cfg.Timeout),
		gomail.WithHELO(c.helo),
		// A dead pooled connection shows at MAIL FROM, before anything of
		// the message is sent, and is then redialled: no NOOP round trip
		// per message.
		gomail.WithoutNoop(),
		gomail.WithDialContextFunc(func(ctx context.Context, _, _ string) (net.Conn, error) {
			return c.dialNet(ctx, pc)
		}),
	}
	if c.ep.Security == StartTLS {
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory), gomail.WithTLSConfig(c.tls))
	} else {
		// smtps:// is TLS from the first byte (dialNet); smtp+insecure:// is plain.
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	}
	if c.requestsDSN() {
		// go-mail adds RET and NOTIFY only when the server's EHLO offers DSN.
		opts = append(opts, gomail.WithDSNMailReturnType(gomail.DSNMailReturnHeadersOnly),
			gomail.WithDSNRcptNotifyType(gomail.DSNRcptNotifySuccess, gomail.DSNRcptNotifyFailure, gomail.DSNRcptNotifyDelay))
	}
	if c.ep.Username != "" {
		opts = append(opts, gomail.WithSMTPAuthCustom(&authChooser{user: c.ep.Username, pass: c.ep.Password,
			host: c.ep.Host, plainText: c.ep.Security == Insecure}))
	}
	mc, err := gomail.NewClient(c.ep.Host, opts...)
	if err != nil {
		return nil, &channels.SendError{Class: channels.Retryable, Code: CodeSetup,
			Message: "could not configure the SMTP client: " + scrub(err.Error()), Err: err}
	}
	pc.mc = mc
	stop := context.AfterFunc(ctx, pc.abort)
	err = mc.DialWithContext(ctx)
	stop()
	if err == nil && pc.wasAborted() {
		err = ctx.Err()
	}
	if err != nil {
		pc.drop()
		return nil, classifyDial(ctx, err, pc)
	}
	c.log.Debug("SMTP connection opened", "conn", pc.id)
	return pc, nil
}

// requestsDSN says whether messages ask for delivery status
// notifications: only when they go out with a return path of their own,
// which the inbound listener reads (the gateway's message ids always make
// one), never to EMAIL_FROM's mailbox.
func (c *Channel) requestsDSN() bool {
	return !c.cfg.NoDSN && c.cfg.Returns != nil && c.cfg.Returns.Domain() != ""
}

// dialNet opens the TCP connection (and TLS for smtps://) for go-mail.
func (c *Channel) dialNet(ctx context.Context, pc *conn) (net.Conn, error) {
	d := net.Dialer{Timeout: c.cfg.Timeout}
	if c.ep.Security == Insecure {
		d.Control = loopbackOnly
	}
	raw, err := d.DialContext(ctx, "tcp", c.ep.Address())
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: raw}
	if !pc.attach(tc) {
		_ = raw.Close()
		return nil, context.Canceled
	}
	if c.ep.Security == ImplicitTLS {
		tlsConn := tls.Client(tc, c.tls)
		if err := tlsConn.HandshakeContext(ctx); err != nil {
			return nil, err
		}
		return tlsConn, nil
	}
	return tc, nil
}

// Close closes the pooled connections; sends in flight finish and their
// connections are closed after. Later sends fail as retryable.
func (c *Channel) Close() error {
	c.pool.close()
	return nil
}
