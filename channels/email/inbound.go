package email

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/returnpath"
)

// Defaults of the inbound listener.
const (
	DefaultInboundMaxBytes  = 2 << 20
	DefaultInboundPerMinute = 60
)

// InboundConfig configures the inbound SMTP listener: the mail exchanger
// of the return domain, where delivery status notifications, complaints
// and replies arrive.
type InboundConfig struct {
	// Addr is EMAIL_INBOUND_ADDR (":2525"); Listener, when set, is used
	// instead.
	Addr     string
	Listener net.Listener
	// Keys verify the recipients: only the signed bounce+ and reply+
	// addresses of the return domain are accepted.
	Keys *returnpath.Keys
	// Receiver is told what the mail reports.
	Receiver channels.Receiver
	// MaxBytes is the largest mail accepted (DefaultInboundMaxBytes when
	// zero); larger is refused with 552.
	MaxBytes int64
	// PerMinute is how many mails one client IP may send a minute
	// (DefaultInboundPerMinute when zero); more are refused with 450 until
	// the minute is over.
	PerMinute int
	// Timeout bounds applying one mail (DefaultTimeout when zero).
	Timeout time.Duration
	Logger  *slog.Logger
	// Now is the clock of the rate limit (time.Now when nil).
	Now func() time.Time
}

// Listener is the inbound SMTP server. It never relays: a recipient that
// is not one of the gateway's signed addresses is refused at RCPT.
type Listener struct {
	cfg  InboundConfig
	srv  *smtp.Server
	ln   net.Listener
	log  *slog.Logger
	done chan struct{}

	mu     sync.Mutex
	window time.Time
	counts map[string]int
}

// Listen starts the inbound listener.
func Listen(cfg InboundConfig) (*Listener, error) {
	if cfg.Keys == nil || cfg.Keys.Domain() == "" || cfg.Receiver == nil {
		return nil, errors.New("email: the inbound listener needs EMAIL_RETURN_DOMAIN, EMAIL_RETURN_SECRET and a receiver")
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultInboundMaxBytes
	}
	if cfg.PerMinute <= 0 {
		cfg.PerMinute = DefaultInboundPerMinute
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	ln := cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.Addr); err != nil {
			return nil, fmt.Errorf("EMAIL_INBOUND_ADDR %s: %w", cfg.Addr, err)
		}
	}
	l := &Listener{cfg: cfg, ln: ln, log: cfg.Logger.With("comp", "email-inbound", "channel", "email"),
		done: make(chan struct{}), counts: map[string]int{}}
	srv := smtp.NewServer(smtp.BackendFunc(l.newSession))
	srv.Domain = cfg.Keys.Domain()
	srv.MaxMessageBytes = cfg.MaxBytes
	srv.MaxRecipients = 10
	srv.MaxLineLength = 4000
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	srv.ErrorLog = quietLog{l.log}
	l.srv = srv
	go func() {
		defer close(l.done)
		_ = srv.Serve(ln)
	}()
	l.log.Info("inbound SMTP listening", "addr", ln.Addr().String(), "max_bytes", cfg.MaxBytes, "per_minute", cfg.PerMinute)
	return l, nil
}

// Addr is the address the listener listens on.
func (l *Listener) Addr() string { return l.ln.Addr().String() }

// Close stops the listener and its sessions.
func (l *Listener) Close() error {
	err := l.srv.Close()
	_ = l.ln.Close()
	<-l.done
	return err
}

// allow counts a mail from ip against the rate of this minute.
func (l *Listener) allow(ip string) bool {
	now := l.cfg.Now().Truncate(time.Minute)
	l.mu.Lock()
	defer l.mu.Unlock()
	if !now.Equal(l.window) {
		l.window, l.counts = now, map[string]int{}
	}
	if l.counts[ip] >= l.cfg.PerMinute {
		return false
	}
	l.counts[ip]++
	return true
}

// SMTP replies of the listener.
var (
	errRelay    = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "relaying denied"}
	errMailbox  = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such mailbox"}
	errRate     = &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "too many messages; try again later"}
	errNoRcpt   = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "no valid recipients"}
	errBadMail  = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "malformed message"}
	errTryLater = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "temporary failure; try again later"}
)

type returnAddr struct {
	kind returnpath.Kind
	id   string
}

// inSession is one SMTP session of the listener.
type inSession struct {
	l    *Listener
	ip   string
	rcpt []returnAddr
}

func (l *Listener) newSession(c *smtp.Conn) (smtp.Session, error) {
	ip := c.Conn().RemoteAddr().String()
	if h, _, err := net.SplitHostPort(ip); err == nil {
		ip = h
	}
	return &inSession{l: l, ip: ip}, nil
}

func (s *inSession) Mail(string, *smtp.MailOptions) error {
	if !s.l.allow(s.ip) {
		s.l.log.Info("inbound mail refused: rate limit of the client reached")
		return errRate
	}
	return nil
}

func (s *inSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	kind, id, ok := s.l.cfg.Keys.Parse(to)
	if !ok {
		at := strings.LastIndexByte(to, '@')
		if at < 0 || !strings.EqualFold(strings.TrimRight(to[at+1:], ">"), s.l.cfg.Keys.Domain()) {
			s.l.log.Info("inbound mail refused: recipient outside the return domain (no relaying)")
			return errRelay
		}
		s.l.log.Info("inbound mail refused: recipient is not a signed return address")
		return errMailbox
	}
	s.rcpt = append(s.rcpt, returnAddr{kind: kind, id: id})
	return nil
}

func (s *inSession) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			s.l.log.Info("inbound mail refused: too large", "max_bytes", s.l.cfg.MaxBytes)
		}
		return err
	}
	if len(s.rcpt) == 0 {
		return errNoRcpt
	}
	rep, err := ParseReport(raw)
	if err != nil {
		s.l.log.Info("inbound mail refused: malformed", "bytes", len(raw))
		return errBadMail
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.l.cfg.Timeout)
	defer cancel()
	for _, rc := range s.rcpt {
		if err := s.l.apply(ctx, rc, rep); err != nil {
			s.l.log.Warn("inbound mail not applied; the sender will retry", "msg_id", rc.id, "kind", rep.Kind.String(), "err", err)
			return errTryLater
		}
	}
	return nil
}

func (s *inSession) Reset()        { s.rcpt = nil }
func (s *inSession) Logout() error { return nil }

// apply does what one mail says about the message its recipient names:
// to a bounce+ address a DSN bounces, delays, delivers it or notes that
// it was relayed, and an ARF complaint opts its recipient out; to a
// reply+ address a complaint does the same, "unsubscribe" as the subject
// (the List-Unsubscribe mailto) opts out, and anything else typed by a
// person is the patient's reply. Other mail (an out-of-office, a DSN to a
// reply+ address) changes nothing.
func (l *Listener) apply(ctx context.Context, rc returnAddr, rep *Report) error {
	log := l.log.With("msg_id", rc.id, "to_kind", string(rc.kind), "kind", rep.Kind.String())
	var err error
	switch {
	case rep.Kind == KindDSN && rc.kind == returnpath.Bounce && rep.Permanent():
		err = Apply(ctx, l.cfg.Receiver, Event{Kind: EventBounce, MessageID: rc.id, Status: rep.Status, Diagnostic: rep.Diagnostic})
		log = log.With("status", rep.Status)
	case rep.Kind == KindDSN && rc.kind == returnpath.Bounce && rep.Transient():
		err = Apply(ctx, l.cfg.Receiver, Event{Kind: EventDelay, MessageID: rc.id, Status: rep.Status, Diagnostic: rep.Diagnostic})
		log = log.With("status", rep.Status)
	case rep.Kind == KindDSN && rc.kind == returnpath.Bounce && rep.Delivered():
		err = Apply(ctx, l.cfg.Receiver, Event{Kind: EventDelivered, MessageID: rc.id, Status: rep.Status})
		log = log.With("status", rep.Status)
	case rep.Kind == KindDSN && rc.kind == returnpath.Bounce && rep.Relayed():
		err = Apply(ctx, l.cfg.Receiver, Event{Kind: EventRelayed, MessageID: rc.id, Status: rep.Status})
		log = log.With("status", rep.Status, "action", rep.Action)
	case rep.Kind == KindComplaint:
		err = Apply(ctx, l.cfg.Receiver, Event{Kind: EventComplaint, MessageID: rc.id, Evidence: "ARF feedback type " + rep.FeedbackType})
	case rep.Kind == KindReply && rc.kind == returnpath.Reply && strings.EqualFold(rep.Subject, "unsubscribe"):
		err = Apply(ctx, l.cfg.Receiver, Event{Kind: EventUnsubscribe, MessageID: rc.id, Evidence: "List-Unsubscribe mailto"})
	case rep.Kind == KindReply && rc.kind == returnpath.Reply && rep.Text != "":
		err = l.reply(ctx, rc, rep)
	default:
		log.Info("inbound mail accepted; nothing to apply")
		return nil
	}
	if errors.Is(err, ErrNotEmail) {
		log.Info("inbound mail about an unknown message; dropped")
		return nil
	}
	if err == nil {
		log.Info("inbound mail applied")
	}
	return err
}

// reply hands a patient's reply to the receiver as an inbound message from
// the message's recipient: the signed Reply-To says whose reply it is,
// whatever address they wrote from.
func (l *Listener) reply(ctx context.Context, rc returnAddr, rep *Report) error {
	m, err := l.cfg.Receiver.Message(ctx, rc.id)
	if errors.Is(err, ledger.ErrNotFound) {
		return ErrNotEmail
	}
	if err != nil {
		return err
	}
	if m.Channel != "email" || m.To.Email == "" {
		return ErrNotEmail
	}
	_, err = l.cfg.Receiver.Inbound(ctx, channels.InboundMessage{Channel: "email", ProviderID: rep.ID,
		From: ledger.Recipient{Email: m.To.Email}, To: l.cfg.Keys.Domain(), Body: rep.Text})
	return err
}

// quietLog keeps go-smtp's own log at debug level without details, which
// could hold a client's input.
type quietLog struct{ l *slog.Logger }

func (q quietLog) Printf(string, ...any) { q.l.Debug("inbound SMTP session error") }
func (q quietLog) Println(...any)        { q.l.Debug("inbound SMTP session error") }
