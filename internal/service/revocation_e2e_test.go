package service_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/ledger"
)

// TestStopTextingMeStopsTheTexts: a patient answers a routine message with
// "Stop texting me" over the signed Twilio webhook. They get one
// confirmation, the ledger keeps their words, and the clinic's next
// routine message never reaches Twilio.
func TestStopTextingMeStopsTheTexts(t *testing.T) {
	e := start(t, config.RoleAll)
	first := e.send(keyA, smsBody(patientPhone, "Your day-7 check-in"))
	e.waitFor(first, ledger.StatusDelivered, 10*time.Second)
	delivered := e.sim.MessagesTo(patientPhone)

	code, twiml := e.inbound(patientPhone, "Stop texting me", e.sim.AuthToken())
	if code != 200 || strings.Count(twiml, "<Message>") != 1 || !strings.Contains(twiml, "You are unsubscribed") {
		t.Fatalf("\"Stop texting me\" answered %d %s", code, twiml)
	}
	if _, again := e.inbound(patientPhone, "I said stop texting me!!", e.sim.AuthToken()); strings.Contains(again, "<Message>") {
		t.Fatalf("a second wish to stop must get no second confirmation: %s", again)
	}

	next := e.send(keyA, smsBody(patientPhone, "Reminder: your appointment is tomorrow"))
	m := e.waitFor(next, ledger.StatusSuppressed, 10*time.Second)
	if m.Error == nil || m.Error.Code != "opted_out" {
		t.Fatalf("suppressed message error %+v", m.Error)
	}
	if n := e.sim.MessagesTo(patientPhone); n != delivered {
		t.Fatalf("Twilio got %d messages for the patient after the opt-out, want none (had %d)", n-delivered, delivered)
	}
	st, _ := e.svc.Consent.Get(context.Background(), "clinic-a", consent.Identity{Kind: consent.Phone, Value: patientPhone})
	if !st.OptedOut || len(st.Changes) != 1 || st.Changes[0].Source != consent.SourceReply || !strings.HasSuffix(st.Changes[0].Evidence, `"Stop texting me"`) {
		t.Fatalf("consent ledger %+v", st)
	}
	e.assertNoPatientDataLogged("Stop texting me", "texting")
}

// TestLeaveMeAloneIsAskedAboutAndListedForStaff: an ambiguous reply gets
// one clarification, shows in the feed with its deadline, is listed until
// staff resolve it, and resolving it as an opt-out suppresses the next
// message.
func TestLeaveMeAloneIsAskedAboutAndListedForStaff(t *testing.T) {
	e := start(t, config.RoleAll)
	first := e.send(keyA, smsBody(patientPhone, "Your day-7 check-in"))
	e.waitFor(first, ledger.StatusDelivered, 10*time.Second)

	_, twiml := e.inbound(patientPhone, "Leave me alone", e.sim.AuthToken())
	if !strings.Contains(twiml, "Reply STOP to stop all messages") {
		t.Fatalf("no clarification: %s", twiml)
	}
	feed := e.waitFeed(keyA, `"possible_opt_out":{"deadline":`)
	if !strings.Contains(feed.Raw, "Leave me alone") {
		t.Fatalf("feed %s", feed.Raw)
	}
	list := e.do("GET", "/v1/possible-opt-outs", keyA, "")
	items, _ := list.Body["possible_opt_outs"].([]any)
	if list.Status != 200 || len(items) != 1 {
		t.Fatalf("GET /v1/possible-opt-outs = %d %s", list.Status, list.Raw)
	}
	id := items[0].(map[string]any)["id"].(string)
	if other := e.do("GET", "/v1/possible-opt-outs", keyB, ""); strings.Contains(other.Raw, id) {
		t.Fatalf("another tenant sees the flag: %s", other.Raw)
	}
	if a := e.do("POST", "/v1/possible-opt-outs/"+id+"/resolve", keyA, `{"outcome":"maybe"}`); a.Status != 422 {
		t.Fatalf("a bad outcome answered %d %s", a.Status, a.Raw)
	}
	if a := e.do("POST", "/v1/possible-opt-outs/"+id+"/resolve", keyA, `{"outcome":"opted_out","by":"Nurse Li"}`); a.Status != 200 || a.Body["outcome"] != "opted_out" {
		t.Fatalf("resolve answered %d %s", a.Status, a.Raw)
	}
	if a := e.do("POST", "/v1/possible-opt-outs/"+id+"/resolve", keyA, `{"outcome":"not_an_opt_out"}`); a.Status != 409 {
		t.Fatalf("resolving twice answered %d %s", a.Status, a.Raw)
	}
	if list := e.do("GET", "/v1/possible-opt-outs", keyA, ""); strings.Contains(list.Raw, id) {
		t.Fatalf("still listed: %s", list.Raw)
	}
	next := e.send(keyA, smsBody(patientPhone, "Reminder: your appointment is tomorrow"))
	e.waitFor(next, ledger.StatusSuppressed, 10*time.Second)
	e.assertNoPatientDataLogged("Leave me alone")
}
