package email_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/channels/channeltest"
	"github.com/patientmsg/gateway/channels/email"
	"github.com/patientmsg/gateway/channels/email/smtpsim"
	"github.com/patientmsg/gateway/internal/ledger"
)

const (
	from      = "Clinic <noreply@example-clinic.org>"
	fromAddr  = "noreply@example-clinic.org"
	patient   = "patient.jane@example.org"
	password  = "s3cret-Pa55w0rd"
	bodyMark  = "BODYMARK-7261"
	htmlMark  = "HTMLMARK-5517"
	subjectZH = "您的预约已确认：明天上午十点，请提前十五分钟到达诊所"
)

// newChannel builds the channel for a server URL. Every test's log is
// checked afterwards: no clear address, body or password may appear in it.
func newChannel(t *testing.T, url string, mod func(*email.Config)) (*email.Channel, *channeltest.LogBuffer) {
	t.Helper()
	logs := &channeltest.LogBuffer{}
	cfg := email.Config{URL: url, From: from, Timeout: 5 * time.Second,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if mod != nil {
		mod(&cfg)
	}
	ch, err := email.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ch.Close()
		out := logs.String()
		for _, secret := range []string{"atient.jane", bodyMark, htmlMark, password, "Pa55"} {
			if strings.Contains(out, secret) {
				t.Errorf("the log contains %q:\n%s", secret, out)
			}
		}
	})
	return ch, logs
}

func message(id string) channels.Message {
	return channels.Message{ID: id, Tenant: "t1", To: ledger.Recipient{Email: patient},
		Subject: "Appointment reminder", Body: "See you tomorrow. " + bodyMark, Priority: "normal"}
}

func sendOK(t *testing.T, ch *email.Channel, m channels.Message) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := ch.Send(ctx, m)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	return res.ProviderID
}

func TestSendDeliversWellFormedMIME(t *testing.T) {
	tests := []struct {
		name   string
		edit   func(*channels.Message)
		ctype  string
		parts  string
		html   string
		subj   string
		bulk   bool
		locale string
	}{
		{
			name:  "a text message is text/plain with From, To, Subject, Date and the Message-ID as provider id",
			ctype: "text/plain", parts: "text/plain", subj: "Appointment reminder",
		},
		{
			name:  "a message with HTML is multipart/alternative with the text part first, then the HTML",
			edit:  func(m *channels.Message) { m.HTML = "<p>See you <b>tomorrow</b>. " + htmlMark + "</p>" },
			ctype: "multipart/alternative", parts: "text/plain,text/html",
			html: "<p>See you <b>tomorrow</b>. " + htmlMark + "</p>", subj: "Appointment reminder",
		},
		{
			name: "a Chinese subject is RFC 2047 encoded and decodes back exactly",
			edit: func(m *channels.Message) {
				m.Subject = subjectZH
				m.Body = "明天见。" + bodyMark
				m.Locale = "zh-CN"
			},
			ctype: "text/plain", parts: "text/plain", subj: subjectZH, locale: "zh-CN",
		},
		{
			name:  "bulk mail offers unsubscription by mailto to the sender",
			edit:  func(m *channels.Message) { m.Priority = email.PriorityBulk },
			ctype: "text/plain", parts: "text/plain", subj: "Appointment reminder", bulk: true,
		},
		{
			name:  "crisis mail has no List-Unsubscribe",
			edit:  func(m *channels.Message) { m.Priority = "crisis" },
			ctype: "text/plain", parts: "text/plain", subj: "Appointment reminder",
		},
		{
			name:  "a recipient with a display name is addressed by the bare address",
			edit:  func(m *channels.Message) { m.To.Email = "Jane <" + patient + ">" },
			ctype: "text/plain", parts: "text/plain", subj: "Appointment reminder",
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := smtpsim.New(smtpsim.Options{})
			defer sim.Close()
			ch, _ := newChannel(t, sim.URL(), nil)
			m := message(fmt.Sprintf("01JMSG%02d", i))
			if tt.edit != nil {
				tt.edit(&m)
			}
			id := sendOK(t, ch, m)
			got, err := sim.WaitFor(1, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			r := got[0]
			if r.ParseErr != "" {
				t.Fatalf("unparseable message: %s\n%s", r.ParseErr, r.Raw)
			}
			h := r.Header

			if r.From != fromAddr || len(r.To) != 1 || r.To[0] != patient {
				t.Errorf("envelope %q -> %q, want %q -> [%q]", r.From, r.To, fromAddr, patient)
			}
			if a, err := mail.ParseAddress(h.Get("From")); err != nil || a.Address != fromAddr || a.Name != "Clinic" {
				t.Errorf("From %q", h.Get("From"))
			}
			if a, err := mail.ParseAddress(h.Get("To")); err != nil || a.Address != patient {
				t.Errorf("To %q", h.Get("To"))
			}
			if r.Subject != tt.subj {
				t.Errorf("subject %q, want %q", r.Subject, tt.subj)
			}
			if raw := h.Get("Subject"); strings.ContainsFunc(raw, func(r rune) bool { return r > 127 }) {
				t.Errorf("the raw Subject header is not RFC 2047 encoded: %q", raw)
			}
			if h.Get("Message-Id") != "<"+id+">" {
				t.Errorf("Message-ID %q, provider id %q", h.Get("Message-Id"), id)
			}
			if !strings.HasPrefix(id, m.ID+".") || !strings.HasSuffix(id, "@example-clinic.org") {
				t.Errorf("provider id %q, want %s.{random}@example-clinic.org", id, m.ID)
			}
			if _, err := h.Date(); err != nil {
				t.Errorf("Date: %v", err)
			}
			if h.Get("Auto-Submitted") != "auto-generated" {
				t.Errorf("Auto-Submitted %q", h.Get("Auto-Submitted"))
			}
			if h.Get("X-Gateway-Message-Id") != m.ID {
				t.Errorf("X-Gateway-Message-Id %q, want %q", h.Get("X-Gateway-Message-Id"), m.ID)
			}
			if _, ok := h["Bcc"]; ok || bytes.Contains(bytes.ToLower(r.Raw), []byte("\nbcc:")) {
				t.Error("the message has a Bcc header")
			}
			if h.Get("User-Agent") != "" || h.Get("X-Mailer") != "" {
				t.Errorf("the message advertises its mailer: %q %q", h.Get("User-Agent"), h.Get("X-Mailer"))
			}
			wantUnsub := ""
			if tt.bulk {
				wantUnsub = "<mailto:noreply@example-clinic.org?subject=unsubscribe>"
			}
			if h.Get("List-Unsubscribe") != wantUnsub {
				t.Errorf("List-Unsubscribe %q, want %q", h.Get("List-Unsubscribe"), wantUnsub)
			}
			if _, ok := h["List-Unsubscribe-Post"]; ok {
				t.Error("List-Unsubscribe-Post without an https unsubscribe URL")
			}
			if h.Get("Content-Language") != tt.locale {
				t.Errorf("Content-Language %q, want %q", h.Get("Content-Language"), tt.locale)
			}
			if r.ContentType != tt.ctype || strings.Join(r.Parts, ",") != tt.parts {
				t.Errorf("content type %q parts %q, want %q %q", r.ContentType, r.Parts, tt.ctype, tt.parts)
			}
			if strings.TrimRight(r.Text, "\r\n") != m.Body {
				t.Errorf("text %q, want %q", r.Text, m.Body)
			}
			if strings.TrimRight(r.HTML, "\r\n") != tt.html {
				t.Errorf("html %q, want %q", r.HTML, tt.html)
			}
		})
	}
}

func TestMessageIDsAreUniquePerSend(t *testing.T) {
	sim := smtpsim.New(smtpsim.Options{})
	defer sim.Close()
	ch, _ := newChannel(t, sim.URL(), nil)
	a, b := sendOK(t, ch, message("01JSAME")), sendOK(t, ch, message("01JSAME"))
	if a == b {
		t.Fatalf("two sends of one message got the same Message-ID %q", a)
	}
}

func TestConcurrentSendsShareAPoolOfConnections(t *testing.T) {
	sim := smtpsim.New(smtpsim.Options{})
	defer sim.Close()
	ch, _ := newChannel(t, sim.URL(), func(c *email.Config) { c.PoolSize = 2 })

	const n = 20
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			res, err := ch.Send(context.Background(), message(fmt.Sprintf("01JPOOL%02d", i)))
			if err != nil {
				t.Errorf("send %d: %v", i, err)
				return
			}
			ids[i] = res.ProviderID
		})
	}
	wg.Wait()
	got, err := sim.WaitFor(n, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("received %d messages, want %d", len(got), n)
	}
	if c := sim.Connections(); c > 2 {
		t.Errorf("the server saw %d connections, want at most 2 (one per pooled connection)", c)
	}
	seen := map[string]bool{}
	for _, r := range got {
		seen[r.Header.Get("X-Gateway-Message-Id")] = true
	}
	for i, id := range ids {
		if !seen[fmt.Sprintf("01JPOOL%02d", i)] {
			t.Errorf("message %d (%s) was not received", i, id)
		}
	}
}

func TestAPooledConnectionTheServerClosedIsRedialledTransparently(t *testing.T) {
	sim := smtpsim.New(smtpsim.Options{})
	defer sim.Close()
	ch, logs := newChannel(t, sim.URL(), func(c *email.Config) { c.PoolSize = 1 })
	sendOK(t, ch, message("01JFIRST"))
	sim.DropConnections()
	sendOK(t, ch, message("01JSECOND"))
	if !strings.Contains(logs.String(), "redialling") {
		t.Errorf("the dead pooled connection was not the one tried first:\n%s", logs)
	}
	if _, err := sim.WaitFor(2, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if c := sim.Connections(); c != 2 {
		t.Errorf("connections %d, want 2 (the dropped one and its replacement)", c)
	}
}

func TestARefusedRecipientDoesNotCostTheConnection(t *testing.T) {
	sim := smtpsim.New(smtpsim.Options{})
	defer sim.Close()
	ch, _ := newChannel(t, sim.URL(), func(c *email.Config) { c.PoolSize = 1 })
	sim.Reject(550, "5.1.1 no such user")
	if _, err := ch.Send(context.Background(), message("01JBAD")); err == nil {
		t.Fatal("the refused recipient was reported sent")
	}
	sendOK(t, ch, message("01JGOOD"))
	if c := sim.Connections(); c != 1 {
		t.Errorf("connections %d, want 1", c)
	}
}

func TestIdleConnectionsAreClosed(t *testing.T) {
	sim := smtpsim.New(smtpsim.Options{})
	defer sim.Close()
	ch, _ := newChannel(t, sim.URL(), func(c *email.Config) { c.IdleTimeout = 100 * time.Millisecond })
	sendOK(t, ch, message("01JIDLE"))
	waitOpen(t, sim, 0, 3*time.Second)
	sendOK(t, ch, message("01JAGAIN"))
	if c := sim.Connections(); c != 2 {
		t.Errorf("connections %d, want 2 (a new one after the idle one was closed)", c)
	}
}

func TestCloseClosesPooledConnectionsAndLaterSendsAreRetryable(t *testing.T) {
	sim := smtpsim.New(smtpsim.Options{})
	defer sim.Close()
	ch, _ := newChannel(t, sim.URL(), nil)
	sendOK(t, ch, message("01JCLOSE"))
	if sim.Open() != 1 {
		t.Fatalf("open %d, want 1 pooled connection", sim.Open())
	}
	if err := ch.Close(); err != nil {
		t.Fatal(err)
	}
	waitOpen(t, sim, 0, 3*time.Second)
	_, err := ch.Send(context.Background(), message("01JLATE"))
	var se *channels.SendError
	if !errors.As(err, &se) || se.Class != channels.Retryable || se.Code != email.CodeClosed {
		t.Fatalf("send after Close: %v, want retryable %q", err, email.CodeClosed)
	}
}

func waitOpen(t *testing.T, sim *smtpsim.Server, want int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for sim.Open() != want {
		if time.Now().After(deadline) {
			t.Fatalf("server has %d open connections, want %d", sim.Open(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestSendErrorClasses(t *testing.T) {
	tests := []struct {
		name        string
		opts        smtpsim.Options
		script      []smtpsim.Fault
		url         func(sim *smtpsim.Server) string
		cfg         func(*email.Config)
		ctxTimeout  time.Duration
		canceled    bool
		edit        func(*channels.Message)
		class       channels.Class
		code        string
		unconfirmed bool
		loud        bool
	}{
		{
			name:   "550 to RCPT TO is permanent smtp_550",
			script: []smtpsim.Fault{{At: smtpsim.AtRcpt, Code: 550, Message: "5.1.1 <" + patient + ">: no such user"}},
			class:  channels.Permanent, code: "smtp_550",
		},
		{
			name:   "551 to RCPT TO is permanent smtp_551",
			script: []smtpsim.Fault{{At: smtpsim.AtRcpt, Code: 551}},
			class:  channels.Permanent, code: "smtp_551",
		},
		{
			name:   "553 to RCPT TO is permanent smtp_553",
			script: []smtpsim.Fault{{At: smtpsim.AtRcpt, Code: 553}},
			class:  channels.Permanent, code: "smtp_553",
		},
		{
			name:   "501 to RCPT TO is permanent smtp_501",
			script: []smtpsim.Fault{{At: smtpsim.AtRcpt, Code: 501}},
			class:  channels.Permanent, code: "smtp_501",
		},
		{
			name:   "451 to RCPT TO (greylisting) is retryable",
			script: []smtpsim.Fault{{At: smtpsim.AtRcpt, Code: 451}},
			class:  channels.Retryable, code: "smtp_451",
		},
		{
			name:   "452 to RCPT TO (insufficient storage) is retryable",
			script: []smtpsim.Fault{{At: smtpsim.AtRcpt, Code: 452}},
			class:  channels.Retryable, code: "smtp_452",
		},
		{
			name:   "450 to MAIL FROM is retryable",
			script: []smtpsim.Fault{{At: smtpsim.AtMail, Code: 450}},
			class:  channels.Retryable, code: "smtp_450",
		},
		{
			name:   "550 to MAIL FROM refuses our sender: retryable, logged loudly",
			script: []smtpsim.Fault{{At: smtpsim.AtMail, Code: 550}},
			class:  channels.Retryable, code: "smtp_550", loud: true,
		},
		{
			name:   "552 after the content is permanent smtp_552",
			script: []smtpsim.Fault{{At: smtpsim.AtData, Code: 552}},
			class:  channels.Permanent, code: "smtp_552",
		},
		{
			name:   "554 after the content is permanent smtp_554",
			script: []smtpsim.Fault{{At: smtpsim.AtData, Code: 554}},
			class:  channels.Permanent, code: "smtp_554",
		},
		{
			name:   "451 after the content is retryable and not unconfirmed",
			script: []smtpsim.Fault{{At: smtpsim.AtData, Code: 451}},
			class:  channels.Retryable, code: "smtp_451",
		},
		{
			name:   "421 at the greeting is retryable smtp_421",
			script: []smtpsim.Fault{{At: smtpsim.AtConnect, Code: 421, Message: "4.3.2 try again later"}},
			class:  channels.Retryable, code: "smtp_421",
		},
		{
			name:   "554 at the greeting is retryable and logged loudly",
			script: []smtpsim.Fault{{At: smtpsim.AtConnect, Code: 554}},
			class:  channels.Retryable, code: "smtp_554", loud: true,
		},
		{
			name: "a wrong password (535) is retryable and logged loudly",
			opts: smtpsim.Options{Username: "clinic", Password: "the-right-one"},
			url: func(sim *smtpsim.Server) string {
				return "smtp+insecure://clinic:" + password + "@" + sim.Addr()
			},
			class: channels.Retryable, code: "smtp_535", loud: true,
		},
		{
			name: "credentials for a server that offers no AUTH are retryable auth_unsupported, loudly",
			url: func(sim *smtpsim.Server) string {
				return "smtp+insecure://clinic:" + password + "@" + sim.Addr()
			},
			class: channels.Retryable, code: email.CodeAuthUnsupported, loud: true,
		},
		{
			name:   "a server that accepts the connection but never answers is a retryable timeout",
			script: []smtpsim.Fault{{At: smtpsim.AtConnect, Hang: true}},
			cfg:    func(c *email.Config) { c.Timeout = 300 * time.Millisecond },
			class:  channels.Retryable, code: email.CodeTimeout,
		},
		{
			name:   "no answer after the content is a retryable timeout that may have been delivered",
			script: []smtpsim.Fault{{At: smtpsim.AtData, Hang: true}},
			cfg:    func(c *email.Config) { c.Timeout = 300 * time.Millisecond },
			class:  channels.Retryable, code: email.CodeTimeout, unconfirmed: true,
		},
		{
			name:   "no answer to RCPT TO is a retryable timeout, not unconfirmed",
			script: []smtpsim.Fault{{At: smtpsim.AtRcpt, Hang: true}},
			cfg:    func(c *email.Config) { c.Timeout = 300 * time.Millisecond },
			class:  channels.Retryable, code: email.CodeTimeout,
		},
		{
			name:       "a context deadline while waiting for the content's reply is a timeout that may have been delivered",
			script:     []smtpsim.Fault{{At: smtpsim.AtData, Hang: true}},
			ctxTimeout: 300 * time.Millisecond,
			class:      channels.Retryable, code: email.CodeTimeout, unconfirmed: true,
		},
		{
			name:       "a context deadline while the server stays silent at the greeting is a timeout",
			script:     []smtpsim.Fault{{At: smtpsim.AtConnect, Hang: true}},
			ctxTimeout: 300 * time.Millisecond,
			class:      channels.Retryable, code: email.CodeTimeout,
		},
		{
			name:     "a context cancelled before the send (shutdown) is retryable canceled",
			canceled: true,
			class:    channels.Retryable, code: email.CodeCanceled,
		},
		{
			name:  "a refused connection is retryable",
			url:   func(*smtpsim.Server) string { return "smtp+insecure://" + closedPort(t) },
			class: channels.Retryable, code: email.CodeConnect,
		},
		{
			name:  "an address net/mail rejects is permanent invalid_recipient",
			edit:  func(m *channels.Message) { m.To.Email = "patient.jane at example.org" },
			class: channels.Permanent, code: email.CodeInvalidRecipient,
		},
		{
			name:  "a header injection attempt in the address is permanent invalid_recipient",
			edit:  func(m *channels.Message) { m.To.Email = patient + "\r\nBcc: spy@example.net" },
			class: channels.Permanent, code: email.CodeInvalidRecipient,
		},
		{
			name:  "two addresses are permanent invalid_recipient",
			edit:  func(m *channels.Message) { m.To.Email = patient + ", other@example.org" },
			class: channels.Permanent, code: email.CodeInvalidRecipient,
		},
		{
			name:  "no address is permanent no_recipient",
			edit:  func(m *channels.Message) { m.To.Email = "" },
			class: channels.Permanent, code: email.CodeNoRecipient,
		},
		{
			name:  "no text and no HTML is permanent empty_body",
			edit:  func(m *channels.Message) { m.Body = "" },
			class: channels.Permanent, code: email.CodeEmptyBody,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := smtpsim.New(tt.opts)
			defer sim.Close()
			sim.Script(tt.script...)
			url := sim.URL()
			if tt.url != nil {
				url = tt.url(sim)
			}
			ch, logs := newChannel(t, url, tt.cfg)
			m := message("01JERR")
			if tt.edit != nil {
				tt.edit(&m)
			}
			ctx := context.Background()
			if tt.ctxTimeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.ctxTimeout)
				defer cancel()
			}
			if tt.canceled {
				var cancel context.CancelFunc
				ctx, cancel = context.WithCancel(ctx)
				cancel()
			}
			start := time.Now()
			_, err := ch.Send(ctx, m)
			if time.Since(start) > 5*time.Second {
				t.Errorf("Send took %s", time.Since(start))
			}
			var se *channels.SendError
			if !errors.As(err, &se) {
				t.Fatalf("Send: %v (%T), want a *channels.SendError", err, err)
			}
			t.Logf("%v", se)
			if se.Class != tt.class || se.Code != tt.code || se.Unconfirmed != tt.unconfirmed {
				t.Errorf("got %s %q unconfirmed=%v, want %s %q unconfirmed=%v (%v)",
					se.Class, se.Code, se.Unconfirmed, tt.class, tt.code, tt.unconfirmed, se)
			}
			if strings.Contains(se.Message, "atient.jane") || strings.Contains(se.Error(), "atient.jane") {
				t.Errorf("the stored message contains the recipient: %q", se.Message)
			}
			if strings.Contains(se.Message, password) {
				t.Errorf("the stored message contains the password: %q", se.Message)
			}
			if loud := strings.Contains(logs.String(), "level=ERROR"); loud != tt.loud {
				t.Errorf("logged at error level: %v, want %v\n%s", loud, tt.loud, logs)
			}
			if n := len(sim.Messages()); n != 0 {
				t.Errorf("the server accepted %d messages", n)
			}
		})
	}
}

func TestAFailedSendKeepsNoRecipientInTheErrorChainText(t *testing.T) {
	sim := smtpsim.New(smtpsim.Options{})
	defer sim.Close()
	ch, _ := newChannel(t, sim.URL(), nil)
	sim.Reject(550, "5.1.1 <"+patient+">... user unknown; also tried <"+strings.ToUpper(patient)+">")
	_, err := ch.Send(context.Background(), message("01JMASK"))
	var se *channels.SendError
	if !errors.As(err, &se) {
		t.Fatal(err)
	}
	if strings.Contains(strings.ToLower(se.Message), "atient.jane") {
		t.Errorf("message %q contains the address", se.Message)
	}
	if !strings.Contains(se.Message, "p•••@example.org") {
		t.Errorf("message %q does not show the masked address", se.Message)
	}
	if !strings.Contains(se.Message, "user unknown") {
		t.Errorf("message %q lost the server's explanation", se.Message)
	}
}

func TestTLS(t *testing.T) {
	t.Run("STARTTLS with AUTH to a server whose CA the client trusts delivers over TLS", func(t *testing.T) {
		sim := smtpsim.New(smtpsim.Options{TLS: true, Username: "clinic", Password: password})
		defer sim.Close()
		ch, _ := newChannel(t, sim.URL(), func(c *email.Config) { c.TLSConfig = sim.ClientTLSConfig() })
		sendOK(t, ch, message("01JTLS1"))
		sendOK(t, ch, message("01JTLS2"))
		got, err := sim.WaitFor(2, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range got {
			if !r.TLS || r.User != "clinic" {
				t.Errorf("message over TLS=%v as %q, want TLS as clinic", r.TLS, r.User)
			}
		}
		if c := sim.Connections(); c != 1 {
			t.Errorf("connections %d, want 1", c)
		}
	})
	t.Run("implicit TLS (smtps://) delivers over TLS", func(t *testing.T) {
		sim := smtpsim.New(smtpsim.Options{ImplicitTLS: true, Username: "clinic", Password: password})
		defer sim.Close()
		if !strings.HasPrefix(sim.URL(), "smtps://") {
			t.Fatalf("URL %q", sim.URL())
		}
		ch, _ := newChannel(t, sim.URL(), func(c *email.Config) { c.TLSConfig = sim.ClientTLSConfig() })
		sendOK(t, ch, message("01JSMTPS"))
		if got, err := sim.WaitFor(1, 2*time.Second); err != nil || !got[0].TLS || got[0].User != "clinic" {
			t.Fatalf("messages %+v, %v", got, err)
		}
	})
	t.Run("smtp:// to a server without STARTTLS fails without sending anything in clear text", func(t *testing.T) {
		sim := smtpsim.New(smtpsim.Options{Username: "clinic", Password: password})
		defer sim.Close()
		ch, logs := newChannel(t, "smtp://clinic:"+password+"@"+sim.Addr(), nil)
		_, err := ch.Send(context.Background(), message("01JNOTLS"))
		var se *channels.SendError
		if !errors.As(err, &se) || se.Class != channels.Retryable || se.Code != email.CodeSetup {
			t.Fatalf("Send: %v, want retryable %q", err, email.CodeSetup)
		}
		if !strings.Contains(se.Message, "STARTTLS") {
			t.Errorf("message %q does not say STARTTLS is missing", se.Message)
		}
		if !strings.Contains(logs.String(), "level=ERROR") {
			t.Error("the missing STARTTLS was not logged loudly")
		}
		if n := len(sim.Messages()); n != 0 {
			t.Errorf("%d messages were sent in clear text", n)
		}
	})
	t.Run("STARTTLS to a server with an untrusted certificate fails as tls_handshake", func(t *testing.T) {
		sim := smtpsim.New(smtpsim.Options{TLS: true})
		defer sim.Close()
		ch, _ := newChannel(t, sim.URL(), nil)
		_, err := ch.Send(context.Background(), message("01JUNTRUSTED"))
		var se *channels.SendError
		if !errors.As(err, &se) || se.Class != channels.Retryable || se.Code != email.CodeTLS {
			t.Fatalf("Send: %v, want retryable %q", err, email.CodeTLS)
		}
	})
	t.Run("implicit TLS to a plain-text server fails as tls_handshake", func(t *testing.T) {
		sim := smtpsim.New(smtpsim.Options{})
		defer sim.Close()
		ch, _ := newChannel(t, "smtps://"+sim.Addr(), nil)
		_, err := ch.Send(context.Background(), message("01JPLAIN"))
		var se *channels.SendError
		if !errors.As(err, &se) || se.Class != channels.Retryable || se.Code != email.CodeTLS {
			t.Fatalf("Send: %v, want retryable %q", err, email.CodeTLS)
		}
	})
}

func TestNewValidatesItsConfiguration(t *testing.T) {
	tests := []struct {
		name    string
		cfg     email.Config
		wantErr string
	}{
		{"smtp+insecure:// to a non-loopback host is refused", email.Config{URL: "smtp+insecure://mail.example.org:25", From: from}, "loopback"},
		{"a missing SMTP_URL is named", email.Config{From: from}, "SMTP_URL"},
		{"a missing EMAIL_FROM is named", email.Config{URL: "smtp://u:p@mail.example.org"}, "EMAIL_FROM"},
		{"an invalid EMAIL_FROM is named", email.Config{URL: "smtp://u:p@mail.example.org", From: "Clinic noreply"}, "EMAIL_FROM"},
		{"a non-ASCII EMAIL_FROM domain is refused", email.Config{URL: "smtp://u:p@mail.example.org", From: "noreply@诊所.cn"}, "EMAIL_FROM"},
		{"a negative pool size is refused", email.Config{URL: "smtp://u:p@mail.example.org", From: from, PoolSize: -1}, "PoolSize"},
		{"a good configuration is accepted", email.Config{URL: "smtp://u:p@mail.example.org", From: "诊所 <noreply@example-clinic.org>"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Logger = slog.New(slog.DiscardHandler)
			ch, err := email.New(tt.cfg)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if ch.Name() != "email" {
					t.Errorf("Name %q", ch.Name())
				}
				ch.Close()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New: %v, want an error mentioning %q", err, tt.wantErr)
			}
		})
	}
}

var _ channels.Channel = (*email.Channel)(nil)
