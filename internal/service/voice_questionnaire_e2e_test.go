package service_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/workers"
)

// said is everything a call's TwiML said, in order.
func said(c twiliosim.CallRecord) string {
	var b strings.Builder
	var walk func([]twiliosim.Verb)
	walk = func(vs []twiliosim.Verb) {
		for _, v := range vs {
			if v.Name == "Say" {
				b.WriteString(v.Text + "\n")
			}
			walk(v.Children)
		}
	}
	for _, h := range c.Hooks {
		walk(h.Verbs)
	}
	return b.String()
}

func TestAVoiceQuestionnaireAsksByKeypadInOneCallAndRecordsTheFreeText(t *testing.T) {
	e := start(t, config.RoleAll)
	nurse := e.kneeCheckWithOnCall()
	// Pain 7; a key that is no option at the fever question, asked again,
	// then 1 (Yes: the temperature follows); 38.6 keyed with * for the
	// point; the notes said after the tone.
	e.sim.ScriptCalls(twiliosim.CallPlan{Digits: []string{"7", "9", "1", "38*6"}, RecordSeconds: 4})
	start := e.do("POST", "/v1/questionnaires/knee/responses", keyA, `{"channel":"voice","to":{"phone":"`+patientPhone+`"}}`)
	if start.Status != 201 || start.Body["channel"] != "voice" {
		t.Fatalf("POST responses = %d %s", start.Status, start.Raw)
	}
	id := start.Body["id"].(string)
	waitUntil(t, 15*time.Second, "the response to complete", func() bool { return e.questionnaireResponse(id).Body["state"] == "completed" })
	r := e.questionnaireResponse(id)
	got := answers(r)
	if got["pain"] != "7" || got["fever"] != "Y" || got["temp"] != "38.6" || r.Body["risk_level"] != "high" {
		t.Fatalf("the response: %s", r.Raw)
	}
	if !strings.Contains(r.Raw, `"recording":"RE`) {
		t.Fatalf("the spoken notes are not kept as a recording: %s", r.Raw)
	}
	waitUntil(t, 10*time.Second, "the on-call page", func() bool { return e.sim.MessagesTo(nurse) == 1 })
	waitUntil(t, 10*time.Second, "the call to end", func() bool {
		calls := e.sim.Calls()
		return len(calls) == 1 && calls[0].Done
	})
	call := e.sim.Calls()[0]
	words := said(call)
	for _, want := range []string{"Knee check", "1. How bad is your pain", "Enter a number from 0 to 10", "For Yes, press 1.",
		"Sorry, that answer does not fit", "3. Your highest temperature", "After the tone", "Thank you. Your answers were sent"} {
		if !strings.Contains(words, want) {
			t.Errorf("the call did not say %q:\n%s", want, words)
		}
	}
	if n := len(call.HooksOf(twiliosim.HookGather)); n != 4 {
		t.Errorf("%d keypad answers posted, want 4", n)
	}
	if n := e.sim.MessagesTo(patientPhone); n != 0 {
		t.Errorf("%d SMS to the patient: the call says all", n)
	}
	e.assertNoPatientDataLogged("38.6", "38*6")
}

func TestAVoiceQuestionnaireLeftMidCallIsResumedByTheReminderCall(t *testing.T) {
	e := start(t, config.RoleAll)
	// The first call: the first answer, then nothing (the patient hangs up).
	e.sim.ScriptCalls(twiliosim.CallPlan{Digits: []string{"2"}}, twiliosim.CallPlan{Digits: []string{"0", "1", "0", "0", "0", "0", "0", "3"}})
	start := e.do("POST", "/v1/questionnaires/phq9/responses", keyA, `{"channel":"voice","locale":"zh-CN","to":{"phone":"`+patientPhone+`"}}`)
	if start.Status != 201 {
		t.Fatalf("POST responses = %d %s", start.Status, start.Raw)
	}
	id := start.Body["id"].(string)
	waitUntil(t, 15*time.Second, "the first call to end", func() bool {
		calls := e.sim.Calls()
		return len(calls) == 1 && calls[0].Done
	})
	r := e.questionnaireResponse(id)
	if r.Body["state"] != "in_progress" || len(answers(r)) != 1 || r.Body["current_question"] != "q2" {
		t.Fatalf("after the first call: %s", r.Raw)
	}
	if words := said(e.sim.Calls()[0]); !strings.Contains(words, "请用电话按键回答") {
		t.Fatalf("the call is not in Chinese:\n%s", words)
	}
	ctx := context.Background()
	held, err := e.svc.Questionnaires.GetResponse(ctx, "clinic-a", id)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Questionnaires.Timer(ctx, workers.QuestionnaireTimer{Tenant: "clinic-a", Response: id, Seq: held.Seq, Kind: workers.TimerRemind}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 15*time.Second, "the reminder call to complete it", func() bool { return e.questionnaireResponse(id).Body["state"] == "completed" })
	r = e.questionnaireResponse(id)
	got := answers(r)
	// Item 9 answered 3 ("nearly every day") escalates whatever the total.
	if len(got) != 9 || got["q1"] != "2" || got["q9"] != "3" || r.Body["risk_level"] != "urgent" {
		t.Fatalf("after the reminder call: %s", r.Raw)
	}
	if words := said(e.sim.Calls()[1]); !strings.Contains(words, "还没有完成") || strings.Contains(words, "1. ") {
		t.Fatalf("the reminder call does not resume at question 2:\n%s", words)
	}
}

func TestAFollowUpPlanStepAsksAQuestionnaireByVoice(t *testing.T) {
	e := start(t, config.RoleAll)
	e.sim.ScriptCalls(twiliosim.CallPlan{Digits: []string{"4", "2", "1", "1", "2"}})
	a := e.do("POST", "/v1/followups", keyA, `{"contact":{"phone":"`+patientPhone+`","locale":"en"},
	  "anchor":"`+time.Now().Add(-8*24*time.Hour).UTC().Format(time.RFC3339)+`","past_due":"send_now",
	  "steps":[{"offset":"P7D","channel":"voice","questionnaire":"post_discharge"}]}`)
	if a.Status != 201 {
		t.Fatalf("POST followups = %d %s", a.Status, a.Raw)
	}
	planID := a.Body["id"].(string)
	var responseID string
	waitUntil(t, 15*time.Second, "the step to start its questionnaire", func() bool {
		steps, _ := e.do("GET", "/v1/followups/"+planID, keyA, "").Body["steps"].([]any)
		if len(steps) == 1 {
			responseID, _ = steps[0].(map[string]any)["response_id"].(string)
		}
		return responseID != ""
	})
	waitUntil(t, 15*time.Second, "the call to complete the questionnaire", func() bool {
		return e.questionnaireResponse(responseID).Body["state"] == "completed"
	})
	// Pain 4, no fever (the temperature skipped), wound fine, medication taken, no call.
	if got := answers(e.questionnaireResponse(responseID)); len(got) != 5 || got["pain"] != "4" || got["fever"] != "N" || got["call"] != "N" {
		t.Fatalf("answers: %v", got)
	}
	if calls := e.sim.Calls(); len(calls) != 1 || !strings.Contains(said(calls[0]), "post-discharge") && !strings.Contains(strings.ToLower(said(calls[0])), "discharge") {
		t.Fatalf("the call: %d calls\n%s", len(calls), said(calls[0]))
	}
}
