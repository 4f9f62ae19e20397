package service_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/ledger"
)

// TestASpokenAnswerIsTranscribedAndItsUrgentWordsEscalate: a follow-up
// call records the patient's answer; Twilio's transcript of it ("I have
// chest pain…") reaches the reply feed and pages on-call like a text
// would; the message's history says a transcript came; a transcript
// posted again files nothing twice.
func TestASpokenAnswerIsTranscribedAndItsUrgentWordsEscalate(t *testing.T) {
	e := start(t, config.RoleAll)
	const nurse = "+14155550177"
	if a := e.do("PUT", "/v1/escalation-rules", keyA, `{"keywords":["chest pain"],"on_call":[{"channel":"sms","phone":"`+nurse+`"}],"ack_timeout_seconds":60}`); a.Status != 200 {
		t.Fatalf("PUT rules = %d %s", a.Status, a.Raw)
	}
	const said = "I have chest pain since this morning"
	e.sim.SetCallPlan(twiliosim.CallPlan{RecordSeconds: 6, Transcript: said})
	id := e.send(keyA, `{"channel":"voice","to":{"phone":"`+patientPhone+`"},"body":"This is your clinic calling after your surgery.",
		"record":{"prompt":"Please tell us how you feel after the tone.","max_length":60}}`)
	e.waitFor(id, ledger.StatusDelivered, 15*time.Second)
	waitUntil(t, 10*time.Second, "the on-call page", func() bool { return e.sim.MessagesTo(nurse) == 1 })
	feed := e.do("GET", "/v1/replies", keyA, "")
	if !strings.Contains(feed.Raw, said) || !strings.Contains(feed.Raw, `"in_reply_to":"`+id+`"`) {
		t.Fatalf("the transcript is not in the reply feed: %s", feed.Raw)
	}
	if esc := e.do("GET", "/v1/escalations", keyA, ""); !strings.Contains(esc.Raw, id) {
		t.Fatalf("no escalation names the call: %s", esc.Raw)
	}
	if !strings.Contains(notes(e.message(id)), "transcript of the recorded answer received") {
		t.Fatalf("the history does not say a transcript came:\n%s", notes(e.message(id)))
	}
	// Twilio posts the transcript again: nothing is filed twice.
	calls := e.sim.Calls()
	hooks := calls[len(calls)-1].HooksOf(twiliosim.HookTranscription)
	if len(hooks) != 1 || hooks[0].Code != 200 {
		t.Fatalf("transcription callbacks: %+v", hooks)
	}
	before := strings.Count(e.do("GET", "/v1/replies", keyA, "").Raw, said)
	if code := e.postSigned(hooks[0].URL, hooks[0].Form); code != 200 {
		t.Fatalf("the transcript posted again = %d", code)
	}
	if after := strings.Count(e.do("GET", "/v1/replies", keyA, "").Raw, said); after != before {
		t.Fatalf("the transcript was filed twice: %d then %d", before, after)
	}
	if e.sim.MessagesTo(nurse) != 1 {
		t.Fatalf("on-call was paged %d times", e.sim.MessagesTo(nurse))
	}
	e.assertNoPatientDataLogged(said, "chest pain")
}

// postSigned posts a form to a gateway URL signed as Twilio signs it.
func (e *env) postSigned(u string, form url.Values) int {
	e.t.Helper()
	req, _ := http.NewRequest("POST", u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", twiliosim.Sign(e.sim.AuthToken(), u, form))
	resp, err := e.http.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
