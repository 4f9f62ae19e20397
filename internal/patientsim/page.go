package patientsim

import (
	"bytes"
	"embed"
	"errors"
	"html/template"
	"net/http"
	"slices"
	"time"

	"github.com/patientmsg/gateway/internal/address"
)

// The page at /dev/patients is the simulator's human face: type a phone
// number (or an openid, or an email address), see what it received,
// reply, press keys in the phone's latest call. It has no script: the
// received list is a small document in an iframe that reloads itself
// every 2 seconds, so the reply being typed is never lost. Its replies and
// key presses go through SendSMS, SendWeChat and PressKeys, as the API's
// do.

//go:embed page
var pageFiles embed.FS

var (
	pageTmpl  = template.Must(template.ParseFS(pageFiles, "page/page.html"))
	inboxTmpl = template.Must(template.ParseFS(pageFiles, "page/inbox.html"))
	pageCSS   = must(pageFiles.ReadFile("page/page.css"))
)

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// Channels the page can reply on.
const (
	channelSMS    = "sms"
	channelWeChat = "wechat"
	channelEmail  = "email"
)

// pageData is what page.html shows.
type pageData struct {
	// To and Channel are what was typed; Address is To normalised, set
	// once it is valid.
	To, Channel, Address string
	Error                string
	// Body and Digits are the reply and the keys to show again when they
	// were not sent.
	Body, Digits       string
	Result             *pageResult
	MaxBody, MaxDigits int
}

// pageResult is what the gateway answered a reply or a key press.
type pageResult struct {
	Status int
	Reply  string
	// Pressed are the keys sent, for a key press.
	Pressed string
}

// page shows the form, and once an address is given, what it received
// and the reply form.
func (s *Server) page(w http.ResponseWriter, r *http.Request) {
	d, status := s.pageAddress(r.FormValue("to"), r.FormValue("channel"))
	renderPage(w, status, d)
}

// pageSend sends the patient's reply and shows the page again with the
// gateway's answer.
func (s *Server) pageSend(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		renderPage(w, http.StatusBadRequest, pageData{Channel: channelSMS, MaxBody: MaxBody, MaxDigits: MaxDigits, Error: "the form could not be read"})
		return
	}
	d, status := s.pageAddress(r.PostFormValue("to"), r.PostFormValue("channel"))
	if d.Address == "" {
		renderPage(w, status, d)
		return
	}
	var res pageResult
	var err error
	switch {
	case d.Channel == channelEmail:
		err = &Error{http.StatusBadRequest, "a simulated mailbox cannot reply"}
	case r.PostForm.Has("digits"):
		d.Digits = r.PostFormValue("digits")
		if d.Channel != channelSMS {
			err = &Error{http.StatusBadRequest, "keys are pressed in a phone's call"}
			break
		}
		var kr KeypadResult
		kr, err = s.PressKeys(r.Context(), d.Address, d.Digits)
		res = pageResult{Status: kr.Status, Reply: kr.Says, Pressed: kr.Digits}
	default:
		d.Body = r.PostFormValue("body")
		var body string
		if body, err = cleanBody(d.Body); err != nil {
			break
		}
		if d.Channel == channelWeChat {
			var wr WeChatResult
			wr, err = s.SendWeChat(r.Context(), d.Address, body)
			res = pageResult{Status: wr.Status, Reply: wr.Reply}
		} else {
			var sr SMSResult
			sr, err = s.SendSMS(r.Context(), d.Address, body)
			res = pageResult{Status: sr.Status, Reply: sr.Reply}
		}
	}
	if err == nil {
		d.Result, d.Body, d.Digits = &res, "", ""
	} else {
		status = http.StatusInternalServerError
		if e, ok := errors.AsType[*Error](err); ok {
			status = e.Status
		}
		d.Error = err.Error()
	}
	renderPage(w, status, d)
}

// pageAddress checks the typed address for channel and returns the
// page's data with the error to show, if any, and the status to answer.
func (s *Server) pageAddress(to, channel string) (pageData, int) {
	d := pageData{To: to, Channel: channel, MaxBody: MaxBody, MaxDigits: MaxDigits}
	if d.Channel != channelWeChat && d.Channel != channelEmail {
		d.Channel = channelSMS
	}
	switch {
	case to == "":
	case d.Channel == channelSMS:
		phone, err := address.Phone(to, s.opts.Region)
		if err != nil {
			d.Error = errBadPhone
			return d, http.StatusBadRequest
		}
		d.Address = phone
	case d.Channel == channelEmail:
		if s.opts.SMTP == nil {
			d.Error = errMailOff
			return d, http.StatusNotFound
		}
		email, ok := address.Email(to)
		if !ok {
			d.Error = errBadEmail
			return d, http.StatusBadRequest
		}
		d.Address = email
	case !s.WeChatOn():
		d.Error = errWeChatOff
		return d, http.StatusNotFound
	case !address.OpenID(to):
		d.Error = errBadOpenID
		return d, http.StatusBadRequest
	default:
		d.Address = to
	}
	return d, http.StatusOK
}

// inboxItem is one line of the received list.
type inboxItem struct {
	At time.Time
	// Status and ErrorCode are a message's last status, if it has one.
	Status    string
	ErrorCode int
	// Title is a mail's subject or a WeChat template's id.
	Title, Body string
}

// inbox is the received list the page frames: the phone's messages (or
// the WeChat user's, or the mailbox's), newest last, reloading itself
// every 2 seconds.
func (s *Server) inbox(w http.ResponseWriter, r *http.Request) {
	d, status := s.pageAddress(r.FormValue("to"), r.FormValue("channel"))
	if d.Address == "" {
		if d.Error == "" {
			d.Error, status = "no address given", http.StatusBadRequest
		}
		http.Error(w, d.Error, status)
		return
	}
	var items []inboxItem
	switch d.Channel {
	case channelWeChat:
		for _, m := range s.WeChatReceived(d.Address) {
			it := inboxItem{At: m.At, Status: m.Status, ErrorCode: m.ErrorCode, Body: m.Body}
			switch {
			case m.TemplateID != "":
				it.Title = "Template " + m.TemplateID
			case m.MsgType != "text":
				it.Title = "A " + m.MsgType + " message"
			}
			items = append(items, it)
		}
	case channelEmail:
		for _, m := range s.Mailbox(d.Address) {
			items = append(items, inboxItem{At: m.At, Title: m.Subject, Body: m.Text})
		}
	default:
		for _, m := range s.Received(d.Address) {
			items = append(items, inboxItem{At: m.At, Status: m.Status, ErrorCode: m.ErrorCode, Body: m.Body})
		}
	}
	slices.Reverse(items)
	render(w, http.StatusOK, inboxTmpl, "'self'", map[string]any{"Address": d.Address, "Received": items})
}

func (s *Server) pageStyle(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(pageCSS)
}

func renderPage(w http.ResponseWriter, status int, d pageData) {
	render(w, status, pageTmpl, "'none'", d)
}

// render executes t and answers it with a strict Content-Security-Policy:
// no script at all, styles and frames from this origin only, and
// frameAncestors saying who may frame the document.
func render(w http.ResponseWriter, status int, t *template.Template, frameAncestors string, data any) {
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; frame-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors "+frameAncestors)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}
