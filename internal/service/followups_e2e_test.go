package service_test

import (
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/config"
)

// A plan's step may start a questionnaire instead of sending a message:
// checked with the plan (422 naming the step's field), started by the
// step's timer in the workers, its first question an SMS like any.
func TestAFollowupStepStartsAQuestionnaire(t *testing.T) {
	e := start(t, config.RoleAll)
	const phone = "+14155550142"
	plan := func(anchor time.Time, steps string) answer {
		return e.do("POST", "/v1/followups", keyA, `{"contact":{"phone":"`+phone+`","timezone":"America/New_York","locale":"en"},
		  "anchor":"`+anchor.UTC().Format(time.RFC3339)+`","steps":[`+steps+`],"past_due":"send_now"}`)
	}
	for name, c := range map[string]struct{ steps, field string }{
		"an unknown questionnaire":       {`{"offset":"P7D","channel":"sms","questionnaire":"no_such_one"}`, "steps[0].questionnaire"},
		"a template and a questionnaire": {`{"offset":"P7D","channel":"sms","questionnaire":"post_discharge","template":"post_discharge_day7"}`, "steps[0].template"},
		"a channel that cannot converse": {`{"offset":"P1D","channel":"sms","body":"hi"},{"offset":"P7D","channel":"email","questionnaire":"post_discharge"}`, "steps[1].channel"},
	} {
		a := plan(time.Now(), c.steps)
		if a.Status != 422 || !strings.Contains(a.Raw, `"field":"`+c.field+`"`) {
			t.Errorf("%s: %d %s, want 422 naming %s", name, a.Status, a.Raw, c.field)
		}
	}
	if a := e.do("POST", "/v1/followups", keyB, `{"contact":{"phone":"`+phone+`"},"anchor":"2030-01-01T00:00:00Z",
	  "steps":[{"offset":"P7D","channel":"sms","questionnaire":"knee"}]}`); a.Status != 422 || !strings.Contains(a.Raw, `"steps[0].questionnaire"`) {
		t.Errorf("another tenant's questionnaire: %d %s", a.Status, a.Raw)
	}

	// A plan entered eight days after discharge: its day-7 questionnaire is
	// past due and starts at once (send_now), its day-30 one waits.
	a := plan(time.Now().Add(-8*24*time.Hour), `{"offset":"P7D","channel":"sms","questionnaire":"post_discharge"},
	  {"offset":"P30D","at":"10:00","channel":"sms","questionnaire":"post_discharge"}`)
	if a.Status != 201 {
		t.Fatalf("POST /v1/followups = %d %s", a.Status, a.Raw)
	}
	id := a.Body["id"].(string)
	st := steps(a.Body)
	if st[0]["state"] != "sent_now" || st[0]["questionnaire"] != "post_discharge" || st[1]["state"] != "scheduled" || st[1]["send_at"] == nil || st[1]["message_id"] != nil {
		t.Fatalf("the steps as created: %v", st)
	}
	if q1 := e.nextSMS(phone, 1); !containsAll(q1, "Post-discharge check", "[PD 1/6]", "How bad is your pain") {
		t.Fatalf("the first question: %q", q1)
	}
	var got answer
	waitUntil(t, 10*time.Second, "the step records its response", func() bool {
		got = e.do("GET", "/v1/followups/"+id, keyA, "")
		return steps(got.Body)[0]["response_id"] != nil
	})
	first := steps(got.Body)[0]
	if first["message_id"] == nil || first["message_status"] == nil || first["started_at"] == nil {
		t.Fatalf("the started step: %v", first)
	}
	resp := e.questionnaireResponse(first["response_id"].(string))
	meta, _ := resp.Body["metadata"].(map[string]any)
	if resp.Body["state"] != "in_progress" || meta["followup_id"] != id || meta["followup_step"] != float64(0) {
		t.Fatalf("the response: %s", resp.Raw)
	}

	// Canceled before its day: the day-30 questionnaire never starts.
	c := e.do("POST", "/v1/followups/"+id+"/cancel", keyA, "")
	if c.Status != 200 || steps(c.Body)[1]["state"] != "canceled" || steps(c.Body)[0]["state"] != "sent_now" {
		t.Fatalf("cancel = %d %s", c.Status, c.Raw)
	}
}
