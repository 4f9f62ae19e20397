package service

import (
	"math"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/ratelimit"
	"github.com/patientmsg/gateway/workers"
)

// senderConfigs are the senders of the running channels that declare one
// (channels.Paced), each with its rate: the SMS from-number (or Messaging
// Service), the voice caller id, the WeChat official account, the SMTP
// relay, and any other channel's.
func senderConfigs(chs []channels.Channel) (cfgs []ratelimit.SenderConfig, keys map[string]string) {
	keys = map[string]string{}
	for _, ch := range chs {
		p, ok := ch.(channels.Paced)
		if !ok {
			continue
		}
		s := p.Sender()
		if s.PerSecond <= 0 && s.PerDay <= 0 {
			continue // unlimited
		}
		key := ch.Name() + ":" + s.ID
		keys[ch.Name()] = key
		// A burst of two seconds' worth. Refused sends come back through
		// the task queue, which schedules in whole seconds and polls for
		// due tasks every WORKER_DELAYED_POLL_INTERVAL: with this headroom
		// they are back before their slot, so the sender never idles while
		// a backlog waits. Over any window W at most burst + rate×W go out.
		burst := SenderBurst(s.PerSecond)
		if s.Spaced {
			// A hard limit of the account (calls per second): sends are
			// spaced, one second's worth at most at once.
			burst = max(int(math.Ceil(s.PerSecond)), 1)
		}
		cfgs = append(cfgs, ratelimit.SenderConfig{Key: key, Channel: ch.Name(), PerSecond: s.PerSecond, Burst: burst,
			PerDay: s.PerDay, DayZone: s.DayZone})
	}
	return cfgs, keys
}

// SenderBurst is the burst a sender of the rate gets: two seconds' worth
// (see senderConfigs).
func SenderBurst(perSecond float64) int { return max(int(math.Ceil(2*perSecond)), 1) }

// newSenders builds the limiter every worker shares.
func newSenders(cfg config.Config, rdb redis.UniversalClient, cfgs []ratelimit.SenderConfig, keys map[string]string) (*ratelimit.Senders, *workers.Senders, error) {
	// Asynq schedules in whole seconds and polls for due tasks: refused
	// sends are asked back a second early so none comes back late.
	lim, err := ratelimit.NewSenders(rdb, cfgs, ratelimit.Options{Recovery: cfg.Senders.Recovery, ReturnEarly: time.Second})
	if err != nil {
		return nil, nil, err
	}
	return lim, &workers.Senders{Limiter: lim, Keys: keys}, nil
}
