package service

import (
	"errors"
	"net/http"

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/channels/email"
	"github.com/patientmsg/gateway/channels/twilio"
	"github.com/patientmsg/gateway/channels/wechat"
	"github.com/patientmsg/gateway/internal/config"
)

// buildChannels makes every configured channel; closers release their
// connections at shutdown.
func buildChannels(cfg config.Config, rdb redis.UniversalClient, o Options) (chs []channels.Channel, closers []func() error, err error) {
	tr := o.Transport
	if tr == nil {
		// Keep enough idle connections for every concurrent send: Go's
		// default (2 per host) would redial, and renegotiate TLS, constantly.
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConns = 256
		t.MaxIdleConnsPerHost = 128
		tr = t
	}
	if cfg.Twilio.Enabled() {
		sms, err := twilio.NewSMS(twilio.Config{
			AccountSID: cfg.Twilio.AccountSID, AuthToken: cfg.Twilio.AuthToken, From: cfg.Twilio.From,
			MessagingServiceSID: cfg.Twilio.MessagingServiceSID, APIURL: cfg.Twilio.APIURL, PublicURL: cfg.PublicURL,
			Timeout: cfg.Worker.ProviderTimeout, Transport: tr, Logger: o.Logger,
			Rate: channels.Rate{PerSecond: cfg.Senders.SMSPerSecond, PerDay: cfg.Senders.SMSPerDay},
		})
		if err != nil {
			return nil, nil, err
		}
		chs = append(chs, sms)
		if cfg.Voice.From != "" {
			voice, err := twilio.NewVoice(twilio.VoiceConfig{
				AccountSID: cfg.Twilio.AccountSID, AuthToken: cfg.Twilio.AuthToken, From: cfg.Voice.From,
				APIURL: cfg.Twilio.APIURL, PublicURL: cfg.PublicURL, Timeout: cfg.Worker.ProviderTimeout,
				Transport: tr, Logger: o.Logger, MaxRedials: max(cfg.Voice.MaxCalls-1, 0),
				RedialDelay: cfg.Voice.RedialDelay, CallsPerSecond: cfg.Voice.CallsPerSecond,
			})
			if err != nil {
				return nil, nil, err
			}
			chs = append(chs, voice)
		}
	}
	if cfg.WeChat.Enabled() {
		wc, err := wechat.New(wechat.Config{
			AppID: cfg.WeChat.AppID, AppSecret: cfg.WeChat.AppSecret, Token: cfg.WeChat.Token,
			EncodingAESKey: cfg.WeChat.EncodingAESKey, APIURL: cfg.WeChat.APIURL, Redis: rdb,
			Transport: tr, Timeout: cfg.Worker.ProviderTimeout, Logger: o.Logger,
			PerSecond: cfg.Senders.WeChatPerSecond, PerDay: cfg.Senders.WeChatPerDay,
		})
		if err != nil {
			return nil, nil, err
		}
		chs = append(chs, wc)
	}
	if cfg.Email.Enabled() {
		keys, err := returnKeys(cfg)
		if err != nil {
			return nil, nil, err
		}
		em, err := email.New(email.Config{URL: cfg.Email.SMTPURL, From: cfg.Email.From, PoolSize: cfg.Email.PoolSize,
			Timeout: cfg.Worker.ProviderTimeout, TLSConfig: o.EmailTLS, Logger: o.Logger,
			Rate:    channels.Rate{PerSecond: cfg.Senders.EmailPerSecond, PerDay: cfg.Senders.EmailPerDay},
			Returns: keys, PublicURL: cfg.PublicURL, WebhookSecret: cfg.Email.WebhookSecret, NoDSN: !cfg.Email.DSN})
		if err != nil {
			return nil, nil, err
		}
		chs = append(chs, em)
		closers = append(closers, em.Close)
	}
	if len(chs) == 0 {
		return nil, nil, errors.New("no channel is configured")
	}
	return chs, closers, nil
}

// hasRecordings reports whether a channel keeps call recordings.
func hasRecordings(chs []channels.Channel) bool {
	for _, c := range chs {
		if _, ok := c.(channels.RecordingFetcher); ok {
			return true
		}
	}
	return false
}
