package service_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/ledger"
)

// shortTimeouts: a provider call gives up after 300 ms, and a message whose
// attempt's outcome is unknown waits 1 s before the next.
func shortTimeouts(c *config.Config) {
	c.Worker.ProviderTimeout = 300 * time.Millisecond
	c.Worker.UnconfirmedGrace = time.Second
}

func notes(m *ledger.Message) string {
	var b strings.Builder
	for _, ev := range m.Events {
		b.WriteString(ev.Detail + "\n")
	}
	return b.String()
}

// TestAnSMSWhoseAnswerWasLostIsFoundAtTwilioAndNotSentTwice: Twilio
// accepts the message but its answer comes after the client gave up, and
// its status callbacks are lost too. The next attempt asks Twilio first,
// finds the message and records it instead of sending it again; the
// reconciler later asks Twilio for the status the lost callback carried.
//
// The simulator makes the message when its latency is over, so the next
// attempt (after UnconfirmedGrace, counted from the first one's claim)
// must come clearly later than that: 2 s against 1 s, where 1 s against
// 1 s let a busy machine ask Twilio before the message was made.
func TestAnSMSWhoseAnswerWasLostIsFoundAtTwilioAndNotSentTwice(t *testing.T) {
	e := start(t, config.RoleAll, shortTimeouts, func(c *config.Config) { c.Worker.UnconfirmedGrace = 2 * time.Second })
	e.sim.Script(twiliosim.Reply{Latency: time.Second, DropCallbacks: true})
	id := e.send(keyA, smsBody(patientPhone, "Your results are ready"))
	m := e.waitFor(id, ledger.StatusSent, 15*time.Second)
	if n := e.sim.MessagesTo(patientPhone); n != 1 {
		t.Fatalf("%d messages reached the patient, want exactly 1", n)
	}
	if !strings.HasPrefix(m.ProviderID, "SM") || !strings.Contains(notes(m), "not sent again") {
		t.Fatalf("the message: provider %q, history:\n%s", m.ProviderID, notes(m))
	}
	if _, lists := e.sim.Lookups(); lists == 0 {
		t.Fatal("Twilio was never asked")
	}
	// No callback will come: the reconciler asks once the message has
	// waited DELIVERY_REPORT_WAIT.
	e.svc.Reconciler.Now = func() time.Time { return time.Now().Add(e.cfg.Worker.ReportWait + time.Minute) }
	res, err := e.svc.Reconciler.Pass(context.Background())
	if err != nil || res.Applied != 1 {
		t.Fatalf("reconciliation: %+v %v", res, err)
	}
	if m := e.message(id); m.Status != ledger.StatusDelivered {
		t.Fatalf("after reconciliation: %s", m.Status)
	}
	if res, _ := e.svc.Reconciler.Pass(context.Background()); res.Asked != 0 {
		t.Fatalf("a delivered message was asked about again: %+v", res)
	}
	e.assertNoPatientDataLogged("Your results are ready")
}

// TestAnAttemptThatNeverReachedTwilioIsSentAgainOnce: the request timed
// out and Twilio made nothing; asked, Twilio holds nothing, so the message
// is sent again — once.
func TestAnAttemptThatNeverReachedTwilioIsSentAgainOnce(t *testing.T) {
	e := start(t, config.RoleAll, shortTimeouts)
	e.sim.Script(twiliosim.Reply{Latency: time.Second, Status: 500})
	id := e.send(keyA, smsBody(patientPhone, "Your results are ready"))
	e.waitFor(id, ledger.StatusDelivered, 15*time.Second)
	if n := e.sim.MessagesTo(patientPhone); n != 1 {
		t.Fatalf("%d messages reached the patient, want exactly 1", n)
	}
	// Same words to the same patient again, a new message: its own send,
	// never mistaken for the first one's.
	id2 := e.send(keyA, smsBody(patientPhone, "Your results are ready"))
	m2 := e.waitFor(id2, ledger.StatusDelivered, 15*time.Second)
	if m1 := e.message(id); m1.ProviderID == m2.ProviderID || e.sim.MessagesTo(patientPhone) != 2 {
		t.Fatalf("two messages with the same words: %q %q, %d sent", m1.ProviderID, m2.ProviderID, e.sim.MessagesTo(patientPhone))
	}
}

// TestACallWhoseStatusCallbackWasLostIsAskedForItsStatus: the call was
// answered and played, but none of its status callbacks arrived; the
// reconciler asks Twilio for the call and applies completed as delivered.
func TestACallWhoseStatusCallbackWasLostIsAskedForItsStatus(t *testing.T) {
	e := start(t, config.RoleAll)
	e.sim.SetCallPlan(twiliosim.CallPlan{DropCallbacks: true})
	id := e.send(keyA, `{"channel":"voice","to":{"phone":"`+patientPhone+`"},"body":"Your appointment is tomorrow at ten."}`)
	e.waitFor(id, ledger.StatusSent, 15*time.Second)
	waitUntil(t, 15*time.Second, "the call to end", func() bool {
		calls := e.sim.Calls()
		return len(calls) == 1 && calls[0].Done
	})
	if m := e.message(id); m.Status != ledger.StatusSent {
		t.Fatalf("without callbacks the call is %s", m.Status)
	}
	e.svc.Reconciler.Now = func() time.Time { return time.Now().Add(e.cfg.Worker.ReportWait + time.Minute) }
	res, err := e.svc.Reconciler.Pass(context.Background())
	if err != nil || res.Applied != 1 {
		t.Fatalf("reconciliation: %+v %v", res, err)
	}
	if m := e.message(id); m.Status != ledger.StatusDelivered {
		t.Fatalf("after reconciliation the call is %s", m.Status)
	}
}

// TestABusyCallWhoseStatusCallbackWasLostIsCalledAgain: the line was busy
// and the callback saying so was lost; the reconciler learns it from
// Twilio and places the call again as the callback would have, and the
// patient answers the second call.
func TestABusyCallWhoseStatusCallbackWasLostIsCalledAgain(t *testing.T) {
	e := start(t, config.RoleAll, func(c *config.Config) { c.Voice.RedialDelay = time.Second })
	e.sim.SetCallPlan(twiliosim.CallPlan{Outcome: twiliosim.CallBusy, DropCallbacks: true})
	id := e.send(keyA, `{"channel":"voice","to":{"phone":"`+patientPhone+`"},"body":"Your appointment is tomorrow at ten."}`)
	e.waitFor(id, ledger.StatusSent, 15*time.Second)
	waitUntil(t, 15*time.Second, "the busy call to end", func() bool {
		calls := e.sim.Calls()
		return len(calls) == 1 && calls[0].Done
	})
	e.sim.SetCallPlan(twiliosim.CallPlan{}) // the next call is answered, its callbacks arrive
	e.svc.Reconciler.Now = func() time.Time { return time.Now().Add(e.cfg.Worker.ReportWait + time.Minute) }
	res, err := e.svc.Reconciler.Pass(context.Background())
	if err != nil || res.Applied != 1 {
		t.Fatalf("reconciliation: %+v %v", res, err)
	}
	m := e.waitFor(id, ledger.StatusDelivered, 20*time.Second)
	if n := len(e.sim.Calls()); n != 2 {
		t.Fatalf("%d calls placed, want the busy one and one more", n)
	}
	busy := false
	for _, ev := range m.Events {
		busy = busy || ev.ProviderStatus == "busy" || (ev.Error != nil && ev.Error.Code == "busy")
	}
	if !busy {
		t.Fatalf("the history does not say the first call was busy: %+v", m.Events)
	}
}
