package patientsim

import (
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/patientmsg/gateway/channels/wechat/wechatsim"
	"github.com/patientmsg/gateway/internal/address"
)

// What a simulated WeChat user and a simulated mailbox received: the
// messages the gateway sent through the WeChat and SMTP simulators.

const (
	errWeChatSimOff = "the WeChat simulator is not on"
	errMailOff      = "the SMTP simulator is not on"
	errBadEmail     = "not an email address (a bare address: patient@example.org)"
)

// WeChatReceived is one message the simulated WeChat user received (or
// that the WeChat simulator refused for them).
type WeChatReceived struct {
	At time.Time `json:"at"`
	// Kind is "custom" (a customer-service message) or "template".
	Kind string `json:"kind"`
	// MsgType is a customer-service message's msgtype (text, image…).
	MsgType    string `json:"msg_type,omitempty"`
	TemplateID string `json:"template_id,omitempty"`
	// Body is a text message's content, or a template message's fields,
	// one "name: value" line each.
	Body string `json:"body"`
	// URL is the page a template message links to.
	URL string `json:"url,omitempty"`
	// Status is "sent" when the simulator accepted the message, "refused"
	// otherwise, with WeChat's errcode in ErrorCode (45015: the user's
	// window was closed).
	Status    string `json:"status"`
	ErrorCode int    `json:"error_code,omitempty"`
}

func (s *Server) wechatMessages(w http.ResponseWriter, r *http.Request) {
	openid, ok := openIDParam(w, r, s.opts.WeChat != nil, errWeChatSimOff)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"openid": openid, "messages": s.WeChatReceived(openid)})
}

// WeChatReceived lists the customer-service and template messages the
// WeChat simulator took for openid, newest first (none without a WeChat
// simulator).
func (s *Server) WeChatReceived(openid string) []WeChatReceived {
	out := []WeChatReceived{}
	if s.opts.WeChat == nil {
		return out
	}
	for _, m := range s.opts.WeChat.SentTo(openid) {
		rec := WeChatReceived{At: m.At, Kind: "custom", MsgType: m.MsgType, Body: m.Text, Status: "sent"}
		if m.Template {
			rec.Kind, rec.TemplateID, rec.URL, rec.Body = "template", m.TemplateID, m.URL, templateText(m.Fields)
		}
		if m.ErrCode != 0 {
			rec.Status, rec.ErrorCode = "refused", m.ErrCode
		}
		out = append(out, rec)
	}
	slices.Reverse(out)
	return out
}

// templateText shows a template message's fields, a "name: value" line
// each.
func templateText(fields []wechatsim.Field) string {
	lines := make([]string, len(fields))
	for i, f := range fields {
		lines[i] = f.Name + ": " + f.Value
	}
	return strings.Join(lines, "\n")
}

// Mail is one message the simulated mailbox received.
type Mail struct {
	At      time.Time `json:"at"`
	Subject string    `json:"subject"`
	// Text is the message's text/plain part.
	Text string `json:"text"`
}

func (s *Server) mail(w http.ResponseWriter, r *http.Request) {
	if s.opts.SMTP == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": errMailOff})
		return
	}
	email, ok := address.Email(r.PathValue("email"))
	if !ok {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": errBadEmail})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"email": email, "messages": s.Mailbox(email)})
}

// Mailbox lists the mail the SMTP simulator accepted for email (an
// envelope recipient, compared without regard to case), newest first
// (none without an SMTP simulator).
func (s *Server) Mailbox(email string) []Mail {
	out := []Mail{}
	if s.opts.SMTP == nil {
		return out
	}
	for _, m := range s.opts.SMTP.MessagesTo(email) {
		out = append(out, Mail{At: m.At, Subject: m.Subject, Text: strings.ReplaceAll(m.Text, "\r\n", "\n")})
	}
	slices.Reverse(out)
	return out
}
