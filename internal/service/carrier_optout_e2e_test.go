package service_test

import (
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/ledger"
)

// TestTwiliosOwnOptOutIsHonouredAndRecorded: the patient's STOP reached
// Twilio but not the gateway (its webhook was down). Twilio refuses the
// next message with 21610, as it does; the gateway records the opt-out
// from that answer, and the message after is suppressed before it
// reaches Twilio. START lifts both.
func TestTwiliosOwnOptOutIsHonouredAndRecorded(t *testing.T) {
	e := start(t, config.RoleAll)
	e.sim.HandsetReplied(patientPhone, "stop")
	first := e.send(keyA, smsBody(patientPhone, "Your appointment is tomorrow"))
	m := e.waitFor(first, ledger.StatusSuppressed, 10*time.Second)
	if m.Error == nil || m.Error.Code != "21610" {
		t.Fatalf("the first message's error: %+v", m.Error)
	}
	second := e.send(keyA, smsBody(patientPhone, "Your appointment is tomorrow"))
	e.waitFor(second, ledger.StatusSuppressed, 10*time.Second)
	if n := e.sim.MessagesTo(patientPhone); n != 0 {
		t.Fatalf("%d messages reached the opted-out patient", n)
	}
	// The patient texts START: through Twilio (which lifts its block) to
	// the gateway (which records the opt-in); the next message arrives.
	e.inbound(patientPhone, "START", e.sim.AuthToken())
	third := e.send(keyA, smsBody(patientPhone, "Your appointment is tomorrow"))
	e.waitFor(third, ledger.StatusDelivered, 10*time.Second)
}
