// Package wechat delivers messages to the followers of a WeChat official
// account (公众号) with silenceper/wechat: customer-service text inside the
// user's window, subscribe messages (订阅通知) to users who subscribed to
// their template, template messages otherwise, one access token shared by
// every worker through Redis, and WeChat's errcodes classified in one table.
package wechat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/silenceper/wechat/v2/officialaccount"
	oaconfig "github.com/silenceper/wechat/v2/officialaccount/config"
	"github.com/silenceper/wechat/v2/officialaccount/message"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/redact"
)

// DefaultAPIURL is WeChat's API.
const DefaultAPIURL = "https://api.weixin.qq.com"

// Kinds of WeChat message (ledger.WeChatOptions.Kind).
const (
	// KindAuto sends customer-service text while the user's window is open
	// with quota left, and the template otherwise. It is the default.
	KindAuto = "auto"
	// KindCustom always sends customer-service text.
	KindCustom = "custom"
	// KindTemplate always sends the template message.
	KindTemplate = "template"
	// KindSubscribe always sends the subscribe message (订阅通知).
	KindSubscribe = "subscribe"
)

// Config is an official account and where to reach it.
type Config struct {
	// AppID and AppSecret are the official account's developer credentials.
	AppID, AppSecret string
	// Token and EncodingAESKey verify and decrypt inbound pushes (webhook).
	Token, EncodingAESKey string
	// APIURL is WeChat's API base, DefaultAPIURL when empty; another value
	// (a simulator, a staging fake) reroutes the library's calls there.
	APIURL string
	// Redis holds the shared state: the access token, its refresh lock and
	// the users' customer-service windows. Required.
	Redis redis.UniversalClient
	// Transport carries API calls; http.DefaultTransport when nil.
	Transport http.RoundTripper
	// Timeout bounds one API call; 10 s when zero.
	Timeout time.Duration
	// Logger receives the channel's logs; slog.Default() when nil.
	Logger *slog.Logger
	// PerSecond and PerDay are what the official account may send; its
	// daily quota resets at midnight China time.
	PerSecond float64
	PerDay    int64
}

// Channel is the "wechat" channel.
type Channel struct {
	cfg    Config
	target *url.URL // nil: the real API
	oaCfg  *oaconfig.Config
	tokens *tokenSource
	window *Window
	subs   *Subscriptions
	now    func() time.Time
	log    *slog.Logger
}

var _ channels.Channel = (*Channel)(nil)

// New returns the channel for the official account.
func New(cfg Config) (*Channel, error) {
	switch {
	case cfg.AppID == "":
		return nil, errors.New("wechat: AppID is required")
	case cfg.AppSecret == "":
		return nil, errors.New("wechat: AppSecret is required")
	case cfg.Redis == nil:
		return nil, errors.New("wechat: Redis is required (the access token and the windows are shared state)")
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("wechat: Timeout %s is negative", cfg.Timeout)
	}
	if cfg.APIURL == "" {
		cfg.APIURL = DefaultAPIURL
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Transport == nil {
		cfg.Transport = http.DefaultTransport
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Channel{cfg: cfg, now: time.Now, log: cfg.Logger.With("comp", "channel", "channel", "wechat")}
	if strings.TrimSuffix(cfg.APIURL, "/") != DefaultAPIURL {
		u, err := url.Parse(cfg.APIURL)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, fmt.Errorf("wechat: APIURL %q is not an absolute http(s) URL", cfg.APIURL)
		}
		c.target = u
	}
	installDispatcher()
	rc := NewRedisCache(cfg.Redis, keyPrefix)
	c.oaCfg = &oaconfig.Config{AppID: cfg.AppID, AppSecret: cfg.AppSecret, Token: cfg.Token,
		EncodingAESKey: cfg.EncodingAESKey, Cache: rc}
	c.tokens = &tokenSource{cache: rc, rdb: cfg.Redis, key: tokenCacheKey(cfg.AppID), lockKey: tokenLockKey(cfg.AppID),
		fetch: c.fetchToken, lockTTL: cfg.Timeout + 5*time.Second, poll: 25 * time.Millisecond, log: c.log}
	c.window = &Window{rdb: cfg.Redis, appID: cfg.AppID, rules: defaultWindowRules, now: func() time.Time { return c.now() }}
	c.subs = &Subscriptions{rdb: cfg.Redis, appID: cfg.AppID, now: func() time.Time { return c.now() }}
	return c, nil
}

// Name is the channel's API name.
func (c *Channel) Name() string { return "wechat" }

// chinaTime is where the official account's daily quota resets.
var chinaTime = func() *time.Location {
	if l, err := time.LoadLocation("Asia/Shanghai"); err == nil {
		return l
	}
	return time.FixedZone("CST", 8*3600)
}()

// Sender is the official account (its app id) at its configured rate.
func (c *Channel) Sender() channels.Sender {
	return channels.Sender{ID: c.cfg.AppID, Rate: channels.Rate{PerSecond: c.cfg.PerSecond, PerDay: c.cfg.PerDay, DayZone: chinaTime}}
}

// Window is the users' customer-service windows; the inbound webhook
// reports interactions to it.
func (c *Channel) Window() *Window { return c.window }

// Send delivers m.Body (customer-service text), or the subscribe or
// template message of m.WeChat, to m.To.WeChatOpenID, as m.WeChat.Kind says (KindAuto when unset).
// Errors are *channels.SendError.
func (c *Channel) Send(ctx context.Context, m channels.Message) (channels.Result, error) {
	openid := m.To.WeChatOpenID
	if openid == "" {
		return channels.Result{}, &channels.SendError{Class: channels.Permanent, Code: "no_recipient",
			Message: "the message has no WeChat openid"}
	}
	if !dispatcherInstalled() {
		c.log.Error("wechat cannot send", "message_id", m.ID, "error", errNoDispatcher.Error())
		return channels.Result{}, &channels.SendError{Class: channels.Retryable, Code: "config",
			Message: errNoDispatcher.Error(), Err: errNoDispatcher}
	}
	opts := ledger.WeChatOptions{}
	if m.WeChat != nil {
		opts = *m.WeChat
	}
	if opts.Kind == "" {
		opts.Kind = KindAuto
	}
	log := c.log.With("message_id", m.ID, "openid", redact.Secret(openid), "kind", opts.Kind)
	var res channels.Result
	var se *channels.SendError
	switch opts.Kind {
	case KindAuto:
		res, se = c.sendAuto(ctx, m, opts, log)
	case KindCustom:
		res, se = c.sendCustom(ctx, m)
	case KindTemplate:
		res, se = c.sendTemplate(ctx, m, opts)
	case KindSubscribe:
		var out outcome
		res, out = c.sendSubscribe(ctx, m, opts.Subscribe)
		se = out.err
	default:
		se = &channels.SendError{Class: channels.Permanent, Code: "bad_kind",
			Message: fmt.Sprintf("unknown WeChat message kind %q (want auto, custom, subscribe or template)", opts.Kind)}
	}
	if se != nil {
		log.Warn("wechat send failed", "code", se.Code, "class", se.Class.String(), "error", se.Message)
		return channels.Result{}, se
	}
	log.Info("wechat message sent", "provider_id", res.ProviderID)
	return res, nil
}

// sendAuto sends customer-service text when the window has quota left;
// otherwise the subscribe message when the user subscribed to its
// template; otherwise the template message. When WeChat says the window
// is closed, or the subscription gone, after all, it goes on down the
// same order.
func (c *Channel) sendAuto(ctx context.Context, m channels.Message, opts ledger.WeChatOptions, log *slog.Logger) (channels.Result, *channels.SendError) {
	openid := m.To.WeChatOpenID
	// Without text there is no customer-service message to send, and the
	// window's quota is left alone.
	if m.Body != "" {
		s, err := c.window.take(ctx, openid)
		if err != nil {
			return channels.Result{}, redisError(err)
		}
		if s.taken {
			res, out := c.custom(ctx, m)
			if out.err == nil {
				return res, nil
			}
			if out.then != closeWindow {
				c.giveBack(ctx, openid, s, out.err, log)
				return channels.Result{}, out.err
			}
			if err := c.window.close(ctx, openid, s); err != nil {
				log.Warn("wechat window could not be marked closed", "error", err.Error())
			}
			if opts.TemplateID == "" && opts.Subscribe == nil {
				out.err.Message += "; no subscribe or template message was given to send instead"
				return channels.Result{}, out.err
			}
			log.Info("wechat window closed at WeChat: sending the subscribe or template message instead", "code", out.err.Code)
		}
	}
	sub, err := c.subscribed(ctx, m, opts)
	if err != nil {
		return channels.Result{}, redisError(err)
	}
	if sub {
		res, out := c.sendSubscribe(ctx, m, opts.Subscribe)
		if out.err == nil {
			return res, nil
		}
		if out.then != unsubscribed || opts.TemplateID == "" {
			return channels.Result{}, out.err
		}
		log.Info("wechat subscription gone at WeChat: sending the template instead", "code", out.err.Code)
	}
	if opts.TemplateID == "" {
		return channels.Result{}, &channels.SendError{Class: channels.Permanent, Code: "no_window_no_template",
			Message: "the user has not interacted with the official account within 48 hours (no customer-service window " +
				"with messages left), has not subscribed to a subscribe message given, and no template was given for a template message"}
	}
	return c.sendTemplate(ctx, m, opts)
}

// sendCustom sends customer-service text whatever the gateway knows of the
// window, keeping that knowledge up to date.
func (c *Channel) sendCustom(ctx context.Context, m channels.Message) (channels.Result, *channels.SendError) {
	if m.Body == "" {
		return channels.Result{}, &channels.SendError{Class: channels.Permanent, Code: "no_body",
			Message: "a customer-service message needs a body"}
	}
	openid := m.To.WeChatOpenID
	s, err := c.window.take(ctx, openid)
	if err != nil {
		return channels.Result{}, redisError(err)
	}
	res, out := c.custom(ctx, m)
	if out.err == nil {
		return res, nil
	}
	if out.then == closeWindow {
		if err := c.window.close(ctx, openid, s); err != nil {
			c.log.Warn("wechat window could not be marked closed", "message_id", m.ID, "error", err.Error())
		}
	} else {
		c.giveBack(ctx, openid, s, out.err, c.log.With("message_id", m.ID))
	}
	return channels.Result{}, out.err
}

// giveBack returns a taken message to the window when WeChat cannot have
// delivered it.
func (c *Channel) giveBack(ctx context.Context, openid string, s slot, se *channels.SendError, log *slog.Logger) {
	if se.Unconfirmed {
		return
	}
	if err := c.window.refund(context.WithoutCancel(ctx), openid, s); err != nil {
		log.Warn("wechat window quota could not be given back", "error", err.Error())
	}
}

// custom sends one customer-service text message.
func (c *Channel) custom(ctx context.Context, m channels.Message) (channels.Result, outcome) {
	msg := message.NewCustomerTextMessage(m.To.WeChatOpenID, m.Body)
	out := c.do(ctx, "SendCustomerMessage", m.To.WeChatOpenID, func(oa *officialaccount.OfficialAccount) (int64, error) {
		return 0, oa.GetCustomerMessageManager().Send(msg)
	})
	if out.err != nil {
		return channels.Result{}, out
	}
	// WeChat gives customer-service messages no id.
	return channels.Result{ProviderID: "cs:" + m.ID}, out
}

// sendTemplate sends the template message of opts.
func (c *Channel) sendTemplate(ctx context.Context, m channels.Message, opts ledger.WeChatOptions) (channels.Result, *channels.SendError) {
	if opts.TemplateID == "" {
		return channels.Result{}, &channels.SendError{Class: channels.Permanent, Code: "no_template",
			Message: "a template message needs a template id"}
	}
	data := make(map[string]*message.TemplateDataItem, len(opts.Data))
	for k, v := range opts.Data {
		data[k] = &message.TemplateDataItem{Value: v}
	}
	tm := &message.TemplateMessage{ToUser: m.To.WeChatOpenID, TemplateID: opts.TemplateID, URL: opts.URL, Data: data}
	out := c.do(ctx, "SendTemplateMessage", m.To.WeChatOpenID, func(oa *officialaccount.OfficialAccount) (int64, error) {
		return oa.GetTemplate().Send(tm)
	})
	if out.err != nil {
		return channels.Result{}, out.err
	}
	if out.msgID == 0 {
		// Accepted without an id (never seen): the message id keeps the
		// provider id unique.
		return channels.Result{ProviderID: "tmpl:" + m.ID}, nil
	}
	return channels.Result{ProviderID: "tmpl:" + strconv.FormatInt(out.msgID, 10)}, nil
}

// do makes one API call through the library with the shared token; when
// WeChat rejects the token it drops it, fetches a new one and calls once more.
func (c *Channel) do(ctx context.Context, api, openid string, send func(*officialaccount.OfficialAccount) (int64, error)) outcome {
	for attempt := 1; ; attempt++ {
		tok, err := c.tokens.GetAccessTokenContext(ctx)
		if err != nil {
			return outcome{err: channels.AsSendError(err)}
		}
		call := beginCall(ctx, c.cfg.Transport, c.target, c.cfg.Timeout)
		oa := officialaccount.NewOfficialAccount(c.oaCfg)
		oa.SetAccessTokenHandle(callToken(call.mark(tok)))
		msgID, libErr := send(oa)
		call.end()
		out := classify(call, libErr, api, c.now(), openid, tok)
		if out.err == nil && libErr != nil {
			// The answer read as a success but the library failed on it.
			out.err = &channels.SendError{Class: channels.Retryable, Code: "bad_response", Unconfirmed: true,
				Message: "WeChat's answer could not be read; it may have accepted the message", Err: scrubbed(libErr)}
		}
		if out.err == nil && out.msgID == 0 {
			out.msgID = msgID
		}
		if out.then == refreshToken && attempt == 1 {
			c.log.Info("wechat access token rejected: refreshing it and trying once more", "code", out.err.Code)
			if err := c.tokens.invalidate(ctx, tok); err != nil {
				return outcome{err: redisError(err)}
			}
			continue
		}
		return out
	}
}
