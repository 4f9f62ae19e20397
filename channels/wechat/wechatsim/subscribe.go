package wechatsim

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Subscribe messages (订阅通知): a user accepts or rejects templates in
// WeChat's pop-up, may turn one off later in the chat's settings, and
// WeChat refuses a subscribe message whose template the user has not
// accepted with 43101. Every change and every delivery is pushed to the
// account's server (ReportTo), as WeChat does.

// Popup is the user's answer to the account's subscription pop-up for
// templateIDs: accepted or rejected. The simulator keeps it, and pushes
// subscribe_msg_popup_event to the account's server when ReportTo was
// called; it returns the HTTP status the server answered (0 without one).
func (s *Server) Popup(openid string, accept bool, templateIDs ...string) int {
	status := "reject"
	if accept {
		status = "accept"
	}
	s.setSubs(openid, accept, templateIDs)
	return s.pushNow(openid, SubscribePopup(s.account(), openid, status, s.now(), templateIDs...))
}

// TurnOff is the user turning the templates off in the chat's settings:
// later subscribe messages are refused (43101), and
// subscribe_msg_change_event is pushed.
func (s *Server) TurnOff(openid string, templateIDs ...string) int {
	s.setSubs(openid, false, templateIDs)
	return s.pushNow(openid, SubscribeChange(s.account(), openid, s.now(), templateIDs...))
}

func (s *Server) setSubs(openid string, accept bool, templateIDs []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.subs[openid] == nil {
		s.subs[openid] = map[string]bool{}
	}
	for _, id := range templateIDs {
		s.subs[openid][id] = accept
	}
}

func (s *Server) account() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reports == nil {
		return ""
	}
	return s.reports.account
}

// pushNow pushes an event to the account's server and waits for the answer.
func (s *Server) pushNow(openid string, plain []byte) int {
	s.mu.Lock()
	t := s.reports
	s.mu.Unlock()
	if t == nil {
		return 0
	}
	return s.post(t, openid, plain)
}

// post sends one signed (in safe mode encrypted) push.
func (s *Server) post(t *reportTarget, openid string, plain []byte) int {
	q, body, err := t.pusher.Push(plain, openid)
	if err != nil {
		return 0
	}
	req, err := http.NewRequest(http.MethodPost, t.url+"?"+q.Encode(), bytes.NewReader(body))
	if err != nil {
		return 0
	}
	req.Header.Set("Content-Type", "text/xml")
	resp, err := t.client.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// Subscribed returns how many subscribe messages were accepted.
func (s *Server) Subscribed() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.subsent
}

func (s *Server) subscribeSend(w http.ResponseWriter, r *http.Request) {
	obj, code := s.admit(r, validateSubscribe)
	var openid, tpl string
	if code == 0 {
		openid, _ = obj["touser"].(string)
		tpl, _ = obj["template_id"].(string)
		s.mu.Lock()
		if !s.subs[openid][tpl] {
			code = CodeSubscribeRefused
		}
		s.mu.Unlock()
	}
	s.record(r, obj, code)
	if code != 0 {
		s.reply(w, r, map[string]any{"errcode": code, "errmsg": Errmsg(code)})
		return
	}
	s.accepted(w, r, &s.subsent, func(t *reportTarget, id int64) {
		code := s.post(t, openid, SubscribeSent(t.account, openid, tpl, id, 0, "success", s.now()))
		s.mu.Lock()
		s.reportsMade = append(s.reportsMade, Report{MsgID: id, Status: "success", HTTPStatus: code, Subscribe: true})
		s.mu.Unlock()
	})
}

// validateSubscribe checks a bizsend body as WeChat does: an openid, a
// template id and a data object whose fields are {"value": "…"}.
func validateSubscribe(obj map[string]any) int {
	if code := validateAddressed(obj); code != 0 {
		return code
	}
	data, ok := obj["data"].(map[string]any)
	if !ok {
		return CodeTemplateData
	}
	for _, v := range data {
		item, ok := v.(map[string]any)
		if !ok {
			return CodeTemplateData
		}
		if _, ok := item["value"].(string); !ok {
			return CodeTemplateData
		}
	}
	return 0
}

// SubscribePopup is the XML of subscribe_msg_popup_event: the user
// (openid from) answered the pop-up for templateIDs with status "accept"
// or "reject".
func SubscribePopup(to, from, status string, at time.Time, templateIDs ...string) []byte {
	var list strings.Builder
	for _, id := range templateIDs {
		fmt.Fprintf(&list, "<List><TemplateId><![CDATA[%s]]></TemplateId><SubscribeStatusString><![CDATA[%s]]></SubscribeStatusString>"+
			"<PopupScene>2</PopupScene></List>", id, status)
	}
	return subscribeEvent(to, from, "subscribe_msg_popup_event", "SubscribeMsgPopupEvent", list.String(), at)
}

// SubscribeChange is the XML of subscribe_msg_change_event: the user
// turned templateIDs off.
func SubscribeChange(to, from string, at time.Time, templateIDs ...string) []byte {
	var list strings.Builder
	for _, id := range templateIDs {
		fmt.Fprintf(&list, "<List><TemplateId><![CDATA[%s]]></TemplateId><SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString></List>", id)
	}
	return subscribeEvent(to, from, "subscribe_msg_change_event", "SubscribeMsgChangeEvent", list.String(), at)
}

// SubscribeSent is the XML of subscribe_msg_sent_event: WeChat's report
// of a subscribe message (errorCode 0, "success"; WeChat reports only its
// own asynchronous failures otherwise).
func SubscribeSent(to, from, templateID string, msgID int64, errorCode int, errorStatus string, at time.Time) []byte {
	list := fmt.Sprintf("<List><TemplateId><![CDATA[%s]]></TemplateId><MsgID>%d</MsgID><ErrorCode>%d</ErrorCode>"+
		"<ErrorStatus><![CDATA[%s]]></ErrorStatus></List>", templateID, msgID, errorCode, errorStatus)
	return subscribeEvent(to, from, "subscribe_msg_sent_event", "SubscribeMsgSentEvent", list, at)
}

func subscribeEvent(to, from, event, element, list string, at time.Time) []byte {
	return fmt.Appendf(nil, "<xml><ToUserName><![CDATA[%s]]></ToUserName><FromUserName><![CDATA[%s]]></FromUserName>"+
		"<CreateTime>%d</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[%s]]></Event><%s>%s</%s></xml>",
		to, from, at.Unix(), event, element, list, element)
}
