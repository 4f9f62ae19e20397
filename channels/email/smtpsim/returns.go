package smtpsim

import (
	"bytes"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/mail"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// Mailbox is how the simulated world treats one recipient address.
type Mailbox struct {
	// Unknown refuses the address at RCPT TO with 550 5.1.1, as an MTA
	// does for a mailbox that does not exist.
	Unknown bool
	// Bounce, an enhanced status code, accepts the message and then sends
	// a delivery status notification (RFC 3464) to its envelope sender:
	// failed for 5.x.x ("5.2.2": mailbox full), delayed for 4.x.x, unless
	// RCPT TO's NOTIFY left that out. Without Bounce or Unknown the
	// mailbox takes the message, and a success notification follows when
	// NOTIFY asked SUCCESS.
	Bounce string
	// Diagnostic is the DSN's Diagnostic-Code text after "smtp; "; a
	// default follows from Bounce when empty.
	Diagnostic string
}

// SetMailbox sets how the server treats addr (compared without regard to
// case) from now on.
func (s *Server) SetMailbox(addr string, m Mailbox) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mailboxes == nil {
		s.mailboxes = map[string]Mailbox{}
	}
	s.mailboxes[strings.ToLower(strings.TrimSpace(addr))] = m
}

func (s *Server) mailbox(addr string) Mailbox {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mailboxes[strings.ToLower(strings.TrimSpace(addr))]
}

// Sent is a mail the simulator sent to the return MTA: a DSN, a
// complaint or a reply.
type Sent struct {
	Kind string // dsn, complaint, reply
	To   string
	Raw  []byte
	// Err is the return MTA's answer when it did not accept the mail.
	Err error
}

// SentMail returns what the simulator sent to the return MTA so far.
func (s *Server) SentMail() []Sent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Sent(nil), s.sent...)
}

// SentCount is how many mails the simulator sent to the return MTA so
// far (len(SentMail()) without the copy).
func (s *Server) SentCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sent)
}

// deliverOut sends raw to the return MTA (Options.ReturnMTA, a loopback
// address) with the null sender, as an MTA sends its notifications, and
// records the outcome.
func (s *Server) deliverOut(kind, to string, raw []byte) error {
	// Like an MTA, try again after a temporary refusal (4xx), here for
	// a few seconds.
	err := s.dialOut(to, raw)
	for wait := 50 * time.Millisecond; temporary(err) && wait < 3*time.Second; wait *= 2 {
		select {
		case <-time.After(wait):
		case <-s.closing:
			return err
		}
		err = s.dialOut(to, raw)
	}
	s.mu.Lock()
	s.sent = append(s.sent, Sent{Kind: kind, To: to, Raw: raw, Err: err})
	s.mu.Unlock()
	s.log.Debug("mail sent to the return MTA", "kind", kind, "bytes", len(raw), "ok", err == nil)
	return err
}

// SetReturnMTA sets Options.ReturnMTA, for a gateway that starts its
// listener after the simulator.
func (s *Server) SetReturnMTA(addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.ReturnMTA = addr
}

// temporary says an SMTP answer asks to try again later.
func temporary(err error) bool {
	var se *smtp.SMTPError
	return errors.As(err, &se) && se.Code/100 == 4
}

func (s *Server) dialOut(to string, raw []byte) error {
	s.mu.Lock()
	addr := s.opts.ReturnMTA
	s.mu.Unlock()
	if addr == "" {
		return errors.New("smtpsim: no ReturnMTA to send to")
	}
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		return errors.New("smtpsim: ReturnMTA must be a loopback host:port")
	}
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	c := smtp.NewClient(conn)
	defer c.Close()
	if err := c.Hello("smtpsim.localhost"); err != nil {
		return err
	}
	if err := c.Mail("", nil); err != nil {
		return err
	}
	if err := c.Rcpt(to, nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(raw); err != nil {
		_ = w.Close()
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// reportLater sends the DSN of an accepted message for one recipient, as
// RFC 3461 has an MTA do: for a Bounce mailbox a failure or delay report
// unless its NOTIFY leaves that out (none asked means FAILURE,DELAY); for
// any other mailbox a success report when NOTIFY asked SUCCESS.
func (s *Server) reportLater(rec Received, rcpt, notify string, m Mailbox) {
	if rec.From == "" {
		return // a notification is never sent about a notification
	}
	status, diagnostic, want := "2.0.0", "", "SUCCESS"
	if m.Bounce != "" {
		status, diagnostic, want = m.Bounce, m.Diagnostic, "FAILURE"
		if strings.HasPrefix(m.Bounce, "4.") {
			want = "DELAY"
		}
		if notify == "" {
			notify = "FAILURE,DELAY"
		}
	}
	if !slices.Contains(strings.Split(notify, ","), want) {
		return
	}
	go func() { _ = s.deliverOut("dsn", rec.From, DSN(rec, rcpt, status, diagnostic)) }()
}

// DSN builds a delivery status notification (RFC 3464) about rec for its
// recipient rcpt: multipart/report with a human-readable part, the
// message/delivery-status part and the original's headers only (never its
// body, as RET=HDRS asks). The status decides the action: failed for
// 5.x.x, delayed for 4.x.x, delivered for 2.x.x.
func DSN(rec Received, rcpt, status, diagnostic string) []byte {
	action, code := "failed", "550"
	subject, intro := "Undelivered Mail Returned to Sender", "Your message could not be delivered to one or more recipients."
	switch {
	case strings.HasPrefix(status, "4."):
		action, code = "delayed", "452"
		subject, intro = "Delayed Mail (still being retried)", "Your message could not be delivered yet; the mail system keeps trying."
	case strings.HasPrefix(status, "2."):
		action, code = "delivered", "250"
		subject, intro = "Successful Mail Delivery Report", "Your message was successfully delivered to the destination(s) listed below."
	}
	if diagnostic == "" {
		diagnostic = map[string]string{"5.1.1": "<" + rcpt + ">: Recipient address rejected: User unknown",
			"5.2.2": "Mailbox full", "4.2.2": "Mailbox full, will retry", "2.0.0": "Ok: delivered to mailbox"}[status]
		if diagnostic == "" {
			diagnostic = "delivery failed"
		}
	}
	var b bytes.Buffer
	boundary := "dsn-" + fmt.Sprint(time.Now().UnixNano())
	fmt.Fprintf(&b, "From: Mail Delivery System <MAILER-DAEMON@smtpsim.localhost>\r\n")
	fmt.Fprintf(&b, "To: %s\r\n", rec.From)
	fmt.Fprintf(&b, "Subject: %s\r\n", subject)
	fmt.Fprintf(&b, "Date: %s\r\n", time.Now().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%s@smtpsim.localhost>\r\n", boundary)
	fmt.Fprintf(&b, "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n")
	fmt.Fprintf(&b, "Content-Type: multipart/report; report-type=delivery-status; boundary=%q\r\n\r\n", boundary)
	fmt.Fprintf(&b, "--%s\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n", boundary)
	fmt.Fprintf(&b, "This is the mail system at host smtpsim.localhost.\r\n\r\n%s\r\n\r\n", intro)
	fmt.Fprintf(&b, "--%s\r\nContent-Type: message/delivery-status\r\n\r\n", boundary)
	fmt.Fprintf(&b, "Reporting-MTA: dns; smtpsim.localhost\r\nArrival-Date: %s\r\n\r\n", rec.At.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Final-Recipient: rfc822; %s\r\nAction: %s\r\nStatus: %s\r\n", rcpt, action, status)
	fmt.Fprintf(&b, "Diagnostic-Code: smtp; %s %s %s\r\n\r\n", code, status, diagnostic)
	fmt.Fprintf(&b, "--%s\r\nContent-Type: text/rfc822-headers\r\n\r\n", boundary)
	b.Write(headerOf(rec.Raw))
	fmt.Fprintf(&b, "\r\n--%s--\r\n", boundary)
	return b.Bytes()
}

// headerOf is the header section of a raw message.
func headerOf(raw []byte) []byte {
	if i := bytes.Index(raw, []byte("\r\n\r\n")); i >= 0 {
		return raw[:i+2]
	}
	return raw
}

// Complain sends an abuse report (ARF, RFC 5965) about rec to its
// envelope sender, as a mailbox provider's feedback loop does when the
// recipient marks it as spam.
func (s *Server) Complain(rec Received) error {
	if rec.From == "" || len(rec.To) == 0 {
		return errors.New("smtpsim: the message has no envelope to complain about")
	}
	var b bytes.Buffer
	boundary := "arf-" + fmt.Sprint(time.Now().UnixNano())
	fmt.Fprintf(&b, "From: Feedback Loop <fbl@smtpsim.localhost>\r\nTo: %s\r\nSubject: Abuse report\r\n", rec.From)
	fmt.Fprintf(&b, "Message-ID: <%s@smtpsim.localhost>\r\nMIME-Version: 1.0\r\n", boundary)
	fmt.Fprintf(&b, "Content-Type: multipart/report; report-type=feedback-report; boundary=%q\r\n\r\n", boundary)
	fmt.Fprintf(&b, "--%s\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n", boundary)
	fmt.Fprintf(&b, "--%s\r\nContent-Type: message/feedback-report\r\n\r\n", boundary)
	fmt.Fprintf(&b, "Feedback-Type: abuse\r\nUser-Agent: smtpsim/1.0\r\nVersion: 1\r\nOriginal-Mail-From: <%s>\r\nOriginal-Rcpt-To: <%s>\r\n\r\n", rec.From, rec.To[0])
	fmt.Fprintf(&b, "--%s\r\nContent-Type: message/rfc822\r\n\r\n", boundary)
	b.Write(rec.Raw)
	fmt.Fprintf(&b, "\r\n--%s--\r\n", boundary)
	return s.deliverOut("complaint", rec.From, b.Bytes())
}

// Reply sends the recipient's reply to rec to its Reply-To (its From
// without one): text, then the attribution line and the original text
// quoted, as a mail client writes it.
func (s *Server) Reply(rec Received, text string) error {
	if rec.Header == nil || len(rec.To) == 0 {
		return errors.New("smtpsim: the message has no header to reply to")
	}
	to := rec.Header.Get("Reply-To")
	if to == "" {
		to = rec.Header.Get("From")
	}
	addr, err := mail.ParseAddress(to)
	if err != nil {
		return fmt.Errorf("smtpsim: reply address: %w", err)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: <%s>\r\nTo: <%s>\r\nSubject: Re: %s\r\n", rec.To[0], addr.Address, mime.QEncoding.Encode("utf-8", rec.Subject))
	fmt.Fprintf(&b, "Message-ID: <reply-%d@smtpsim.localhost>\r\nIn-Reply-To: %s\r\n", time.Now().UnixNano(), rec.Header.Get("Message-Id"))
	fmt.Fprintf(&b, "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
	fmt.Fprintf(&b, "%s\r\n\r\nOn %s, %s wrote:\r\n", text, rec.At.Format("Mon, Jan 2, 2006 at 3:04 PM"), rec.Header.Get("From"))
	for _, line := range strings.Split(strings.ReplaceAll(rec.Text, "\r\n", "\n"), "\n") {
		fmt.Fprintf(&b, "> %s\r\n", line)
	}
	return s.deliverOut("reply", addr.Address, b.Bytes())
}
