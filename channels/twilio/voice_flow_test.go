package twilio_test

import (
	"context"
	"encoding/xml"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/channels/channeltest"
	"github.com/patientmsg/gateway/channels/twilio"
	"github.com/patientmsg/gateway/internal/ledger"
)

// flowReceiver is a Receiver whose calls are interactive: it asks a
// number, then records, then ends, and remembers the answers it took.
type flowReceiver struct {
	*channeltest.RecordingReceiver
	took []string
}

func (f *flowReceiver) CallStep(_ context.Context, m *ledger.Message, step string, a *ledger.Answer) (channels.CallStep, bool, error) {
	switch {
	case a == nil:
		return channels.CallStep{Step: "q0", Prompt: "Your temperature?", MaxDigits: 5}, true, nil
	case step == "q0":
		f.took = append(f.took, step+"="+a.Digits)
		return channels.CallStep{Step: "q1", Say: "Thank you.", Prompt: "Say anything else.", Record: true, MaxLength: 30}, true, nil
	}
	f.took = append(f.took, step+"="+a.RecordingSID)
	return channels.CallStep{End: "Goodbye."}, true, nil
}

func postVoice(t *testing.T, v *twilio.Voice, rcv channels.Receiver, route string, q url.Values, form url.Values) twimlNode {
	t.Helper()
	path := route + "?" + q.Encode()
	h, sig := sign(testPublic+path, form)
	for _, r := range v.Routes(rcv) {
		if r.Path == route {
			resp := r.Handle(context.Background(), channels.WebhookRequest{URL: testPublic + path, Header: http.Header{h: {sig}}, Query: q, Form: form})
			var doc twimlNode
			if resp.Status != 200 || xml.Unmarshal(resp.Body, &doc) != nil {
				t.Fatalf("%s = %d %s", route, resp.Status, resp.Body)
			}
			return doc
		}
	}
	t.Fatalf("no route %s", route)
	return twimlNode{}
}

func TestAnInteractiveCallAsksEachStepAndHandsTheAnswersBack(t *testing.T) {
	v := newVoice(t, twilio.DefaultAPIURL, nil)
	m := followUp()
	m.Voice = nil
	rcv := &flowReceiver{RecordingReceiver: &channeltest.RecordingReceiver{Messages: known(m)}}
	base := testPublic + "/webhooks/twilio/voice/"

	doc := postVoice(t, v, rcv, twilio.VoiceTwiMLPath, url.Values{"m": {voiceMsgID}}, callForm())
	if len(doc.Nodes) != 2 || doc.Nodes[0].Text != m.Body || doc.Nodes[1].XMLName.Local != "Gather" {
		t.Fatalf("first TwiML: %+v", doc)
	}
	g := doc.Nodes[1].attrs()
	if g["numDigits"] != "5" || g["finishOnKey"] != "#" || g["action"] != base+"gather?m="+voiceMsgID+"&s=q0" || g["actionOnEmptyResult"] != "true" {
		t.Fatalf("a number is gathered up to 5 keys ended by #, its answer posted with its step: %v", g)
	}

	doc = postVoice(t, v, rcv, twilio.VoiceGatherPath, url.Values{"m": {voiceMsgID}, "s": {"q0"}}, callForm("Digits", "38*6"))
	var names []string
	for _, n := range doc.Nodes {
		names = append(names, n.XMLName.Local)
	}
	if want := []string{"Say", "Say", "Record", "Redirect"}; len(names) != 4 || names[0] != want[0] || names[2] != want[2] || names[3] != want[3] {
		t.Fatalf("second TwiML verbs %v, want %v", names, want)
	}
	rec := doc.Nodes[2].attrs()
	if rec["action"] != base+"record?m="+voiceMsgID+"&s=q1" || rec["maxLength"] != "30" || doc.Nodes[3].Text != base+"record?m="+voiceMsgID+"&s=q1" {
		t.Fatalf("the recording posts its step; silence is redirected to the same action: %v %q", rec, doc.Nodes[3].Text)
	}
	doc = postVoice(t, v, rcv, twilio.VoiceRecordPath, url.Values{"m": {voiceMsgID}, "s": {"q1"}},
		callForm("RecordingSid", recSID, "RecordingDuration", "4", "RecordingUrl", "https://api.twilio.com/x/Recordings/"+recSID))
	if len(doc.Nodes) != 2 || doc.Nodes[0].Text != "Goodbye." || doc.Nodes[1].XMLName.Local != "Hangup" {
		t.Fatalf("last TwiML: %+v", doc)
	}
	if len(rcv.took) != 2 || rcv.took[0] != "q0=38*6" || rcv.took[1] != "q1="+recSID {
		t.Fatalf("answers handed back: %v", rcv.took)
	}
	if len(rcv.Answers) != 0 {
		t.Fatalf("an interactive call's answers were also recorded as a one-question call's: %+v", rcv.Answers)
	}
	// A step that is no id is refused before the flow sees it.
	postVoice(t, v, rcv, twilio.VoiceGatherPath, url.Values{"m": {voiceMsgID}, "s": {"q0<x>"}}, callForm("Digits", "1"))
	if len(rcv.took) != 2 {
		t.Fatalf("a malformed step reached the flow: %v", rcv.took)
	}
}

func TestParseTranscription(t *testing.T) {
	q := url.Values{"m": {voiceMsgID}}
	form := func(kv ...string) url.Values {
		f := url.Values{"CallSid": {callSID}, "RecordingSid": {recSID}, "TranscriptionSid": {"TR0123456789abcdef0123456789abcdef"},
			"TranscriptionStatus": {"completed"}, "TranscriptionText": {" I have chest pain "}}
		for i := 0; i+1 < len(kv); i += 2 {
			f.Set(kv[i], kv[i+1])
		}
		return f
	}
	if cb, err := twilio.ParseTranscription(form(), q); err != nil || cb.Text != "I have chest pain" || cb.Status != "completed" {
		t.Fatalf("got %+v, %v", cb, err)
	}
	for _, bad := range [][]string{{"TranscriptionSid", "RE0123456789abcdef0123456789abcdef"}, {"TranscriptionStatus", "in-progress"},
		{"TranscriptionText", "\xff"}, {"TranscriptionText", strings.Repeat("a", 20000)}, {"RecordingSid", ""}} {
		if _, err := twilio.ParseTranscription(form(bad...), q); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func FuzzParseTranscription(f *testing.F) {
	f.Add("CallSid="+callSID+"&RecordingSid="+recSID+"&TranscriptionSid=TR0123456789abcdef0123456789abcdef&TranscriptionStatus=completed&TranscriptionText=hi", "m="+voiceMsgID)
	f.Add("TranscriptionText=%ff", "m=")
	f.Fuzz(func(t *testing.T, body, query string) {
		form, _ := url.ParseQuery(body)
		q, _ := url.ParseQuery(query)
		cb, err := twilio.ParseTranscription(form, q)
		if err != nil {
			return
		}
		if !utf8.ValidString(cb.Text) || len(cb.Text) > 16<<10 || !strings.HasPrefix(cb.TranscriptionSid, "TR") ||
			(cb.Status != "completed" && cb.Status != "failed") {
			t.Fatalf("accepted %+v", cb)
		}
	})
}
