package service_test

import (
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/ledger"
)

func TestAnUrgentReplyEscalatesUntilAcknowledged(t *testing.T) {
	e := start(t, config.RoleAll)
	const nurse, doctor = "+14155550177", "+14155550188"
	rules := `{"keywords":["chest pain","胸痛","can't breathe"],"patterns":["\\bsuicid"],
		"on_call":[{"channel":"sms","phone":"` + nurse + `"},{"channel":"sms","phone":"` + doctor + `"}],"ack_timeout_seconds":1}`
	if a := e.do("PUT", "/v1/escalation-rules", keyA, rules); a.Status != 200 {
		t.Fatalf("PUT rules = %d %s", a.Status, a.Raw)
	}
	if a := e.do("PUT", "/v1/escalation-rules", keyA, `{"keywords":["x"],"on_call":[]}`); a.Status != 422 {
		t.Fatalf("rules without on-call = %d", a.Status)
	}
	if a := e.do("PUT", "/v1/escalation-rules", keyA, `{"patterns":["("],"on_call":[{"channel":"sms","phone":"`+nurse+`"}]}`); a.Status != 422 {
		t.Fatalf("a bad pattern = %d", a.Status)
	}
	asked := e.send(keyA, smsBody(patientPhone, "Day 1 after discharge: how are you feeling?"))
	e.waitFor(asked, ledger.StatusDelivered, 10*time.Second)

	e.inbound(patientPhone, "fine thanks", e.sim.AuthToken())
	if list := e.do("GET", "/v1/escalations?state=open", keyA, ""); !strings.Contains(list.Raw, `"escalations":[]`) {
		t.Fatalf("an ordinary reply escalated: %s", list.Raw)
	}
	began := time.Now()
	e.inbound(patientPhone, "我胸痛，喘不上气", e.sim.AuthToken())
	waitUntil(t, 10*time.Second, "the nurse's notification", func() bool { return e.sim.MessagesTo(nurse) == 1 })
	if took := time.Since(began); took > 5*time.Second {
		t.Fatalf("the first on-call target was told after %s", took)
	}
	waitUntil(t, 10*time.Second, "escalation to the doctor", func() bool { return e.sim.MessagesTo(doctor) >= 1 })

	list := e.do("GET", "/v1/escalations?state=open", keyA, "")
	escs, _ := list.Body["escalations"].([]any)
	if len(escs) != 1 {
		t.Fatalf("open escalations %s", list.Raw)
	}
	id := escs[0].(map[string]any)["id"].(string)
	if other := e.do("POST", "/v1/escalations/"+id+"/ack", keyB, ""); other.Status != 404 {
		t.Fatalf("another tenant acknowledged: %d", other.Status)
	}
	ack := e.do("POST", "/v1/escalations/"+id+"/ack", keyA, `{"by":"Nurse Li"}`)
	if ack.Status != 200 || ack.Body["state"] != "acknowledged" {
		t.Fatalf("ack = %d %s", ack.Status, ack.Raw)
	}
	told := e.sim.MessagesTo(nurse) + e.sim.MessagesTo(doctor)
	time.Sleep(2500 * time.Millisecond)
	if now := e.sim.MessagesTo(nurse) + e.sim.MessagesTo(doctor); now != told {
		t.Fatalf("notifications went on after the acknowledgement: %d then %d", told, now)
	}
	if list := e.do("GET", "/v1/escalations", keyA, ""); !strings.Contains(list.Raw, `"escalations":[]`) {
		t.Fatalf("an acknowledged escalation is still open: %s", list.Raw)
	}
	for _, reqs := range e.sim.Requests() {
		if to := reqs.Form.Get("To"); (to == nurse || to == doctor) && strings.Contains(reqs.Form.Get("Body"), "胸痛") {
			t.Fatal("the on-call SMS must not carry the patient's words")
		}
	}
	if strings.Contains(e.logs.String(), "胸痛") {
		t.Fatal("the urgent reply appears in the logs")
	}
}

func TestAnUrgentAnswerOptionEscalates(t *testing.T) {
	e := start(t, config.RoleAll)
	const nurse = "+14155550177"
	if a := e.do("PUT", "/v1/escalation-rules", keyA, `{"options":["need_help"],"on_call":[{"channel":"sms","phone":"`+nurse+`"}]}`); a.Status != 200 {
		t.Fatalf("PUT rules = %d %s", a.Status, a.Raw)
	}
	poll := e.send(keyA, `{"channel":"sms","to":{"phone":"`+patientPhone+`"},"body":"Flood warning. Reply 1 if safe, 2 if you need help.",
		"priority":"crisis","expect_reply":{"options":{"1":"safe","2":"need_help"}}}`)
	e.waitFor(poll, ledger.StatusDelivered, 10*time.Second)
	e.inbound(patientPhone, "2", e.sim.AuthToken())
	waitUntil(t, 10*time.Second, "the on-call notification", func() bool { return e.sim.MessagesTo(nurse) == 1 })
}
