package twilio_test

import (
	"context"
	"encoding/xml"
	"errors"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/channels/channeltest"
	"github.com/patientmsg/gateway/channels/twilio"
	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/internal/ledger"
)

const (
	callsPath     = "/2010-04-01/Accounts/" + testSID + "/Calls.json"
	callSID       = "CA0123456789abcdef0123456789abcdef"
	recSID        = "RE0123456789abcdef0123456789abcdef"
	voiceMsgID    = "01JD0000000000000000000002"
	voiceTo       = "+14155550123"
	voiceRedials  = 4
	voiceRedialIn = 45 * time.Minute
)

func newVoice(t *testing.T, apiURL string, tr http.RoundTripper, mutate ...func(*twilio.VoiceConfig)) *twilio.Voice {
	t.Helper()
	cfg := twilio.VoiceConfig{AccountSID: testSID, AuthToken: testToken, From: testFrom, APIURL: apiURL,
		PublicURL: testPublic, Timeout: 500 * time.Millisecond, Transport: tr,
		MaxRedials: voiceRedials, RedialDelay: voiceRedialIn}
	for _, m := range mutate {
		m(&cfg)
	}
	v, err := twilio.NewVoice(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func voiceFactory(mutate ...func(*twilio.VoiceConfig)) channeltest.ChannelFactory {
	return func(t *testing.T, apiURL string, tr http.RoundTripper) channels.Channel {
		return newVoice(t, apiURL, tr, mutate...)
	}
}

// followUp is a zh-CN follow-up call asking one question and recording an answer.
func followUp() *ledger.Message {
	return &ledger.Message{ID: voiceMsgID, Request: ledger.Request{Tenant: "clinic", Channel: "voice",
		To: ledger.Recipient{Phone: voiceTo}, Locale: "zh-CN", Body: "您好，这里是和平诊所。",
		Voice: &ledger.VoiceOptions{
			Gather: &ledger.Gather{Prompt: "明天能来复诊请按1，不能来请按2。", Digits: "12", Timeout: 7},
			Record: &ledger.Record{Prompt: "请在提示音后说出您的问题。", MaxLength: 30},
		}}}
}

// questionOnly is an en-US call asking one question, without recording.
func questionOnly() *ledger.Message {
	return &ledger.Message{ID: voiceMsgID, Request: ledger.Request{Tenant: "clinic", Channel: "voice",
		To: ledger.Recipient{Phone: voiceTo}, Locale: "en-US", Body: "This is Peace Clinic.",
		Voice: &ledger.VoiceOptions{Gather: &ledger.Gather{Prompt: "Press 1 to confirm, 2 to cancel.", Digits: "12"}}}}
}

func known(m *ledger.Message) map[string]*ledger.Message { return map[string]*ledger.Message{m.ID: m} }

const callCreated = `{"sid":"` + callSID + `","status":"queued","account_sid":"` + testSID + `","direction":"outbound-api"}`

func callFail(status, code int, message string, headers ...string) map[string]channeltest.MockResponse {
	r := channeltest.MockResponse{Status: status, Body: twilioError(code, status, message)}
	if len(headers) == 2 {
		r.Headers = map[string]string{headers[0]: headers[1]}
	}
	return map[string]channeltest.MockResponse{"POST " + callsPath: r}
}

func TestVoiceSendsTheExactTwilioRequestAndClassifiesEveryAnswer(t *testing.T) {
	m := channels.MessageOf(followUp())
	ok := map[string]channeltest.MockResponse{"POST " + callsPath: {Status: 201, Body: callCreated}}
	channeltest.RunOutbound(t, voiceFactory(), []channeltest.OutboundCase{
		{
			Label:   "a placed call returns Twilio's CA id and posts To, From, the TwiML URL and the status callback with its events",
			Message: m, Responses: ok, ExpectedPath: callsPath,
			ExpectedForm: url.Values{
				"To": {voiceTo}, "From": {testFrom},
				"Url": {testPublic + "/webhooks/twilio/voice/twiml?m=" + voiceMsgID}, "Method": {"POST"},
				"StatusCallback":       {testPublic + "/webhooks/twilio/voice/status?m=" + voiceMsgID},
				"StatusCallbackEvent":  {"initiated", "ringing", "answered", "completed"},
				"StatusCallbackMethod": {"POST"},
			},
			ExpectedAbsent:     []string{"Twiml", "Body", "Record", "MachineDetection", "ApplicationSid"},
			ExpectedHeader:     map[string]string{"Authorization": "Basic " + basic(testSID, testToken)},
			ExpectedProviderID: callSID,
		},
		{Label: "an answer without a call SID is retryable and unconfirmed", Message: m,
			Responses:     map[string]channeltest.MockResponse{"POST " + callsPath: {Status: 201, Body: `{"sid":"SM0123456789abcdef0123456789abcdef"}`}},
			ExpectedClass: channels.Retryable, ExpectedCode: "bad_response", ExpectUnconfirmed: true},
		{Label: "an invalid phone number format 13223 is permanent", Message: m, Responses: callFail(400, 13223, "invalid phone number format"),
			ExpectedClass: channels.Permanent, ExpectedCode: "13223"},
		{Label: "missing geo permission 21215 is permanent", Message: m, Responses: callFail(400, 21215, "Account not authorized to call +14155550123"),
			ExpectedClass: channels.Permanent, ExpectedCode: "21215"},
		{Label: "an unverified caller id 21210 is permanent", Message: m, Responses: callFail(400, 21210, "'From' phone number not verified"),
			ExpectedClass: channels.Permanent, ExpectedCode: "21210"},
		{Label: "an invalid To number 21217 is permanent", Message: m, Responses: callFail(400, 21217, "Phone number does not appear to be valid"),
			ExpectedClass: channels.Permanent, ExpectedCode: "21217"},
		{Label: "the shared table applies: 20429 is throttled with Retry-After", Message: m, Responses: callFail(429, 20429, "Too Many Requests", "Retry-After", "3"),
			ExpectedClass: channels.Throttled, ExpectedCode: "20429", ExpectedRetryAfter: 3 * time.Second},
		{Label: "the shared table applies: rejected credentials 20003 are retried", Message: m, Responses: callFail(401, 20003, "Authenticate"),
			ExpectedClass: channels.Retryable, ExpectedCode: "20003"},
		{Label: "a 500 is retryable", Message: m, Responses: callFail(500, 20500, "Internal Server Error"),
			ExpectedClass: channels.Retryable, ExpectedCode: "20500"},
		{Label: "a provider that never answers in time is retryable and unconfirmed", Message: m,
			Responses:     map[string]channeltest.MockResponse{"POST " + callsPath: {Status: 201, Body: callCreated, Delay: 3 * time.Second}},
			ExpectedClass: channels.Retryable, ExpectedCode: "timeout", ExpectUnconfirmed: true},
		{Label: "a refused connection is retryable", Message: m, Unreachable: true,
			ExpectedClass: channels.Retryable, ExpectedCode: "connect"},
		{Label: "a message without a phone number is permanent and no call is placed", Message: channels.Message{ID: voiceMsgID, Body: "x"},
			ExpectedClass: channels.Permanent, ExpectedCode: "no_recipient"},
		{Label: "a question without accepted keys is permanent and no call is placed",
			Message:       channels.Message{ID: voiceMsgID, To: m.To, Body: "x", Voice: &ledger.VoiceOptions{Gather: &ledger.Gather{Prompt: "Press a key"}}},
			ExpectedClass: channels.Permanent, ExpectedCode: "bad_voice_message"},
		{Label: "a call with nothing to say is permanent and no call is placed",
			Message:       channels.Message{ID: voiceMsgID, To: m.To, Body: "  "},
			ExpectedClass: channels.Permanent, ExpectedCode: "bad_voice_message"},
	})
}

func TestVoiceConfigIsCheckedAtStart(t *testing.T) {
	base := twilio.VoiceConfig{AccountSID: testSID, AuthToken: testToken, From: testFrom, PublicURL: testPublic}
	tests := []struct {
		name   string
		mutate func(*twilio.VoiceConfig)
		want   string // "" for success
	}{
		{"a complete config is accepted", func(*twilio.VoiceConfig) {}, ""},
		{"a missing auth token is refused", func(c *twilio.VoiceConfig) { c.AuthToken = "" }, "auth token"},
		{"a missing From number is refused", func(c *twilio.VoiceConfig) { c.From = "" }, "From"},
		{"a missing public URL is refused: calls fetch their TwiML there", func(c *twilio.VoiceConfig) { c.PublicURL = "" }, "public URL"},
		{"a relative public URL is refused", func(c *twilio.VoiceConfig) { c.PublicURL = "gateway.example" }, "public URL"},
		{"a bad API URL is refused", func(c *twilio.VoiceConfig) { c.APIURL = "not a url" }, "API URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.mutate(&cfg)
			_, err := twilio.NewVoice(cfg)
			if (err == nil) != (tt.want == "") || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("NewVoice = %v, want an error naming %q", err, tt.want)
			}
		})
	}
}

// zhTwiML is the exact TwiML of followUp's call.
const zhTwiML = `<?xml version="1.0" encoding="UTF-8"?>` + "\n" + `<Response>` +
	`<Say language="cmn-CN" voice="Polly.Zhiyu">您好，这里是和平诊所。</Say>` +
	`<Gather input="dtmf" numDigits="1" timeout="7" action="` + testPublic + `/webhooks/twilio/voice/gather?m=` + voiceMsgID + `" method="POST" actionOnEmptyResult="true">` +
	`<Say language="cmn-CN" voice="Polly.Zhiyu">明天能来复诊请按1，不能来请按2。</Say></Gather>` +
	zhRecordTail + `</Response>`

const zhRecordTail = `<Say language="cmn-CN" voice="Polly.Zhiyu">请在提示音后说出您的问题。</Say>` +
	`<Record maxLength="30" playBeep="true" action="` + testPublic + `/webhooks/twilio/voice/record?m=` + voiceMsgID + `" method="POST"` +
	` recordingStatusCallback="` + testPublic + `/webhooks/twilio/voice/recording?m=` + voiceMsgID + `" recordingStatusCallbackMethod="POST"` +
	` transcribe="true" transcribeCallback="` + testPublic + `/webhooks/twilio/voice/transcription?m=` + voiceMsgID + `"/>` +
	`<Hangup/>`

const missingTwiML = `<?xml version="1.0" encoding="UTF-8"?>` + "\n" +
	`<Response><Say language="en-US" voice="Polly.Joanna">Sorry, this message is no longer available. Goodbye.</Say><Hangup/></Response>`

func callForm(extra ...string) url.Values {
	v := url.Values{"CallSid": {callSID}, "AccountSid": {testSID}, "From": {testFrom}, "To": {voiceTo},
		"Called": {voiceTo}, "Caller": {testFrom}, "Direction": {"outbound-api"}, "ApiVersion": {"2010-04-01"}, "CallStatus": {"in-progress"}}
	for i := 0; i+1 < len(extra); i += 2 {
		v.Set(extra[i], extra[i+1])
	}
	return v
}

func recordingForm(status string) url.Values {
	return url.Values{"CallSid": {callSID}, "AccountSid": {testSID}, "RecordingSid": {recSID}, "RecordingStatus": {status},
		"RecordingUrl":      {"https://api.twilio.com/2010-04-01/Accounts/" + testSID + "/Recordings/" + recSID},
		"RecordingDuration": {"12"}, "RecordingChannels": {"1"}, "RecordingSource": {"RecordVerb"}}
}

func callUpdate(status ledger.Status, provider, code, message string) channeltest.Update {
	return channeltest.Update{MessageID: voiceMsgID, ProviderUpdate: ledger.ProviderUpdate{Channel: "voice", ProviderID: callSID,
		Status: status, ProviderStatus: provider, ErrorCode: code, ErrorMessage: message}}
}

func TestVoiceWebhooksAreVerifiedAndAnswered(t *testing.T) {
	v := newVoice(t, twilio.DefaultAPIURL, nil)
	q := "?m=" + voiceMsgID
	twimlPath, gatherPath := twilio.VoiceTwiMLPath+q, twilio.VoiceGatherPath+q
	recordPath, recordingPath, statusPath := twilio.VoiceRecordPath+q, twilio.VoiceRecordingPath+q, twilio.VoiceStatusPath+q
	outage := errors.New("redis down")
	forged := map[string]string{"X-Twilio-Signature": "bm90IGEgcmVhbCBzaWduYXR1cmU="}

	cases := []channeltest.InboundCase{
		// TwiML
		{Label: "a zh-CN call speaks Mandarin, asks for one key, then records, then hangs up", Method: "POST", Path: twimlPath,
			Form: callForm(), Signed: true, Messages: known(followUp()), ExpectedStatus: 200, ExpectedBody: zhTwiML},
		{Label: "a call without a question or recording speaks the message and hangs up", Method: "POST", Path: twimlPath,
			Form: callForm(), Signed: true, ExpectedStatus: 200,
			Messages: known(&ledger.Message{ID: voiceMsgID, Request: ledger.Request{Locale: "es-MX", Body: "Su cita es mañana."}}),
			ExpectedBody: `<?xml version="1.0" encoding="UTF-8"?>` + "\n" +
				`<Response><Say language="es-MX" voice="Polly.Mia">Su cita es mañana.</Say><Hangup/></Response>`},
		{Label: "a call for an unknown message apologises and hangs up with 200, never a 5xx", Method: "POST", Path: twimlPath,
			Form: callForm(), Signed: true, ExpectedStatus: 200, ExpectedBody: missingTwiML},
		{Label: "a storage outage during a call apologises rather than letting Twilio play an application error", Method: "POST", Path: twimlPath,
			Form: callForm(), Signed: true, ReceiverErr: outage, ExpectedStatus: 200,
			ExpectedBodyContains: []string{"Sorry, we cannot take your answer right now. Goodbye.", "<Hangup/>"}},

		// Gather
		{Label: "a key among the choices is recorded as the answer and the call goes on to the recording", Method: "POST", Path: gatherPath,
			Form: callForm("Digits", "2"), Signed: true, Messages: known(followUp()), ExpectedStatus: 200,
			ExpectedBody:    `<?xml version="1.0" encoding="UTF-8"?>` + "\n" + `<Response>` + zhRecordTail + `</Response>`,
			ExpectedAnswers: []channeltest.AnswerCall{{MessageID: voiceMsgID, Answer: ledger.Answer{Digits: "2"}}}},
		{Label: "a key among the choices of a call without recording thanks the patient and hangs up", Method: "POST", Path: gatherPath,
			Form: callForm("Digits", "1"), Signed: true, Messages: known(questionOnly()), ExpectedStatus: 200,
			ExpectedBody: `<?xml version="1.0" encoding="UTF-8"?>` + "\n" +
				`<Response><Say language="en-US" voice="Polly.Joanna">Thank you. Goodbye.</Say><Hangup/></Response>`,
			ExpectedAnswers: []channeltest.AnswerCall{{MessageID: voiceMsgID, Answer: ledger.Answer{Digits: "1"}}}},
		{Label: "a key that is not a choice is not recorded and the question is asked once more", Method: "POST", Path: gatherPath,
			Form: callForm("Digits", "9"), Signed: true, Messages: known(questionOnly()), ExpectedStatus: 200,
			ExpectedBody: `<?xml version="1.0" encoding="UTF-8"?>` + "\n" + `<Response>` +
				`<Say language="en-US" voice="Polly.Joanna">Sorry, that is not one of the choices.</Say>` +
				`<Gather input="dtmf" numDigits="1" timeout="5" action="` + testPublic + `/webhooks/twilio/voice/gather?m=` + voiceMsgID + `&amp;retry=1" method="POST" actionOnEmptyResult="true">` +
				`<Say language="en-US" voice="Polly.Joanna">Press 1 to confirm, 2 to cancel.</Say></Gather><Hangup/></Response>`},
		{Label: "no key in time asks once more", Method: "POST", Path: gatherPath,
			Form: callForm("Digits", ""), Signed: true, Messages: known(questionOnly()), ExpectedStatus: 200,
			ExpectedBodyContains: []string{"Sorry, that is not one of the choices.", "retry=1"}},
		{Label: "a wrong key after asking again goes on to the recording without an answer", Method: "POST", Path: gatherPath + "&retry=1",
			Form: callForm("Digits", "#"), Signed: true, Messages: known(followUp()), ExpectedStatus: 200,
			ExpectedBody: `<?xml version="1.0" encoding="UTF-8"?>` + "\n" + `<Response>` + zhRecordTail + `</Response>`},
		{Label: "a gather for an unknown message apologises", Method: "POST", Path: gatherPath,
			Form: callForm("Digits", "1"), Signed: true, ExpectedStatus: 200, ExpectedBody: missingTwiML},
		{Label: "a storage outage while taking a key apologises with 200", Method: "POST", Path: gatherPath,
			Form: callForm("Digits", "1"), Signed: true, Messages: known(followUp()), ReceiverErr: outage, ExpectedStatus: 200,
			ExpectedBodyContains: []string{"Sorry, we cannot take your answer right now."}},

		// Record action
		{Label: "the end of a recording thanks the patient in their language and hangs up", Method: "POST", Path: recordPath,
			Form: callForm("RecordingSid", recSID, "RecordingDuration", "12", "Digits", "#"), Signed: true, Messages: known(followUp()),
			ExpectedStatus: 200, ExpectedBody: `<?xml version="1.0" encoding="UTF-8"?>` + "\n" +
				`<Response><Say language="cmn-CN" voice="Polly.Zhiyu">谢谢。再见。</Say><Hangup/></Response>`},

		// Recording status
		{Label: "a completed recording is recorded as the answer with its URL", Method: "POST", Path: recordingPath,
			Form: recordingForm("completed"), Signed: true, ExpectedStatus: 200,
			ExpectedAnswers: []channeltest.AnswerCall{{MessageID: voiceMsgID, Answer: ledger.Answer{RecordingSID: recSID, Duration: 12},
				RecordingURL: "https://api.twilio.com/2010-04-01/Accounts/" + testSID + "/Recordings/" + recSID}}},
		{Label: "a recording still in progress is ignored", Method: "POST", Path: recordingPath,
			Form: recordingForm("in-progress"), Signed: true, ExpectedStatus: 200},
		{Label: "an absent recording (silence) is ignored", Method: "POST", Path: recordingPath,
			Form: recordingForm("absent"), Signed: true, ExpectedStatus: 200},
		{Label: "a completed recording whose URL is not that recording's is ignored", Method: "POST", Path: recordingPath,
			Form: func() url.Values {
				f := recordingForm("completed")
				f.Set("RecordingUrl", "https://evil.example/steal")
				return f
			}(), Signed: true, ExpectedStatus: 200},
		{Label: "a storage outage on a recording answers 503 so Twilio retries", Method: "POST", Path: recordingPath,
			Form: recordingForm("completed"), Signed: true, ReceiverErr: outage, ExpectedStatus: 503},

		// Call status
		{Label: "an initiated call is recorded as sent", Method: "POST", Path: statusPath, Form: callForm("CallStatus", "initiated"), Signed: true,
			ExpectedStatus: 200, ExpectedUpdates: []channeltest.Update{callUpdate(ledger.StatusSent, "initiated", "", "")}},
		{Label: "a ringing call is recorded as sent", Method: "POST", Path: statusPath, Form: callForm("CallStatus", "ringing"), Signed: true,
			ExpectedStatus: 200, ExpectedUpdates: []channeltest.Update{callUpdate(ledger.StatusSent, "ringing", "", "")}},
		{Label: "an answered call (in-progress) is recorded as sent, answered", Method: "POST", Path: statusPath, Form: callForm("CallStatus", "in-progress"), Signed: true,
			ExpectedStatus: 200, ExpectedUpdates: []channeltest.Update{callUpdate(ledger.StatusSent, "answered", "", "")}},
		{Label: "a completed call is delivered", Method: "POST", Path: statusPath,
			Form: callForm("CallStatus", "completed", "CallDuration", "42", "AnsweredBy", "human"), Signed: true,
			ExpectedStatus: 200, ExpectedUpdates: []channeltest.Update{callUpdate(ledger.StatusDelivered, "completed", "", "")}},
		{Label: "a busy line is recorded, then redialled with the configured delay and maximum", Method: "POST", Path: statusPath,
			Form: callForm("CallStatus", "busy"), Signed: true, ExpectedStatus: 200,
			ExpectedUpdates: []channeltest.Update{callUpdate(ledger.StatusSent, "busy", "", "")},
			ExpectedRedials: []channeltest.RedialCall{{MessageID: voiceMsgID, ProviderID: callSID, After: voiceRedialIn, MaxRedials: voiceRedials,
				Reason: ledger.ErrorInfo{Code: "busy", Message: "the line was busy"}}}},
		{Label: "an unanswered call is recorded, then redialled with the configured delay and maximum", Method: "POST", Path: statusPath,
			Form: callForm("CallStatus", "no-answer"), Signed: true, ExpectedStatus: 200,
			ExpectedUpdates: []channeltest.Update{callUpdate(ledger.StatusSent, "no-answer", "", "")},
			ExpectedRedials: []channeltest.RedialCall{{MessageID: voiceMsgID, ProviderID: callSID, After: voiceRedialIn, MaxRedials: voiceRedials,
				Reason: ledger.ErrorInfo{Code: "no-answer", Message: "the call was not answered"}}}},
		{Label: "a failed call is failed with Twilio's error code", Method: "POST", Path: statusPath,
			Form: callForm("CallStatus", "failed", "ErrorCode", "13224"), Signed: true, ExpectedStatus: 200,
			ExpectedUpdates: []channeltest.Update{callUpdate(ledger.StatusFailed, "failed", "13224", "number not supported or invalid")}},
		{Label: "a canceled call is canceled", Method: "POST", Path: statusPath, Form: callForm("CallStatus", "canceled"), Signed: true,
			ExpectedStatus: 200, ExpectedUpdates: []channeltest.Update{callUpdate(ledger.StatusCanceled, "canceled", "", "")}},
		{Label: "a storage outage on a call status answers 503 so Twilio retries", Method: "POST", Path: statusPath,
			Form: callForm("CallStatus", "busy"), Signed: true, ReceiverErr: outage, ExpectedStatus: 503},
		{Label: "a call status for another Twilio account is ignored", Method: "POST", Path: statusPath,
			Form: callForm("CallStatus", "completed", "AccountSid", "ACffffffffffffffffffffffffffffffff"), Signed: true, ExpectedStatus: 200},
		{Label: "an unknown call status is acknowledged and ignored", Method: "POST", Path: statusPath,
			Form: callForm("CallStatus", "teleported"), Signed: true, ExpectedStatus: 200},
		{Label: "a signed but malformed call status is acknowledged and ignored", Method: "POST", Path: statusPath,
			Form: url.Values{"CallSid": {"nonsense"}, "CallStatus": {"completed"}}, Signed: true, ExpectedStatus: 200},
	}
	// Every route refuses a forged or missing signature and records nothing,
	// even for a message the receiver knows.
	forms := map[string]url.Values{twimlPath: callForm(), gatherPath: callForm("Digits", "1"), recordPath: callForm(),
		recordingPath: recordingForm("completed"), statusPath: callForm("CallStatus", "busy")}
	for _, path := range []string{twimlPath, gatherPath, recordPath, recordingPath, statusPath} {
		route := strings.TrimPrefix(strings.Split(path, "?")[0], "/webhooks/twilio/voice/")
		cases = append(cases,
			channeltest.InboundCase{Label: "a forged signature on " + route + " is forbidden and records nothing", Method: "POST", Path: path,
				Form: forms[path], Header: forged, Messages: known(followUp()), ExpectedStatus: 403},
			channeltest.InboundCase{Label: "a missing signature on " + route + " is forbidden and records nothing", Method: "POST", Path: path,
				Form: forms[path], Messages: known(followUp()), ExpectedStatus: 403},
			channeltest.InboundCase{Label: "a signature for another message on " + route + " is forbidden (the query is signed)", Method: "POST", Path: path,
				Form: forms[path], Messages: known(followUp()), ExpectedStatus: 403,
				Header: map[string]string{"X-Twilio-Signature": twiliosim.Sign(testToken,
					testPublic+strings.Replace(path, voiceMsgID, "01JD0000000000000000000009", 1), forms[path])}},
		)
	}
	channeltest.RunInbound(t, v, testPublic, sign, cases)
}

// twimlNode is a parsed TwiML element, to assert verbs and attributes
// whatever their order.
type twimlNode struct {
	XMLName xml.Name
	Attrs   []xml.Attr  `xml:",any,attr"`
	Text    string      `xml:",chardata"`
	Nodes   []twimlNode `xml:",any"`
}

func (n twimlNode) attrs() map[string]string {
	m := map[string]string{}
	for _, a := range n.Attrs {
		m[a.Name.Local] = a.Value
	}
	return m
}

// serveTwiML asks the voice channel's TwiML route, with a signed request,
// for the TwiML of m's call.
func serveTwiML(t *testing.T, m *ledger.Message) channels.WebhookResponse {
	t.Helper()
	v := newVoice(t, twilio.DefaultAPIURL, nil)
	rcv := &channeltest.RecordingReceiver{Messages: known(m)}
	path := twilio.VoiceTwiMLPath + "?m=" + voiceMsgID
	form := callForm()
	h, sig := sign(testPublic+path, form)
	for _, r := range v.Routes(rcv) {
		if r.Method == http.MethodPost && r.Path == twilio.VoiceTwiMLPath {
			return r.Handle(context.Background(), channels.WebhookRequest{URL: testPublic + path, Header: http.Header{h: {sig}},
				Query: url.Values{"m": {voiceMsgID}}, Form: form})
		}
	}
	t.Fatal("the voice channel declares no TwiML route")
	return channels.WebhookResponse{}
}

func TestVoiceTwiMLVerbsAndAttributes(t *testing.T) {
	resp := serveTwiML(t, followUp())
	if resp.Status != 200 || resp.ContentType != "text/xml" {
		t.Fatalf("answer %d %q", resp.Status, resp.ContentType)
	}
	var doc twimlNode
	if err := xml.Unmarshal(resp.Body, &doc); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range doc.Nodes {
		names = append(names, n.XMLName.Local)
	}
	base := testPublic + "/webhooks/twilio/voice/"
	say := map[string]string{"language": "cmn-CN", "voice": "Polly.Zhiyu"}
	tests := []struct {
		name      string
		got, want any
	}{
		{"the verbs are Say, Gather, Say, Record, Hangup", names, []string{"Say", "Gather", "Say", "Record", "Hangup"}},
		{"the message is spoken in Mandarin", doc.Nodes[0].attrs(), say},
		{"the message text is the body", doc.Nodes[0].Text, "您好，这里是和平诊所。"},
		{"the question takes one key, posts to the gather webhook, and posts even without a key", doc.Nodes[1].attrs(), map[string]string{
			"input": "dtmf", "numDigits": "1", "timeout": "7", "action": base + "gather?m=" + voiceMsgID, "method": "POST", "actionOnEmptyResult": "true"}},
		{"the question's prompt is spoken inside the Gather", doc.Nodes[1].Nodes[0].Text, "明天能来复诊请按1，不能来请按2。"},
		{"the prompt is in Mandarin too", doc.Nodes[1].Nodes[0].attrs(), say},
		{"the recording prompt comes before the recording", doc.Nodes[2].Text, "请在提示音后说出您的问题。"},
		{"the recording beeps, is bounded, and reports to the record and recording webhooks", doc.Nodes[3].attrs(), map[string]string{
			"maxLength": "30", "playBeep": "true", "action": base + "record?m=" + voiceMsgID, "method": "POST",
			"recordingStatusCallback": base + "recording?m=" + voiceMsgID, "recordingStatusCallbackMethod": "POST",
			"transcribe": "true", "transcribeCallback": base + "transcription?m=" + voiceMsgID}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !reflect.DeepEqual(tt.got, tt.want) {
				t.Errorf("got %v, want %v", tt.got, tt.want)
			}
		})
	}
}

func TestVoiceSpeaksEachLocaleWithAVoiceOfIt(t *testing.T) {
	tests := []struct{ locale, language, voice string }{
		{"en-US", "en-US", "Polly.Joanna"},
		{"", "en-US", "Polly.Joanna"},
		{"tlh", "en-US", "Polly.Joanna"},
		{"zh-CN", "cmn-CN", "Polly.Zhiyu"},
		{"zh", "cmn-CN", "Polly.Zhiyu"},
		{"zh-Hans-CN", "cmn-CN", "Polly.Zhiyu"},
		{"zh_TW", "cmn-TW", "Google.cmn-TW-Standard-A"},
		{"zh-Hant", "cmn-TW", "Google.cmn-TW-Standard-A"},
		{"zh-HK", "yue-HK", "Google.yue-HK-Standard-A"},
		{"es-MX", "es-MX", "Polly.Mia"},
		{"es-419", "es-MX", "Polly.Mia"},
		{"es-ES", "es-ES", "Polly.Lucia"},
		{"en-GB", "en-GB", "Polly.Amy"},
		{"fr-CA", "fr-CA", "Polly.Chantal"},
		{"vi", "vi-VN", "Google.vi-VN-Standard-A"},
	}
	for _, tt := range tests {
		t.Run("locale "+tt.locale+" speaks "+tt.language, func(t *testing.T) {
			resp := serveTwiML(t, &ledger.Message{ID: voiceMsgID, Request: ledger.Request{Locale: tt.locale, Body: "x"}})
			want := `<Say language="` + tt.language + `" voice="` + tt.voice + `">x</Say>`
			if !strings.Contains(string(resp.Body), want) {
				t.Fatalf("TwiML %s lacks %s", resp.Body, want)
			}
		})
	}
}

func TestFetchRecordingSendsCredentialsOnlyToThisAccountsRecordings(t *testing.T) {
	v := newVoice(t, twilio.DefaultAPIURL, channeltest.LoopbackOnly(nil))
	good := "https://api.twilio.com/2010-04-01/Accounts/" + testSID + "/Recordings/" + recSID
	tests := []struct {
		name, url string
	}{
		{"another host", "https://evil.example/2010-04-01/Accounts/" + testSID + "/Recordings/" + recSID},
		{"another account", "https://api.twilio.com/2010-04-01/Accounts/ACffffffffffffffffffffffffffffffff/Recordings/" + recSID},
		{"another resource", "https://api.twilio.com/2010-04-01/Accounts/" + testSID + "/Messages/" + recSID},
		{"a query", good + "?x=1"},
		{"user info", "https://user@api.twilio.com/2010-04-01/Accounts/" + testSID + "/Recordings/" + recSID},
		{"not a URL", "::"},
	}
	for _, tt := range tests {
		t.Run("a recording URL with "+tt.name+" is refused without a request", func(t *testing.T) {
			_, _, err := v.FetchRecording(context.Background(), tt.url)
			if se := channels.AsSendError(err); se.Class != channels.Permanent || se.Code != "bad_recording_url" {
				t.Fatalf("FetchRecording = %v", err)
			}
		})
	}
	t.Run("a recording URL of this account goes through the loopback guard (here: refused)", func(t *testing.T) {
		_, _, err := v.FetchRecording(context.Background(), good)
		if !errors.Is(err, channeltest.ErrNotLoopback) {
			t.Fatalf("FetchRecording = %v, want the loopback guard to refuse api.twilio.com", err)
		}
	})
}

func TestParseCallStatus(t *testing.T) {
	q := url.Values{"m": {voiceMsgID}}
	cases := []struct {
		name     string
		form     url.Values
		query    url.Values
		want     ledger.Status
		provider string
		wantErr  bool
	}{
		{"in-progress is answered", url.Values{"CallSid": {callSID}, "CallStatus": {"in-progress"}}, q, ledger.StatusSent, "answered", false},
		{"status is case-insensitive", url.Values{"CallSid": {callSID}, "CallStatus": {"COMPLETED"}}, q, ledger.StatusDelivered, "completed", false},
		{"busy maps to sent: the call is redialled", url.Values{"CallSid": {callSID}, "CallStatus": {"busy"}}, q, ledger.StatusSent, "busy", false},
		{"an unknown status maps to none", url.Values{"CallSid": {callSID}, "CallStatus": {"teleported"}}, q, "", "teleported", false},
		{"a message sid is malformed", url.Values{"CallSid": {sid}, "CallStatus": {"completed"}}, q, "", "", true},
		{"a missing message id is malformed", url.Values{"CallSid": {callSID}, "CallStatus": {"completed"}}, url.Values{}, "", "", true},
		{"a non-numeric duration is malformed", url.Values{"CallSid": {callSID}, "CallStatus": {"completed"}, "CallDuration": {"1s"}}, q, "", "", true},
		{"a non-numeric error code is malformed", url.Values{"CallSid": {callSID}, "CallStatus": {"failed"}, "ErrorCode": {"x"}}, q, "", "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cb, err := twilio.ParseCallStatus(c.form, c.query)
			if (err != nil) != c.wantErr || (err == nil && (cb.Status != c.want || cb.ProviderStatus != c.provider)) {
				t.Fatalf("got %+v, %v", cb, err)
			}
		})
	}
}

func TestParseGatherAndRecordingStatus(t *testing.T) {
	q := url.Values{"m": {voiceMsgID}}
	t.Run("a retry flag in the action URL is read", func(t *testing.T) {
		cb, err := twilio.ParseGather(url.Values{"CallSid": {callSID}, "Digits": {"1"}}, url.Values{"m": {voiceMsgID}, "retry": {"1"}})
		if err != nil || !cb.Retry || cb.Digits != "1" {
			t.Fatalf("got %+v, %v", cb, err)
		}
	})
	t.Run("digits other than keys are malformed", func(t *testing.T) {
		if _, err := twilio.ParseGather(url.Values{"CallSid": {callSID}, "Digits": {"1<script>"}}, q); err == nil {
			t.Fatal("accepted")
		}
	})
	t.Run("a completed recording's duration is read", func(t *testing.T) {
		cb, err := twilio.ParseRecordingStatus(recordingForm("completed"), q)
		if err != nil || cb.Duration != 12 || cb.RecordingSid != recSID {
			t.Fatalf("got %+v, %v", cb, err)
		}
	})
	t.Run("a recording sid of the wrong kind is malformed", func(t *testing.T) {
		f := recordingForm("completed")
		f.Set("RecordingSid", callSID)
		if _, err := twilio.ParseRecordingStatus(f, q); err == nil {
			t.Fatal("accepted")
		}
	})
}

func FuzzParseCallStatus(f *testing.F) {
	f.Add("CallSid="+callSID+"&CallStatus=completed&CallDuration=12&AnsweredBy=human", "m="+voiceMsgID)
	f.Add("CallSid="+callSID+"&CallStatus=failed&ErrorCode=13224", "m="+voiceMsgID)
	f.Add("CallSid=CA&CallStatus=%ff%fe", "m=%zz")
	f.Add(strings.Repeat("a=b&", 100), "m=1&m=2")
	f.Fuzz(func(t *testing.T, body, query string) {
		form, _ := url.ParseQuery(body)
		q, _ := url.ParseQuery(query)
		cb, err := twilio.ParseCallStatus(form, q)
		if err != nil {
			return
		}
		if !strings.HasPrefix(cb.CallSid, "CA") || len(cb.CallSid) != 34 || cb.MessageID == "" {
			t.Fatalf("accepted sid %q, message %q", cb.CallSid, cb.MessageID)
		}
		if cb.Status != "" && !cb.Status.Valid() {
			t.Fatalf("mapped to invalid status %q", cb.Status)
		}
		if cb.ErrorCode != "" && cb.ErrorMessage == "" {
			t.Fatal("error code without message")
		}
		if cb.CallDuration < 0 {
			t.Fatalf("negative duration %d", cb.CallDuration)
		}
	})
}

func FuzzParseGather(f *testing.F) {
	f.Add("CallSid="+callSID+"&Digits=1", "m="+voiceMsgID)
	f.Add("CallSid="+callSID+"&Digits=", "m="+voiceMsgID+"&retry=1")
	f.Add("CallSid="+callSID+"&Digits=%00", "m=")
	f.Fuzz(func(t *testing.T, body, query string) {
		form, _ := url.ParseQuery(body)
		q, _ := url.ParseQuery(query)
		cb, err := twilio.ParseGather(form, q)
		if err != nil {
			return
		}
		if strings.Trim(cb.Digits, "0123456789*#") != "" || len(cb.Digits) > 32 {
			t.Fatalf("accepted digits %q", cb.Digits)
		}
		if !strings.HasPrefix(cb.CallSid, "CA") || cb.MessageID == "" {
			t.Fatalf("accepted %+v", cb)
		}
	})
}

func FuzzParseRecordingStatus(f *testing.F) {
	f.Add(recordingForm("completed").Encode(), "m="+voiceMsgID)
	f.Add(recordingForm("absent").Encode(), "m="+voiceMsgID)
	f.Add("CallSid="+callSID+"&RecordingSid="+recSID+"&RecordingStatus=completed&RecordingUrl=javascript:x", "m="+voiceMsgID)
	f.Fuzz(func(t *testing.T, body, query string) {
		form, _ := url.ParseQuery(body)
		q, _ := url.ParseQuery(query)
		cb, err := twilio.ParseRecordingStatus(form, q)
		if err != nil {
			return
		}
		if !strings.HasPrefix(cb.RecordingSid, "RE") || !strings.HasPrefix(cb.CallSid, "CA") || cb.MessageID == "" || cb.Duration < 0 {
			t.Fatalf("accepted %+v", cb)
		}
		if cb.RecordingStatus == "completed" {
			u, err := url.Parse(cb.RecordingURL)
			if err != nil || (u.Scheme != "https" && u.Scheme != "http") || !strings.HasSuffix(u.Path, cb.RecordingSid) {
				t.Fatalf("accepted recording URL %q", cb.RecordingURL)
			}
		}
	})
}

func TestVoiceRedialSettings(t *testing.T) {
	path := twilio.VoiceStatusPath + "?m=" + voiceMsgID
	busy := func(n int, after time.Duration) []channeltest.RedialCall {
		return []channeltest.RedialCall{{MessageID: voiceMsgID, ProviderID: callSID, After: after, MaxRedials: n,
			Reason: ledger.ErrorInfo{Code: "busy", Message: "the line was busy"}}}
	}
	tests := []struct {
		name   string
		mutate func(*twilio.VoiceConfig)
		want   []channeltest.RedialCall
	}{
		{"no redial delay waits the default 30 minutes", func(c *twilio.VoiceConfig) { c.RedialDelay = 0 }, busy(voiceRedials, 30*time.Minute)},
		{"zero redials is none: the zero value never calls a patient twice", func(c *twilio.VoiceConfig) { c.MaxRedials = 0 }, busy(0, voiceRedialIn)},
		{"negative redials are none", func(c *twilio.VoiceConfig) { c.MaxRedials = -1 }, busy(0, voiceRedialIn)},
	}
	for _, tt := range tests {
		v := newVoice(t, twilio.DefaultAPIURL, nil, tt.mutate)
		channeltest.RunInbound(t, v, testPublic, sign, []channeltest.InboundCase{{
			Label: tt.name, Method: "POST", Path: path, Form: callForm("CallStatus", "busy"), Signed: true, ExpectedStatus: 200,
			ExpectedUpdates: []channeltest.Update{callUpdate(ledger.StatusSent, "busy", "", "")}, ExpectedRedials: tt.want,
		}})
	}
}
