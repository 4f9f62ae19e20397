package service_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/patientmsg/gateway/channels/email/smtpsim"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/ledger"
)

const (
	returnDomain = "mail.example-clinic.test"
	returnSecret = "the-e2e-return-path-secret-0123456789abcdef"
)

// startWithReturns runs the gateway with per-message return paths and the
// inbound SMTP listener, and points the SMTP simulator's notifications at
// it.
func startWithReturns(t *testing.T) *env {
	t.Helper()
	e := start(t, config.RoleAll, func(c *config.Config) {
		c.Email.ReturnDomain, c.Email.ReturnSecret, c.Email.InboundAddr = returnDomain, returnSecret, "127.0.0.1:0"
	})
	if e.svc.MailIn == nil {
		t.Fatal("the inbound listener did not start")
	}
	e.smtp.SetReturnMTA(e.svc.MailIn.Addr())
	return e
}

// sentEmail sends an email and returns its id and what the simulator received.
func (e *env) sentEmail(to, extra string) (string, smtpsim.Received) {
	e.t.Helper()
	id := e.send(keyA, `{"channel":"email","to":{"email":"`+to+`"},"subject":"How is your knee today?","body":"Reply 1 if better, 2 if worse."`+extra+`}`)
	e.waitFor(id, ledger.StatusSent, 10*time.Second)
	var got []smtpsim.Received
	waitUntil(e.t, 5*time.Second, "the email at the simulator", func() bool { got = e.smtp.MessagesTo(to); return len(got) > 0 })
	return id, got[len(got)-1]
}

// history waits for an event of the message's history with that
// provider status.
func (e *env) historyEvent(id, providerStatus string) ledger.Event {
	e.t.Helper()
	var found ledger.Event
	waitUntil(e.t, 10*time.Second, "a "+providerStatus+" event", func() bool {
		m, err := e.svc.Ledger.Get(context.Background(), "", id)
		if err != nil {
			return false
		}
		for _, ev := range m.Events {
			if ev.ProviderStatus == providerStatus {
				found = ev
				return true
			}
		}
		return false
	})
	return found
}

func TestEmailBouncesComeBackThroughTheReturnPath(t *testing.T) {
	e := startWithReturns(t)
	const gone, full, nobody = "gone.patient@example.org", "full.mailbox@example.org", "nobody.here@example.org"
	e.smtp.SetMailbox(gone, smtpsim.Mailbox{Bounce: "5.1.1"})
	e.smtp.SetMailbox(full, smtpsim.Mailbox{Bounce: "4.2.2"})
	e.smtp.SetMailbox(nobody, smtpsim.Mailbox{Unknown: true})

	bounced, r := e.sentEmail(gone, "")
	if !strings.HasPrefix(r.From, "bounce+"+strings.ToLower(bounced)+".") || !strings.HasSuffix(r.From, "@"+returnDomain) ||
		!strings.HasPrefix(r.Header.Get("Reply-To"), "<reply+"+strings.ToLower(bounced)+".") || !strings.Contains(r.Header.Get("From"), "noreply@example-clinic.test") {
		t.Fatalf("envelope sender %q, Reply-To %q, From %q", r.From, r.Header.Get("Reply-To"), r.Header.Get("From"))
	}
	m := e.waitFor(bounced, ledger.StatusFailed, 10*time.Second)
	if m.Error == nil || m.Error.Code != "5.1.1" || !strings.Contains(m.Error.Message, "mailbox does not exist") || strings.Contains(m.Error.Message, gone) {
		t.Fatalf("a permanent bounce: error %+v", m.Error)
	}
	if ev := e.historyEvent(bounced, "bounced"); ev.Status != ledger.StatusFailed || ev.Error == nil || ev.Error.Code != "5.1.1" {
		t.Fatalf("history %+v", ev)
	}
	view := e.do("GET", "/v1/messages/"+bounced, keyA, "")
	if view.Body["status"] != "failed" || !strings.Contains(view.Raw, "5.1.1") {
		t.Fatalf("the API shows %s", view.Raw)
	}

	delayed, _ := e.sentEmail(full, "")
	ev := e.historyEvent(delayed, "delayed")
	if ev.Error == nil || ev.Error.Code != "4.2.2" {
		t.Fatalf("a delay's note %+v", ev)
	}
	if m, _ := e.svc.Ledger.Get(context.Background(), "", delayed); m.Status != ledger.StatusSent {
		t.Fatalf("a delay changed the status to %s", m.Status)
	}

	refused := e.send(keyA, `{"channel":"email","to":{"email":"`+nobody+`"},"subject":"x","body":"x"}`)
	if m := e.waitFor(refused, ledger.StatusFailed, 10*time.Second); m.Error == nil || m.Error.Code != "smtp_550" {
		t.Fatalf("an unknown mailbox at RCPT: %+v", m.Error)
	}
	for _, s := range e.smtp.SentMail() {
		if s.Err != nil {
			t.Fatalf("the listener refused the simulator's %s: %v", s.Kind, s.Err)
		}
	}
	e.assertNoPatientDataLogged(gone, full, nobody, "Reply 1 if better", returnSecret)
}

// deliverToMailIn hands raw to the inbound listener for rcpt, as the
// relay's MTA does, with the null sender.
func (e *env) deliverToMailIn(rcpt string, raw []byte) {
	e.t.Helper()
	c, err := smtp.Dial(e.svc.MailIn.Addr())
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Close()
	if err := c.SendMail("", []string{rcpt}, bytes.NewReader(raw)); err != nil {
		e.t.Fatalf("the listener refused the mail: %v", err)
	}
}

func TestAnEmailIsDeliveredWhenTheRelayReportsItsDelivery(t *testing.T) {
	e := startWithReturns(t)
	const reader, gone, nobody = "reads.mail@example.org", "gone.patient@example.org", "nobody.here@example.org"
	e.smtp.SetMailbox(gone, smtpsim.Mailbox{Bounce: "5.1.1"})
	e.smtp.SetMailbox(nobody, smtpsim.Mailbox{Unknown: true})

	id, r := e.sentEmail(reader, "")
	if len(r.Notify) != 1 || r.Notify[0] != "SUCCESS,FAILURE,DELAY" || r.Ret != "HDRS" {
		t.Fatalf("the relay was asked NOTIFY %q RET %q", r.Notify, r.Ret)
	}
	m := e.waitFor(id, ledger.StatusDelivered, 10*time.Second)
	if m.Error != nil {
		t.Fatalf("a delivered email has an error: %+v", m.Error)
	}
	ev := e.historyEvent(id, "delivered")
	if ev.Status != ledger.StatusDelivered || !strings.Contains(ev.Detail, "2.0.0") || ev.Error != nil {
		t.Fatalf("the delivery in the history %+v", ev)
	}
	if view := e.do("GET", "/v1/messages/"+id, keyA, ""); view.Body["status"] != "delivered" || !strings.Contains(view.Raw, "2.0.0") {
		t.Fatalf("the API shows %s", view.Raw)
	}

	// The relay's MTA delivers the same report again: nothing changes.
	var report []byte
	for _, s := range e.smtp.SentMail() {
		if s.Kind == "dsn" && s.To == r.From {
			report = s.Raw
		}
	}
	if report == nil {
		t.Fatal("the simulator sent no success report")
	}
	before := len(m.Events)
	e.deliverToMailIn(r.From, report)
	if again, _ := e.svc.Ledger.Get(context.Background(), "", id); again.Status != ledger.StatusDelivered || len(again.Events) != before {
		t.Fatalf("a repeated report: status %s, %d events, had %d", again.Status, len(again.Events), before)
	}

	// A success report about an email that bounced does not move it back.
	bounced, br := e.sentEmail(gone, "")
	e.waitFor(bounced, ledger.StatusFailed, 10*time.Second)
	e.historyEvent(bounced, "bounced")
	e.deliverToMailIn(br.From, smtpsim.DSN(br, gone, "2.0.0", ""))
	if m, _ := e.svc.Ledger.Get(context.Background(), "", bounced); m.Status != ledger.StatusFailed || m.Error == nil || m.Error.Code != "5.1.1" {
		t.Fatalf("a late success report about a bounced email: %s %+v", m.Status, m.Error)
	}

	// An unknown mailbox is refused at RCPT TO: failed, and no report.
	reports := len(e.smtp.SentMail())
	refused := e.send(keyA, `{"channel":"email","to":{"email":"`+nobody+`"},"subject":"x","body":"x"}`)
	if m := e.waitFor(refused, ledger.StatusFailed, 10*time.Second); m.Error == nil || m.Error.Code != "smtp_550" {
		t.Fatalf("an unknown mailbox at RCPT: %+v", m.Error)
	}
	if n := len(e.smtp.SentMail()); n != reports {
		t.Fatalf("%d reports after a refused recipient, had %d", n, reports)
	}
	for _, s := range e.smtp.SentMail() {
		if s.Err != nil {
			t.Fatalf("the listener refused the simulator's %s: %v", s.Kind, s.Err)
		}
	}
	e.assertNoPatientDataLogged(reader, gone, nobody, "Reply 1 if better", returnSecret)
}

func TestAnEmailComplaintOptsTheAddressOut(t *testing.T) {
	e := startWithReturns(t)
	const addr = "complainer@example.org"
	id, r := e.sentEmail(addr, `,"priority":"bulk"`)
	if err := e.smtp.Complain(r); err != nil {
		t.Fatal(err)
	}
	e.historyEvent(id, "complained")
	for _, tenant := range []string{"clinic-a", "clinic-b"} {
		out, err := e.svc.Consent.OptedOut(context.Background(), tenant, consent.Identity{Kind: consent.Email, Value: addr})
		if err != nil || !out {
			t.Fatalf("%s: opted out %v %v", tenant, out, err)
		}
	}
	later := e.send(keyA, `{"channel":"email","to":{"email":"`+addr+`"},"subject":"x","body":"x"}`)
	e.waitFor(later, ledger.StatusSuppressed, 10*time.Second)
	if n := len(e.smtp.MessagesTo(addr)); n != 1 {
		t.Fatalf("the address received %d emails after complaining", n)
	}
	e.assertNoPatientDataLogged(addr, "Reply 1 if better")
}

func TestAnEmailReplyIsFiledAgainstItsQuestionAndEscalates(t *testing.T) {
	e := startWithReturns(t)
	const nurse = "+14155550177"
	if a := e.do("PUT", "/v1/escalation-rules", keyA, `{"keywords":["chest pain"],"on_call":[{"channel":"sms","phone":"`+nurse+`"}]}`); a.Status != 200 {
		t.Fatalf("PUT rules = %d %s", a.Status, a.Raw)
	}
	const addr = "patient.wang@example.org"
	id, r := e.sentEmail(addr, `,"expect_reply":{"options":{"1":"better","2":"worse"},"within":"1h"}`)
	if err := e.smtp.Reply(r, "2\n\n-- \nWang"); err != nil {
		t.Fatal(err)
	}
	replies := e.waitReplies(1)
	if rep := replies[0].(map[string]any); rep["channel"] != "email" || rep["in_reply_to"] != id || rep["option"] != "worse" || rep["body"] != "2" {
		t.Fatalf("the answer %v", rep)
	}
	if list := e.do("GET", "/v1/escalations?state=open", keyA, ""); !strings.Contains(list.Raw, `"escalations":[]`) {
		t.Fatalf("an ordinary answer escalated: %s", list.Raw)
	}
	if err := e.smtp.Reply(r, "Now I have chest pain too"); err != nil {
		t.Fatal(err)
	}
	second := false
	for _, rep := range e.waitReplies(2) {
		rep := rep.(map[string]any)
		second = second || rep["in_reply_to"] == id && rep["body"] == "Now I have chest pain too"
	}
	if !second {
		t.Fatal("the second reply is not in the feed about the message")
	}
	waitUntil(t, 10*time.Second, "the nurse's page", func() bool { return e.sim.MessagesTo(nurse) == 1 })
	if list := e.do("GET", "/v1/escalations?state=open", keyA, ""); !strings.Contains(list.Raw, id) {
		t.Fatalf("no escalation for the message: %s", list.Raw)
	}
	e.assertNoPatientDataLogged(addr, "chest pain", "Reply 1 if better")
}

func TestOneClickUnsubscribeOptsOutAndOnlyWithAGenuineLink(t *testing.T) {
	e := startWithReturns(t)
	const addr = "bulk.reader@example.org"
	id, r := e.sentEmail(addr, `,"priority":"bulk"`)
	if r.Header.Get("List-Unsubscribe-Post") != "List-Unsubscribe=One-Click" {
		t.Fatalf("List-Unsubscribe-Post %q", r.Header.Get("List-Unsubscribe-Post"))
	}
	link := strings.TrimSuffix(strings.TrimPrefix(strings.Split(r.Header.Get("List-Unsubscribe"), ",")[0], "<"), ">")
	if !strings.HasPrefix(link, e.cfg.PublicURL+"/u/") {
		t.Fatalf("List-Unsubscribe %q", r.Header.Get("List-Unsubscribe"))
	}
	path := strings.TrimPrefix(link, e.cfg.PublicURL)
	page := e.do("GET", path, "", "")
	if page.Status != 200 || !strings.Contains(page.Raw, `<form method="post">`) {
		t.Fatalf("GET = %d %s", page.Status, page.Raw)
	}
	if out, _ := e.svc.Consent.OptedOut(context.Background(), "clinic-a", consent.Identity{Kind: consent.Email, Value: addr}); out {
		t.Fatal("opening the link unsubscribed")
	}
	// One character changed in the middle of the token: the last one may
	// hold only padding bits, and a change there names the same token.
	mid := len(path) - 8
	forged := path[:mid] + map[bool]string{true: "B", false: "A"}[path[mid] == 'A'] + path[mid+1:]
	if a := e.post(forged); a.StatusCode != 404 {
		t.Fatalf("a forged link = %d", a.StatusCode)
	}
	if a := e.post(path); a.StatusCode != 200 {
		t.Fatalf("one-click POST = %d", a.StatusCode)
	}
	if out, _ := e.svc.Consent.OptedOut(context.Background(), "clinic-a", consent.Identity{Kind: consent.Email, Value: addr}); !out {
		t.Fatal("not opted out")
	}
	e.historyEvent(id, "unsubscribed")
	later := e.send(keyA, `{"channel":"email","to":{"email":"`+addr+`"},"subject":"x","body":"x","priority":"bulk"}`)
	e.waitFor(later, ledger.StatusSuppressed, 10*time.Second)
	e.assertNoPatientDataLogged(addr, strings.TrimPrefix(path, "/u/"))
}

// waitReplies waits until tenant A's reply feed holds n replies, and
// returns them.
func (e *env) waitReplies(n int) []any {
	e.t.Helper()
	var replies []any
	waitUntil(e.t, 10*time.Second, "the replies in the feed", func() bool {
		a := e.do("GET", "/v1/replies", keyA, "")
		replies, _ = a.Body["replies"].([]any)
		return len(replies) == n
	})
	return replies
}

// post posts a one-click unsubscription as a mail client does.
func (e *env) post(path string) *http.Response {
	e.t.Helper()
	resp, err := e.http.PostForm(e.base+path, url.Values{"List-Unsubscribe": {"One-Click"}})
	if err != nil {
		e.t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}
