package twiliosim

// The Calls API: with Options.Voice the simulator creates outbound calls
// like Twilio's POST /2010-04-01/Accounts/{AccountSid}/Calls.json, then,
// asynchronously, posts signed call progress callbacks, fetches the call's
// TwiML, "plays" it (pressing programmed keys at <Gather>, speaking a
// programmed length at <Record>, following <Redirect>) and serves the
// recordings it made as WAV media.

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Call statuses: the status of a created call and the CallStatus of its
// callbacks.
const (
	CallQueued     = "queued"
	CallInitiated  = "initiated"
	CallRinging    = "ringing"
	CallInProgress = "in-progress"
	CallCompleted  = "completed"
	CallBusy       = "busy"
	CallNoAnswer   = "no-answer"
	CallFailed     = "failed"
	CallCanceled   = "canceled"
)

// Twilio error codes of the Calls API.
const (
	// CodeCallToRequired means To was not given.
	CodeCallToRequired = 21201
	// CodeCallURLRequired means neither Url nor Twiml was given, or Url is not a URL.
	CodeCallURLRequired = 21205
	// CodeCallFromRequired means From was not given.
	CodeCallFromRequired = 21213
	// CodeCallInvalidNumber is the default ErrorCode of a failed call:
	// Twilio does not support calling this number or it is invalid.
	CodeCallInvalidNumber = 13224
)

// Kinds of requests the simulator makes for a call (Hook.Kind).
const (
	// HookStatus is a call progress callback to StatusCallback.
	HookStatus = "status"
	// HookTwiML is the fetch of the call's Url.
	HookTwiML = "twiml"
	// HookGather is a <Gather> action request.
	HookGather = "gather"
	// HookRecord is a <Record> action request.
	HookRecord = "record"
	// HookRecording is a <Record> recordingStatusCallback.
	HookRecording = "recording"
	// HookRedirect is the fetch of a <Redirect> URL.
	HookRedirect = "redirect"
)

// DefaultRecordSeconds is how long the callee speaks at a <Record> when
// CallPlan.RecordSeconds is zero.
const DefaultRecordSeconds = 3

// maxDocuments bounds the TwiML documents one call fetches, so a TwiML
// loop (a <Redirect> to itself) ends.
const maxDocuments = 16

// maxTwiMLBytes bounds a TwiML answer.
const maxTwiMLBytes = 64 << 10

// CallPlan programs one call: an API error instead of a call, or how the
// created call goes. The zero CallPlan is a call that is answered, plays
// its TwiML without pressing a key, and says DefaultRecordSeconds at each
// <Record>.
type CallPlan struct {
	// Status is the HTTP status to answer the create request with: 0 or
	// 201 creates the call, 400..599 answers a Twilio error.
	Status int
	// Code and Message are the Twilio error of an error answer (0 and ""
	// select defaults, as for Reply).
	Code    int
	Message string
	// RetryAfter, if set, is sent as the Retry-After header of an error.
	RetryAfter string
	// Latency delays the answer; 0 uses SetLatency's default, a negative
	// value answers at once.
	Latency time.Duration

	// Outcome is how the call ends: CallCompleted (the default: answered
	// and played), CallBusy, CallNoAnswer, CallFailed or CallCanceled.
	Outcome string
	// ErrorCode is posted with a failed outcome; 0 selects CodeCallInvalidNumber.
	ErrorCode int
	// Digits are the keys pressed at each <Gather>, in the order the
	// Gathers are reached; "" or a missing entry presses nothing (the
	// Gather times out).
	Digits []string
	// RecordSeconds is how long the callee speaks at each <Record>: 0
	// selects DefaultRecordSeconds, a negative value stays silent (no
	// recording is made and the call goes on with the next verb).
	RecordSeconds int
	// AnsweredBy, when set, is posted as AnsweredBy once the call is
	// answered (as Twilio does with machine detection), e.g. "human".
	AnsweredBy string
	// DropCallbacks sends no call progress callbacks (the call still plays).
	DropCallbacks bool
	// Transcript is what the callee says at each <Record>: with
	// transcribe="true", Twilio's transcription callback carries it (a
	// recording longer than two minutes, or silence, is not transcribed:
	// the callback says failed, as Twilio's does).
	Transcript string
}

// Verb is a parsed TwiML element.
type Verb struct {
	Name     string
	Attrs    map[string]string
	Text     string
	Children []Verb
}

// Hook is one request the simulator made for a call.
type Hook struct {
	// Kind is HookStatus, HookTwiML, HookGather, HookRecord, HookRecording or HookRedirect.
	Kind   string
	Method string
	URL    string
	Form   url.Values
	// Code is the HTTP status answered, 0 when none was.
	Code int
	// Err says why no usable answer came (refused host, connection
	// error, a TwiML answer that does not parse); empty otherwise.
	Err string
	// Verbs is the parsed TwiML answer of a TwiML request (twiml, gather,
	// record, redirect).
	Verbs []Verb
	At    time.Time
}

// CallRecord is a created call and everything the simulator did for it.
type CallRecord struct {
	SID string
	// Created is when the create request was accepted.
	Created time.Time
	// Form is the create request.
	Form url.Values
	Plan CallPlan
	// Status is the call's latest status.
	Status string
	// Hooks are the requests made for the call, in order.
	Hooks []Hook
	// Recordings are the SIDs of the recordings made.
	Recordings []string
	// Done is set once the call has ended and every request for it was made.
	Done bool
}

// Statuses returns the CallStatus of every progress callback posted, in order.
func (c CallRecord) Statuses() []string {
	var out []string
	for _, h := range c.Hooks {
		if h.Kind == HookStatus {
			out = append(out, h.Form.Get("CallStatus"))
		}
	}
	return out
}

// HooksOf returns the hooks of one kind, in order.
func (c CallRecord) HooksOf(kind string) []Hook {
	var out []Hook
	for _, h := range c.Hooks {
		if h.Kind == kind {
			out = append(out, h)
		}
	}
	return out
}

// voiceState is the simulator's Calls API state; it is guarded by Server.mu.
type voiceState struct {
	plans      []CallPlan
	plan       CallPlan
	calls      map[string]*CallRecord
	order      []string
	recordings map[string]int // recording SID → seconds
}

// callJob is what a call goroutine needs.
type callJob struct {
	sid, to, from string
	form          url.Values
	plan          CallPlan
}

// callResource is Twilio's Call resource as returned on create.
type callResource struct {
	AccountSID      string            `json:"account_sid"`
	Annotation      *string           `json:"annotation"`
	AnsweredBy      *string           `json:"answered_by"`
	APIVersion      string            `json:"api_version"`
	CallerName      *string           `json:"caller_name"`
	DateCreated     string            `json:"date_created"`
	DateUpdated     string            `json:"date_updated"`
	Direction       string            `json:"direction"`
	Duration        *string           `json:"duration"`
	EndTime         *string           `json:"end_time"`
	ForwardedFrom   *string           `json:"forwarded_from"`
	From            string            `json:"from"`
	FromFormatted   string            `json:"from_formatted"`
	GroupSID        *string           `json:"group_sid"`
	ParentCallSID   *string           `json:"parent_call_sid"`
	PhoneNumberSID  *string           `json:"phone_number_sid"`
	Price           *string           `json:"price"`
	PriceUnit       string            `json:"price_unit"`
	QueueTime       string            `json:"queue_time"`
	SID             string            `json:"sid"`
	StartTime       *string           `json:"start_time"`
	Status          string            `json:"status"`
	SubresourceURIs map[string]string `json:"subresource_uris"`
	To              string            `json:"to"`
	ToFormatted     string            `json:"to_formatted"`
	TrunkSID        *string           `json:"trunk_sid"`
	URI             string            `json:"uri"`
}

// voiceRoutes adds the Calls API to mux.
func (s *Server) voiceRoutes(mux *http.ServeMux) {
	mux.HandleFunc("/"+APIVersion+"/Accounts/{AccountSid}/Calls.json", s.handleCallCreate)
	mux.HandleFunc("/"+APIVersion+"/Accounts/{AccountSid}/Calls/{file}", s.handleCallFetch)
	mux.HandleFunc("/"+APIVersion+"/Accounts/{AccountSid}/Recordings/{file}", s.handleRecordingMedia)
}

// handleCallFetch implements GET …/Calls/{Sid}.json: the call as Twilio
// holds it now, its status the latest whether or not its callbacks were
// delivered (not kept with Options.NoRecord: 404).
func (s *Server) handleCallFetch(w http.ResponseWriter, r *http.Request) {
	sid, ok := s.fetchedSID(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	c, ok := s.voice.calls[sid]
	var res callResource
	if ok {
		res = callResource{AccountSID: s.accountSID, APIVersion: APIVersion, SID: c.SID, Status: c.Status,
			To: c.Form.Get("To"), From: c.Form.Get("From"), Direction: "outbound-api", PriceUnit: "USD",
			DateCreated: c.Created.UTC().Format(time.RFC1123Z), DateUpdated: time.Now().UTC().Format(time.RFC1123Z),
			URI: "/" + APIVersion + "/Accounts/" + s.accountSID + "/Calls/" + c.SID + ".json"}
		s.fetches++
	}
	s.mu.Unlock()
	if !ok {
		s.reject(w, r, nil, http.StatusNotFound, CodeNotFound, "The requested resource "+r.URL.Path+" was not found", "")
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// ScriptCalls queues call plans: the next len(ps) valid call-create
// requests get them in order, then the default plan (SetCallPlan)
// resumes. It panics on a plan the simulator cannot honour.
func (s *Server) ScriptCalls(ps ...CallPlan) {
	for _, p := range ps {
		p.mustValidate()
	}
	s.mu.Lock()
	s.voice.plans = append(s.voice.plans, ps...)
	s.mu.Unlock()
}

// SetCallPlan sets the plan of calls no scripted plan is queued for.
func (s *Server) SetCallPlan(p CallPlan) {
	p.mustValidate()
	s.mu.Lock()
	s.voice.plan = p
	s.mu.Unlock()
}

// Calls returns copies of the created calls, oldest first (empty with
// Options.NoRecord).
func (s *Server) Calls() []CallRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]CallRecord, 0, len(s.voice.order))
	for _, sid := range s.voice.order {
		out = append(out, s.voice.calls[sid].clone())
	}
	return out
}

// Call returns a copy of one created call.
func (s *Server) Call(sid string) (CallRecord, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.voice.calls[sid]
	if !ok {
		return CallRecord{}, false
	}
	return c.clone(), true
}

// RecordingsURL returns the URL of this account's recordings; a
// recording's RecordingUrl is RecordingsURL() + "/" + its SID.
func (s *Server) RecordingsURL() string {
	return s.url + "/" + APIVersion + "/Accounts/" + s.accountSID + "/Recordings"
}

func (c *CallRecord) clone() CallRecord {
	out := *c
	out.Form = cloneValues(c.Form)
	out.Plan.Digits = slices.Clone(c.Plan.Digits)
	out.Recordings = slices.Clone(c.Recordings)
	out.Hooks = make([]Hook, len(c.Hooks))
	for i, h := range c.Hooks {
		h.Form = cloneValues(h.Form)
		h.Verbs = cloneVerbs(h.Verbs)
		out.Hooks[i] = h
	}
	return out
}

func cloneVerbs(vs []Verb) []Verb {
	if vs == nil {
		return nil
	}
	out := make([]Verb, len(vs))
	for i, v := range vs {
		v.Attrs = cloneAttrs(v.Attrs)
		v.Children = cloneVerbs(v.Children)
		out[i] = v
	}
	return out
}

func cloneAttrs(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (p CallPlan) mustValidate() {
	if !p.success() && (p.Status < 400 || p.Status > 599) {
		panic(fmt.Sprintf("twiliosim: unsupported call plan status %d", p.Status))
	}
	switch p.Outcome {
	case "", CallCompleted, CallBusy, CallNoAnswer, CallFailed, CallCanceled:
	default:
		panic(fmt.Sprintf("twiliosim: unsupported call outcome %q", p.Outcome))
	}
}

func (p CallPlan) success() bool { return p.Status == 0 || p.Status == http.StatusCreated }

// nextCallPlan pops a scripted plan, or returns the default one, with
// defaults filled in.
func (s *Server) nextCallPlan() CallPlan {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.voice.plan
	if len(s.voice.plans) > 0 {
		p = s.voice.plans[0]
		s.voice.plans = slices.Delete(s.voice.plans, 0, 1)
	}
	p.Digits = slices.Clone(p.Digits)
	if p.Latency == 0 {
		p.Latency = s.latency
	}
	if p.Outcome == "" {
		p.Outcome = CallCompleted
	}
	if p.Outcome == CallFailed && p.ErrorCode == 0 {
		p.ErrorCode = CodeCallInvalidNumber
	}
	if p.RecordSeconds == 0 {
		p.RecordSeconds = DefaultRecordSeconds
	}
	return p
}

// handleCallCreate implements POST /2010-04-01/Accounts/{AccountSid}/Calls.json.
func (s *Server) handleCallCreate(w http.ResponseWriter, r *http.Request) {
	form, ok := s.createForm(w, r)
	if !ok {
		return
	}
	switch {
	case form.Get("To") == "":
		s.reject(w, r, form, http.StatusBadRequest, CodeCallToRequired, "No 'To' number is specified", "")
		return
	case form.Get("From") == "":
		s.reject(w, r, form, http.StatusBadRequest, CodeCallFromRequired, "No 'From' number is specified", "")
		return
	case form.Get("Twiml") == "" && !absoluteHTTP(form.Get("Url")):
		s.reject(w, r, form, http.StatusBadRequest, CodeCallURLRequired, "Url parameter is required and must be a valid URL", "")
		return
	}

	s.mu.Lock()
	s.inFlight++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inFlight--
		s.mu.Unlock()
	}()
	plan := s.nextCallPlan()
	if !s.pause(plan.Latency) {
		s.reject(w, r, form, http.StatusServiceUnavailable, CodeServiceUnavailable, "Service unavailable: simulator is shutting down", "")
		return
	}
	if !plan.success() {
		rp := Reply{Status: plan.Status, Code: plan.Code, Message: plan.Message}
		s.reject(w, r, form, plan.Status, rp.errorCode(), rp.errorMessage(), plan.RetryAfter)
		return
	}

	now := time.Now().UTC()
	sid := "CA" + randHex(16)
	date := now.Format(time.RFC1123Z)
	uri := "/" + APIVersion + "/Accounts/" + s.accountSID + "/Calls/" + sid
	res := callResource{
		AccountSID: s.accountSID, APIVersion: APIVersion, DateCreated: date, DateUpdated: date,
		Direction: "outbound-api", From: form.Get("From"), FromFormatted: form.Get("From"),
		PriceUnit: "USD", QueueTime: "0", SID: sid, Status: CallQueued,
		SubresourceURIs: map[string]string{
			"recordings":    uri + "/Recordings.json",
			"notifications": uri + "/Notifications.json",
			"events":        uri + "/Events.json",
		},
		To: form.Get("To"), ToFormatted: form.Get("To"), URI: uri + ".json",
	}
	s.recordVoiceRequest(r, form, http.StatusCreated, sid)
	s.startCall(callJob{sid: sid, to: res.To, from: res.From, form: form, plan: plan})
	s.log.Debug("twiliosim: call created", "sid", sid, "outcome", plan.Outcome)
	writeJSON(w, http.StatusCreated, res)
}

// recordVoiceRequest counts and keeps a Calls API request answered without
// an error (a created call, a media download).
func (s *Server) recordVoiceRequest(r *http.Request, form url.Values, status int, sid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Requests++
	if status == http.StatusCreated {
		s.stats.Calls++
	}
	if s.noRecord {
		return
	}
	s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, Form: form, Header: r.Header,
		At: time.Now(), Reply: status, SID: sid})
}

// startCall records the call and starts its goroutine, unless the
// simulator is closed.
func (s *Server) startCall(j callJob) {
	s.mu.Lock()
	if !s.noRecord {
		s.voice.calls[j.sid] = &CallRecord{SID: j.sid, Form: j.form, Plan: j.plan, Status: CallQueued, Created: time.Now()}
		s.voice.order = append(s.voice.order, j.sid)
	}
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.pending++
	if s.pending == 1 {
		s.idle = make(chan struct{})
	}
	s.cbWG.Add(1)
	s.mu.Unlock()
	go s.runCall(j)
}

// call is one running call.
type call struct {
	s       *Server
	j       callJob
	events  map[string]bool // subscribed progress events; nil: only the final one
	seq     int
	seconds int
	gathers int
	docs    int
}

// runCall drives a call from dialling to its end.
func (s *Server) runCall(j callJob) {
	defer s.callbackDone()
	c := &call{s: s, j: j}
	if evs := j.form["StatusCallbackEvent"]; len(evs) > 0 {
		c.events = map[string]bool{}
		for _, e := range evs {
			for _, f := range strings.Fields(e) { // Twilio also takes them space-separated
				c.events[strings.ToLower(f)] = true
			}
		}
	}
	defer s.finishCall(j.sid)
	if !c.progress("initiated", CallInitiated) {
		return
	}
	switch j.plan.Outcome {
	case CallFailed, CallBusy:
		c.final(j.plan.Outcome)
		return
	}
	if !c.progress("ringing", CallRinging) {
		return
	}
	switch j.plan.Outcome {
	case CallNoAnswer, CallCanceled:
		c.final(j.plan.Outcome)
		return
	}
	if !c.progress("answered", CallInProgress) {
		return
	}
	c.play()
	if s.cbCtx.Err() == nil {
		c.final(CallCompleted)
	}
}

// finishCall marks a call done.
func (s *Server) finishCall(sid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rec, ok := s.voice.calls[sid]; ok {
		rec.Done = true
	}
}

// setStatus records a call's status.
func (c *call) setStatus(status string) {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	if rec, ok := c.s.voice.calls[c.j.sid]; ok {
		rec.Status = status
	}
}

// progress moves the call to status after the callback delay and posts the
// event's callback if it is subscribed. It returns false when the
// simulator is closing.
func (c *call) progress(event, status string) bool {
	if !sleepCtx(c.s.cbCtx, c.s.cbDelay) {
		return false
	}
	c.setStatus(status)
	if c.events[event] {
		c.statusCallback(status)
	}
	return c.s.cbCtx.Err() == nil
}

// final ends the call with status and posts the completed event's
// callback (Twilio posts it when no events were chosen, too).
func (c *call) final(status string) {
	if !sleepCtx(c.s.cbCtx, c.s.cbDelay) {
		return
	}
	c.setStatus(status)
	if c.events == nil || c.events["completed"] {
		c.statusCallback(status)
	}
}

// baseForm returns the parameters of every request about the call.
func (c *call) baseForm(status string) url.Values {
	return url.Values{
		"AccountSid": {c.s.accountSID},
		"ApiVersion": {APIVersion},
		"CallSid":    {c.j.sid},
		"CallStatus": {status},
		"Called":     {c.j.to},
		"Caller":     {c.j.from},
		"Direction":  {"outbound-api"},
		"From":       {c.j.from},
		"To":         {c.j.to},
	}
}

// statusCallback posts one call progress callback.
func (c *call) statusCallback(status string) {
	target := c.j.form.Get("StatusCallback")
	if target == "" || c.j.plan.DropCallbacks {
		return
	}
	form := c.baseForm(status)
	form.Set("CallbackSource", "call-progress-events")
	form.Set("SequenceNumber", strconv.Itoa(c.seq))
	form.Set("Timestamp", time.Now().UTC().Format(time.RFC1123Z))
	c.seq++
	if c.j.plan.AnsweredBy != "" && (status == CallInProgress || status == CallCompleted) {
		form.Set("AnsweredBy", c.j.plan.AnsweredBy)
	}
	switch status {
	case CallCompleted:
		form.Set("CallDuration", strconv.Itoa(max(c.seconds, 1)))
	case CallFailed:
		form.Set("ErrorCode", strconv.Itoa(c.j.plan.ErrorCode))
	}
	c.request(HookStatus, methodOr(c.j.form.Get("StatusCallbackMethod")), target, form, false)
}

// play fetches the call's TwiML and plays it.
func (c *call) play() {
	var verbs []Verb
	docURL := c.j.form.Get("Url")
	if inline := c.j.form.Get("Twiml"); inline != "" {
		var err error
		if verbs, err = parseTwiML([]byte(inline)); err != nil {
			return
		}
	} else {
		var ok bool
		if verbs, ok = c.fetch(HookTwiML, methodOr(c.j.form.Get("Method")), docURL, c.baseForm(CallInProgress)); !ok {
			return
		}
	}
	c.run(docURL, verbs)
}

// run plays verbs, fetched from docURL, following actions and redirects.
func (c *call) run(docURL string, verbs []Verb) {
	for i := 0; i < len(verbs); i++ {
		if c.s.cbCtx.Err() != nil {
			return
		}
		v := verbs[i]
		switch v.Name {
		case "Say", "Play", "Pause":
			c.seconds += verbSeconds(v)
		case "Gather":
			for _, child := range v.Children {
				c.seconds += verbSeconds(child)
			}
			digits := ""
			if c.gathers < len(c.j.plan.Digits) {
				digits = c.j.plan.Digits[c.gathers]
			}
			c.gathers++
			if n, err := strconv.Atoi(v.Attrs["numDigits"]); err == nil && n > 0 && len(digits) > n {
				digits = digits[:n]
			}
			if digits == "" && v.Attrs["actionOnEmptyResult"] != "true" {
				c.seconds += atoiOr(v.Attrs["timeout"], 5)
				continue // Twilio goes on with the next verb
			}
			c.seconds++
			target, ok := resolve(docURL, v.Attrs["action"])
			if !ok {
				return
			}
			form := c.baseForm(CallInProgress)
			form.Set("Digits", digits)
			form.Set("FinishedOnKey", "")
			form.Set("msg", "Gather End")
			next, ok := c.fetch(HookGather, methodOr(v.Attrs["method"]), target, form)
			if !ok {
				return
			}
			docURL, verbs, i = target, next, -1
		case "Record":
			secs := c.j.plan.RecordSeconds
			if secs < 0 {
				c.seconds += atoiOr(v.Attrs["timeout"], 5)
				continue // silence: no recording, go on
			}
			if maxLen := atoiOr(v.Attrs["maxLength"], 3600); maxLen > 0 {
				secs = min(secs, maxLen)
			}
			c.seconds += secs
			target, ok := resolve(docURL, v.Attrs["action"])
			if !ok {
				return
			}
			recSID := "RE" + randHex(16)
			recURL := c.s.RecordingsURL() + "/" + recSID
			c.s.addRecording(c.j.sid, recSID, secs)
			form := c.baseForm(CallInProgress)
			form.Set("RecordingUrl", recURL)
			form.Set("RecordingSid", recSID)
			form.Set("RecordingDuration", strconv.Itoa(secs))
			form.Set("Digits", "#")
			next, ok := c.fetch(HookRecord, methodOr(v.Attrs["method"]), target, form)
			if cb := v.Attrs["recordingStatusCallback"]; cb != "" {
				if cbURL, cbOK := resolve(docURL, cb); cbOK {
					c.recordingCallback(cbURL, methodOr(v.Attrs["recordingStatusCallbackMethod"]), recSID, recURL, secs)
				}
			}
			if cb := v.Attrs["transcribeCallback"]; cb != "" && v.Attrs["transcribe"] == "true" {
				if cbURL, cbOK := resolve(docURL, cb); cbOK {
					c.transcriptionCallback(cbURL, recSID, recURL, secs)
				}
			}
			if !ok {
				return
			}
			docURL, verbs, i = target, next, -1
		case "Redirect":
			target, ok := resolve(docURL, strings.TrimSpace(v.Text))
			if !ok {
				return
			}
			next, ok := c.fetch(HookRedirect, methodOr(v.Attrs["method"]), target, c.baseForm(CallInProgress))
			if !ok {
				return
			}
			docURL, verbs, i = target, next, -1
		case "Hangup", "Reject":
			return
		}
	}
}

// recordingCallback posts a recording status callback.
func (c *call) recordingCallback(target, method, recSID, recURL string, secs int) {
	form := url.Values{
		"AccountSid":         {c.s.accountSID},
		"CallSid":            {c.j.sid},
		"ErrorCode":          {"0"},
		"RecordingChannels":  {"1"},
		"RecordingDuration":  {strconv.Itoa(secs)},
		"RecordingSid":       {recSID},
		"RecordingSource":    {"RecordVerb"},
		"RecordingStartTime": {time.Now().UTC().Format(time.RFC1123Z)},
		"RecordingStatus":    {"completed"},
		"RecordingUrl":       {recURL},
	}
	c.request(HookRecording, method, target, form, false)
}

// HookTranscription is a <Record> transcribeCallback.
const HookTranscription = "transcription"

// transcriptionCallback posts a recording's transcript as Twilio does
// (POST, signed).
func (c *call) transcriptionCallback(target, recSID, recURL string, secs int) {
	status, text := "completed", c.j.plan.Transcript
	if secs > 120 || strings.TrimSpace(text) == "" {
		status, text = "failed", ""
	}
	trSID := "TR" + randHex(16)
	form := url.Values{
		"AccountSid":          {c.s.accountSID},
		"CallSid":             {c.j.sid},
		"RecordingSid":        {recSID},
		"RecordingUrl":        {recURL},
		"TranscriptionSid":    {trSID},
		"TranscriptionStatus": {status},
		"TranscriptionText":   {text},
		"TranscriptionType":   {"fast"},
		"TranscriptionUrl":    {c.s.url + "/" + APIVersion + "/Accounts/" + c.s.accountSID + "/Transcriptions/" + trSID},
	}
	c.request(HookTranscription, http.MethodPost, target, form, false)
}

// fetch requests TwiML and parses it; ok is false when the call cannot go
// on (no answer, an error status, TwiML that does not parse, too many
// documents), as Twilio then ends the call with an application error.
func (c *call) fetch(kind, method, target string, form url.Values) ([]Verb, bool) {
	c.docs++
	if c.docs > maxDocuments {
		return nil, false
	}
	h := c.request(kind, method, target, form, true)
	return h.Verbs, h.Err == "" && h.Code >= 200 && h.Code <= 299
}

// request makes one signed request for the call, records it, and, with
// twiml, parses the answer as TwiML.
func (c *call) request(kind, method, target string, form url.Values, twiml bool) Hook {
	h := Hook{Kind: kind, Method: method, URL: target, Form: form}
	var body []byte
	var err error
	if err = checkCallbackURL(target); err == nil {
		h.Code, body, err = c.s.send(c.s.cbCtx, method, target, form)
	}
	// 204 No Content is an empty document: the call ends.
	if err == nil && twiml && h.Code >= 200 && h.Code <= 299 && h.Code != http.StatusNoContent {
		h.Verbs, err = parseTwiML(body)
	}
	if err != nil {
		h.Err = err.Error()
	}
	h.At = time.Now()
	s := c.s
	s.mu.Lock()
	s.stats.CallWebhooks++
	if h.Err != "" || h.Code < 200 || h.Code > 299 {
		s.stats.CallWebhookErrors++
	}
	if rec, ok := s.voice.calls[c.j.sid]; ok {
		rec.Hooks = append(rec.Hooks, h)
	}
	s.mu.Unlock()
	s.log.Debug("twiliosim: call webhook", "sid", c.j.sid, "kind", kind, "http_status", h.Code, "err", h.Err)
	return h
}

// send makes a signed request through the loopback-only client and returns
// the answer's status and body. GET requests carry the parameters in the
// query and sign the URL alone, as Twilio does.
func (s *Server) send(ctx context.Context, method, target string, form url.Values) (int, []byte, error) {
	var req *http.Request
	var err error
	sig := ""
	if method == http.MethodGet {
		sep := "?"
		if strings.Contains(target, "?") {
			sep = "&"
		}
		target += sep + form.Encode()
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		sig = Sign(s.authToken, target, nil)
	} else {
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, target, strings.NewReader(form.Encode()))
		sig = Sign(s.authToken, target, form)
		if req != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
	}
	if err != nil {
		return 0, nil, errors.New("twiliosim: invalid callback URL")
	}
	req.Header.Set("User-Agent", "TwilioProxy/1.1")
	req.Header.Set("I-Twilio-Idempotency-Token", randHex(16))
	req.Header.Set("X-Twilio-Signature", sig)
	resp, err := s.cbClient.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // drop the URL, which may carry identifiers
		}
		return 0, nil, fmt.Errorf("twiliosim: callback: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTwiMLBytes+1))
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("twiliosim: reading the answer: %w", err)
	}
	if len(body) > maxTwiMLBytes {
		return resp.StatusCode, nil, errors.New("twiliosim: answer too large")
	}
	return resp.StatusCode, body, nil
}

// addRecording remembers a recording so its media can be served.
func (s *Server) addRecording(callSID, recSID string, secs int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.voice.recordings[recSID] = secs
	if rec, ok := s.voice.calls[callSID]; ok {
		rec.Recordings = append(rec.Recordings, recSID)
	}
}

// handleRecordingMedia serves GET /2010-04-01/Accounts/{AccountSid}/Recordings/{Sid}[.wav]:
// the WAV media of a recording, with basic auth. The simulator has WAV
// media only; .mp3 is answered 404 rather than with bytes that are not MP3.
func (s *Server) handleRecordingMedia(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		s.reject(w, r, nil, http.StatusMethodNotAllowed, CodeMethodNotAllowed, "Method not allowed", "")
		return
	}
	if !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Basic realm="Twilio API"`)
		s.reject(w, r, nil, http.StatusUnauthorized, CodeAuthenticate, "Authenticate", "")
		return
	}
	notFound := func(msg string) {
		s.reject(w, r, nil, http.StatusNotFound, CodeNotFound, msg, "")
	}
	if r.PathValue("AccountSid") != s.accountSID {
		notFound("The requested resource " + r.URL.Path + " was not found")
		return
	}
	file := r.PathValue("file")
	sid, ext, _ := strings.Cut(file, ".")
	s.mu.Lock()
	secs, known := s.voice.recordings[sid]
	s.mu.Unlock()
	switch {
	case !known:
		notFound("The requested resource " + r.URL.Path + " was not found")
		return
	case ext == "mp3":
		notFound("twiliosim keeps recordings as WAV only: fetch " + sid + ".wav")
		return
	case ext != "" && ext != "wav":
		notFound("The requested resource " + r.URL.Path + " was not found")
		return
	}
	media := ToneWAV(secs)
	s.recordVoiceRequest(r, nil, http.StatusOK, sid)
	w.Header().Set("Content-Type", RecordingContentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(media)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(media)
	}
}

// parseTwiML parses a TwiML document into its verbs.
func parseTwiML(b []byte) ([]Verb, error) {
	dec := xml.NewDecoder(bytes.NewReader(b))
	var root xmlNode
	if err := dec.Decode(&root); err != nil {
		return nil, fmt.Errorf("twiliosim: TwiML does not parse: %w", err)
	}
	if root.XMLName.Local != "Response" {
		return nil, fmt.Errorf("twiliosim: TwiML root is <%s>, want <Response>", root.XMLName.Local)
	}
	return root.verbs(), nil
}

// xmlNode is a generic XML element.
type xmlNode struct {
	XMLName xml.Name
	Attrs   []xml.Attr `xml:",any,attr"`
	Text    string     `xml:",chardata"`
	Nodes   []xmlNode  `xml:",any"`
}

func (n xmlNode) verbs() []Verb {
	var out []Verb
	for _, c := range n.Nodes {
		v := Verb{Name: c.XMLName.Local, Text: strings.TrimSpace(c.Text), Children: c.verbs()}
		if len(c.Attrs) > 0 {
			v.Attrs = make(map[string]string, len(c.Attrs))
			for _, a := range c.Attrs {
				v.Attrs[a.Name.Local] = a.Value
			}
		}
		out = append(out, v)
	}
	return out
}

// verbSeconds estimates how long a Say, Play or Pause takes.
func verbSeconds(v Verb) int {
	switch v.Name {
	case "Say":
		return utf8.RuneCountInString(v.Text)/12 + 1
	case "Pause":
		return atoiOr(v.Attrs["length"], 1)
	case "Play":
		return 1
	}
	return 0
}

// resolve returns ref resolved against base (an empty ref is base itself,
// as Twilio's default action is the current document).
func resolve(base, ref string) (string, bool) {
	b, err := url.Parse(base)
	if err != nil {
		return "", false
	}
	u, err := b.Parse(ref)
	if err != nil {
		return "", false
	}
	return u.String(), true
}

func methodOr(m string) string {
	if strings.EqualFold(m, http.MethodGet) {
		return http.MethodGet
	}
	return http.MethodPost
}

func atoiOr(s string, def int) int {
	if n, err := strconv.Atoi(s); err == nil && n >= 0 {
		return n
	}
	return def
}

func absoluteHTTP(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}
