package twiliosim

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/patientmsg/gateway/internal/sms"
)

// maxFormBytes bounds a message-create request body.
const maxFormBytes = 1 << 20

// twilioError is Twilio's REST error body.
type twilioError struct {
	Code     int    `json:"code"`
	Message  string `json:"message"`
	MoreInfo string `json:"more_info"`
	Status   int    `json:"status"`
}

// messageResource is Twilio's Message resource as returned on create.
type messageResource struct {
	AccountSID          string            `json:"account_sid"`
	APIVersion          string            `json:"api_version"`
	Body                string            `json:"body"`
	DateCreated         string            `json:"date_created"`
	DateSent            *string           `json:"date_sent"`
	DateUpdated         string            `json:"date_updated"`
	Direction           string            `json:"direction"`
	ErrorCode           *int              `json:"error_code"`
	ErrorMessage        *string           `json:"error_message"`
	From                *string           `json:"from"`
	MessagingServiceSID *string           `json:"messaging_service_sid"`
	NumMedia            string            `json:"num_media"`
	NumSegments         string            `json:"num_segments"`
	Price               *string           `json:"price"`
	PriceUnit           string            `json:"price_unit"`
	SID                 string            `json:"sid"`
	Status              string            `json:"status"`
	SubresourceURIs     map[string]string `json:"subresource_uris"`
	To                  string            `json:"to"`
	URI                 string            `json:"uri"`
}

// outbound is what the callback goroutine needs to know about a message.
type outbound struct {
	sid, to, from, mss, callbackURL string
	final                           string
	finalCode                       int
}

// routes returns the simulator's HTTP handler.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/"+APIVersion+"/Accounts/{AccountSid}/Messages.json", func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			s.handleList(w, r)
			return
		}
		s.handleCreate(w, r)
	})
	mux.HandleFunc("/"+APIVersion+"/Accounts/{AccountSid}/Messages/{file}", s.handleFetch)
	if s.voiceOn {
		s.voiceRoutes(mux)
	}
	mux.HandleFunc("/", s.handleNotFound)
	return mux
}

// handleNotFound answers Twilio's 404 for every unknown path.
func (s *Server) handleNotFound(w http.ResponseWriter, r *http.Request) {
	s.reject(w, r, nil, http.StatusNotFound, CodeNotFound,
		"The requested resource "+r.URL.Path+" was not found", "")
}

// handleCreate implements POST /2010-04-01/Accounts/{AccountSid}/Messages.json.
func (s *Server) handleCreate(w http.ResponseWriter, r *http.Request) {
	form, ok := s.createForm(w, r)
	if !ok {
		return
	}
	to, from := form.Get("To"), form.Get("From")
	mss, body := form.Get("MessagingServiceSid"), form.Get("Body")
	switch {
	case to == "":
		s.reject(w, r, form, http.StatusBadRequest, CodeToRequired, "A 'To' phone number is required.", "")
		return
	case from == "" && mss == "":
		s.reject(w, r, form, http.StatusBadRequest, CodeFromRequired, "A 'From' phone number is required.", "")
		return
	case body == "" && form.Get("ContentSid") == "" && len(form["MediaUrl"]) == 0:
		s.reject(w, r, form, http.StatusBadRequest, CodeBodyRequired, "Message body is required.", "")
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
	reply, scripted := s.nextReply()
	if !s.pause(reply.Latency) {
		s.reject(w, r, form, http.StatusServiceUnavailable, CodeServiceUnavailable,
			"Service unavailable: simulator is shutting down", "")
		return
	}
	// Like the real API, the outcome does not depend on whether the client
	// is still waiting: a message is created even if the client timed out.
	if scripted && !reply.success() {
		s.reject(w, r, form, reply.Status, reply.errorCode(), reply.errorMessage(), reply.RetryAfter)
		return
	}
	if !scripted {
		if code, msg, ok := magicError(to); ok {
			s.reject(w, r, form, http.StatusBadRequest, code, msg, "")
			return
		}
		if s.optedOut(to) {
			// Twilio's carrier-level opt-out: the handset texted STOP.
			s.reject(w, r, form, http.StatusBadRequest, CodeUnsubscribed, "Attempt to send to unsubscribed recipient", "")
			return
		}
	}
	s.accept(w, r, form, reply)
}

// authorized checks HTTP basic auth against the account's credentials.
func (s *Server) authorized(r *http.Request) bool {
	user, pass, ok := r.BasicAuth()
	if !ok {
		return false
	}
	u := subtle.ConstantTimeCompare([]byte(user), []byte(s.accountSID))
	p := subtle.ConstantTimeCompare([]byte(pass), []byte(s.authToken))
	return u&p == 1
}

// nextReply pops a scripted reply, or returns the default one, with
// defaults filled in.
func (s *Server) nextReply() (Reply, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var r Reply
	scripted := len(s.script) > 0
	if scripted {
		r = s.script[0]
		s.script[0] = Reply{}
		s.script = s.script[1:]
		if len(s.script) == 0 {
			s.script = nil // let the backing array go
		}
	}
	if r.Latency == 0 {
		r.Latency = s.latency
	}
	if r.Final == "" {
		r.Final, r.FinalErrorCode = s.final, s.finalCode
	}
	r.FinalErrorCode = finalErrorCode(r.Final, r.FinalErrorCode)
	r.DropCallbacks = r.DropCallbacks || s.drop
	return r, scripted
}

// pause waits d, returning false if the simulator is closing.
func (s *Server) pause(d time.Duration) bool {
	if d <= 0 {
		select {
		case <-s.closing:
			return false
		default:
			return true
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.closing:
		return false
	}
}

// magicError returns the error Twilio gives for a magic test To number.
func magicError(to string) (code int, msg string, ok bool) {
	switch to {
	case MagicToInvalid:
		return CodeInvalidTo, "The 'To' number is not a valid phone number.", true
	case MagicToCannotRoute:
		return CodeCannotRoute, "Message cannot be sent with the current combination of 'To' and/or 'From' parameters", true
	case MagicToUnsubscribed:
		return CodeUnsubscribed, "Attempt to send to unsubscribed recipient", true
	case MagicToNotMobile:
		return CodeNotMobile, "'To' number is not a valid mobile number", true
	}
	return 0, "", false
}

// accept creates the message, schedules its callbacks and answers 201.
func (s *Server) accept(w http.ResponseWriter, r *http.Request, form url.Values, reply Reply) {
	now := time.Now().UTC()
	sid := "SM" + randHex(16)
	date := now.Format(time.RFC1123Z)
	to, from, mss, body := form.Get("To"), form.Get("From"), form.Get("MessagingServiceSid"), form.Get("Body")
	uri := "/" + APIVersion + "/Accounts/" + s.accountSID + "/Messages/" + sid
	res := messageResource{
		AccountSID:      s.accountSID,
		APIVersion:      APIVersion,
		Body:            body,
		DateCreated:     date,
		DateUpdated:     date,
		Direction:       "outbound-api",
		NumMedia:        strconv.Itoa(len(form["MediaUrl"])),
		NumSegments:     strconv.Itoa(Segments(body)),
		PriceUnit:       "USD",
		SID:             sid,
		Status:          StatusQueued,
		SubresourceURIs: map[string]string{"media": uri + "/Media.json", "feedback": uri + "/Feedback.json"},
		To:              to,
		URI:             uri + ".json",
	}
	sender := from
	if mss != "" {
		res.Status = StatusAccepted
		res.MessagingServiceSID = &mss
		if from == "" {
			sender = MagicFromValid // the number the service "picked"
		}
	}
	if from != "" {
		res.From = &from
	}
	if cb := form.Get("StatusCallback"); cb != "" && !reply.DropCallbacks {
		s.scheduleCallbacks(outbound{sid: sid, to: to, from: sender, mss: mss, callbackURL: cb,
			final: reply.Final, finalCode: reply.FinalErrorCode})
	}
	s.remember(res, now, reply.Final, reply.FinalErrorCode)
	s.record(r, form, http.StatusCreated, 0, sid)
	s.log.Debug("twiliosim: message accepted", "sid", sid, "status", res.Status, "segments", res.NumSegments)
	writeJSON(w, http.StatusCreated, res)
}

// reject records and writes a Twilio error answer.
func (s *Server) reject(w http.ResponseWriter, r *http.Request, form url.Values, status, code int, msg, retryAfter string) {
	s.record(r, form, status, code, "")
	s.log.Debug("twiliosim: request rejected", "http_status", status, "code", code)
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	writeJSON(w, status, twilioError{
		Code:     code,
		Message:  msg,
		MoreInfo: "https://www.twilio.com/docs/errors/" + strconv.Itoa(code),
		Status:   status,
	})
}

// record counts an answered request and, unless NoRecord, keeps it.
func (s *Server) record(r *http.Request, form url.Values, status, code int, sid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Requests++
	if status == http.StatusCreated {
		s.stats.Accepted++
	} else {
		s.stats.Rejected++
	}
	if s.noRecord {
		return
	}
	// The request is finished with once the handler returns, so its form
	// and header can be kept without copying; readers get copies.
	s.requests = append(s.requests, Request{
		Method: r.Method,
		Path:   r.URL.Path,
		Form:   form,
		Header: r.Header,
		At:     time.Now(),
		Reply:  status,
		Code:   code,
		SID:    sid,
	})
}

// writeJSON writes v as the JSON body of a response with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil { // cannot happen with the simulator's types
		http.Error(w, "twiliosim: encoding response", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Twilio-Request-Id", "RQ"+randHex(16))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// Segments is how many SMS segments Twilio bills for body (the project's
// own counting, package sms). An empty body counts as one segment.
func Segments(body string) int {
	return max(sms.Analyze(body).Segments, 1)
}

// createForm checks what every create request needs, as Twilio does and in
// its order (method, credentials, account, form), and answers the error
// itself; ok is false when it did.
func (s *Server) createForm(w http.ResponseWriter, r *http.Request) (form url.Values, ok bool) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		s.reject(w, r, nil, http.StatusMethodNotAllowed, CodeMethodNotAllowed, "Method not allowed", "")
		return nil, false
	}
	if !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Basic realm="Twilio API"`)
		s.reject(w, r, nil, http.StatusUnauthorized, CodeAuthenticate, "Authenticate", "")
		return nil, false
	}
	if r.PathValue("AccountSid") != s.accountSID {
		s.reject(w, r, nil, http.StatusNotFound, CodeNotFound,
			"The requested resource "+r.URL.Path+" was not found", "")
		return nil, false
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		s.reject(w, r, nil, http.StatusBadRequest, CodeBadRequest, "Unable to parse request body", "")
		return nil, false
	}
	return r.PostForm, true
}
