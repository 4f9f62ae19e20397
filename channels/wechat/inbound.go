package wechat

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
	"github.com/silenceper/wechat/v2/officialaccount/message"
	"github.com/silenceper/wechat/v2/util"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/ledger"
)

// InboundPath is the official account's server URL (服务器地址): configure
// GATEWAY_PUBLIC_URL + InboundPath in the WeChat console (基本配置 →
// 服务器配置) with the same Token, and for safe mode (安全模式) the same
// EncodingAESKey, as the channel's Config. WeChat verifies the URL with a
// GET and then POSTs every message and event of the account's users to it.
const InboundPath = "/webhooks/wechat"

const (
	// MaxClockSkew is how far a push's timestamp may be from the gateway's
	// clock. The signature covers the timestamp, so a captured request can
	// be replayed only this long. WeChat's clock is NTP-synchronised and its
	// retries come within 15 s, so 5 minutes (what Slack and Stripe allow
	// for their webhooks) is generous; an unsynchronised gateway clock makes
	// every push fail with 403, which the logs say.
	MaxClockSkew = 5 * time.Minute
	// inboundBudget bounds the work for one push, so the gateway answers
	// (503 at worst) before WeChat gives up after 5 s.
	inboundBudget = 4 * time.Second
	// dedupeTTL is how long a push's dedupe key lives; WeChat's retries
	// come within 15 s.
	dedupeTTL = 24 * time.Hour
	// maxPushBytes bounds a push's body; WeChat's are a few KiB.
	maxPushBytes = 1 << 20
)

// Push is one parsed message push: a message a user sent, or an event.
type Push struct {
	// ToUserName is the official account's original id (gh_…).
	ToUserName string
	// FromUserName is the user's openid.
	FromUserName string
	// CreateTime is when WeChat received it, unix seconds.
	CreateTime int64
	// MsgType is "text", "image", "voice", "video", "shortvideo",
	// "location", "link", … or "event".
	MsgType string
	// MsgID is the message id (decimal), "" for events.
	MsgID string
	// Content is a text message's text.
	Content string
	// Event is an event's type: subscribe, unsubscribe, SCAN, CLICK, VIEW…
	Event string
	// EventKey is the event's key (a menu key, "qrscene_…" scene).
	EventKey string
	// JobMsgID is a TEMPLATESENDJOBFINISH event's MsgID: the template
	// message's msgid (decimal). Status is its outcome: "success",
	// "failed:user block" or "failed: system failed".
	JobMsgID string
	Status   string
	// Subscribe lists the templates of a subscribe-message event
	// (EventSubscribePopup, EventSubscribeChange, EventSubscribeSent).
	Subscribe []SubscribeItem
}

// ErrMalformedPush is returned for XML that is not a WeChat push.
var ErrMalformedPush = errors.New("wechat: malformed push")

// Bounds of a push's fields.
const (
	maxIDLen      = 64
	maxTypeLen    = 64
	maxContentLen = 64 << 10
	maxEventKey   = 1024
)

// ParsePush reads the XML of a push (in safe mode, after decryption). It
// accepts only what WeChat sends: an <xml> root, a valid openid and
// original id, a positive CreateTime, a message type, a numeric MsgId on
// messages (required on text), an event type on events, and valid UTF-8.
// Unknown elements are ignored.
func ParsePush(b []byte) (Push, error) {
	var x struct {
		XMLName      xml.Name
		ToUserName   string `xml:"ToUserName"`
		FromUserName string `xml:"FromUserName"`
		CreateTime   string `xml:"CreateTime"`
		MsgType      string `xml:"MsgType"`
		MsgID        string `xml:"MsgId"`
		Content      string `xml:"Content"`
		Event        string `xml:"Event"`
		EventKey     string `xml:"EventKey"`
		// A template job's id is MsgID, unlike a message's MsgId.
		JobMsgID string `xml:"MsgID"`
		Status   string `xml:"Status"`
		// Subscribe-message events list their templates.
		Popup  []subscribeXML `xml:"SubscribeMsgPopupEvent>List"`
		Change []subscribeXML `xml:"SubscribeMsgChangeEvent>List"`
		Sent   []subscribeXML `xml:"SubscribeMsgSentEvent>List"`
	}
	if len(b) > maxPushBytes {
		return Push{}, fmt.Errorf("%w: larger than %d bytes", ErrMalformedPush, maxPushBytes)
	}
	if err := xml.Unmarshal(b, &x); err != nil {
		// Only the line: the decoder's message may quote the body.
		var se *xml.SyntaxError
		if errors.As(err, &se) {
			return Push{}, fmt.Errorf("%w: not well-formed XML (line %d)", ErrMalformedPush, se.Line)
		}
		return Push{}, fmt.Errorf("%w: not XML", ErrMalformedPush)
	}
	p := Push{ToUserName: strings.TrimSpace(x.ToUserName), FromUserName: strings.TrimSpace(x.FromUserName),
		MsgType: strings.TrimSpace(x.MsgType), MsgID: strings.TrimSpace(x.MsgID), Content: x.Content,
		Event: strings.TrimSpace(x.Event), EventKey: strings.TrimSpace(x.EventKey),
		JobMsgID: strings.TrimSpace(x.JobMsgID), Status: strings.TrimSpace(x.Status)}
	ct, err := strconv.ParseInt(strings.TrimSpace(x.CreateTime), 10, 64)
	switch {
	case x.XMLName.Local != "xml" || x.XMLName.Space != "":
		return Push{}, fmt.Errorf("%w: the root element is not <xml>", ErrMalformedPush)
	case !validID(p.FromUserName):
		return Push{}, fmt.Errorf("%w: FromUserName is not an openid", ErrMalformedPush)
	case !validID(p.ToUserName):
		return Push{}, fmt.Errorf("%w: ToUserName is not an account id", ErrMalformedPush)
	case err != nil || ct <= 0:
		return Push{}, fmt.Errorf("%w: CreateTime is not a positive integer", ErrMalformedPush)
	case !validToken(p.MsgType):
		return Push{}, fmt.Errorf("%w: MsgType is missing or not a type", ErrMalformedPush)
	case p.MsgID != "" && !validMsgID(p.MsgID):
		return Push{}, fmt.Errorf("%w: MsgId is not a number", ErrMalformedPush)
	case len(p.Content) > maxContentLen || !utf8.ValidString(p.Content):
		return Push{}, fmt.Errorf("%w: Content is too long or not UTF-8", ErrMalformedPush)
	case len(p.EventKey) > maxEventKey || !utf8.ValidString(p.EventKey):
		return Push{}, fmt.Errorf("%w: EventKey is too long or not UTF-8", ErrMalformedPush)
	}
	p.CreateTime = ct
	switch p.MsgType {
	case "event":
		if !validToken(p.Event) {
			return Push{}, fmt.Errorf("%w: an event without an event type", ErrMalformedPush)
		}
		if sub, ok := subscribeLists(p.Event, x.Popup, x.Change, x.Sent); ok {
			if p.Subscribe, err = parseSubscribeItems(p.Event, sub); err != nil {
				return Push{}, err
			}
		}
		if strings.EqualFold(p.Event, EventTemplateFinished) {
			if !validMsgID(p.JobMsgID) {
				return Push{}, fmt.Errorf("%w: a template job report without a numeric MsgID", ErrMalformedPush)
			}
			if p.Status == "" || len(p.Status) > maxTypeLen || !utf8.ValidString(p.Status) {
				return Push{}, fmt.Errorf("%w: a template job report without a Status", ErrMalformedPush)
			}
		}
	case "text":
		if p.MsgID == "" {
			return Push{}, fmt.Errorf("%w: a text message without MsgId", ErrMalformedPush)
		}
	}
	return p, nil
}

// subscribeXML is one <List> of a subscribe-message event.
type subscribeXML struct {
	TemplateID  string `xml:"TemplateId"`
	Status      string `xml:"SubscribeStatusString"`
	MsgID       string `xml:"MsgID"`
	ErrorCode   string `xml:"ErrorCode"`
	ErrorStatus string `xml:"ErrorStatus"`
}

// subscribeLists picks the list of a subscribe-message event.
func subscribeLists(event string, popup, change, sent []subscribeXML) ([]subscribeXML, bool) {
	switch strings.ToLower(event) {
	case EventSubscribePopup:
		return popup, true
	case EventSubscribeChange:
		return change, true
	case EventSubscribeSent:
		return sent, true
	}
	return nil, false
}

// parseSubscribeItems checks a subscribe-message event's list: 1 to
// maxSubscriptionItems entries, each with a template id; an accept or
// reject status on pop-up and change events; a numeric MsgID and
// ErrorCode on sent events.
func parseSubscribeItems(event string, list []subscribeXML) ([]SubscribeItem, error) {
	if len(list) == 0 || len(list) > maxSubscriptionItems {
		return nil, fmt.Errorf("%w: a %s with %d templates", ErrMalformedPush, strings.ToLower(event), len(list))
	}
	sent := strings.EqualFold(event, EventSubscribeSent)
	out := make([]SubscribeItem, 0, len(list))
	for _, x := range list {
		it := SubscribeItem{TemplateID: strings.TrimSpace(x.TemplateID), Status: strings.TrimSpace(x.Status),
			MsgID: strings.TrimSpace(x.MsgID), ErrorStatus: strings.TrimSpace(x.ErrorStatus)}
		if !validTemplateID(it.TemplateID) {
			return nil, fmt.Errorf("%w: a subscribe event's TemplateId is missing or not a template id", ErrMalformedPush)
		}
		if sent {
			code, err := strconv.ParseInt(strings.TrimSpace(x.ErrorCode), 10, 64)
			if !validMsgID(it.MsgID) || err != nil {
				return nil, fmt.Errorf("%w: a subscribe report without a numeric MsgID and ErrorCode", ErrMalformedPush)
			}
			if len(it.ErrorStatus) > maxTypeLen || !utf8.ValidString(it.ErrorStatus) {
				return nil, fmt.Errorf("%w: a subscribe report's ErrorStatus is too long or not UTF-8", ErrMalformedPush)
			}
			it.ErrorCode = code
		} else if s := strings.ToLower(it.Status); s != "accept" && s != "reject" {
			return nil, fmt.Errorf("%w: a subscribe event's SubscribeStatusString is neither accept nor reject", ErrMalformedPush)
		}
		out = append(out, it)
	}
	return out, nil
}

// validTemplateID accepts WeChat template ids: letters, digits, '-' and
// '_', at most 128.
func validTemplateID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// validID accepts openids and original ids: letters, digits, '-' and '_',
// at most 64 (as the API accepts openids).
func validID(s string) bool {
	if s == "" || len(s) > maxIDLen {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// validToken accepts message and event types (safe to log).
func validToken(s string) bool {
	if s == "" || len(s) > maxTypeLen {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

func validMsgID(s string) bool {
	if len(s) > 20 {
		return false
	}
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil
}

var _ channels.Inbound = (*Channel)(nil)

// Routes declares the server URL of the official account:
//
//   - GET InboundPath verifies it: signature must be the SHA-1 of the
//     sorted Token, timestamp and nonce; the answer is echostr.
//   - POST InboundPath takes the pushes. In plaintext mode signature signs
//     them as above; in safe mode (encrypt_type=aes) msg_signature signs
//     (Token, timestamp, nonce, Encrypt) and Encrypt is decrypted with the
//     EncodingAESKey (AES-256-CBC). With an EncodingAESKey configured,
//     plaintext pushes are refused: their signature does not cover the
//     body, so a captured one could carry any body.
//
// Signatures are compared in constant time, and a timestamp more than
// MaxClockSkew away from the gateway's clock is refused (403) to limit
// replays. A plaintext push's signature is also bound to the first body
// it came with, for the same span: a replay may repeat a push (which the
// dedupe absorbs) but not carry another body.
//
// What a push does:
//
//   - A text message opens the user's 48-hour window (UserMessage) and goes
//     to rcv.Inbound with its MsgId as provider id; a reply the receiver
//     gives (the confirmation of 退订/STOP, START, HELP) is the passive text
//     reply, encrypted in safe mode. A repeated MsgId is processed once.
//   - Other messages (image, voice…) open the window and are acknowledged.
//   - subscribe (a follow, also through a parametric QR code) opens the
//     1-minute window as Follow; SCAN as Scan; CLICK and the scancode menu
//     events as MenuClick (the menu types that open WeChat's window).
//   - unsubscribe is an opt-out of the openid on the wechat channel, for
//     every tenant (rcv.OptOut).
//   - TEMPLATESENDJOBFINISH is a template message's delivery report: its
//     message becomes delivered, or undelivered with the reason;
//     subscribe_msg_sent_event is the same for subscribe messages.
//   - subscribe_msg_popup_event and subscribe_msg_change_event record the
//     user's subscribe-message subscriptions (accept or reject per
//     template), which the auto kind follows.
//   - Other events (VIEW, LOCATION…) are acknowledged.
//
// Events are deduplicated in Redis on FromUserName, CreateTime, Event and
// EventKey for a day; the window is touched once per MsgId the same way.
// WeChat retries a push it got no answer to within 5 s, three times; when
// Redis or the receiver fails the answer is 503 (and the dedupe key is
// dropped) so that nothing is acknowledged that was not recorded, and a
// retry is processed again. A push that is authentic but not understood is
// acknowledged ("success"): retrying it would not help. Only message ids,
// message and event types are logged, never openids or text.
//
// Without a Token there is nothing to verify pushes with: no routes.
func (c *Channel) Routes(rcv channels.Receiver) []channels.Route {
	if c.cfg.Token == "" {
		c.log.Warn("wechat inbound webhook not served: no Token configured")
		return nil
	}
	in := &inbound{c: c, rcv: rcv}
	if c.cfg.EncodingAESKey != "" {
		key, err := decodeAESKey(c.cfg.EncodingAESKey)
		if err != nil {
			c.log.Error("wechat EncodingAESKey unusable: every push will be refused", "error", err.Error())
		}
		in.key = key
	}
	return []channels.Route{
		{Method: http.MethodGet, Path: InboundPath, Handle: in.verify},
		{Method: http.MethodPost, Path: InboundPath, Handle: in.push},
	}
}

type inbound struct {
	c   *Channel
	rcv channels.Receiver
	key []byte // the AES key; nil in plaintext mode or when unusable
}

var (
	pushSuccess  = channels.WebhookResponse{Status: http.StatusOK, ContentType: "text/plain; charset=utf-8", Body: []byte("success")}
	pushForbid   = channels.WebhookResponse{Status: http.StatusForbidden, ContentType: "text/plain; charset=utf-8", Body: []byte("invalid signature\n")}
	pushRetry    = channels.WebhookResponse{Status: http.StatusServiceUnavailable, ContentType: "text/plain; charset=utf-8", Body: []byte("try again\n")}
	pushConfig   = channels.WebhookResponse{Status: http.StatusInternalServerError, ContentType: "text/plain; charset=utf-8", Body: []byte("cannot decrypt\n")}
	pushTooLarge = channels.WebhookResponse{Status: http.StatusRequestEntityTooLarge, ContentType: "text/plain; charset=utf-8", Body: []byte("too large\n")}
)

// verify answers WeChat's URL verification.
func (in *inbound) verify(_ context.Context, r channels.WebhookRequest) channels.WebhookResponse {
	q := r.Query
	ts := q.Get("timestamp")
	if !in.fresh(ts) {
		in.c.log.Warn("wechat URL verification rejected: timestamp missing or too far from the clock")
		return pushForbid
	}
	if !validSignature(q.Get("signature"), in.c.cfg.Token, ts, q.Get("nonce")) {
		in.c.log.Warn("wechat URL verification rejected: bad or missing signature")
		return pushForbid
	}
	echo := q.Get("echostr")
	if !validEcho(echo) {
		// echostr is not signed: only what WeChat sends is reflected.
		return channels.WebhookResponse{Status: http.StatusBadRequest, ContentType: "text/plain; charset=utf-8", Body: []byte("bad echostr\n")}
	}
	in.c.log.Info("wechat server URL verified")
	return channels.WebhookResponse{Status: http.StatusOK, ContentType: "text/plain; charset=utf-8", Body: []byte(echo)}
}

// validEcho accepts WeChat's echostr (a random number; base64 characters
// allowed): nothing that could be markup.
func validEcho(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("+/=-_", r)) {
			return false
		}
	}
	return true
}

// fresh reports whether a push's timestamp is within MaxClockSkew.
func (in *inbound) fresh(ts string) bool {
	n, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return false
	}
	d := in.c.now().Sub(time.Unix(n, 0))
	return d <= MaxClockSkew && d >= -MaxClockSkew
}

// validSignature compares a signature with WeChat's over parts in
// constant time.
func validSignature(got string, parts ...string) bool {
	want := util.Signature(parts...)
	return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// push takes a message push.
func (in *inbound) push(ctx context.Context, r channels.WebhookRequest) channels.WebhookResponse {
	ctx, cancel := context.WithTimeout(ctx, inboundBudget)
	defer cancel()
	log := in.c.log
	if len(r.Body) > maxPushBytes {
		return pushTooLarge
	}
	q := r.Query
	ts, nonce := q.Get("timestamp"), q.Get("nonce")
	if !in.fresh(ts) {
		log.Warn("wechat push rejected: timestamp missing or too far from the clock", "max_skew", MaxClockSkew.String())
		return pushForbid
	}
	safe := q.Get("encrypt_type") == "aes"
	var plain []byte
	switch {
	case safe && in.key == nil:
		log.Error("wechat safe-mode push cannot be decrypted: no usable EncodingAESKey is configured (WECHAT_ENCODING_AES_KEY)")
		return pushConfig
	case safe:
		var err error
		plain, err = openSafe(in.c.cfg.Token, in.c.cfg.AppID, in.key, ts, nonce, q.Get("msg_signature"), r.Body)
		if errors.Is(err, errForged) {
			log.Warn("wechat push rejected: bad or missing msg_signature")
			return pushForbid
		}
		if err != nil {
			// Signed with our Token but not sealed with our key and app id:
			// the configuration differs from the console's. Loud, and not
			// acknowledged.
			log.Error("wechat safe-mode push could not be decrypted: check the EncodingAESKey and AppID", "error", err.Error())
			return pushConfig
		}
	case in.c.cfg.EncodingAESKey != "":
		log.Error("wechat plaintext push refused: an EncodingAESKey is configured, so the account must push in safe mode (安全模式)")
		return pushForbid
	default:
		sig := q.Get("signature")
		if !validSignature(sig, in.c.cfg.Token, ts, nonce) {
			log.Warn("wechat push rejected: bad or missing signature")
			return pushForbid
		}
		same, err := in.bindSignature(ctx, sig, r.Body)
		if err != nil {
			log.Error("wechat push not processed: Redis failed", "error", err.Error())
			return pushRetry
		}
		if !same {
			log.Warn("wechat push rejected: its signature was already used with another body")
			return pushForbid
		}
		plain = r.Body
	}
	p, err := ParsePush(plain)
	if err != nil {
		log.Warn("wechat push not understood", "error", err.Error())
		return pushSuccess
	}
	reply := func(text string) channels.WebhookResponse {
		return in.reply(p, text, nonce, safe)
	}
	if p.MsgType == "event" {
		return in.event(ctx, p)
	}
	return in.message(ctx, p, reply)
}

// bindSignature remembers the body a plaintext push's signature first came
// with, for as long as its timestamp is acceptable, and reports whether
// body is that one.
func (in *inbound) bindSignature(ctx context.Context, sig string, body []byte) (bool, error) {
	sum := sha256.Sum256(body)
	h := hex.EncodeToString(sum[:])
	key := keyPrefix + "in-sig:" + in.c.cfg.AppID + ":" + sig
	rdb := in.c.cfg.Redis
	set, err := rdb.SetNX(ctx, key, h, 2*MaxClockSkew+time.Minute).Result()
	if err != nil || set {
		return set, err
	}
	prev, err := rdb.Get(ctx, key).Result()
	if errors.Is(err, redis.Nil) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return prev == h, nil
}

// message handles a message a user sent.
func (in *inbound) message(ctx context.Context, p Push, reply func(string) channels.WebhookResponse) channels.WebhookResponse {
	log := in.c.log.With("provider_id", p.MsgID, "msg_type", p.MsgType)
	key := in.dedupeKey(p)
	first, err := in.once(ctx, key)
	if err != nil {
		log.Error("wechat message not processed: Redis failed", "error", err.Error())
		return pushRetry
	}
	if first {
		if err := in.c.window.Touch(ctx, p.FromUserName, UserMessage, in.at(p)); err != nil {
			in.forget(ctx, key)
			log.Error("wechat message not processed: the window could not be opened", "error", err.Error())
			return pushRetry
		}
	}
	if p.MsgType != "text" {
		if first {
			in.taken(ctx, key)
		}
		log.Info("wechat message", "duplicate", !first)
		return pushSuccess
	}
	res, err := in.rcv.Inbound(ctx, channels.InboundMessage{Channel: in.c.Name(), ProviderID: p.MsgID,
		From: ledger.Recipient{WeChatOpenID: p.FromUserName}, To: p.ToUserName, Body: p.Content})
	if err != nil {
		// The window is touched; the retry touches it again and hands the
		// message to the receiver again, which is idempotent per MsgId.
		log.Error("wechat message not recorded", "error", err.Error())
		return pushRetry
	}
	if first {
		in.taken(ctx, key)
	}
	log.Info("wechat message", "duplicate", res.Duplicate, "replied", res.Reply != "")
	if res.Reply == "" {
		return pushSuccess
	}
	return reply(res.Reply)
}

// eventInteractions are the events that open a customer-service window.
// Of the menu events only a click and the two scan-code menus open one.
var eventInteractions = map[string]Interaction{
	"subscribe":        Follow, // also a follow through a parametric QR code (EventKey qrscene_…)
	"scan":             Scan,   // a follower scanned a parametric QR code
	"click":            MenuClick,
	"scancode_push":    MenuClick,
	"scancode_waitmsg": MenuClick,
}

// EventTemplateFinished is the event WeChat pushes once a template
// message reached the user, or did not.
const EventTemplateFinished = "TEMPLATESENDJOBFINISH"

// TemplateReport maps a TEMPLATESENDJOBFINISH Status to a delivery
// report: success is delivered; a user who blocked the account's template
// messages, or WeChat's own failure, is undelivered (accepted, then not
// delivered, as a carrier's failure is for an SMS), with the reason.
func TemplateReport(status string) (ledger.Status, string, string) {
	s := strings.ToLower(strings.ReplaceAll(status, " ", ""))
	switch {
	case s == "success":
		return ledger.StatusDelivered, "", ""
	case strings.Contains(s, "userblock"):
		return ledger.StatusUndelivered, "user_block", "the user blocked the official account's template messages"
	}
	return ledger.StatusUndelivered, "system_failed", "WeChat could not deliver the template message"
}

// templateFinished applies a template message's delivery report to its
// message, found by the msgid the send returned; a report of a message
// the gateway does not know (another sender on the account) is taken and
// dropped.
func (in *inbound) templateFinished(ctx context.Context, p Push) channels.WebhookResponse {
	log := in.c.log.With("event", EventTemplateFinished)
	key := keyPrefix + "in:" + in.c.cfg.AppID + ":t:" + p.JobMsgID
	first, err := in.once(ctx, key)
	if err != nil {
		log.Error("wechat template report not processed: Redis failed", "error", err.Error())
		return pushRetry
	}
	if !first {
		log.Info("wechat template report", "duplicate", true)
		return pushSuccess
	}
	status, code, reason := TemplateReport(p.Status)
	applied, err := in.rcv.ProviderStatus(ctx, "", ledger.ProviderUpdate{Channel: in.c.Name(), ProviderID: "tmpl:" + p.JobMsgID,
		Status: status, ProviderStatus: p.Status, ErrorCode: code, ErrorMessage: reason})
	if err != nil {
		in.forget(ctx, key)
		log.Error("wechat template report not processed", "error", err.Error())
		return pushRetry
	}
	in.taken(ctx, key)
	log.Info("wechat template report", "provider_id", "tmpl:"+p.JobMsgID, "status", string(status), "known", applied != ledger.AppliedUnknown)
	return pushSuccess
}

// event handles an event.
func (in *inbound) event(ctx context.Context, p Push) channels.WebhookResponse {
	if strings.EqualFold(p.Event, EventTemplateFinished) {
		return in.templateFinished(ctx, p)
	}
	name := strings.ToLower(p.Event)
	switch name {
	case EventSubscribeSent:
		if err := in.subscribeSent(ctx, p); err != nil {
			in.c.log.Error("wechat subscribe report not processed", "error", err.Error())
			return pushRetry
		}
		return pushSuccess
	case EventSubscribePopup, EventSubscribeChange:
		// Applied again on a retry: the newest state wins whatever the order.
		if err := in.subscriptionEvent(ctx, p); err != nil {
			in.c.log.Error("wechat subscription event not processed", "event", p.Event, "error", err.Error())
			return pushRetry
		}
		in.c.log.Info("wechat subscription event", "event", p.Event, "templates", len(p.Subscribe))
		return pushSuccess
	}
	kind, touches := eventInteractions[name]
	if !touches && name != "unsubscribe" {
		in.c.log.Debug("wechat event ignored", "event", p.Event)
		return pushSuccess
	}
	log := in.c.log.With("event", p.Event)
	key := in.dedupeKey(p)
	first, err := in.once(ctx, key)
	if err != nil {
		log.Error("wechat event not processed: Redis failed", "error", err.Error())
		return pushRetry
	}
	if !first {
		log.Info("wechat event", "duplicate", true)
		return pushSuccess
	}
	if touches {
		err = in.c.window.Touch(ctx, p.FromUserName, kind, in.at(p))
	} else {
		evidence := "wechat unsubscribe event at " + time.Unix(p.CreateTime, 0).UTC().Format(time.RFC3339)
		err = in.rcv.OptOut(ctx, in.c.Name(), ledger.Recipient{WeChatOpenID: p.FromUserName}, evidence)
	}
	if err != nil {
		in.forget(ctx, key)
		log.Error("wechat event not processed", "error", err.Error())
		return pushRetry
	}
	in.taken(ctx, key)
	log.Info("wechat event", "duplicate", false)
	return pushSuccess
}

// at is when the interaction happened: the push's CreateTime, never later
// than now (a window must not outlast WeChat's).
func (in *inbound) at(p Push) time.Time {
	t, now := time.Unix(p.CreateTime, 0), in.c.now()
	if t.After(now) {
		return now
	}
	return t
}

// dedupeKey is a push's key: its MsgId for messages, a digest of sender,
// time, event and key otherwise (so no openid appears in key names).
func (in *inbound) dedupeKey(p Push) string {
	base := keyPrefix + "in:" + in.c.cfg.AppID + ":"
	if p.MsgID != "" && p.MsgType != "event" {
		return base + "m:" + p.MsgID
	}
	sum := sha256.Sum256([]byte(p.FromUserName + "\x00" + strconv.FormatInt(p.CreateTime, 10) + "\x00" +
		p.MsgType + "\x00" + p.Event + "\x00" + p.EventKey))
	return base + "e:" + hex.EncodeToString(sum[:16])
}

// The marks of a push's dedupe key: its work running or failed part-way,
// or done.
const (
	pushPending = "pending"
	pushTaken   = "1"
)

// once claims a dedupe key: true the first time, and again while the key
// is pending (a push whose processing failed part-way without being able
// to drop its key, Redis lost in between: its work is done again, and
// every step of it is idempotent).
func (in *inbound) once(ctx context.Context, key string) (bool, error) {
	first, err := in.c.cfg.Redis.SetNX(ctx, key, pushPending, dedupeTTL).Result()
	if err != nil || first {
		return first, err
	}
	mark, err := in.c.cfg.Redis.Get(ctx, key).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return false, err
	}
	return mark == pushPending, nil
}

// taken marks a push's work done: a retry of it is a duplicate.
func (in *inbound) taken(ctx context.Context, key string) {
	if err := in.c.cfg.Redis.Set(context.WithoutCancel(ctx), key, pushTaken, dedupeTTL).Err(); err != nil {
		in.c.log.Warn("wechat push not marked taken: a retry of it is processed again", "error", err.Error())
	}
}

// forget drops a claimed key whose processing failed, so WeChat's retry
// is processed again (a key left pending is processed again too).
func (in *inbound) forget(ctx context.Context, key string) {
	if err := in.c.cfg.Redis.Del(context.WithoutCancel(ctx), key).Err(); err != nil {
		in.c.log.Warn("wechat dedupe key not dropped; it stays pending, so a retry is processed again", "error", err.Error())
	}
}

// reply answers a user's message with a passive text reply, encrypted in
// safe mode.
func (in *inbound) reply(p Push, text, nonce string, safe bool) channels.WebhookResponse {
	now := in.c.now()
	m := message.NewText(text)
	m.SetToUserName(message.CDATA(p.FromUserName))
	m.SetFromUserName(message.CDATA(p.ToUserName))
	m.SetCreateTime(now.Unix())
	m.SetMsgType(message.MsgTypeText)
	body, err := xml.Marshal(m)
	if err == nil && safe {
		body, err = sealReply(in.c.cfg.Token, in.c.cfg.AppID, in.key, body, now, nonce)
	}
	if err != nil {
		// The message is recorded: acknowledge it without the reply.
		in.c.log.Error("wechat passive reply could not be built", "provider_id", p.MsgID, "error", err.Error())
		return pushSuccess
	}
	return channels.WebhookResponse{Status: http.StatusOK, ContentType: "application/xml; charset=utf-8", Body: body}
}

// errForged is a safe-mode push that is not signed with the Token.
var errForged = errors.New("wechat: push not signed with the Token")

// openSafe checks a safe-mode push's msg_signature over (token, timestamp,
// nonce, Encrypt) and decrypts Encrypt: base64 of AES-256-CBC (IV: the
// key's first 16 bytes) over random(16) ‖ length(4) ‖ XML ‖ app id,
// PKCS#7-padded to 32 bytes. Anything not signed is errForged; a signed
// Encrypt that does not decrypt for appID is another error.
func openSafe(token, appID string, key []byte, ts, nonce, msgSignature string, body []byte) ([]byte, error) {
	var env struct {
		XMLName xml.Name
		Encrypt string `xml:"Encrypt"`
	}
	if err := xml.Unmarshal(body, &env); err != nil || env.XMLName.Local != "xml" || env.Encrypt == "" {
		return nil, errForged
	}
	if msgSignature == "" || !validSignature(msgSignature, token, ts, nonce, env.Encrypt) {
		return nil, errForged
	}
	ct, err := base64.StdEncoding.DecodeString(env.Encrypt)
	if err != nil {
		return nil, errors.New("wechat: Encrypt is not base64")
	}
	_, msg, sealedFor, err := util.AESDecryptMsg(ct, key)
	if err != nil {
		return nil, fmt.Errorf("wechat: Encrypt does not decrypt with the EncodingAESKey: %w", err)
	}
	if subtle.ConstantTimeCompare(sealedFor, []byte(appID)) != 1 {
		return nil, errors.New("wechat: the push is sealed for another app id")
	}
	return msg, nil
}

// sealReply encrypts a passive reply for safe mode: the envelope WeChat
// expects, signed over (token, timestamp, nonce, Encrypt), with the push's
// nonce (as WeChat's own samples answer) and a fresh random prefix.
func sealReply(token, appID string, key, plain []byte, now time.Time, nonce string) ([]byte, error) {
	random := make([]byte, 16)
	if _, err := rand.Read(random); err != nil {
		return nil, err
	}
	enc := base64.StdEncoding.EncodeToString(util.AESEncryptMsg(random, plain, appID, key))
	ts := strconv.FormatInt(now.Unix(), 10)
	return xml.Marshal(message.ResponseEncryptedXMLMsg{EncryptedMsg: enc, MsgSignature: util.Signature(token, ts, nonce, enc),
		Timestamp: now.Unix(), Nonce: nonce})
}

// decodeAESKey turns the 43-character EncodingAESKey into the AES-256 key.
func decodeAESKey(encoded string) ([]byte, error) {
	if len(encoded) != 43 {
		return nil, fmt.Errorf("wechat: the EncodingAESKey has %d characters, want 43", len(encoded))
	}
	key, err := base64.StdEncoding.DecodeString(encoded + "=")
	if err != nil || len(key) != 32 {
		return nil, errors.New("wechat: the EncodingAESKey is not base64 of 32 bytes")
	}
	return key, nil
}
