// Package patientsim is the dev patient-phone simulator: a small HTTP API
// and a page (/dev/patients), on a loopback listener, that let a developer
// act as a patient. It posts the patient's SMS to the gateway's inbound
// Twilio webhook (signed as Twilio signs), the keys the patient presses in
// a call to the gateway's gather webhook (signed too), the patient's
// WeChat text as a WeChat push (encrypted and signed as WeChat does), and
// lists what the simulated phone, WeChat user and mailbox received.
//
// It is used only by the gateway's dev role (build tag dev): the
// production binary does not link it.
package patientsim

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/patientmsg/gateway/channels/email/smtpsim"
	"github.com/patientmsg/gateway/channels/twilio"
	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/channels/wechat"
	"github.com/patientmsg/gateway/channels/wechat/wechatsim"
	"github.com/patientmsg/gateway/internal/address"
	"github.com/patientmsg/gateway/internal/redact"
)

// MaxBody is the longest text a simulated patient may send (in runes).
const MaxBody = 1600

// Options configure a Server.
type Options struct {
	// Gateway is the gateway's public base URL (a loopback URL).
	Gateway string
	// Twilio is the Twilio simulator the gateway sends through; its account
	// and auth token sign the inbound webhooks.
	Twilio *twiliosim.Server
	// TwilioNumber is the gateway's Twilio number: the To of patients' SMS.
	TwilioNumber string
	// Region reads numbers given without a country code (e.g. US); empty
	// refuses them.
	Region string
	// WeChat is the WeChat simulator; nil turns the wechat route off.
	WeChat *wechatsim.Server
	// WeChatAccount is the official account's original id (gh_…), the
	// ToUserName of pushes.
	WeChatAccount string
	// WeChatToken and WeChatAESKey are the gateway's WECHAT_TOKEN and
	// WECHAT_ENCODING_AES_KEY.
	WeChatToken, WeChatAESKey string
	// SMTP is the SMTP simulator the gateway sends email through; nil
	// turns the mail route off.
	SMTP *smtpsim.Server
	// Logger gets one line per patient action (numbers masked, no bodies,
	// no keys pressed).
	Logger *slog.Logger
}

// Server is the patient-phone API. Start it with Listen.
type Server struct {
	opts Options
	log  *slog.Logger
	http *http.Client
	srv  *http.Server
	url  string
	done chan struct{}
}

// New returns a Server for opts.
func New(opts Options) *Server {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{opts: opts, log: log, http: &http.Client{Timeout: 15 * time.Second}}
}

// Listen serves the API on addr, which must be a 127.0.0.1 address
// ("127.0.0.1:0" picks a port), until Close.
func (s *Server) Listen(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("patientsim: %w", err)
	}
	if host != "127.0.0.1" {
		return errors.New("patientsim: the patient API listens on 127.0.0.1 only")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("patientsim: %w", err)
	}
	s.url = "http://" + ln.Addr().String()
	s.srv = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	return nil
}

// URL is the API's base URL (http://127.0.0.1:port), once listening.
func (s *Server) URL() string { return s.url }

// Close stops the API.
func (s *Server) Close() {
	if s.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
	<-s.done
}

// Handler is the API's routes and the page's, refusing any request that
// is not from and addressed to a loopback host, and any POST a browser
// says comes from another site (so no web page open in the developer's
// browser can act as a patient through it).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /dev/patients/{phone}/sms", s.sms)
	mux.HandleFunc("GET /dev/patients/{phone}/messages", s.messages)
	mux.HandleFunc("POST /dev/patients/{phone}/keypad", s.keypad)
	mux.HandleFunc("POST /dev/patients/{openid}/wechat", s.wechat)
	mux.HandleFunc("GET /dev/patients/{openid}/wechat/messages", s.wechatMessages)
	mux.HandleFunc("GET /dev/patients/{email}/mail", s.mail)
	mux.HandleFunc("GET /dev/patients", s.page)
	mux.HandleFunc("POST /dev/patients", s.pageSend)
	mux.HandleFunc("GET /dev/patients/inbox", s.inbox)
	mux.HandleFunc("GET /dev/patients/page.css", s.pageStyle)
	// Sec-Fetch-Site, else Origin against Host; requests with neither
	// (curl, Go clients) are not a browser's and pass.
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "cross-site requests are refused"})
	}))
	h := cop.Handler(mux)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !loopbackRequest(r) {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "the patient simulator answers loopback requests only"})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// loopbackRequest reports whether r came from a loopback address and names
// a loopback host (which also keeps DNS-rebinding pages out).
func loopbackRequest(r *http.Request) bool {
	rh, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil || !isLoopback(rh) {
		return false
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return isLoopback(host)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// SMSResult is the answer to POST /dev/patients/{phone}/sms.
type SMSResult struct {
	// Status is the HTTP status the gateway's webhook answered.
	Status int `json:"gateway_status"`
	// MessageSID is the inbound message's MessageSid.
	MessageSID string `json:"message_sid"`
	// Reply is the text of the TwiML <Message> the gateway answered, if any:
	// what the patient's phone shows at once.
	Reply string `json:"reply,omitempty"`
}

func (s *Server) sms(w http.ResponseWriter, r *http.Request) {
	phone, ok := s.phoneParam(w, r)
	if !ok {
		return
	}
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	res, err := s.SendSMS(r.Context(), phone, body)
	writeResult(w, res, err)
}

// errBadPhone is the answer to a phone number address.Phone refuses.
const errBadPhone = "the phone number is not valid: give it in E.164 (+14155550100)"

// phoneParam reads the request's {phone} in E.164; it answers 400 itself
// when it is not a phone number.
func (s *Server) phoneParam(w http.ResponseWriter, r *http.Request) (string, bool) {
	phone, err := address.Phone(r.PathValue("phone"), s.opts.Region)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": errBadPhone})
		return "", false
	}
	return phone, true
}

// openIDParam reads the request's {openid} for a WeChat route, which is
// on when on is set; it answers 404 (saying off) or 400 itself.
func openIDParam(w http.ResponseWriter, r *http.Request, on bool, off string) (string, bool) {
	if !on {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": off})
		return "", false
	}
	openid := r.PathValue("openid")
	if !address.OpenID(openid) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": errBadOpenID})
		return "", false
	}
	return openid, true
}

// Error is a patient action that failed; Status is the HTTP status the
// API answers for it.
type Error struct {
	Status int
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

// writeError answers err as JSON with its status (500 for an untyped one).
func writeError(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	if e, ok := errors.AsType[*Error](err); ok {
		status = e.Status
	}
	writeJSON(w, status, map[string]string{"error": err.Error()})
}

// writeResult answers res, or err as writeError does.
func writeResult(w http.ResponseWriter, res any, err error) {
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// SendSMS posts body, texted by the patient at phone (E.164), to the
// gateway's inbound Twilio webhook, signed as Twilio signs, and returns
// what the gateway answered. Errors are *Error.
func (s *Server) SendSMS(ctx context.Context, phone, body string) (SMSResult, error) {
	sid := "SM" + randHex(16)
	form := url.Values{
		"MessageSid":    {sid},
		"SmsSid":        {sid},
		"SmsMessageSid": {sid},
		"AccountSid":    {s.opts.Twilio.AccountSID()},
		"From":          {phone},
		"To":            {s.opts.TwilioNumber},
		"Body":          {body},
		"NumSegments":   {strconv.Itoa(twiliosim.Segments(body))},
		"NumMedia":      {"0"},
		"SmsStatus":     {"received"},
		"ApiVersion":    {twiliosim.APIVersion},
	}
	// The SMS passes through Twilio, which keeps its own opt-outs (STOP
	// blocks later messages to the phone with 21610, START lifts it).
	s.opts.Twilio.HandsetReplied(phone, body)
	target := strings.TrimRight(s.opts.Gateway, "/") + twilio.InboundPath
	status, ctype, answer, err := s.postSigned(ctx, target, form)
	if err != nil {
		s.log.Warn("patientsim: SMS not posted", "from", redact.Phone(phone), "err", err)
		return SMSResult{}, unanswered(err)
	}
	s.log.Info("patientsim: patient sent an SMS", "from", redact.Phone(phone), "sid", sid, "gateway_status", status)
	res := SMSResult{Status: status, MessageSID: sid}
	if isXML(ctype) {
		res.Reply = twimlReply(answer)
	}
	return res, nil
}

// postSigned posts form to the gateway's webhook target as Twilio does:
// form-encoded, with an X-Twilio-Signature made with the Twilio
// simulator's auth token over the full URL and the sorted parameters. It
// returns the answer's status, content type and body.
func (s *Server) postSigned(ctx context.Context, target string, form url.Values) (int, string, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, strings.NewReader(form.Encode()))
	if err != nil {
		return 0, "", nil, &Error{http.StatusInternalServerError, "bad gateway URL"}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("User-Agent", "TwilioProxy/1.1")
	req.Header.Set("X-Twilio-Signature", twiliosim.Sign(s.opts.Twilio.AuthToken(), target, form))
	return s.do(req)
}

// unanswered is the *Error for a request to the gateway that failed.
func unanswered(err error) error {
	if _, ok := errors.AsType[*Error](err); ok {
		return err
	}
	return &Error{http.StatusBadGateway, "the gateway did not answer"}
}

// twimlReply returns the text of a TwiML answer's <Message>s.
func twimlReply(b []byte) string {
	var resp struct {
		Messages []struct {
			Text string `xml:",chardata"`
			Body string `xml:"Body"`
		} `xml:"Message"`
	}
	if xml.Unmarshal(b, &resp) != nil {
		return ""
	}
	var parts []string
	for _, m := range resp.Messages {
		t := strings.TrimSpace(m.Text)
		if m.Body != "" {
			t = strings.TrimSpace(m.Body)
		}
		if t != "" {
			parts = append(parts, t)
		}
	}
	return strings.Join(parts, "\n")
}

// Received is one message the simulated phone received (or that Twilio's
// simulator refused for it).
type Received struct {
	At     time.Time `json:"at"`
	SID    string    `json:"sid,omitempty"`
	Body   string    `json:"body"`
	Status string    `json:"status"`
	// ErrorCode is Twilio's error code when the message was refused or
	// failed.
	ErrorCode int `json:"error_code,omitempty"`
}

func (s *Server) messages(w http.ResponseWriter, r *http.Request) {
	phone, ok := s.phoneParam(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"phone": phone, "messages": s.Received(phone)})
}

// Received lists the SMS the Twilio simulator took for phone, newest
// first, each with its latest status (its last status callback, else
// what the simulator answered).
func (s *Server) Received(phone string) []Received {
	last := map[string]twiliosim.Callback{}
	for _, c := range s.opts.Twilio.Callbacks() {
		last[c.MessageSID] = c
	}
	out := []Received{}
	for _, q := range s.opts.Twilio.Requests() {
		if q.Form.Get("To") != phone || !strings.HasSuffix(q.Path, "/Messages.json") {
			continue
		}
		m := Received{At: q.At, SID: q.SID, Body: q.Form.Get("Body")}
		switch {
		case q.Reply != http.StatusCreated:
			m.Status, m.ErrorCode = "refused", q.Code
		case last[q.SID].Status != "":
			m.Status, m.ErrorCode = last[q.SID].Status, last[q.SID].ErrorCode
		default:
			m.Status = twiliosim.StatusQueued
		}
		out = append(out, m)
	}
	slices.Reverse(out)
	return out
}

// WeChatResult is the answer to POST /dev/patients/{openid}/wechat.
type WeChatResult struct {
	Status int   `json:"gateway_status"`
	MsgID  int64 `json:"msg_id"`
	// Reply is the passive reply's text the gateway answered, if any.
	Reply string `json:"reply,omitempty"`
}

func (s *Server) wechat(w http.ResponseWriter, r *http.Request) {
	openid, ok := openIDParam(w, r, s.WeChatOn(), errWeChatOff)
	if !ok {
		return
	}
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	res, err := s.SendWeChat(r.Context(), openid, body)
	writeResult(w, res, err)
}

const (
	errWeChatOff = "WeChat inbound is not on"
	errBadOpenID = "not a WeChat openid (1 to 64 letters, digits, - and _)"
)

// WeChatOn reports whether WeChat inbound is on (SendWeChat works).
func (s *Server) WeChatOn() bool { return s.opts.WeChat != nil && s.opts.WeChatToken != "" }

// SendWeChat posts body, written by the WeChat user openid, to the
// gateway's WeChat webhook as a text push, encrypted and signed as WeChat
// does in safe mode, and returns what the gateway answered. Errors are
// *Error.
func (s *Server) SendWeChat(ctx context.Context, openid, body string) (WeChatResult, error) {
	if !s.WeChatOn() {
		return WeChatResult{}, &Error{http.StatusNotFound, errWeChatOff}
	}
	if strings.Contains(body, "]]>") {
		return WeChatResult{}, &Error{http.StatusBadRequest, "the text may not contain ]]>"}
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	msgID := int64(binary.BigEndian.Uint64(b[:]) >> 2)
	pusher := wechatsim.Pusher{Token: s.opts.WeChatToken, EncodingAESKey: s.opts.WeChatAESKey, AppID: s.opts.WeChat.AppID()}
	q, payload, err := pusher.Push(wechatsim.TextMessage(s.opts.WeChatAccount, openid, body, msgID, time.Now()), openid)
	if err != nil {
		return WeChatResult{}, &Error{http.StatusInternalServerError, "could not seal the push"}
	}
	// What WeChat knows from a user's message: the account may write to
	// them (5 customer-service messages within 48 hours).
	s.opts.WeChat.Interact(openid, 5, 48*time.Hour)
	target := strings.TrimRight(s.opts.Gateway, "/") + wechat.InboundPath + "?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(payload))
	if err != nil {
		return WeChatResult{}, &Error{http.StatusInternalServerError, "bad gateway URL"}
	}
	req.Header.Set("Content-Type", "text/xml")
	status, _, answer, err := s.do(req)
	if err != nil {
		s.log.Warn("patientsim: WeChat push not posted", "err", err)
		return WeChatResult{}, &Error{http.StatusBadGateway, "the gateway did not answer"}
	}
	s.log.Info("patientsim: patient sent a WeChat message", "openid", redact.Secret(openid), "gateway_status", status)
	res := WeChatResult{Status: status, MsgID: msgID}
	if status == http.StatusOK {
		if rep, err := pusher.OpenReply(answer); err == nil && len(rep.XML) > 0 {
			var x struct {
				Content string `xml:"Content"`
			}
			if xml.Unmarshal(rep.XML, &x) == nil {
				res.Reply = x.Content
			}
		}
	}
	return res, nil
}

// do sends req to the gateway and returns its status, content type and
// (up to 64 KiB of) body.
func (s *Server) do(req *http.Request) (int, string, []byte, error) {
	resp, err := s.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL may carry an openid
		}
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, resp.Header.Get("Content-Type"), b, nil
}

// readBody reads the patient's text: a JSON {"body": "..."} or a form
// field body. It answers 400 itself when there is none.
func readBody(w http.ResponseWriter, r *http.Request) (string, bool) {
	body, ok := readField(w, r, "body")
	if !ok {
		return "", false
	}
	body, err := cleanBody(body)
	if err != nil {
		writeError(w, err)
		return "", false
	}
	return body, true
}

// readField reads the string field name of the request: a JSON object's
// or a form's. It answers 400 itself when there is none.
func readField(w http.ResponseWriter, r *http.Request, name string) (string, bool) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch ct {
	case "application/x-www-form-urlencoded", "multipart/form-data":
		return r.FormValue(name), true
	}
	var v map[string]json.RawMessage
	var field *string
	if err := json.NewDecoder(r.Body).Decode(&v); err != nil || v[name] == nil || json.Unmarshal(v[name], &field) != nil || field == nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf(`send {"%s":"..."} (JSON) or a form field %s`, name, name)})
		return "", false
	}
	return *field, true
}

// cleanBody trims the patient's text and checks its length.
func cleanBody(body string) (string, error) {
	body = strings.TrimSpace(body)
	switch n := len([]rune(body)); {
	case n == 0:
		return "", &Error{http.StatusBadRequest, "body is empty"}
	case n > MaxBody:
		return "", &Error{http.StatusBadRequest, fmt.Sprintf("body is longer than %d characters", MaxBody)}
	}
	return body, nil
}

func isXML(ctype string) bool {
	mt, _, _ := mime.ParseMediaType(ctype)
	return mt == "text/xml" || mt == "application/xml"
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
