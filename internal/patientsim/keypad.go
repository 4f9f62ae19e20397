package patientsim

import (
	"context"
	"encoding/xml"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/patientmsg/gateway/channels/twilio"
	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/internal/redact"
)

// Pressing keys in a call: the Twilio simulator places the gateway's calls
// and plays their TwiML (pressing the keys of its call plan); a developer
// answers a question themselves by posting the keys to the <Gather> action
// of the patient's latest call, as Twilio does when the keys are pressed.

// MaxDigits is the most keys one press sends (as many as the gateway's
// gather webhook reads).
const MaxDigits = 32

const (
	errBadDigits = "digits are 1 to 32 of 0-9, * and #"
	errNoCall    = "no call was placed to this number"
	errNoGather  = "the call has asked no question (no <Gather>) yet"
	errNotOurs   = "the call's question is not answered by the gateway's gather webhook"
)

// KeypadResult is the answer to POST /dev/patients/{phone}/keypad.
type KeypadResult struct {
	// Status is the HTTP status the gateway's gather webhook answered.
	Status int `json:"gateway_status"`
	// CallSID is the call the keys were pressed in: the phone's latest.
	CallSID string `json:"call_sid"`
	// CallStatus is that call's status at the Twilio simulator.
	CallStatus string `json:"call_status"`
	// Digits are the keys sent: the first numDigits of those pressed when
	// the question takes fewer, as Twilio stops listening then.
	Digits string `json:"digits"`
	// Says is what the gateway's TwiML answer says next, if anything.
	Says string `json:"says,omitempty"`
}

func (s *Server) keypad(w http.ResponseWriter, r *http.Request) {
	phone, ok := s.phoneParam(w, r)
	if !ok {
		return
	}
	digits, ok := readField(w, r, "digits")
	if !ok {
		return
	}
	res, err := s.PressKeys(r.Context(), phone, digits)
	writeResult(w, res, err)
}

// PressKeys presses digits in the latest call the Twilio simulator placed
// to phone (E.164): it posts them to the action of the last <Gather> the
// gateway's TwiML asked in that call, with the parameters Twilio sends
// and signed as Twilio signs, and returns what the gateway answered.
// Errors are *Error: 404 when no call was placed to phone.
func (s *Server) PressKeys(ctx context.Context, phone, digits string) (KeypadResult, error) {
	digits = strings.TrimSpace(digits)
	if digits == "" || len(digits) > MaxDigits || strings.Trim(digits, "0123456789*#") != "" {
		return KeypadResult{}, &Error{http.StatusBadRequest, errBadDigits}
	}
	var call twiliosim.CallRecord
	for _, c := range s.opts.Twilio.Calls() { // oldest first: the last match is the latest
		if c.Form.Get("To") == phone {
			call = c
		}
	}
	if call.SID == "" {
		return KeypadResult{}, &Error{http.StatusNotFound, errNoCall}
	}
	target, gather, ok := lastGather(call)
	if !ok {
		return KeypadResult{}, &Error{http.StatusConflict, errNoGather}
	}
	if !s.gatewayGather(target, gather) {
		return KeypadResult{}, &Error{http.StatusConflict, errNotOurs}
	}
	if n, err := strconv.Atoi(gather.Attrs["numDigits"]); err == nil && n > 0 && len(digits) > n {
		digits = digits[:n]
	}
	from := call.Form.Get("From")
	form := url.Values{
		"AccountSid":    {s.opts.Twilio.AccountSID()},
		"ApiVersion":    {twiliosim.APIVersion},
		"CallSid":       {call.SID},
		"CallStatus":    {twiliosim.CallInProgress},
		"Called":        {phone},
		"Caller":        {from},
		"Digits":        {digits},
		"Direction":     {"outbound-api"},
		"FinishedOnKey": {""},
		"From":          {from},
		"To":            {phone},
		"msg":           {"Gather End"},
	}
	status, ctype, answer, err := s.postSigned(ctx, target, form)
	if err != nil {
		s.log.Warn("patientsim: keys not posted", "to", redact.Phone(phone), "call_sid", call.SID, "err", err)
		return KeypadResult{}, unanswered(err)
	}
	// The keys are an answer to a clinical question: never logged.
	s.log.Info("patientsim: patient pressed keys in a call", "to", redact.Phone(phone), "call_sid", call.SID, "gateway_status", status)
	res := KeypadResult{Status: status, CallSID: call.SID, CallStatus: call.Status, Digits: digits}
	if isXML(ctype) {
		res.Says = twimlSays(answer)
	}
	return res, nil
}

// lastGather returns the last <Gather> of the TwiML documents the call
// was served, and its action URL resolved against its document's URL.
func lastGather(call twiliosim.CallRecord) (string, twiliosim.Verb, bool) {
	for _, h := range slices.Backward(call.Hooks) {
		for _, v := range slices.Backward(h.Verbs) {
			if v.Name != "Gather" {
				continue
			}
			base, err := url.Parse(h.URL)
			if err != nil {
				return "", v, false
			}
			action, err := base.Parse(v.Attrs["action"])
			if err != nil {
				return "", v, false
			}
			return action.String(), v, true
		}
	}
	return "", twiliosim.Verb{}, false
}

// gatewayGather reports whether target, with the gather's method, is the
// gateway's gather webhook: the simulator posts nowhere else.
func (s *Server) gatewayGather(target string, gather twiliosim.Verb) bool {
	gw, err1 := url.Parse(s.opts.Gateway)
	u, err2 := url.Parse(target)
	method := gather.Attrs["method"]
	return err1 == nil && err2 == nil && (method == "" || strings.EqualFold(method, http.MethodPost)) &&
		u.Scheme == gw.Scheme && u.Host == gw.Host && u.Path == strings.TrimRight(gw.Path, "/")+twilio.VoiceGatherPath
}

// twimlSays returns the text of a TwiML answer's <Say>s, those of a
// <Gather> included.
func twimlSays(b []byte) string {
	var resp struct {
		Verbs []struct {
			XMLName xml.Name
			Text    string   `xml:",chardata"`
			Says    []string `xml:"Say"`
		} `xml:",any"`
	}
	if xml.Unmarshal(b, &resp) != nil {
		return ""
	}
	var parts []string
	for _, v := range resp.Verbs {
		says := v.Says
		if v.XMLName.Local == "Say" {
			says = []string{v.Text}
		}
		for _, t := range says {
			if t = strings.TrimSpace(t); t != "" {
				parts = append(parts, t)
			}
		}
	}
	return strings.Join(parts, "\n")
}
