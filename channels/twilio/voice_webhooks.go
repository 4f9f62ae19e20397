package twilio

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/ledger"
)

// CallStatusCallback is a parsed Twilio call progress callback.
type CallStatusCallback struct {
	MessageID  string // the gateway's id, from the callback URL's query
	CallSid    string
	CallStatus string // Twilio's CallStatus, lower case
	// Status is the gateway status it maps to; "" when it maps to none.
	Status ledger.Status
	// ProviderStatus is what the ledger records: CallStatus, or "answered"
	// for a call in progress.
	ProviderStatus string
	ErrorCode      string
	ErrorMessage   string
	CallDuration   int // seconds, on completed calls
	AnsweredBy     string
	AccountSid     string
}

// GatherCallback is a parsed <Gather> action request.
type GatherCallback struct {
	MessageID string
	CallSid   string
	Digits    string // "" when no key was pressed in time
	Retry     bool   // the question was already asked again
	// Step is an interactive call's question (channels.CallStep.Step).
	Step       string
	AccountSid string
}

// RecordingStatusCallback is a parsed recording status callback.
type RecordingStatusCallback struct {
	MessageID       string
	CallSid         string
	RecordingSid    string
	RecordingURL    string
	RecordingStatus string // in-progress, completed, absent, failed
	Duration        int    // seconds
	AccountSid      string
}

// TranscriptionCallback is a parsed transcription callback.
type TranscriptionCallback struct {
	MessageID        string
	CallSid          string
	RecordingSid     string
	TranscriptionSid string
	// Status is completed or failed; Text the transcript (completed only).
	Status     string
	Text       string
	AccountSid string
}

// maxTranscriptBytes bounds a transcript (Twilio transcribes at most two
// minutes of speech).
const maxTranscriptBytes = 16 << 10

// ParseTranscription reads a transcription callback.
func ParseTranscription(form, query url.Values) (TranscriptionCallback, error) {
	cb := TranscriptionCallback{
		MessageID:        query.Get("m"),
		CallSid:          form.Get("CallSid"),
		RecordingSid:     form.Get("RecordingSid"),
		TranscriptionSid: form.Get("TranscriptionSid"),
		Status:           strings.ToLower(form.Get("TranscriptionStatus")),
		Text:             strings.TrimSpace(form.Get("TranscriptionText")),
		AccountSid:       form.Get("AccountSid"),
	}
	if !validMessageID(cb.MessageID) || !validSid(cb.CallSid, "CA") || !validSid(cb.RecordingSid, "RE") || !validSid(cb.TranscriptionSid, "TR") {
		return cb, ErrMalformedVoice
	}
	if cb.Status != "completed" && cb.Status != "failed" {
		return cb, ErrMalformedVoice
	}
	if len(cb.Text) > maxTranscriptBytes || !utf8.ValidString(cb.Text) {
		return cb, ErrMalformedVoice
	}
	return cb, nil
}

// handleTranscription gives a recording's transcript to the receiver (a
// channels.Transcriber): it joins the reply feed and is read for urgent
// words like a text answer. The text is never logged.
func (v *Voice) handleTranscription(ctx context.Context, rcv channels.Receiver, r channels.WebhookRequest) channels.WebhookResponse {
	cb, err := ParseTranscription(r.Form, r.Query)
	if err != nil {
		v.log.Warn("transcription callback not understood")
		return okEmpty
	}
	tr, ok := rcv.(channels.Transcriber)
	if v.otherAccount(cb.AccountSid) || !ok {
		v.log.Warn("transcription callback ignored", "msg_id", cb.MessageID)
		return okEmpty
	}
	if cb.Status != "completed" || cb.Text == "" {
		v.log.Info("transcription failed or empty", "msg_id", cb.MessageID, "recording_sid", cb.RecordingSid)
		return okEmpty
	}
	switch err := tr.Transcript(ctx, cb.MessageID, cb.RecordingSid, cb.TranscriptionSid, cb.Text); {
	case errors.Is(err, ledger.ErrNotFound):
		v.log.Warn("transcript for an unknown message", "msg_id", cb.MessageID)
		return okEmpty
	case err != nil:
		v.log.Error("transcript not recorded", "msg_id", cb.MessageID, "err", err)
		return unavailable
	}
	v.log.Info("transcript recorded", "msg_id", cb.MessageID, "recording_sid", cb.RecordingSid, "chars", utf8.RuneCountInString(cb.Text))
	return okEmpty
}

// callStatuses maps Twilio's CallStatus to gateway statuses. Busy and
// no-answer are not final: the call is redialled.
var callStatuses = map[string]ledger.Status{
	"queued":      ledger.StatusSent,
	"initiated":   ledger.StatusSent,
	"ringing":     ledger.StatusSent,
	"in-progress": ledger.StatusSent,
	"answered":    ledger.StatusSent,
	"completed":   ledger.StatusDelivered,
	"busy":        ledger.StatusSent,
	"no-answer":   ledger.StatusSent,
	"failed":      ledger.StatusFailed,
	"canceled":    ledger.StatusCanceled,
}

// callErrorDescriptions explain the error codes of failed calls.
var callErrorDescriptions = map[string]string{
	"13223": "invalid phone number format",
	"13224": "number not supported or invalid",
	"13226": "invalid country code",
	"13227": "no international authorization",
	"21215": "geo permissions do not allow this number",
	"21216": "the account may not call this number",
	"21217": "the number does not appear to be valid",
}

// ErrMalformedVoice is returned for voice webhooks that are not Twilio's.
var ErrMalformedVoice = errors.New("twilio: malformed voice webhook")

// ParseCallStatus reads a call progress callback's form and the query of
// the URL Twilio was given.
func ParseCallStatus(form, query url.Values) (CallStatusCallback, error) {
	cb := CallStatusCallback{
		MessageID:  query.Get("m"),
		CallSid:    form.Get("CallSid"),
		CallStatus: strings.ToLower(form.Get("CallStatus")),
		ErrorCode:  form.Get("ErrorCode"),
		AnsweredBy: form.Get("AnsweredBy"),
		AccountSid: form.Get("AccountSid"),
	}
	if !validMessageID(cb.MessageID) || !validSid(cb.CallSid, "CA") {
		return cb, ErrMalformedVoice
	}
	if cb.CallStatus == "" || len(cb.CallStatus) > 32 || !token(cb.AnsweredBy, 32) {
		return cb, ErrMalformedVoice
	}
	if !digitsOnly(cb.ErrorCode, 8) {
		return cb, ErrMalformedVoice
	}
	if d := form.Get("CallDuration"); d != "" {
		if !digitsOnly(d, 7) {
			return cb, ErrMalformedVoice
		}
		cb.CallDuration, _ = strconv.Atoi(d)
	}
	if cb.ErrorCode == "0" {
		cb.ErrorCode = ""
	}
	cb.Status = callStatuses[cb.CallStatus]
	cb.ProviderStatus = cb.CallStatus
	if cb.CallStatus == "in-progress" {
		cb.ProviderStatus = "answered"
	}
	if cb.ErrorCode != "" {
		cb.ErrorMessage = callErrorDescriptions[cb.ErrorCode]
		if cb.ErrorMessage == "" {
			cb.ErrorMessage = "Twilio error " + cb.ErrorCode
		}
	}
	return cb, nil
}

// ParseGather reads a <Gather> action request.
func ParseGather(form, query url.Values) (GatherCallback, error) {
	cb := GatherCallback{
		MessageID:  query.Get("m"),
		CallSid:    form.Get("CallSid"),
		Digits:     form.Get("Digits"),
		Retry:      query.Get("retry") == "1",
		Step:       query.Get("s"),
		AccountSid: form.Get("AccountSid"),
	}
	if !validMessageID(cb.MessageID) || !validSid(cb.CallSid, "CA") || (cb.Step != "" && !validMessageID(cb.Step)) {
		return cb, ErrMalformedVoice
	}
	if len(cb.Digits) > 32 || strings.Trim(cb.Digits, "0123456789*#") != "" {
		return cb, ErrMalformedVoice
	}
	return cb, nil
}

// ParseRecordingStatus reads a recording status callback. A completed
// recording must carry the URL of that recording.
func ParseRecordingStatus(form, query url.Values) (RecordingStatusCallback, error) {
	cb := RecordingStatusCallback{
		MessageID:       query.Get("m"),
		CallSid:         form.Get("CallSid"),
		RecordingSid:    form.Get("RecordingSid"),
		RecordingURL:    form.Get("RecordingUrl"),
		RecordingStatus: strings.ToLower(form.Get("RecordingStatus")),
		AccountSid:      form.Get("AccountSid"),
	}
	if !validMessageID(cb.MessageID) || !validSid(cb.CallSid, "CA") || !validSid(cb.RecordingSid, "RE") {
		return cb, ErrMalformedVoice
	}
	if cb.RecordingStatus == "" || len(cb.RecordingStatus) > 32 {
		return cb, ErrMalformedVoice
	}
	if d := form.Get("RecordingDuration"); d != "" {
		if !digitsOnly(d, 6) {
			return cb, ErrMalformedVoice
		}
		cb.Duration, _ = strconv.Atoi(d)
	}
	if cb.RecordingStatus == "completed" {
		u, err := url.Parse(cb.RecordingURL)
		if err != nil || len(cb.RecordingURL) > 2048 || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" ||
			!strings.HasSuffix(u.Path, "/Recordings/"+cb.RecordingSid) {
			return cb, ErrMalformedVoice
		}
	}
	return cb, nil
}

// validMessageID accepts the ids the gateway puts in webhook URLs (ULIDs),
// and nothing that could not be one of its ids.
func validMessageID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func digitsOnly(s string, maxLen int) bool {
	return len(s) <= maxLen && strings.Trim(s, "0123456789") == ""
}

// token accepts "" or a short lower-case word with - and _ (AnsweredBy).
func token(s string, maxLen int) bool {
	if len(s) > maxLen {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// Routes declares the voice webhooks: the call's TwiML and its actions,
// the recording callback and the call progress callback. Every one checks
// Twilio's signature first.
func (v *Voice) Routes(rcv channels.Receiver) []channels.Route {
	route := func(path string, h func(context.Context, channels.Receiver, channels.WebhookRequest) channels.WebhookResponse) channels.Route {
		return channels.Route{Method: http.MethodPost, Path: path, Handle: func(ctx context.Context, r channels.WebhookRequest) channels.WebhookResponse {
			if !validSignature(v.validator, r) {
				v.log.Warn("voice webhook rejected: bad or missing signature", "path", path)
				return forbidden
			}
			return h(ctx, rcv, r)
		}}
	}
	return []channels.Route{
		route(VoiceTwiMLPath, v.handleTwiML),
		route(VoiceGatherPath, v.handleGather),
		route(VoiceRecordPath, v.handleRecord),
		route(VoiceRecordingPath, v.handleRecording),
		route(VoiceTranscriptionPath, v.handleTranscription),
		route(VoiceStatusPath, v.handleCallStatus),
	}
}

var unavailable = channels.WebhookResponse{Status: http.StatusServiceUnavailable, ContentType: "text/plain", Body: []byte("try again\n")}

func twimlOK(b []byte) channels.WebhookResponse {
	return channels.WebhookResponse{Status: http.StatusOK, ContentType: "text/xml", Body: b}
}

// otherAccount reports a webhook signed with this token but naming another account.
func (v *Voice) otherAccount(accountSid string) bool {
	return accountSid != "" && accountSid != v.cfg.AccountSID
}

// message loads the call's message. When it cannot, the TwiML answer to
// give instead is returned: an apology, never a 5xx, which would make
// Twilio play its own "application error" to the patient.
func (v *Voice) message(ctx context.Context, rcv channels.Receiver, id string) (*ledger.Message, []byte) {
	m, err := rcv.Message(ctx, id)
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		v.log.Warn("call for an unknown message", "msg_id", id)
		return nil, missingTwiML()
	case err != nil:
		v.log.Error("call message not loaded", "msg_id", id, "err", err)
		sp := speechFor("")
		return nil, sayAndHangUp(sp, sp.phrases.trouble)
	}
	return m, nil
}

// handleTwiML answers the TwiML of a call.
func (v *Voice) handleTwiML(ctx context.Context, rcv channels.Receiver, r channels.WebhookRequest) channels.WebhookResponse {
	id := r.Query.Get("m")
	if !validMessageID(id) || v.otherAccount(r.Form.Get("AccountSid")) {
		v.log.Warn("call TwiML request not understood")
		return twimlOK(missingTwiML())
	}
	m, alt := v.message(ctx, rcv, id)
	if m == nil {
		return twimlOK(alt)
	}
	if sid := r.Form.Get("CallSid"); validSid(sid, "CA") {
		v.log.Debug("call answered: TwiML served", "msg_id", id, "provider_id", sid)
	}
	if flow, ok := rcv.(channels.CallFlow); ok {
		st, interactive, err := flow.CallStep(ctx, m, "", nil)
		if err != nil {
			v.log.Error("interactive call not started", "msg_id", id, "err", err)
			sp := speechFor(m.Locale)
			return twimlOK(sayAndHangUp(sp, sp.phrases.trouble))
		}
		if interactive {
			return twimlOK(v.flowTwiML(m, st, true))
		}
	}
	return twimlOK(v.callTwiML(m))
}

// handleGather takes the key pressed: one of the choices is recorded as
// the answer; anything else (or no key) asks once more, then goes on
// without an answer.
func (v *Voice) handleGather(ctx context.Context, rcv channels.Receiver, r channels.WebhookRequest) channels.WebhookResponse {
	cb, err := ParseGather(r.Form, r.Query)
	if err != nil || v.otherAccount(cb.AccountSid) {
		v.log.Warn("gather request not understood")
		return twimlOK(missingTwiML())
	}
	m, alt := v.message(ctx, rcv, cb.MessageID)
	if m == nil {
		return twimlOK(alt)
	}
	if flow, ok := rcv.(channels.CallFlow); ok && cb.Step != "" {
		// The keys are a clinical answer: never logged.
		return v.flowAnswer(ctx, flow, m, cb.Step, &ledger.Answer{Digits: cb.Digits})
	}
	g := gatherOf(m)
	if g == nil {
		v.log.Warn("gather request for a message without a question", "msg_id", cb.MessageID)
		return twimlOK(v.afterGatherTwiML(m))
	}
	// The key itself is a clinical answer: it is never logged.
	if len(cb.Digits) != 1 || !strings.Contains(g.Digits, cb.Digits) {
		if !cb.Retry {
			v.log.Info("gather: no valid key, asking again", "msg_id", cb.MessageID, "provider_id", cb.CallSid)
			return twimlOK(v.retryTwiML(m, g))
		}
		v.log.Info("gather: no valid key after asking again, going on without an answer", "msg_id", cb.MessageID, "provider_id", cb.CallSid)
		return twimlOK(v.afterGatherTwiML(m))
	}
	switch err := rcv.Answer(ctx, cb.MessageID, ledger.Answer{Digits: cb.Digits}, ""); {
	case errors.Is(err, ledger.ErrNotFound):
		v.log.Warn("gather answer for an unknown message", "msg_id", cb.MessageID)
		return twimlOK(missingTwiML())
	case err != nil:
		v.log.Error("gather answer not recorded", "msg_id", cb.MessageID, "provider_id", cb.CallSid, "err", err)
		sp := speechFor(m.Locale)
		return twimlOK(sayAndHangUp(sp, sp.phrases.trouble))
	}
	v.log.Info("gather answer recorded", "msg_id", cb.MessageID, "provider_id", cb.CallSid)
	return twimlOK(v.afterGatherTwiML(m))
}

// flowAnswer gives an interactive call's answer to its flow and plays
// what follows.
func (v *Voice) flowAnswer(ctx context.Context, flow channels.CallFlow, m *ledger.Message, step string, a *ledger.Answer) channels.WebhookResponse {
	next, _, err := flow.CallStep(ctx, m, step, a)
	if err != nil {
		v.log.Error("interactive call answer not taken", "msg_id", m.ID, "err", err)
		sp := speechFor(m.Locale)
		return twimlOK(sayAndHangUp(sp, sp.phrases.trouble))
	}
	return twimlOK(v.flowTwiML(m, next, false))
}

// handleRecord ends the call after the recording (the recording itself
// arrives on VoiceRecordingPath); in an interactive call it takes the
// recording as the answer to its step and goes on.
func (v *Voice) handleRecord(ctx context.Context, rcv channels.Receiver, r channels.WebhookRequest) channels.WebhookResponse {
	if step := r.Query.Get("s"); step != "" {
		flow, ok := rcv.(channels.CallFlow)
		id := r.Query.Get("m")
		if !ok || !validMessageID(id) || !validMessageID(step) || !validSid(r.Form.Get("CallSid"), "CA") || v.otherAccount(r.Form.Get("AccountSid")) {
			v.log.Warn("record request not understood")
			return twimlOK(missingTwiML())
		}
		m, alt := v.message(ctx, rcv, id)
		if m == nil {
			return twimlOK(alt)
		}
		a := &ledger.Answer{}
		if sid := r.Form.Get("RecordingSid"); validSid(sid, "RE") {
			a.RecordingSID = sid
			if d := r.Form.Get("RecordingDuration"); digitsOnly(d, 6) {
				a.Duration, _ = strconv.Atoi(d)
			}
		}
		return v.flowAnswer(ctx, flow, m, step, a)
	}
	sp := speechFor("")
	if id := r.Query.Get("m"); validMessageID(id) {
		if m, err := rcv.Message(ctx, id); err == nil {
			sp = speechFor(m.Locale)
		}
	}
	return twimlOK(sayAndHangUp(sp, sp.phrases.thanks))
}

// handleRecording records a completed recording as the patient's answer.
func (v *Voice) handleRecording(ctx context.Context, rcv channels.Receiver, r channels.WebhookRequest) channels.WebhookResponse {
	cb, err := ParseRecordingStatus(r.Form, r.Query)
	if err != nil {
		v.log.Warn("recording callback not understood", "err", err)
		return okEmpty
	}
	if v.otherAccount(cb.AccountSid) {
		v.log.Warn("recording callback for another account ignored")
		return okEmpty
	}
	if cb.RecordingStatus != "completed" {
		v.log.Info("recording callback ignored", "msg_id", cb.MessageID, "recording_sid", cb.RecordingSid, "recording_status", cb.RecordingStatus)
		return okEmpty
	}
	switch err := rcv.Answer(ctx, cb.MessageID, ledger.Answer{RecordingSID: cb.RecordingSid, Duration: cb.Duration}, cb.RecordingURL); {
	case errors.Is(err, ledger.ErrNotFound):
		v.log.Warn("recording for an unknown message", "msg_id", cb.MessageID, "recording_sid", cb.RecordingSid)
		return okEmpty
	case err != nil:
		v.log.Error("recording not recorded", "msg_id", cb.MessageID, "recording_sid", cb.RecordingSid, "err", err)
		return unavailable
	}
	v.log.Info("recording recorded", "msg_id", cb.MessageID, "recording_sid", cb.RecordingSid, "duration", cb.Duration)
	return okEmpty
}

// busyReasons explain why a call is redialled.
var busyReasons = map[string]string{
	"busy":      "the line was busy",
	"no-answer": "the call was not answered",
}

// RedialFor implements channels.Redialer: a busy or unanswered call is
// placed again after RedialDelay, at most MaxRedials times.
func (v *Voice) RedialFor(u ledger.ProviderUpdate) (ledger.ErrorInfo, time.Duration, int, bool) {
	reason, ok := busyReasons[u.ProviderStatus]
	if !ok {
		return ledger.ErrorInfo{}, 0, 0, false
	}
	return ledger.ErrorInfo{Code: u.ProviderStatus, Message: reason}, v.cfg.RedialDelay, v.cfg.MaxRedials, true
}

// handleCallStatus records call progress. A busy or unanswered call is
// first recorded as the provider's report (which also ties the call to the
// message if the worker died before recording it), then redialled: the
// redial retires the call, after which a report about it is history only.
func (v *Voice) handleCallStatus(ctx context.Context, rcv channels.Receiver, r channels.WebhookRequest) channels.WebhookResponse {
	cb, err := ParseCallStatus(r.Form, r.Query)
	if err != nil {
		v.log.Warn("call status callback not understood", "err", err)
		return okEmpty
	}
	if v.otherAccount(cb.AccountSid) {
		v.log.Warn("call status callback for another account ignored")
		return okEmpty
	}
	if cb.Status == "" {
		v.log.Info("call status callback with an unmapped status ignored", "provider_status", cb.CallStatus, "provider_id", cb.CallSid)
		return okEmpty
	}
	u := ledger.ProviderUpdate{Channel: v.Name(), ProviderID: cb.CallSid, Status: cb.Status, ProviderStatus: cb.ProviderStatus,
		ErrorCode: cb.ErrorCode, ErrorMessage: cb.ErrorMessage}
	applied, err := rcv.ProviderStatus(ctx, cb.MessageID, u)
	switch {
	case errors.Is(err, ledger.ErrProviderMismatch), errors.Is(err, ledger.ErrNotFound):
		v.log.Warn("call status callback does not match the message", "msg_id", cb.MessageID, "provider_id", cb.CallSid)
		return okEmpty
	case err != nil:
		v.log.Error("call status callback not recorded", "msg_id", cb.MessageID, "err", err)
		return unavailable
	}
	v.log.Debug("call status callback", "msg_id", cb.MessageID, "provider_id", cb.CallSid, "provider_status", cb.ProviderStatus,
		"applied", int(applied), "duration", cb.CallDuration, "answered_by", cb.AnsweredBy)
	reason, after, maxRedials, redial := v.RedialFor(u)
	if !redial {
		return okEmpty
	}
	err = rcv.Redial(ctx, cb.MessageID, cb.CallSid, after, maxRedials, reason)
	switch {
	case errors.Is(err, ledger.ErrNotFound), errors.Is(err, ledger.ErrProviderMismatch):
		v.log.Warn("redial for a call that is not the message's", "msg_id", cb.MessageID, "provider_id", cb.CallSid)
		return okEmpty
	case err != nil:
		// The report is recorded (a retry is a duplicate); the redial is not.
		v.log.Error("redial not scheduled", "msg_id", cb.MessageID, "provider_id", cb.CallSid, "err", err)
		return unavailable
	}
	v.log.Info("call not answered: redial requested", "msg_id", cb.MessageID, "provider_id", cb.CallSid, "reason", cb.CallStatus)
	return okEmpty
}
