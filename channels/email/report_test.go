package email_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/patientmsg/gateway/channels/email"
)

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestInboundMailIsReadForWhatItReports(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		kind       email.Kind
		check      func(t *testing.T, r *email.Report)
	}{
		{"a Postfix bounce is a permanent DSN with its status and diagnostic, without the address", "dsn-permanent.eml", email.KindDSN, func(t *testing.T, r *email.Report) {
			if !r.Permanent() || r.Transient() || r.Action != "failed" || r.Status != "5.1.1" {
				t.Fatalf("%+v", r)
			}
			if r.Diagnostic != "smtp; 550 5.1.1 <address>: Recipient address rejected: User unknown" {
				t.Fatalf("diagnostic %q", r.Diagnostic)
			}
		}},
		{"a delay warning is a transient DSN", "dsn-delayed.eml", email.KindDSN, func(t *testing.T, r *email.Report) {
			if r.Permanent() || !r.Transient() || r.Delivered() || r.Status != "4.2.2" || r.Diagnostic != "SMTP; 452 4.2.2 Mailbox full" {
				t.Fatalf("%+v", r)
			}
		}},
		{"a Postfix success report is a delivered DSN with its 2.x.x status", "dsn-delivered.eml", email.KindDSN, func(t *testing.T, r *email.Report) {
			if !r.Delivered() || r.Relayed() || r.Permanent() || r.Transient() || r.Action != "delivered" || r.Status != "2.0.0" {
				t.Fatalf("%+v", r)
			}
		}},
		{"an ARF report is a complaint with its feedback type", "arf-abuse.eml", email.KindComplaint, func(t *testing.T, r *email.Report) {
			if r.FeedbackType != "abuse" {
				t.Fatalf("%+v", r)
			}
		}},
		{"a Gmail reply keeps the new text above the attribution and the quote", "reply-gmail.eml", email.KindReply, func(t *testing.T, r *email.Report) {
			if r.Text != "2 – it is worse and I have chest pain" || r.Subject != "Re: How is your knee today?" || r.Auto {
				t.Fatalf("text %q subject %q", r.Text, r.Subject)
			}
		}},
		{"a GBK reply is decoded, its phone signature and 写道 quote removed", "reply-gbk.eml", email.KindReply, func(t *testing.T, r *email.Report) {
			if r.Text != "我胸口疼，呼吸困难" || r.Subject != "回复" {
				t.Fatalf("text %q subject %q", r.Text, r.Subject)
			}
		}},
		{"an HTML-only Outlook reply is made text, without the quoted message", "reply-outlook.eml", email.KindReply, func(t *testing.T, r *email.Report) {
			if r.Text != "Yes, I will come on Friday.\nThanks,\nJane" {
				t.Fatalf("text %q", r.Text)
			}
		}},
		{"an out-of-office is no reply", "autoreply.eml", email.KindOther, func(t *testing.T, r *email.Report) {
			if !r.Auto {
				t.Fatalf("%+v", r)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := email.ParseReport(fixture(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if r.Kind != tc.kind || len(r.ID) != 32 {
				t.Fatalf("kind %v id %q", r.Kind, r.ID)
			}
			tc.check(t, r)
		})
	}
}

func TestADSNsMostSeriousRecipientDecidesAndRelayedIsNoDelivery(t *testing.T) {
	dsn := func(blocks ...string) []byte {
		return []byte("Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\n" +
			"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n" +
			strings.Join(blocks, "\r\n") + "--b--\r\n")
	}
	block := func(action, status string) string {
		return "Final-Recipient: rfc822; a@example.org\r\nAction: " + action + "\r\nStatus: " + status + "\r\n"
	}
	for _, tc := range []struct {
		name                                   string
		raw                                    []byte
		delivered, relayed, permanent, delayed bool
		status                                 string
	}{
		{"relayed to a server without DSN is no delivery", dsn(block("relayed", "2.0.0")), false, true, false, false, "2.0.0"},
		{"expanded to a list is no delivery", dsn(block("expanded", "2.0.0")), false, true, false, false, "2.0.0"},
		{"a 2.x.x status without a known action is no delivery", dsn(block("x-unknown", "2.0.0")), false, true, false, false, "2.0.0"},
		{"delivered with a failure status is no delivery", dsn(block("delivered", "5.0.0")), false, false, false, false, "5.0.0"},
		{"delivered beats relayed", dsn(block("relayed", "2.0.0"), block("delivered", "2.1.5")), true, false, false, false, "2.1.5"},
		{"failed beats delivered", dsn(block("delivered", "2.0.0"), block("failed", "5.1.1")), false, false, true, false, "5.1.1"},
		{"delayed beats delivered", dsn(block("delivered", "2.0.0"), block("delayed", "4.4.1")), false, false, false, true, "4.4.1"},
	} {
		r, err := email.ParseReport(tc.raw)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if r.Delivered() != tc.delivered || r.Relayed() != tc.relayed || r.Permanent() != tc.permanent || r.Transient() != tc.delayed || r.Status != tc.status {
			t.Errorf("%s: %+v delivered %v relayed %v", tc.name, r, r.Delivered(), r.Relayed())
		}
	}
}

func TestMalformedReportsAreRefused(t *testing.T) {
	for name, raw := range map[string]string{
		"no header":                   "not a mail",
		"a report without a boundary": "Content-Type: multipart/report; report-type=delivery-status\r\n\r\nx",
		"a DSN without a status part": "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n",
		"a DSN whose status is not a code": "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\n" +
			"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\nFinal-Recipient: rfc822; a@b\r\nAction: failed\r\nStatus: 9.9.9\r\n--b--\r\n",
		"an ARF report without a type": "Content-Type: multipart/report; report-type=feedback-report; boundary=b\r\n\r\n--b\r\n" +
			"Content-Type: message/feedback-report\r\n\r\nVersion: 1\r\n--b--\r\n",
	} {
		if _, err := email.ParseReport([]byte(raw)); !errors.Is(err, email.ErrMalformed) {
			t.Errorf("%s: err %v", name, err)
		}
	}
}

func TestReplyTextIsTheNewTextAboveQuotesAndSignatures(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"plain text stays", "1\n", "1"},
		{"a quote marker ends it", "Better, thanks\n> How is your knee?", "Better, thanks"},
		{"an Outlook separator ends it", "See you Friday\r\n\r\n-----Original Message-----\r\nFrom: Clinic", "See you Friday"},
		{"an Outlook header block ends it", "OK\n\nFrom: Riverside Clinic <noreply@x>\nSent: Monday", "OK"},
		{"a signature ends it", "Yes\n-- \nJane Doe\nAcme Corp", "Yes"},
		{"a French attribution ends it", "Oui\n\nLe 3 mars 2026, Clinique a écrit :\n> Bonjour", "Oui"},
		{"a wrapped attribution ends it", "Fine\n\nOn Tue, Mar 3, 2026 at 10:00 AM Clinic <\nreply@x> wrote:\n> q", "Fine"},
		{"a reply that is all quote is empty", "> only a quote", ""},
		{"words that merely start with On stay", "On Monday I fell\nand it hurts", "On Monday I fell\nand it hurts"},
	} {
		if got := email.ReplyText(tc.in); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
	if got := email.ReplyText(strings.Repeat("a", 20000)); len([]rune(got)) != 10001 {
		t.Fatalf("a long reply is clipped to 10000 characters and an ellipsis: %d", len([]rune(got)))
	}
}

// FuzzParseReport: any mail is read or refused as malformed, never
// panics, what is kept of it holds no address, and a DSN reports at most
// one outcome (a delivery only with a 2.x.x status).
func FuzzParseReport(f *testing.F) {
	for _, name := range []string{"dsn-permanent.eml", "dsn-delayed.eml", "dsn-delivered.eml", "arf-abuse.eml", "reply-gmail.eml", "reply-gbk.eml", "reply-outlook.eml", "autoreply.eml"} {
		f.Add(fixture(f, name))
	}
	f.Add([]byte("Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; x@y\r\nStatus: 5.0.0\r\n--b--\r\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := email.ParseReport(raw)
		if err != nil {
			if !errors.Is(err, email.ErrMalformed) {
				t.Fatalf("error not classified: %v", err)
			}
			return
		}
		if strings.Contains(r.Diagnostic, "@") || len([]rune(r.Diagnostic)) > 301 {
			t.Fatalf("diagnostic %q", r.Diagnostic)
		}
		outcomes := 0
		for _, is := range []bool{r.Permanent(), r.Transient(), r.Delivered(), r.Relayed()} {
			if is {
				outcomes++
			}
		}
		if r.Kind == email.KindDSN && (len(r.Status) < 5 || outcomes > 1 || r.Delivered() && r.Status[0] != '2') {
			t.Fatalf("a DSN has one outcome, failed, delayed, delivered (2.x.x), relayed, or none: %+v", r)
		}
	})
}

// FuzzReplyText: the new text is valid UTF-8, clipped, and never longer
// than what came in.
func FuzzReplyText(f *testing.F) {
	f.Add("Yes\n> quoted")
	f.Add("On Tue, Mar 3 wrote:\n> q")
	f.Add("我胸口疼\n\n发自我的iPhone")
	f.Fuzz(func(t *testing.T, in string) {
		out := email.ReplyText(in)
		if !utf8.ValidString(out) || len([]rune(out)) > 10001 {
			t.Fatalf("%q", out)
		}
	})
}
