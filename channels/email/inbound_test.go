package email_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/patientmsg/gateway/channels/channeltest"
	"github.com/patientmsg/gateway/channels/email"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/returnpath"
)

const (
	inboundMsgID  = "01JBK7Q9ZK3M4N5P6Q7R8S9T0V"
	patientEmail  = "patient.wang@example.org"
	returnSecret  = "the-tests-return-path-secret-0123456789"
	returnDomain  = "mail.example-clinic.test"
	messageHeader = "01JBK7Q9ZK3M4N5P6Q7R8S9T0V.k3j5@example-clinic.test"
)

type inboundEnv struct {
	l    *email.Listener
	keys *returnpath.Keys
	rcv  *channeltest.RecordingReceiver
	logs *channeltest.LogBuffer
}

func startInbound(t *testing.T, mutate ...func(*email.InboundConfig)) *inboundEnv {
	t.Helper()
	keys, err := returnpath.New(returnSecret, returnDomain)
	if err != nil {
		t.Fatal(err)
	}
	e := &inboundEnv{keys: keys, logs: &channeltest.LogBuffer{}, rcv: &channeltest.RecordingReceiver{Messages: map[string]*ledger.Message{
		inboundMsgID: {ID: inboundMsgID, Request: ledger.Request{Channel: "email", To: ledger.Recipient{Email: patientEmail}},
			Status: ledger.StatusSent, ProviderID: messageHeader},
	}}}
	cfg := email.InboundConfig{Addr: "127.0.0.1:0", Keys: keys, Receiver: e.rcv, MaxBytes: 64 << 10, PerMinute: 100,
		Logger: slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	for _, m := range mutate {
		m(&cfg)
	}
	if e.l, err = email.Listen(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.l.Close() })
	return e
}

// send delivers raw to rcpt as an MTA does, with the null sender.
func (e *inboundEnv) send(rcpt string, raw []byte) error {
	c, err := smtp.Dial(e.l.Addr())
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Mail("", nil); err != nil {
		return err
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(raw); err != nil {
		return err
	}
	return w.Close()
}

func smtpCode(err error) (int, string) {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code, fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
	}
	return 0, ""
}

func TestTheInboundListenerAppliesWhatMailReportsAboutTheMessageItsAddressNames(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		kind       returnpath.Kind
		check      func(t *testing.T, r *channeltest.RecordingReceiver)
	}{
		{"a permanent DSN to the return path fails the message with its status", "dsn-permanent.eml", returnpath.Bounce, func(t *testing.T, r *channeltest.RecordingReceiver) {
			if len(r.Updates) != 1 {
				t.Fatalf("updates %+v", r.Updates)
			}
			u := r.Updates[0]
			if u.MessageID != inboundMsgID || u.Status != ledger.StatusFailed || u.ProviderID != messageHeader || u.ErrorCode != "5.1.1" ||
				!strings.Contains(u.ErrorMessage, "mailbox does not exist: smtp; 550 5.1.1 <address>: Recipient address rejected") {
				t.Fatalf("update %+v", u)
			}
		}},
		{"a delay leaves the status and notes its status", "dsn-delayed.eml", returnpath.Bounce, func(t *testing.T, r *channeltest.RecordingReceiver) {
			if len(r.Updates) != 1 || r.Updates[0].Status != ledger.StatusSent || r.Updates[0].ProviderStatus != "delayed" || r.Updates[0].ErrorCode != "4.2.2" {
				t.Fatalf("updates %+v", r.Updates)
			}
		}},
		{"a success DSN to the return path delivers the message, its status in the detail and no error", "dsn-delivered.eml", returnpath.Bounce, func(t *testing.T, r *channeltest.RecordingReceiver) {
			if len(r.Updates) != 1 {
				t.Fatalf("updates %+v", r.Updates)
			}
			u := r.Updates[0]
			if u.MessageID != inboundMsgID || u.Status != ledger.StatusDelivered || u.ProviderStatus != "delivered" || u.ProviderID != messageHeader ||
				!strings.Contains(u.Detail, "2.0.0") || u.ErrorCode != "" || u.ErrorMessage != "" {
				t.Fatalf("update %+v", u)
			}
		}},
		{"a relayed DSN notes its status and leaves the message sent", "dsn-relayed", returnpath.Bounce, func(t *testing.T, r *channeltest.RecordingReceiver) {
			if len(r.Updates) != 1 || r.Updates[0].Status != ledger.StatusSent || r.Updates[0].ProviderStatus != "relayed" ||
				!strings.Contains(r.Updates[0].Detail, "2.0.0") || r.Updates[0].ErrorCode != "" {
				t.Fatalf("updates %+v", r.Updates)
			}
		}},
		{"a success DSN to the reply address is no delivery", "dsn-delivered.eml", returnpath.Reply, func(t *testing.T, r *channeltest.RecordingReceiver) {
			if len(r.Updates)+len(r.Inbounds) != 0 {
				t.Fatalf("%+v %+v", r.Updates, r.Inbounds)
			}
		}},
		{"a complaint opts the message's recipient out, with evidence", "arf-abuse.eml", returnpath.Bounce, func(t *testing.T, r *channeltest.RecordingReceiver) {
			if len(r.OptOuts) != 1 || r.OptOuts[0].Channel != "email" || r.OptOuts[0].Who.Email != patientEmail ||
				r.OptOuts[0].Evidence != "email complaint about message "+inboundMsgID+" (ARF feedback type abuse)" {
				t.Fatalf("opt-outs %+v", r.OptOuts)
			}
		}},
		{"a reply is the patient's inbound message, its new text only", "reply-gmail.eml", returnpath.Reply, func(t *testing.T, r *channeltest.RecordingReceiver) {
			if len(r.Inbounds) != 1 || r.Inbounds[0].Channel != "email" || r.Inbounds[0].From.Email != patientEmail ||
				r.Inbounds[0].Body != "2 – it is worse and I have chest pain" || len(r.Inbounds[0].ProviderID) != 32 {
				t.Fatalf("inbounds %+v", r.Inbounds)
			}
		}},
		{"an out-of-office changes nothing", "autoreply.eml", returnpath.Reply, func(t *testing.T, r *channeltest.RecordingReceiver) {
			if len(r.Inbounds)+len(r.Updates)+len(r.OptOuts) != 0 {
				t.Fatalf("%+v %+v %+v", r.Inbounds, r.Updates, r.OptOuts)
			}
		}},
		{"a DSN to the reply address is no bounce", "dsn-permanent.eml", returnpath.Reply, func(t *testing.T, r *channeltest.RecordingReceiver) {
			if len(r.Updates)+len(r.Inbounds) != 0 {
				t.Fatalf("%+v %+v", r.Updates, r.Inbounds)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startInbound(t)
			var raw []byte
			if tc.file == "dsn-relayed" {
				// Postfix's report of a relay to a server without DSN.
				raw = bytes.Replace(fixture(t, "dsn-delivered.eml"), []byte("Action: delivered"), []byte("Action: relayed"), 1)
			} else {
				raw = fixture(t, tc.file)
			}
			if err := e.send(e.keys.Address(tc.kind, inboundMsgID), raw); err != nil {
				t.Fatal(err)
			}
			tc.check(t, e.rcv)
			for _, secret := range []string{patientEmail, "gone.patient", "complainer", "chest pain", "Mailbox full", e.keys.Address(tc.kind, inboundMsgID)} {
				if strings.Contains(e.logs.String(), secret) {
					t.Fatalf("logs contain %q", secret)
				}
			}
		})
	}
}

func TestTheInboundListenerRefusesWhatIsNotForItOrTooMuch(t *testing.T) {
	e := startInbound(t, func(c *email.InboundConfig) {
		c.MaxBytes = 8 << 10
		c.PerMinute = 4
		c.Now = func() time.Time { return time.Date(2026, 3, 3, 10, 0, 30, 0, time.UTC) }
	})
	bounce := e.keys.Address(returnpath.Bounce, inboundMsgID)
	sig := bounce[strings.IndexByte(bounce, '.')+1 : strings.IndexByte(bounce, '@')]
	for _, tc := range []struct {
		name, rcpt string
		raw        []byte
		code       int
		enh        string
	}{
		{"relaying to another domain is refused", "someone@example.org", fixture(t, "dsn-permanent.eml"), 550, "5.7.1"},
		{"a forged return path (another message's id under a signature) is refused", "bounce+01jbk7q9zk3m4n5p6q7r8s9t0w." + sig + "@" + returnDomain, fixture(t, "dsn-permanent.eml"), 550, "5.1.1"},
		{"a mailbox of the return domain that is no return path is refused", "postmaster@" + returnDomain, fixture(t, "dsn-permanent.eml"), 550, "5.1.1"},
		{"an oversize mail is refused", bounce, append(fixture(t, "dsn-permanent.eml"), bytes.Repeat([]byte(strings.Repeat("x", 70)+"\r\n"), 140)...), 552, "5.3.4"},
		{"past the client's rate a mail is deferred", bounce, fixture(t, "dsn-permanent.eml"), 450, "4.7.1"},
	} {
		err := e.send(tc.rcpt, tc.raw)
		if code, enh := smtpCode(err); code != tc.code || enh != tc.enh {
			t.Errorf("%s: got %v", tc.name, err)
		}
	}
	if len(e.rcv.Updates) != 0 {
		t.Fatalf("a refused mail changed a message: %+v", e.rcv.Updates)
	}
	if strings.Contains(e.logs.String(), "someone@example.org") || strings.Contains(e.logs.String(), sig) {
		t.Fatal("logs contain a recipient")
	}
}

func TestAMailThatCannotBeAppliedNowIsDeferredAndAMalformedOneRefused(t *testing.T) {
	e := startInbound(t)
	e.rcv.Err = errors.New("redis down")
	bounce := e.keys.Address(returnpath.Bounce, inboundMsgID)
	if code, enh := smtpCode(e.send(bounce, fixture(t, "dsn-permanent.eml"))); code != 451 || enh != "4.3.0" {
		t.Fatalf("storage outage: %d %s", code, enh)
	}
	e.rcv.Err = nil
	// A bounce quicker than the worker that records the relay's acceptance.
	e.rcv.Messages[inboundMsgID].ProviderID, e.rcv.Messages[inboundMsgID].Status = "", ledger.StatusSending
	if code, enh := smtpCode(e.send(bounce, fixture(t, "dsn-permanent.eml"))); code != 451 || enh != "4.3.0" {
		t.Fatalf("a bounce before the send is recorded: %d %s", code, enh)
	}
	bad := "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n"
	if code, enh := smtpCode(e.send(bounce, []byte(bad))); code != 550 || enh != "5.6.0" {
		t.Fatalf("malformed DSN: %d %s", code, enh)
	}
	// A bounce about a message the gateway no longer has is taken and dropped.
	other := e.keys.Address(returnpath.Bounce, "01JBK7Q9ZK3M4N5P6Q7R8S9T0W")
	if err := e.send(other, fixture(t, "dsn-permanent.eml")); err != nil || len(e.rcv.Updates) != 0 {
		t.Fatalf("unknown message: %v %+v", err, e.rcv.Updates)
	}
}
