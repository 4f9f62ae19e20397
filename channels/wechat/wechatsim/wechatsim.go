// Package wechatsim is a loopback simulator of the WeChat official account
// API the gateway uses. It speaks WeChat's real wire format (JSON, with the
// error inside an HTTP 200 answer as {"errcode":N,"errmsg":"…"}), so
// silenceper/wechat works against it end to end without credentials or
// network access.
//
// It serves:
//
//	GET  /cgi-bin/token?grant_type=client_credential&appid=&secret=
//	POST /cgi-bin/stable_token
//	POST /cgi-bin/message/custom/send?access_token=
//	POST /cgi-bin/message/template/send?access_token=
//	POST /cgi-bin/message/subscribe/bizsend?access_token=
//
// It checks the app credentials (40013, 40125), rejects unknown tokens
// (40001) and expired ones (42001), counts token fetches, records every
// request with its decoded JSON and time (SentTo lists what one user was
// sent), and can be scripted to answer the next sends with given
// errcodes. Like WeChat, it refuses a customer-service message to a user
// who has no open window (45015) or whose window has no message left
// (45047): a test opens one with Interact where the user wrote first.
// It refuses a subscribe message whose template the user has not
// accepted, or turned off (43101): a test has the user answer WeChat's
// pop-up with Popup, which also pushes the subscribe_msg_popup_event to
// the account's server (ReportTo), as WeChat does. It listens on
// 127.0.0.1 only, is meant for tests and local development, and logs
// nothing.
package wechatsim

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"
)

// Paths the simulator serves.
const (
	TokenPath         = "/cgi-bin/token"
	StableTokenPath   = "/cgi-bin/stable_token"
	CustomSendPath    = "/cgi-bin/message/custom/send"
	TemplateSendPath  = "/cgi-bin/message/template/send"
	SubscribeSendPath = "/cgi-bin/message/subscribe/bizsend"
)

// WeChat errcodes the simulator answers with.
const (
	CodeSystemBusy        = -1
	CodeInvalidCredential = 40001 // unknown access token
	CodeInvalidGrantType  = 40002
	CodeInvalidOpenID     = 40003
	CodeInvalidMsgType    = 40008
	CodeInvalidAppID      = 40013
	CodeInvalidTemplateID = 40037
	CodeInvalidAppSecret  = 40125
	CodeTokenMissing      = 41001
	CodeTokenExpired      = 42001
	CodeNotFollowing      = 43004
	CodeSubscribeRefused  = 43101
	CodeEmptyContent      = 44004
	CodeDailyQuota        = 45009
	CodeOutOfTimeLimit    = 45015
	CodeOverQuota         = 45047
	CodeBadJSON           = 47001
	CodeTemplateData      = 47003
)

var errmsgs = map[int]string{
	CodeSystemBusy:        "system error",
	CodeInvalidCredential: "invalid credential, access_token is invalid or not latest",
	CodeInvalidGrantType:  "invalid grant_type",
	CodeInvalidOpenID:     "invalid openid",
	CodeInvalidMsgType:    "invalid message type",
	CodeInvalidAppID:      "invalid appid",
	CodeInvalidTemplateID: "invalid template_id",
	CodeInvalidAppSecret:  "invalid appsecret",
	CodeTokenMissing:      "access_token missing",
	CodeTokenExpired:      "access_token expired",
	CodeNotFollowing:      "require subscribe",
	CodeSubscribeRefused:  "user refuse to accept the msg",
	CodeEmptyContent:      "empty content",
	CodeDailyQuota:        "reach max api daily quota limit",
	CodeOutOfTimeLimit:    "response out of time limit or subscription is canceled",
	CodeOverQuota:         "out of response count limit",
	CodeBadJSON:           "data format error",
	CodeTemplateData:      "argument invalid! data.value invalid",
}

// Errmsg is the errmsg the simulator answers for a code.
func Errmsg(code int) string {
	if m, ok := errmsgs[code]; ok {
		return m
	}
	return "simulated error"
}

// Options configure a simulator.
type Options struct {
	// AppID and AppSecret are the credentials the token endpoint accepts;
	// random when empty (read them back with AppID and AppSecret).
	AppID, AppSecret string
	// TokenLifetime is the expires_in of issued tokens; 7,200 s when zero.
	TokenLifetime time.Duration
	// Now is the simulator's clock; time.Now when nil.
	Now func() time.Time
}

// Request is a request the simulator received.
type Request struct {
	Method string
	Path   string
	Query  url.Values
	// JSON is the decoded body of a POST (nil when it was not a JSON object).
	JSON map[string]any
	// ErrCode is the errcode the simulator answered.
	ErrCode int
	// At is when the request arrived (the simulator's clock).
	At time.Time
}

// Server is a running simulator.
type Server struct {
	appID, appSecret string
	lifetime         time.Duration
	now              func() time.Time
	url              string
	srv              *http.Server
	serveDone        chan struct{}
	closeOnce        sync.Once

	mu       sync.Mutex
	tokens   map[string]time.Time // token → expiry
	stable   string               // the current stable token
	fetches  int
	script   []int
	latency  time.Duration
	requests []Request
	windows  map[string]*window
	custom   int
	template int
	subsent  int
	msgID    int64
	// subs: openid → subscribe template → accepted (Popup, TurnOff).
	subs map[string]map[string]bool
	// reports: where TEMPLATESENDJOBFINISH pushes go (ReportTo).
	reports  *reportTarget
	blocked  map[string]bool
	finishes sync.WaitGroup
	// reportsMade are the pushes made, in order.
	reportsMade []Report
}

type reportTarget struct {
	url     string
	pusher  Pusher
	account string
	client  *http.Client
}

type window struct {
	exp  time.Time
	left int
}

// New starts a simulator on a free 127.0.0.1 port.
func New(opts Options) *Server {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("wechatsim: listen on loopback: %v", err))
	}
	s := &Server{
		appID: opts.AppID, appSecret: opts.AppSecret, lifetime: opts.TokenLifetime,
		now:       opts.Now,
		url:       "http://" + ln.Addr().String(),
		serveDone: make(chan struct{}),
		tokens:    map[string]time.Time{},
		windows:   map[string]*window{},
		blocked:   map[string]bool{},
		subs:      map[string]map[string]bool{},
		msgID:     4_000_000_000_000_000_000,
	}
	if s.appID == "" {
		s.appID = "wx" + randHex(8)
	}
	if s.appSecret == "" {
		s.appSecret = randHex(16)
	}
	if s.lifetime <= 0 {
		s.lifetime = 7200 * time.Second
	}
	if s.now == nil {
		s.now = time.Now
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+TokenPath, s.token)
	mux.HandleFunc("POST "+StableTokenPath, s.stableToken)
	mux.HandleFunc("POST "+CustomSendPath, s.customSend)
	mux.HandleFunc("POST "+TemplateSendPath, s.templateSend)
	mux.HandleFunc("POST "+SubscribeSendPath, s.subscribeSend)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(s.serveDone)
		_ = s.srv.Serve(ln)
	}()
	return s
}

// URL returns the simulator's base URL, http://127.0.0.1:port.
func (s *Server) URL() string { return s.url }

// AppID returns the app id the simulator accepts.
func (s *Server) AppID() string { return s.appID }

// AppSecret returns the app secret the simulator accepts.
func (s *Server) AppSecret() string { return s.appSecret }

// Close stops the simulator.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.srv.Shutdown(ctx)
		<-s.serveDone
		s.finishes.Wait() // reports in flight end (their client times out)
	})
}

// Script makes the next sends (custom or template, in arrival order, after
// the token check) answer these errcodes; 0 lets a send through as usual.
func (s *Server) Script(errcodes ...int) {
	s.mu.Lock()
	s.script = append(s.script, errcodes...)
	s.mu.Unlock()
}

// SetLatency holds every answer back by d.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	s.latency = d
	s.mu.Unlock()
}

// ExpireTokens makes every token issued so far expired (42001).
func (s *Server) ExpireTokens() {
	s.mu.Lock()
	now := s.now()
	for t := range s.tokens {
		s.tokens[t] = now
	}
	s.mu.Unlock()
}

// TokenFetches is how many token requests were made (both endpoints).
func (s *Server) TokenFetches() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fetches
}

// Tokens returns the tokens issued so far.
func (s *Server) Tokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.tokens))
	for t := range s.tokens {
		out = append(out, t)
	}
	return out
}

// Requests returns the requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Accepted returns how many customer-service and template messages were
// accepted.
func (s *Server) Accepted() (custom, template int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.custom, s.template
}

// Sent is a customer-service or template message sent to one user, as the
// simulator took it.
type Sent struct {
	At time.Time
	// Template reports a template message, Subscribe a subscribe message
	// (its TemplateID, Fields and URL, the page); otherwise it is a
	// customer-service message of MsgType (text, image, news…).
	Template  bool
	Subscribe bool
	MsgType   string
	// Text is a text message's content.
	Text string
	// TemplateID, URL and Fields are a template message's; Fields are its
	// data, sorted by name.
	TemplateID, URL string
	Fields          []Field
	// ErrCode is what the simulator answered: 0 when it accepted the
	// message (45015, for instance, when the user's window was closed).
	ErrCode int
}

// Field is one data field of a template message.
type Field struct{ Name, Value string }

// SentTo returns the customer-service and template messages sent to
// openid, oldest first, refused ones included (with their ErrCode).
func (s *Server) SentTo(openid string) []Sent {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Sent
	for _, q := range s.requests {
		if to, _ := q.JSON["touser"].(string); to != openid || (q.Path != CustomSendPath && q.Path != TemplateSendPath && q.Path != SubscribeSendPath) {
			continue
		}
		m := Sent{At: q.At, Template: q.Path == TemplateSendPath, Subscribe: q.Path == SubscribeSendPath, ErrCode: q.ErrCode}
		if m.Template || m.Subscribe {
			m.TemplateID, _ = q.JSON["template_id"].(string)
			m.URL, _ = q.JSON["url"].(string)
			if m.Subscribe {
				m.URL, _ = q.JSON["page"].(string)
			}
			data, _ := q.JSON["data"].(map[string]any)
			for _, name := range slices.Sorted(maps.Keys(data)) {
				item, _ := data[name].(map[string]any)
				value, _ := item["value"].(string)
				m.Fields = append(m.Fields, Field{Name: name, Value: value})
			}
		} else {
			m.MsgType, _ = q.JSON["msgtype"].(string)
			text, _ := q.JSON["text"].(map[string]any)
			m.Text, _ = text["content"].(string)
		}
		out = append(out, m)
	}
	return out
}

// Interact opens a customer-service window for openid, as a user
// interaction does at WeChat: quota messages until now+d (a user's
// message: 5 within 48 hours; a menu click, follow or scan: 3 within a
// minute). It replaces the window openid had. Without one, every
// customer-service message to openid is refused with 45015.
func (s *Server) Interact(openid string, quota int, d time.Duration) {
	s.mu.Lock()
	s.windows[openid] = &window{exp: s.now().Add(d), left: quota}
	s.mu.Unlock()
}

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.answerToken(w, r, q.Get("grant_type"), q.Get("appid"), q.Get("secret"), nil)
}

func (s *Server) stableToken(w http.ResponseWriter, r *http.Request) {
	obj := readJSON(r)
	if obj == nil {
		s.mu.Lock()
		s.fetches++
		s.mu.Unlock()
		s.record(r, nil, CodeBadJSON)
		s.reply(w, r, map[string]any{"errcode": CodeBadJSON, "errmsg": Errmsg(CodeBadJSON)})
		return
	}
	grant, _ := obj["grant_type"].(string)
	appid, _ := obj["appid"].(string)
	secret, _ := obj["secret"].(string)
	s.answerToken(w, r, grant, appid, secret, obj)
}

// answerToken issues a token; a stable token (obj != nil) is reused while
// valid unless force_refresh is set, as WeChat does.
func (s *Server) answerToken(w http.ResponseWriter, r *http.Request, grant, appid, secret string, obj map[string]any) {
	s.mu.Lock()
	s.fetches++
	s.mu.Unlock()
	code := 0
	switch {
	case grant != "client_credential":
		code = CodeInvalidGrantType
	case appid != s.appID:
		code = CodeInvalidAppID
	case secret != s.appSecret:
		code = CodeInvalidAppSecret
	}
	s.record(r, obj, code)
	if code != 0 {
		s.reply(w, r, map[string]any{"errcode": code, "errmsg": Errmsg(code)})
		return
	}
	s.mu.Lock()
	now := s.now()
	force, _ := obj["force_refresh"].(bool)
	tok := s.stable
	if exp, ok := s.tokens[tok]; obj == nil || force || !ok || !now.Before(exp) {
		tok = randHex(32)
		s.tokens[tok] = now.Add(s.lifetime)
		if obj != nil {
			s.stable = tok
		}
	}
	left := s.tokens[tok].Sub(now)
	s.mu.Unlock()
	s.reply(w, r, map[string]any{"access_token": tok, "expires_in": int(left / time.Second)})
}

// checkToken returns the errcode for the request's access token (0: valid).
func (s *Server) checkToken(r *http.Request) int {
	tok := r.URL.Query().Get("access_token")
	if tok == "" {
		return CodeTokenMissing
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.tokens[tok]
	switch {
	case !ok:
		return CodeInvalidCredential
	case !s.now().Before(exp):
		return CodeTokenExpired
	}
	return 0
}

// scripted pops the next scripted errcode; ok is false when none is left.
func (s *Server) scripted() (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.script) == 0 {
		return 0, false
	}
	c := s.script[0]
	s.script = s.script[1:]
	return c, true
}

// admit reads a send's JSON body and answers its errcode so far: the
// token's, a scripted one, or validate's (0: go on).
func (s *Server) admit(r *http.Request, validate func(map[string]any) int) (map[string]any, int) {
	obj := readJSON(r)
	code := s.checkToken(r)
	if code == 0 {
		if c, ok := s.scripted(); ok {
			code = c
		}
	}
	if code == 0 {
		code = validate(obj)
	}
	return obj, code
}

func (s *Server) customSend(w http.ResponseWriter, r *http.Request) {
	obj, code := s.admit(r, validateCustom)
	if code == 0 {
		code = s.useWindow(obj["touser"].(string))
	}
	s.record(r, obj, code)
	if code == 0 {
		s.mu.Lock()
		s.custom++
		s.mu.Unlock()
	}
	s.reply(w, r, map[string]any{"errcode": code, "errmsg": errmsgOrOK(code)})
}

func validateCustom(obj map[string]any) int {
	if obj == nil {
		return CodeBadJSON
	}
	if to, _ := obj["touser"].(string); to == "" {
		return CodeInvalidOpenID
	}
	switch obj["msgtype"] {
	case "text":
		text, _ := obj["text"].(map[string]any)
		if content, _ := text["content"].(string); content == "" {
			return CodeEmptyContent
		}
	case "image", "voice", "video", "music", "news", "mpnews", "mpnewsarticle", "msgmenu", "wxcard", "miniprogrampage":
	default:
		return CodeInvalidMsgType
	}
	return 0
}

func (s *Server) useWindow(openid string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	win, ok := s.windows[openid]
	switch {
	case !ok || !s.now().Before(win.exp):
		return CodeOutOfTimeLimit
	case win.left <= 0:
		return CodeOverQuota
	}
	win.left--
	return 0
}

func (s *Server) templateSend(w http.ResponseWriter, r *http.Request) {
	obj, code := s.admit(r, validateTemplate)
	s.record(r, obj, code)
	if code != 0 {
		s.reply(w, r, map[string]any{"errcode": code, "errmsg": Errmsg(code)})
		return
	}
	openid := obj["touser"].(string)
	s.mu.Lock()
	blocked := s.blocked[openid]
	s.mu.Unlock()
	s.accepted(w, r, &s.template, func(t *reportTarget, id int64) {
		status := "success"
		if blocked {
			status = "failed:user block"
		}
		s.pushFinish(t, openid, id, status)
	})
}

// accepted counts an accepted template or subscribe message and answers
// its msgid; then, as WeChat does once the message reached the user (or
// did not), report pushes its delivery report to the account's server
// URL, when there is one.
func (s *Server) accepted(w http.ResponseWriter, r *http.Request, counter *int, report func(t *reportTarget, msgID int64)) {
	s.mu.Lock()
	*counter++
	s.msgID++
	id := s.msgID
	target := s.reports
	if target != nil {
		s.finishes.Add(1)
	}
	s.mu.Unlock()
	s.reply(w, r, map[string]any{"errcode": 0, "errmsg": "ok", "msgid": id})
	if target != nil {
		go func() {
			defer s.finishes.Done()
			report(target, id)
		}()
	}
}

// ReportTo makes the simulator push a TEMPLATESENDJOBFINISH event for
// every template message it accepts to serverURL (the gateway's WeChat
// webhook, with its full path), signed and in safe mode encrypted by p as
// WeChat does; account is the official account's original id (gh_…).
// The status is "success", or "failed:user block" for a user who blocked
// the account's template messages (BlockTemplates).
func (s *Server) ReportTo(serverURL string, p Pusher, account string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reports = &reportTarget{url: serverURL, pusher: p, account: account, client: &http.Client{Timeout: 10 * time.Second}}
}

// BlockTemplates makes openid a user who blocked the account's template
// messages: WeChat still accepts them (errcode 0) and then reports
// "failed:user block".
func (s *Server) BlockTemplates(openid string) {
	s.mu.Lock()
	s.blocked[openid] = true
	s.mu.Unlock()
}

// Reports are the delivery reports pushed (TEMPLATESENDJOBFINISH and
// subscribe_msg_sent_event), with the status the gateway answered them
// with.
func (s *Server) Reports() []Report {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Report(nil), s.reportsMade...)
}

// ReportCount is how many delivery reports were pushed so far
// (len(Reports()) without the copy).
func (s *Server) ReportCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.reportsMade)
}

// Report is one delivery report pushed: TEMPLATESENDJOBFINISH, or
// subscribe_msg_sent_event when Subscribe.
type Report struct {
	MsgID      int64
	Status     string
	HTTPStatus int
	Subscribe  bool
}

func (s *Server) pushFinish(t *reportTarget, openid string, msgID int64, status string) {
	code := s.post(t, openid, TemplateFinish(t.account, openid, msgID, status, s.now()))
	s.mu.Lock()
	s.reportsMade = append(s.reportsMade, Report{MsgID: msgID, Status: status, HTTPStatus: code})
	s.mu.Unlock()
}

func validateTemplate(obj map[string]any) int {
	if code := validateAddressed(obj); code != 0 {
		return code
	}
	if d, ok := obj["data"]; ok && d != nil {
		if _, isObj := d.(map[string]any); !isObj {
			return CodeBadJSON
		}
	}
	return 0
}

// validateAddressed checks a template or subscribe send's JSON object,
// openid and template id.
func validateAddressed(obj map[string]any) int {
	if obj == nil {
		return CodeBadJSON
	}
	if to, _ := obj["touser"].(string); to == "" {
		return CodeInvalidOpenID
	}
	if id, _ := obj["template_id"].(string); id == "" {
		return CodeInvalidTemplateID
	}
	return 0
}

func errmsgOrOK(code int) string {
	if code == 0 {
		return "ok"
	}
	return Errmsg(code)
}

// readJSON decodes a JSON object body; nil when it is not one.
func readJSON(r *http.Request) map[string]any {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return nil
	}
	var obj map[string]any
	if json.Unmarshal(body, &obj) != nil {
		return nil
	}
	return obj
}

func (s *Server) record(r *http.Request, obj map[string]any, code int) {
	s.mu.Lock()
	s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), JSON: obj, ErrCode: code, At: s.now()})
	s.mu.Unlock()
}

// reply answers as WeChat does: HTTP 200 with a JSON body, errors included.
func (s *Server) reply(w http.ResponseWriter, r *http.Request, v map[string]any) {
	s.mu.Lock()
	d := s.latency
	s.mu.Unlock()
	if d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/json; encoding=utf-8")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(v)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
