package service

import (
	"math"
	"net/url"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/ratelimit"
	"github.com/patientmsg/gateway/workers"
)

// senderConfigs are the senders of the configured channels, each with its
// rate: the SMS from-number (or Messaging Service), the voice caller id,
// the WeChat official account and the SMTP relay.
func senderConfigs(cfg config.Config) (cfgs []ratelimit.SenderConfig, keys map[string]string) {
	keys = map[string]string{}
	add := func(channel, id string, perSecond float64, perDay int64, day *time.Location) {
		key := channel + ":" + id
		keys[channel] = key
		// A burst of two seconds' worth. Refused sends come back through
		// the task queue, which schedules in whole seconds and polls for
		// due tasks every WORKER_DELAYED_POLL_INTERVAL: with this headroom
		// they are back before their slot, so the sender never idles while
		// a backlog waits. Over any window W at most burst + rate×W go out.
		burst := SenderBurst(perSecond)
		if channel == "voice" {
			// Calls per second are a hard limit of the account: calls are
			// spaced, one second's worth at most at once.
			burst = max(int(math.Ceil(perSecond)), 1)
		}
		cfgs = append(cfgs, ratelimit.SenderConfig{Key: key, Channel: channel, PerSecond: perSecond, Burst: burst,
			PerDay: perDay, DayZone: day})
	}
	if cfg.Twilio.Enabled() {
		from := cfg.Twilio.From
		if cfg.Twilio.MessagingServiceSID != "" {
			from = cfg.Twilio.MessagingServiceSID
		}
		add("sms", from, cfg.Senders.SMSPerSecond, cfg.Senders.SMSPerDay, nil)
		if cfg.Voice.From != "" {
			add("voice", cfg.Voice.From, cfg.Voice.CallsPerSecond, 0, nil)
		}
	}
	if cfg.WeChat.Enabled() {
		// The official account's quota resets at midnight China time.
		shanghai, _ := time.LoadLocation("Asia/Shanghai")
		add("wechat", cfg.WeChat.AppID, cfg.Senders.WeChatPerSecond, cfg.Senders.WeChatPerDay, shanghai)
	}
	if cfg.Email.Enabled() {
		host := "relay"
		if u, err := url.Parse(cfg.Email.SMTPURL); err == nil && u.Host != "" {
			host = u.Host // never the credentials
		}
		add("email", host, cfg.Senders.EmailPerSecond, cfg.Senders.EmailPerDay, nil)
	}
	return cfgs, keys
}

// SenderBurst is the burst a sender of the rate gets: two seconds' worth
// (see senderConfigs).
func SenderBurst(perSecond float64) int { return max(int(math.Ceil(2*perSecond)), 1) }

// newSenders builds the limiter every worker shares.
func newSenders(cfg config.Config, rdb redis.UniversalClient) (*ratelimit.Senders, *workers.Senders, error) {
	cfgs, keys := senderConfigs(cfg)
	// Asynq schedules in whole seconds and polls for due tasks: refused
	// sends are asked back a second early so none comes back late.
	lim, err := ratelimit.NewSenders(rdb, cfgs, ratelimit.Options{Recovery: cfg.Senders.Recovery, ReturnEarly: time.Second})
	if err != nil {
		return nil, nil, err
	}
	return lim, &workers.Senders{Limiter: lim, Keys: keys}, nil
}
