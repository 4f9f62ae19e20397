package wechat

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/silenceper/wechat/v2/officialaccount"
	"github.com/silenceper/wechat/v2/officialaccount/message"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/ledger"
)

// Subscribe messages (订阅通知).
//
// A subscribe message is sent with POST /cgi-bin/message/subscribe/bizsend
// to a user who accepted its template in WeChat's subscription pop-up
// (the official account shows it from a page or a menu). Long-term
// subscriptions, open to medical accounts among others, stay until the
// user turns them off in the chat's settings; WeChat refuses a send the
// user did not subscribe to, or no longer does, with errcode 43101.
//
// The gateway learns the subscription state from WeChat's pushes:
// subscribe_msg_popup_event (accept or reject, per template) and
// subscribe_msg_change_event (the user turned it off), and from 43101.
// It keeps the latest state per user and template in Redis, so that the
// auto kind picks the subscribe message only for a user who accepted its
// template, and the template message otherwise. WeChat reports each
// delivery with subscribe_msg_sent_event.

// SubscriptionTTL is how long a user's subscription states are kept after
// the last change: past it the gateway has not heard of the user for more
// than a year, and sends the template message until it does again.
const SubscriptionTTL = 400 * 24 * time.Hour

// maxSubscriptionItems bounds the templates one push may list (WeChat's
// pop-up offers at most a few).
const maxSubscriptionItems = 20

func subscriptionKey(appID, openid string) string { return userKey("sub:", appID, openid) }

// Subscriptions are the users' subscribe-message subscriptions, as WeChat
// reported them last.
type Subscriptions struct {
	rdb   redis.UniversalClient
	appID string
	now   func() time.Time
}

// Subscriptions returns the channel's subscription states; the inbound
// webhook records WeChat's reports in them.
func (c *Channel) Subscriptions() *Subscriptions { return c.subs }

// SubscriptionChange is a user's decision about one subscribe template.
type SubscriptionChange struct {
	TemplateID string
	Accepted   bool
	// At is when the user decided (the push's CreateTime); a change older
	// than the one recorded is ignored (pushes can come out of order).
	At time.Time
}

// Record stores changes of openid's subscriptions, each unless a later
// one is recorded.
func (s *Subscriptions) Record(ctx context.Context, openid string, changes ...SubscriptionChange) error {
	if openid == "" {
		return errors.New("wechat: Record needs an openid")
	}
	if len(changes) == 0 {
		return nil
	}
	args := make([]any, 0, 1+3*len(changes))
	args = append(args, SubscriptionTTL.Milliseconds())
	for _, ch := range changes {
		if ch.TemplateID == "" {
			return errors.New("wechat: a subscription change without a template id")
		}
		state := "r"
		if ch.Accepted {
			state = "a"
		}
		args = append(args, ch.TemplateID, state, ch.At.UnixMilli())
	}
	return recordSubscriptionScript.Run(ctx, s.rdb, []string{subscriptionKey(s.appID, openid)}, args...).Err()
}

// Accepted reports whether openid accepted the subscribe template, as
// last reported.
func (s *Subscriptions) Accepted(ctx context.Context, openid, templateID string) (bool, error) {
	v, err := s.rdb.HGet(ctx, subscriptionKey(s.appID, openid), templateID).Result()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return strings.HasPrefix(v, "a:"), nil
}

// recordSubscriptionScript sets each template's state ("a" or "r") with
// its time unless a later one is stored. ARGV: the key's TTL in ms, then
// (template, state, unix ms) triples.
var recordSubscriptionScript = redis.NewScript(`
for i = 2, #ARGV, 3 do
	local cur = redis.call('HGET', KEYS[1], ARGV[i])
	local at = tonumber(ARGV[i+2])
	local curAt = -1
	if cur then curAt = tonumber(string.sub(cur, 3)) or -1 end
	if at >= curAt then
		redis.call('HSET', KEYS[1], ARGV[i], ARGV[i+1] .. ':' .. ARGV[i+2])
	end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
`)

// sendSubscribe sends the subscribe message of sub. A 43101 (the user
// did not subscribe, or no longer does) is recorded as a refusal, so the
// next message goes as a template, and reported with then == unsubscribed.
func (c *Channel) sendSubscribe(ctx context.Context, m channels.Message, sub *ledger.WeChatSubscribe) (channels.Result, outcome) {
	if sub == nil || sub.TemplateID == "" {
		return channels.Result{}, outcome{err: &channels.SendError{Class: channels.Permanent, Code: "no_subscribe_template",
			Message: "a subscribe message needs wechat.subscribe.template_id"}}
	}
	data := make(map[string]*message.SubscribeDataItem, len(sub.Data))
	for k, v := range sub.Data {
		data[k] = &message.SubscribeDataItem{Value: v}
	}
	msg := &message.SubscribeMessage{ToUser: m.To.WeChatOpenID, TemplateID: sub.TemplateID, Page: sub.Page, Data: data}
	out := c.do(ctx, "SendSubscribeMessage", m.To.WeChatOpenID, func(oa *officialaccount.OfficialAccount) (int64, error) {
		return 0, oa.GetSubscribe().Send(msg)
	})
	if out.err != nil {
		if out.then == unsubscribed {
			ch := SubscriptionChange{TemplateID: sub.TemplateID, At: c.now()}
			if err := c.subs.Record(context.WithoutCancel(ctx), m.To.WeChatOpenID, ch); err != nil {
				c.log.Warn("wechat subscription refusal not recorded", "message_id", m.ID, "error", err.Error())
			}
		}
		return channels.Result{}, out
	}
	if out.msgID == 0 {
		return channels.Result{ProviderID: "sub:" + m.ID}, out
	}
	return channels.Result{ProviderID: "sub:" + strconv.FormatInt(out.msgID, 10)}, out
}

// subscribed reports whether the auto kind should send m's subscribe
// message: it has one and the user accepted its template.
func (c *Channel) subscribed(ctx context.Context, m channels.Message, opts ledger.WeChatOptions) (bool, error) {
	if opts.Subscribe == nil || opts.Subscribe.TemplateID == "" {
		return false, nil
	}
	return c.subs.Accepted(ctx, m.To.WeChatOpenID, opts.Subscribe.TemplateID)
}

// Subscribe-message events WeChat pushes.
const (
	EventSubscribePopup  = "subscribe_msg_popup_event"
	EventSubscribeChange = "subscribe_msg_change_event"
	EventSubscribeSent   = "subscribe_msg_sent_event"
)

// SubscribeItem is one entry of a subscribe-message event's list.
type SubscribeItem struct {
	TemplateID string
	// Status is SubscribeStatusString: "accept" or "reject".
	Status string
	// MsgID, ErrorCode and ErrorStatus are a sent event's.
	MsgID       string
	ErrorCode   int64
	ErrorStatus string
}

// SubscribeReport maps a subscribe_msg_sent_event entry to a delivery
// report: ErrorCode 0 is delivered; anything else (WeChat reports only its
// own asynchronous failures so) is undelivered with the reason.
func SubscribeReport(it SubscribeItem) (ledger.Status, string, string) {
	if it.ErrorCode == 0 {
		return ledger.StatusDelivered, "", ""
	}
	return ledger.StatusUndelivered, "system_failed", "WeChat could not deliver the subscribe message (" +
		strconv.FormatInt(it.ErrorCode, 10) + ")"
}

// subscriptionEvent records the states a pop-up or settings change
// reports.
func (in *inbound) subscriptionEvent(ctx context.Context, p Push) error {
	changes := make([]SubscriptionChange, 0, len(p.Subscribe))
	for _, it := range p.Subscribe {
		switch strings.ToLower(it.Status) {
		case "accept":
			changes = append(changes, SubscriptionChange{TemplateID: it.TemplateID, Accepted: true, At: time.Unix(p.CreateTime, 0)})
		case "reject":
			changes = append(changes, SubscriptionChange{TemplateID: it.TemplateID, At: time.Unix(p.CreateTime, 0)})
		}
	}
	return in.c.subs.Record(ctx, p.FromUserName, changes...)
}

// subscribeSent applies the delivery reports of subscribe messages, each
// once.
func (in *inbound) subscribeSent(ctx context.Context, p Push) error {
	log := in.c.log.With("event", EventSubscribeSent)
	for _, it := range p.Subscribe {
		if it.MsgID == "" {
			continue
		}
		key := keyPrefix + "in:" + in.c.cfg.AppID + ":s:" + it.MsgID
		first, err := in.once(ctx, key)
		if err != nil {
			return err
		}
		if !first {
			log.Info("wechat subscribe report", "duplicate", true)
			continue
		}
		status, code, reason := SubscribeReport(it)
		applied, err := in.rcv.ProviderStatus(ctx, "", ledger.ProviderUpdate{Channel: in.c.Name(), ProviderID: "sub:" + it.MsgID,
			Status: status, ProviderStatus: it.ErrorStatus, ErrorCode: code, ErrorMessage: reason})
		if err != nil {
			in.forget(ctx, key)
			return err
		}
		in.taken(ctx, key)
		log.Info("wechat subscribe report", "provider_id", "sub:"+it.MsgID, "status", string(status), "known", applied != ledger.AppliedUnknown)
	}
	return nil
}
