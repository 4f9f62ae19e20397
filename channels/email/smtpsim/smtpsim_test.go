package smtpsim_test

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/smtp"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/patientmsg/gateway/channels/email/smtpsim"
)

const multipartMsg = "From: a@example.org\r\n" +
	"To: b@example.org\r\n" +
	"Subject: =?UTF-8?q?=E4=BD=A0=E5=A5=BD?=\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/alternative; boundary=XYZ\r\n" +
	"\r\n" +
	"--XYZ\r\n" +
	"Content-Type: text/plain; charset=UTF-8\r\n" +
	"Content-Transfer-Encoding: quoted-printable\r\n" +
	"\r\n" +
	"caf=C3=A9 =\r\nsoft break\r\n" +
	"--XYZ\r\n" +
	"Content-Type: text/html; charset=UTF-8\r\n" +
	"Content-Transfer-Encoding: base64\r\n" +
	"\r\n" +
	"PHA+aGk8\r\nL3A+\r\n" +
	"--XYZ--\r\n"

// send runs one SMTP transaction on an open client.
func send(t *testing.T, c *smtp.Client, from, to, msg string) error {
	t.Helper()
	if err := c.Mail(from); err != nil {
		return err
	}
	if err := c.Rcpt(to); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(msg)); err != nil {
		return err
	}
	return w.Close()
}

func dial(t *testing.T, s *smtpsim.Server) *smtp.Client {
	t.Helper()
	c, err := smtp.Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestServerAcceptsSeveralMessagesPerConnectionWithRSET(t *testing.T) {
	s := smtpsim.New(smtpsim.Options{})
	defer s.Close()
	c := dial(t, s)
	for i := range 3 {
		if err := send(t, c, "a@example.org", "b@example.org", multipartMsg); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if err := c.Reset(); err != nil {
			t.Fatalf("RSET after message %d: %v", i, err)
		}
	}
	got, err := s.WaitFor(3, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if s.Connections() != 1 {
		t.Errorf("connections %d, want 1", s.Connections())
	}
	r := got[2]
	if r.From != "a@example.org" || len(r.To) != 1 || r.To[0] != "b@example.org" {
		t.Errorf("envelope %q -> %q", r.From, r.To)
	}
	if r.Conn != 1 {
		t.Errorf("conn %d, want 1", r.Conn)
	}
	if r.Subject != "你好" {
		t.Errorf("subject %q", r.Subject)
	}
	if r.ContentType != "multipart/alternative" || strings.Join(r.Parts, ",") != "text/plain,text/html" {
		t.Errorf("content type %q parts %q", r.ContentType, r.Parts)
	}
	if r.Text != "café soft break\r\n" && r.Text != "café soft break" {
		t.Errorf("text %q", r.Text)
	}
	if r.HTML != "<p>hi</p>" {
		t.Errorf("html %q", r.HTML)
	}
	if r.ParseErr != "" {
		t.Errorf("parse error %s", r.ParseErr)
	}
}

func TestScriptedFaultsAnswerTheChosenCodeOnce(t *testing.T) {
	tests := []struct {
		name  string
		fault smtpsim.Fault
		code  int
	}{
		{"a MAIL fault refuses the sender", smtpsim.Fault{At: smtpsim.AtMail, Code: 553}, 553},
		{"a RCPT fault refuses the recipient", smtpsim.Fault{At: smtpsim.AtRcpt, Code: 550, Message: "no such user"}, 550},
		{"a DATA fault refuses the content", smtpsim.Fault{At: smtpsim.AtData, Code: 554}, 554},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := smtpsim.New(smtpsim.Options{})
			defer s.Close()
			s.Script(tt.fault)
			c := dial(t, s)
			err := send(t, c, "a@example.org", "b@example.org", multipartMsg)
			var tpe *textproto.Error
			if !errors.As(err, &tpe) || tpe.Code != tt.code {
				t.Fatalf("error %v, want code %d", err, tt.code)
			}
			if err := c.Reset(); err != nil {
				t.Fatal(err)
			}
			if err := send(t, c, "a@example.org", "b@example.org", multipartMsg); err != nil {
				t.Fatalf("the fault was used twice: %v", err)
			}
			if n := len(s.Messages()); n != 1 {
				t.Errorf("%d messages, want 1", n)
			}
		})
	}
}

func TestRejectAtConnectAnswersTheGreetingAndHangsUp(t *testing.T) {
	s := smtpsim.New(smtpsim.Options{})
	defer s.Close()
	s.Script(smtpsim.Fault{At: smtpsim.AtConnect, Code: 421, Message: "try later"})
	_, err := smtp.Dial(s.Addr())
	var tpe *textproto.Error
	if !errors.As(err, &tpe) || tpe.Code != 421 {
		t.Fatalf("dial error %v, want 421", err)
	}
	c := dial(t, s)
	if err := c.Noop(); err != nil {
		t.Fatalf("second connection: %v", err)
	}
	if s.Connections() != 2 {
		t.Errorf("connections %d, want 2", s.Connections())
	}
}

func TestHangAtConnectNeverGreets(t *testing.T) {
	s := smtpsim.New(smtpsim.Options{})
	defer s.Close()
	s.Script(smtpsim.Fault{At: smtpsim.AtConnect, Hang: true})
	nc, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	var b [1]byte
	if _, err := nc.Read(b[:]); err == nil {
		t.Fatal("the server greeted")
	}
	if s.Open() != 1 {
		t.Errorf("open %d, want 1", s.Open())
	}
}

func TestAuthIsRequiredAndChecked(t *testing.T) {
	s := smtpsim.New(smtpsim.Options{Username: "clinic", Password: "right"})
	defer s.Close()

	c := dial(t, s)
	err := send(t, c, "a@example.org", "b@example.org", multipartMsg)
	var tpe *textproto.Error
	if !errors.As(err, &tpe) || tpe.Code != 530 {
		t.Fatalf("unauthenticated MAIL: %v, want 530", err)
	}

	c = dial(t, s)
	err = c.Auth(smtp.PlainAuth("", "clinic", "wrong", "127.0.0.1"))
	if !errors.As(err, &tpe) || tpe.Code != 535 {
		t.Fatalf("wrong password: %v, want 535", err)
	}

	c = dial(t, s)
	if err := c.Auth(smtp.PlainAuth("", "clinic", "right", "127.0.0.1")); err != nil {
		t.Fatal(err)
	}
	if err := send(t, c, "a@example.org", "b@example.org", multipartMsg); err != nil {
		t.Fatal(err)
	}
	if got := s.Messages(); len(got) != 1 || got[0].User != "clinic" {
		t.Fatalf("messages %+v", got)
	}
}

func TestSTARTTLSUsesACertificateTheClientCanTrust(t *testing.T) {
	s := smtpsim.New(smtpsim.Options{TLS: true})
	defer s.Close()
	if !strings.HasPrefix(s.URL(), "smtp://127.0.0.1:") {
		t.Fatalf("URL %q", s.URL())
	}
	c := dial(t, s)
	cfg := s.ClientTLSConfig()
	cfg.ServerName = "127.0.0.1"
	if err := c.StartTLS(cfg); err != nil {
		t.Fatal(err)
	}
	if err := send(t, c, "a@example.org", "b@example.org", multipartMsg); err != nil {
		t.Fatal(err)
	}
	if got := s.Messages(); len(got) != 1 || !got[0].TLS {
		t.Fatalf("messages %+v, want one over TLS", got)
	}
}

func TestImplicitTLSSpeaksTLSFromTheFirstByte(t *testing.T) {
	s := smtpsim.New(smtpsim.Options{ImplicitTLS: true})
	defer s.Close()
	cfg := s.ClientTLSConfig()
	cfg.ServerName = "127.0.0.1"
	tc, err := tls.Dial("tcp", s.Addr(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := smtp.NewClient(tc, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := send(t, c, "a@example.org", "b@example.org", multipartMsg); err != nil {
		t.Fatal(err)
	}
	if got := s.Messages(); len(got) != 1 || !got[0].TLS || got[0].Conn != 1 {
		t.Fatalf("messages %+v, want one over TLS on connection 1", got)
	}
}

func TestDropConnectionsClosesThemServerSide(t *testing.T) {
	s := smtpsim.New(smtpsim.Options{})
	defer s.Close()
	c := dial(t, s)
	if err := c.Noop(); err != nil {
		t.Fatal(err)
	}
	if s.Open() != 1 {
		t.Fatalf("open %d, want 1", s.Open())
	}
	s.DropConnections()
	if err := c.Noop(); err == nil {
		t.Fatal("NOOP succeeded on a dropped connection")
	}
	if s.Open() != 0 {
		t.Errorf("open %d, want 0", s.Open())
	}
}

func TestWaitForGivesUpAfterTheTimeout(t *testing.T) {
	s := smtpsim.New(smtpsim.Options{})
	defer s.Close()
	start := time.Now()
	got, err := s.WaitFor(1, 50*time.Millisecond)
	if err == nil || len(got) != 0 {
		t.Fatalf("WaitFor = %v, %v", got, err)
	}
	if time.Since(start) < 50*time.Millisecond {
		t.Error("returned early")
	}
}

func TestMessagesToMatchesTheRecipientWithoutRegardToCase(t *testing.T) {
	s := smtpsim.New(smtpsim.Options{})
	defer s.Close()
	c := dial(t, s)
	before := time.Now()
	for _, to := range []string{"Jane.Doe@Example.org", "other@example.org", "jane.doe@example.org"} {
		if err := send(t, c, "a@example.org", to, multipartMsg); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.WaitFor(3, time.Second); err != nil {
		t.Fatal(err)
	}
	got := s.MessagesTo(" JANE.DOE@example.ORG ")
	if len(got) != 2 || got[0].To[0] != "Jane.Doe@Example.org" || got[1].To[0] != "jane.doe@example.org" {
		t.Fatalf("MessagesTo = %d messages: %+v", len(got), got)
	}
	for _, m := range got {
		if m.At.Before(before) || m.At.After(time.Now()) || m.Subject != "你好" {
			t.Fatalf("received at %v (sent after %v), subject %q", m.At, before, m.Subject)
		}
	}
	if got := s.MessagesTo("nobody@example.org"); len(got) != 0 {
		t.Fatalf("MessagesTo(nobody) = %+v", got)
	}
}

// returnMTA is a mail exchanger for the simulator's notifications: it
// takes every mail and keeps it.
type returnMTA struct {
	mu   sync.Mutex
	got  [][]byte
	addr string
}

func startReturnMTA(t *testing.T) *returnMTA {
	t.Helper()
	r := &returnMTA{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	srv := gosmtp.NewServer(gosmtp.BackendFunc(func(*gosmtp.Conn) (gosmtp.Session, error) { return &mtaSession{r: r}, nil }))
	srv.Domain, srv.AllowInsecureAuth = "mx.localhost", true
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return r
}

func (r *returnMTA) mails() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.got...)
}

type mtaSession struct{ r *returnMTA }

func (s *mtaSession) Mail(string, *gosmtp.MailOptions) error { return nil }
func (s *mtaSession) Rcpt(string, *gosmtp.RcptOptions) error { return nil }
func (s *mtaSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	s.r.mu.Lock()
	s.r.got = append(s.r.got, b)
	s.r.mu.Unlock()
	return err
}
func (s *mtaSession) Reset()        {}
func (s *mtaSession) Logout() error { return nil }

// submit sends msg from → to with NOTIFY (none when empty) and RET=HDRS
// through a DSN-aware client.
func submit(t *testing.T, s *smtpsim.Server, from, to string, notify ...gosmtp.DSNNotify) error {
	t.Helper()
	c, err := gosmtp.Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail(from, &gosmtp.MailOptions{Return: gosmtp.DSNReturnHeaders}); err != nil {
		return err
	}
	if err := c.Rcpt(to, &gosmtp.RcptOptions{Notify: notify}); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte("From: <" + from + ">\r\nTo: <" + to + ">\r\nSubject: hi\r\nMessage-ID: <m1@example.org>\r\n\r\nBODYMARK\r\n")); err != nil {
		return err
	}
	return w.Close()
}

func TestASuccessNotificationIsSentOnlyWhenRCPTAskedForIt(t *testing.T) {
	mta := startReturnMTA(t)
	s := smtpsim.New(smtpsim.Options{ReturnMTA: mta.addr})
	defer s.Close()
	s.SetMailbox("nobody@example.org", smtpsim.Mailbox{Unknown: true})
	const sender = "bounce+1@mail.example-clinic.test"
	if err := submit(t, s, sender, "reads@example.org", gosmtp.DSNNotifySuccess, gosmtp.DSNNotifyFailure); err != nil {
		t.Fatal(err)
	}
	for _, notify := range [][]gosmtp.DSNNotify{nil, {gosmtp.DSNNotifyNever}, {gosmtp.DSNNotifyFailure, gosmtp.DSNNotifyDelayed}} {
		if err := submit(t, s, sender, "reads@example.org", notify...); err != nil {
			t.Fatal(err)
		}
	}
	var se *gosmtp.SMTPError
	if err := submit(t, s, sender, "nobody@example.org", gosmtp.DSNNotifySuccess); !errors.As(err, &se) || se.Code != 550 {
		t.Fatalf("an unknown mailbox: %v", err)
	}
	got := s.Messages()
	if len(got) != 4 || got[0].Ret != "HDRS" || got[0].Notify[0] != "SUCCESS,FAILURE" || got[1].Notify[0] != "" || got[2].Notify[0] != "NEVER" {
		t.Fatalf("recorded %d messages, first RET %q NOTIFY %q", len(got), got[0].Ret, got[0].Notify)
	}
	deadline := time.Now().Add(2 * time.Second)
	for len(mta.mails()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // room for a notification that should not come
	mails := mta.mails()
	if len(mails) != 1 {
		t.Fatalf("%d notifications, want the one asked for", len(mails))
	}
	dsn := string(mails[0])
	for _, want := range []string{"To: " + sender, "report-type=delivery-status", "Final-Recipient: rfc822; reads@example.org",
		"Action: delivered", "Status: 2.0.0", "Content-Type: text/rfc822-headers", "Message-ID: <m1@example.org>"} {
		if !strings.Contains(dsn, want) {
			t.Fatalf("the notification lacks %q:\n%s", want, dsn)
		}
	}
	if strings.Contains(dsn, "BODYMARK") {
		t.Fatal("the notification returns the body")
	}
}

func TestARelayWithoutDSNOffersNoneAndRefusesNOTIFY(t *testing.T) {
	s := smtpsim.New(smtpsim.Options{NoDSN: true})
	defer s.Close()
	c := dial(t, s)
	if err := c.Hello("localhost"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("DSN"); ok {
		t.Fatal("DSN offered")
	}
	if err := c.Mail("a@example.org"); err != nil {
		t.Fatal(err)
	}
	id, err := c.Text.Cmd("RCPT TO:<b@example.org> NOTIFY=SUCCESS")
	if err != nil {
		t.Fatal(err)
	}
	c.Text.StartResponse(id)
	code, _, _ := c.Text.ReadResponse(250)
	c.Text.EndResponse(id)
	if code != 504 {
		t.Fatalf("NOTIFY to a relay without DSN: %d", code)
	}
	with := smtpsim.New(smtpsim.Options{})
	defer with.Close()
	c = dial(t, with)
	if err := c.Hello("localhost"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("DSN"); !ok {
		t.Fatal("DSN not offered by default")
	}
}
