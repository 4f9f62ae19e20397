package email_test

import (
	"context"
	"net/http"
	"strings"
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
