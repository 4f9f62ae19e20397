package email

import (
	"bytes"
	"log/slog"
	"mime"
	"net/mail"
	"strings"
	"testing"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/ledger"
)

func TestReplyClassTable(t *testing.T) {
	tests := []struct {
		name  string
		code  int
		st    stage
		class channels.Class
		loud  bool
	}{
		{"421 service closing is retryable", 421, stageSession, channels.Retryable, false},
		{"450 mailbox busy is retryable", 450, stageRecipient, channels.Retryable, false},
		{"451 local error (greylisting) is retryable", 451, stageRecipient, channels.Retryable, false},
		{"452 insufficient storage is retryable", 452, stageContent, channels.Retryable, false},
		{"550 to RCPT TO is permanent", 550, stageRecipient, channels.Permanent, false},
		{"551 to RCPT TO is permanent", 551, stageRecipient, channels.Permanent, false},
		{"553 to RCPT TO is permanent", 553, stageRecipient, channels.Permanent, false},
		{"501 to RCPT TO is permanent", 501, stageRecipient, channels.Permanent, false},
		{"552 after DATA is permanent", 552, stageContent, channels.Permanent, false},
		{"554 after DATA is permanent", 554, stageContent, channels.Permanent, false},
		{"535 bad credentials is a loud retryable configuration fault", 535, stageSession, channels.Retryable, true},
		{"530 authentication required is a loud retryable configuration fault", 530, stageSender, channels.Retryable, true},
		{"550 to MAIL FROM (our sender refused) is a loud retryable configuration fault", 550, stageSender, channels.Retryable, true},
		{"554 at the greeting is a loud retryable server fault", 554, stageSession, channels.Retryable, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cls, loud := replyClass(tt.code, tt.st)
			if cls != tt.class || loud != tt.loud {
				t.Errorf("replyClass(%d, %d) = %s loud=%v, want %s loud=%v", tt.code, tt.st, cls, loud, tt.class, tt.loud)
			}
		})
	}
}

func TestDialGuardAllowsOnlyLoopbackAddresses(t *testing.T) {
	tests := []struct {
		address string
		allowed bool
	}{
		{"127.0.0.1:25", true},
		{"127.8.9.10:1025", true},
		{"[::1]:25", true},
		{"192.0.2.1:25", false},
		{"[2001:db8::1]:587", false},
		{"10.0.0.1:25", false},
		{"not-an-address", false},
	}
	for _, tt := range tests {
		t.Run(tt.address, func(t *testing.T) {
			if err := loopbackOnly("tcp", tt.address, nil); (err == nil) != tt.allowed {
				t.Errorf("loopbackOnly(%q) = %v, want allowed=%v", tt.address, err, tt.allowed)
			}
		})
	}
}

func TestScrubMasksTheRecipientInEveryForm(t *testing.T) {
	const rcpt = "Jane.Doe@Example.org"
	in := "550 5.1.1 <jane.doe@example.org>: unknown; affected recipient(s): <Jane.Doe@Example.org>, cc other.person@example.net"
	out := scrub(in, rcpt, "<"+rcpt+">")
	for _, leak := range []string{"ane.doe", "ane.Doe", "ther.person"} {
		if strings.Contains(out, leak) {
			t.Errorf("scrub left %q in %q", leak, out)
		}
	}
	if !strings.Contains(out, "unknown") || !strings.Contains(strings.ToLower(out), "•••@example.org") {
		t.Errorf("scrub removed too much: %q", out)
	}
	if long := scrub(strings.Repeat("诊", 500)); len(long) > maxMessage+len("…") {
		t.Errorf("scrub kept %d bytes", len(long))
	}
}

// FuzzScrub: an address net/mail accepts never survives scrub, whatever
// text surrounds it.
func FuzzScrub(f *testing.F) {
	f.Add("550 <", "jane@example.org", "> unknown")
	f.Add("", "\"jane doe\"@example.org", "")
	f.Add("x", "a.b+tag@sub.example.co.uk", ",y")
	f.Add("550 ", "JANE@EXAMPLE.ORG", "")
	f.Fuzz(func(t *testing.T, before, addr, after string) {
		a, err := mail.ParseAddress(addr)
		if err != nil || len(a.Address) < 8 {
			return
		}
		out := scrub(before+a.Address+after, a.Address, a.String())
		if strings.Contains(out, a.Address) && !strings.Contains(scrub(before+after, a.Address, a.String()), a.Address) {
			t.Errorf("scrub(%q) = %q keeps the address %q", before+a.Address+after, out, a.Address)
		}
		out = scrub(before+a.String()+after, a.Address, a.String())
		if strings.Contains(out, a.Address) && !strings.Contains(scrub(before+after, a.Address, a.String()), a.Address) {
			t.Errorf("scrub(%q) = %q keeps the address %q", before+a.String()+after, out, a.Address)
		}
	})
}

func testChannel(t testing.TB) *Channel {
	t.Helper()
	c, err := New(Config{URL: "smtp+insecure://127.0.0.1:2525", From: "Clinic <noreply@example-clinic.org>",
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// FuzzCompose: whatever the subject, bodies, id and locale, the message
// parses, goes to exactly the one recipient (no header injection: no Bcc,
// no Cc, no second To), and keeps the gateway id and Message-ID intact.
func FuzzCompose(f *testing.F) {
	f.Add("01JABC", "Hello", "Body", "", "en")
	f.Add("01J\r\nBcc: spy@example.net", "Subject\r\nBcc: spy@example.net", "text", "<p>x</p>", "fr\r\nCc: a@b.c")
	f.Add("", "您的预约已确认", "明天见", "<p>明天见</p>", "zh-CN")
	f.Add("id", "=?UTF-8?q?x?=", ".\r\n.\r\n", "", "")
	c := testChannel(f)
	dec := &mime.WordDecoder{}
	f.Fuzz(func(t *testing.T, id, subject, body, html, locale string) {
		if body == "" && html == "" {
			return
		}
		rcpt, se := recipient("patient@example.org")
		if se != nil {
			t.Fatal(se)
		}
		m := channels.Message{ID: id, To: ledger.Recipient{Email: rcpt.Address}, Subject: subject, Body: body, HTML: html,
			Locale: locale, Priority: PriorityBulk}
		msg, pid := c.compose(m, rcpt)
		var buf bytes.Buffer
		if _, err := msg.WriteTo(&buf); err != nil {
			t.Fatalf("WriteTo: %v", err)
		}
		parsed, err := mail.ReadMessage(&buf)
		if err != nil {
			t.Fatalf("the message does not parse: %v\n%q", err, buf.String())
		}
		h := parsed.Header
		if to, err := h.AddressList("To"); err != nil || len(to) != 1 || to[0].Address != "patient@example.org" {
			t.Errorf("To %q (%v)", h["To"], err)
		}
		for _, k := range []string{"Bcc", "Cc"} {
			if _, ok := h[k]; ok {
				t.Errorf("the message has a %s header: %q", k, h[k])
			}
		}
		if len(h["From"]) != 1 || len(h["Subject"]) != 1 || len(h["Message-Id"]) != 1 {
			t.Errorf("duplicated headers: %v", h)
		}
		if h.Get("Message-Id") != "<"+pid+">" {
			t.Errorf("Message-ID %q, provider id %q", h.Get("Message-Id"), pid)
		}
		if strings.ContainsAny(pid, " \t\r\n<>\"") || strings.Count(pid, "@") != 1 || !strings.HasSuffix(pid, "@example-clinic.org") {
			t.Errorf("provider id %q is not a clean msg-id", pid)
		}
		if got, err := dec.DecodeHeader(h.Get("X-Gateway-Message-Id")); err == nil && id != "" && strings.TrimSpace(id) == id &&
			!strings.ContainsAny(id, "\r\n") && got != id {
			t.Errorf("X-Gateway-Message-Id %q, want %q", got, id)
		}
		if cl := h.Get("Content-Language"); cl != "" && cl != locale {
			t.Errorf("Content-Language %q from locale %q", cl, locale)
		}
	})
}
