package email_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/channels/channeltest"
	"github.com/patientmsg/gateway/channels/email"
	"github.com/patientmsg/gateway/channels/email/smtpsim"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/returnpath"
	"github.com/patientmsg/gateway/internal/webhooks"
)

const webhookSecret = "the-relays-webhook-secret"

func returnsChannel(t *testing.T, url string) (*email.Channel, *returnpath.Keys) {
	t.Helper()
	keys, err := returnpath.New(returnSecret, returnDomain)
	if err != nil {
		t.Fatal(err)
	}
	ch, _ := newChannel(t, url, func(c *email.Config) {
		c.Returns, c.PublicURL, c.WebhookSecret = keys, "https://gw.example-clinic.test", webhookSecret
	})
	return ch, keys
}

func TestEachEmailCarriesItsOwnSignedReturnPathAndReplyTo(t *testing.T) {
	sim := smtpsim.New(smtpsim.Options{})
	defer sim.Close()
	ch, keys := returnsChannel(t, sim.URL())
	for _, priority := range []string{"normal", "bulk"} {
		m := message(inboundMsgID)
		m.Priority = priority
		sendOK(t, ch, m)
	}
	got, err := sim.WaitFor(2, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	bounce, reply := keys.Address(returnpath.Bounce, inboundMsgID), keys.Address(returnpath.Reply, inboundMsgID)
	for _, r := range got {
		if r.From != bounce || r.Header.Get("Reply-To") != "<"+reply+">" || !strings.Contains(r.Header.Get("From"), fromAddr) {
			t.Fatalf("envelope sender %q, Reply-To %q, From %q", r.From, r.Header.Get("Reply-To"), r.Header.Get("From"))
		}
	}
	if h := got[0].Header; h.Get("List-Unsubscribe") != "" || h.Get("List-Unsubscribe-Post") != "" {
		t.Fatalf("normal mail offers unsubscription: %q", h.Get("List-Unsubscribe"))
	}
	h := got[1].Header
	want := "<https://gw.example-clinic.test/u/" + keys.Token(inboundMsgID) + ">, <mailto:" + reply + "?subject=unsubscribe>"
	if h.Get("List-Unsubscribe") != want || h.Get("List-Unsubscribe-Post") != "List-Unsubscribe=One-Click" {
		t.Fatalf("bulk mail: List-Unsubscribe %q, List-Unsubscribe-Post %q", h.Get("List-Unsubscribe"), h.Get("List-Unsubscribe-Post"))
	}
}

func receiverWithMessage() *channeltest.RecordingReceiver {
	return &channeltest.RecordingReceiver{Messages: map[string]*ledger.Message{
		inboundMsgID: {ID: inboundMsgID, Request: ledger.Request{Channel: "email", To: ledger.Recipient{Email: patientEmail}},
			Status: ledger.StatusSent, ProviderID: messageHeader},
	}}
}

func TestAnUnsubscribeTokenOptsOutItsMessagesRecipientAndOnlyAGenuineOne(t *testing.T) {
	ch, keys := returnsChannel(t, "smtp+insecure://127.0.0.1:1")
	rcv := receiverWithMessage()
	tok := keys.Token(inboundMsgID)
	if known, err := ch.Unsubscribe(context.Background(), rcv, tok); !known || err != nil {
		t.Fatal(known, err)
	}
	if len(rcv.OptOuts) != 1 || rcv.OptOuts[0].Who.Email != patientEmail || !strings.Contains(rcv.OptOuts[0].Evidence, "one-click") ||
		len(rcv.Updates) != 1 || rcv.Updates[0].ProviderStatus != "unsubscribed" {
		t.Fatalf("opt-outs %+v updates %+v", rcv.OptOuts, rcv.Updates)
	}
	for _, bad := range []string{tok[:42] + "A", "x", keys.Token("01JBK7Q9ZK3M4N5P6Q7R8S9T0W")} {
		if known, err := ch.Unsubscribe(context.Background(), rcv, bad); known || err != nil {
			t.Errorf("token %q: %v %v", bad, known, err)
		}
	}
}

func TestTheEventsWebhookAppliesSignedEventsOnly(t *testing.T) {
	ch, keys := returnsChannel(t, "smtp+insecure://127.0.0.1:1")
	now := time.Now()
	for _, tc := range []struct {
		name, body string
		sign       func(body string) string
		status     int
		check      func(t *testing.T, r *channeltest.RecordingReceiver)
	}{
		{"a signed bounce fails the message", `{"events":[{"type":"bounce","message_id":"` + inboundMsgID + `","status":"5.1.1","diagnostic":"550 <` + patientEmail + `> unknown"}]}`,
			nil, 200, func(t *testing.T, r *channeltest.RecordingReceiver) {
				if len(r.Updates) != 1 || r.Updates[0].Status != ledger.StatusFailed || r.Updates[0].ErrorCode != "5.1.1" || strings.Contains(r.Updates[0].ErrorMessage, patientEmail) {
					t.Fatalf("%+v", r.Updates)
				}
			}},
		{"a delay named by its return path is a note", `{"events":[{"type":"delay","return_path":"` + keys.Address(returnpath.Bounce, inboundMsgID) + `","status":"4.4.1"}]}`,
			nil, 200, func(t *testing.T, r *channeltest.RecordingReceiver) {
				if len(r.Updates) != 1 || r.Updates[0].Status != ledger.StatusSent || r.Updates[0].ErrorCode != "4.4.1" {
					t.Fatalf("%+v", r.Updates)
				}
			}},
		{"a delivery report delivers it", `{"events":[{"type":"delivered","message_id":"` + inboundMsgID + `","status":"2.0.0"}]}`,
			nil, 200, func(t *testing.T, r *channeltest.RecordingReceiver) {
				if len(r.Updates) != 1 || r.Updates[0].Status != ledger.StatusDelivered || !strings.Contains(r.Updates[0].Detail, "2.0.0") {
					t.Fatalf("%+v", r.Updates)
				}
			}},
		{"a delivery with a 5.x.x status is refused", `{"events":[{"type":"delivered","message_id":"` + inboundMsgID + `","status":"5.1.1"}]}`,
			nil, 400, nil},
		{"a complaint opts out", `{"events":[{"type":"complaint","message_id":"` + strings.ToLower(inboundMsgID) + `","feedback_type":"abuse"}]}`,
			nil, 200, func(t *testing.T, r *channeltest.RecordingReceiver) {
				if len(r.OptOuts) != 1 || r.OptOuts[0].Who.Email != patientEmail {
					t.Fatalf("%+v", r.OptOuts)
				}
			}},
		{"an unsigned request is refused", `{"events":[{"type":"complaint","message_id":"` + inboundMsgID + `"}]}`,
			func(string) string { return "" }, 403, nil},
		{"a signature of another body is refused", `{"events":[{"type":"complaint","message_id":"` + inboundMsgID + `"}]}`,
			func(string) string { return webhooks.Sign(webhookSecret, now, []byte(`{}`)) }, 403, nil},
		{"an old signature is refused", `{"events":[{"type":"complaint","message_id":"` + inboundMsgID + `"}]}`,
			func(b string) string { return webhooks.Sign(webhookSecret, now.Add(-10*time.Minute), []byte(b)) }, 403, nil},
		{"a bounce with a 4.x.x status is refused whole", `{"events":[{"type":"complaint","message_id":"` + inboundMsgID + `"},{"type":"bounce","message_id":"` + inboundMsgID + `","status":"4.1.1"}]}`,
			nil, 400, nil},
		{"a forged return path is refused", `{"events":[{"type":"bounce","return_path":"bounce+01jbk7q9zk3m4n5p6q7r8s9t0v.aaaaaaaaaaaaaaaa@` + returnDomain + `","status":"5.1.1"}]}`,
			nil, 400, nil},
		{"an unknown message is skipped", `{"events":[{"type":"bounce","message_id":"01JBK7Q9ZK3M4N5P6Q7R8S9T0W","status":"5.1.1"}]}`,
			nil, 200, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rcv := receiverWithMessage()
			routes := ch.Routes(rcv)
			if len(routes) != 1 || routes[0].Path != email.EventsPath || routes[0].Method != http.MethodPost {
				t.Fatalf("routes %+v", routes)
			}
			sig := webhooks.Sign(webhookSecret, now, []byte(tc.body))
			if tc.sign != nil {
				sig = tc.sign(tc.body)
			}
			resp := routes[0].Handle(context.Background(), channels.WebhookRequest{Header: http.Header{email.SignatureHeader: {sig}}, Body: []byte(tc.body)})
			if resp.Status != tc.status {
				t.Fatalf("status %d %s", resp.Status, resp.Body)
			}
			if tc.check != nil {
				tc.check(t, rcv)
			} else if len(rcv.Updates)+len(rcv.OptOuts) != 0 {
				t.Fatalf("a refused request changed something: %+v %+v", rcv.Updates, rcv.OptOuts)
			}
		})
	}
}

func TestAnEmailAsksForDeliveryReportsOnlyOfARelayOfferingDSNAndOnlyWithAReturnPath(t *testing.T) {
	keys, err := returnpath.New(returnSecret, returnDomain)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name        string
		sim         smtpsim.Options
		cfg         func(*email.Config)
		notify, ret string
	}{
		{"with a return path a relay offering DSN is asked for every report, with the headers only", smtpsim.Options{},
			func(c *email.Config) { c.Returns = keys }, "SUCCESS,FAILURE,DELAY", "HDRS"},
		{"a relay that does not offer DSN is asked nothing, and takes the message", smtpsim.Options{NoDSN: true},
			func(c *email.Config) { c.Returns = keys }, "", ""},
		{"EMAIL_DSN=false asks nothing", smtpsim.Options{},
			func(c *email.Config) { c.Returns, c.NoDSN = keys, true }, "", ""},
		{"without a return path (reports would go to EMAIL_FROM) nothing is asked", smtpsim.Options{}, nil, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sim := smtpsim.New(tc.sim)
			defer sim.Close()
			ch, _ := newChannel(t, sim.URL(), tc.cfg)
			sendOK(t, ch, message(inboundMsgID))
			got, err := sim.WaitFor(1, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if len(got[0].Notify) != 1 || got[0].Notify[0] != tc.notify || got[0].Ret != tc.ret {
				t.Fatalf("NOTIFY %q RET %q, want %q %q", got[0].Notify, got[0].Ret, tc.notify, tc.ret)
			}
		})
	}
}

// lockedReceiver lets a test change and read a RecordingReceiver while
// the listener uses it from its own goroutines.
type lockedReceiver struct {
	mu sync.Mutex
	*channeltest.RecordingReceiver
}

func (r *lockedReceiver) Message(ctx context.Context, id string) (*ledger.Message, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, err := r.RecordingReceiver.Message(ctx, id)
	if err != nil {
		return nil, err
	}
	c := *m
	return &c, nil
}

func (r *lockedReceiver) ProviderStatus(ctx context.Context, id string, u ledger.ProviderUpdate) (ledger.Applied, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.RecordingReceiver.ProviderStatus(ctx, id, u)
}

func (r *lockedReceiver) do(f func(*channeltest.RecordingReceiver)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(r.RecordingReceiver)
}

// TestDeliveryReportsComeBackToTheMessage runs the real client, the SMTP
// simulator and the inbound listener together: a message to an existing
// mailbox is reported delivered, one to a mailbox set to bounce failed,
// one to an unknown mailbox is refused at RCPT TO and reported on by
// nothing.
func TestDeliveryReportsComeBackToTheMessage(t *testing.T) {
	const (
		delivered = "01JBK7Q9ZK3M4N5P6Q7R8S9T1A"
		bounced   = "01JBK7Q9ZK3M4N5P6Q7R8S9T1B"
		refused   = "01JBK7Q9ZK3M4N5P6Q7R8S9T1C"
	)
	keys, err := returnpath.New(returnSecret, returnDomain)
	if err != nil {
		t.Fatal(err)
	}
	to := map[string]string{delivered: "reads.mail@example.org", bounced: "gone@example.org", refused: "nobody@example.org"}
	rcv := &lockedReceiver{RecordingReceiver: &channeltest.RecordingReceiver{Messages: map[string]*ledger.Message{}}}
	for id, addr := range to {
		// As the ledger has it while the worker sends: no provider id yet.
		rcv.Messages[id] = &ledger.Message{ID: id, Request: ledger.Request{Channel: "email", To: ledger.Recipient{Email: addr}},
			Status: ledger.StatusSending}
	}
	in, err := email.Listen(email.InboundConfig{Addr: "127.0.0.1:0", Keys: keys, Receiver: rcv, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	sim := smtpsim.New(smtpsim.Options{ReturnMTA: in.Addr()})
	defer sim.Close()
	ch, _ := newChannel(t, sim.URL(), func(c *email.Config) { c.Returns = keys })
	sim.SetMailbox(to[bounced], smtpsim.Mailbox{Bounce: "5.1.1"})
	sim.SetMailbox(to[refused], smtpsim.Mailbox{Unknown: true})
	for _, id := range []string{delivered, bounced, refused} {
		m := message(id)
		m.To.Email = to[id]
		res, err := ch.Send(context.Background(), m)
		if id == refused {
			var se *channels.SendError
			if !errors.As(err, &se) || se.Code != "smtp_550" {
				t.Fatalf("an unknown mailbox: %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		// The worker records the relay's acceptance; until then the
		// listener defers a report (451) and the simulator tries again.
		rcv.do(func(r *channeltest.RecordingReceiver) {
			r.Messages[id].Status, r.Messages[id].ProviderID = ledger.StatusSent, res.ProviderID
		})
	}
	var updates []channeltest.Update
	for deadline := time.Now().Add(5 * time.Second); len(updates) < 2 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		rcv.do(func(r *channeltest.RecordingReceiver) { updates = append([]channeltest.Update(nil), r.Updates...) })
	}
	byID := map[string]ledger.ProviderUpdate{}
	for _, u := range updates {
		byID[u.MessageID] = u.ProviderUpdate
	}
	if u := byID[delivered]; len(updates) != 2 || u.Status != ledger.StatusDelivered || u.ProviderStatus != "delivered" ||
		!strings.Contains(u.Detail, "2.0.0") || u.ErrorCode != "" {
		t.Fatalf("updates %+v", updates)
	}
	if u := byID[bounced]; u.Status != ledger.StatusFailed || u.ErrorCode != "5.1.1" {
		t.Fatalf("the bounce %+v", u)
	}
	sent := sim.SentMail()
	for _, s := range sent {
		if s.Err != nil {
			t.Fatalf("the listener refused the simulator's %s: %v", s.Kind, s.Err)
		}
	}
	if len(sent) != 2 {
		t.Fatalf("%d reports sent, want one for each accepted message", len(sent))
	}
}
