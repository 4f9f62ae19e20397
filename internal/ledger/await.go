package ledger

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Messages waiting for their provider's final report. Twilio does not
// send a status callback again when the gateway answered it with an error
// (or never got it), so an SMS or a call would otherwise stay `sent`
// forever. A message the provider accepted on a channel whose provider
// reports is indexed by the time it was accepted, until a final status
// reaches it; a reconciler asks the provider about those waiting too long.
//
//	gw:await:<channel>   zset  message id → when it was accepted (unix ms), or last asked about

// awaitKey is a channel's index of messages waiting for a final report.
func awaitKey(channel string) string { return "gw:await:" + channel }

// AwaitsReport says whether a channel's provider reports a final status
// the ledger should wait for (SMS and calls; WeChat template messages are
// reported by push and cannot be asked about, email reports nothing).
func AwaitsReport(channel string) bool { return channel == "sms" || channel == "voice" }

// await indexes an accepted message in pipe (RecordAccepted's round trip).
func (l *Ledger) await(ctx context.Context, pipe redis.Pipeliner, channel, id string, at time.Time) {
	if AwaitsReport(channel) {
		pipe.ZAdd(ctx, awaitKey(channel), redis.Z{Score: float64(at.UnixMilli()), Member: id})
	}
}

// Awaiting returns up to limit messages of a channel that have waited for
// their final report since before `before`, the longest-waiting first.
func (l *Ledger) Awaiting(ctx context.Context, channel string, before time.Time, limit int) ([]string, error) {
	return l.rdb.ZRangeByScore(ctx, awaitKey(channel), &redis.ZRangeBy{Min: "-inf",
		Max: strconv.FormatInt(before.UnixMilli(), 10), Count: int64(limit)}).Result()
}

// AwaitAgain puts a message asked about back in line, as of at.
func (l *Ledger) AwaitAgain(ctx context.Context, channel, id string, at time.Time) error {
	return l.rdb.ZAddXX(ctx, awaitKey(channel), redis.Z{Score: float64(at.UnixMilli()), Member: id}).Err()
}

// Reported takes a message out of the wait for its final report (it has
// one, or will never get one). A failure leaves it to be asked about
// once more, which changes nothing.
func (l *Ledger) Reported(ctx context.Context, channel, id string) {
	if AwaitsReport(channel) {
		_ = l.rdb.ZRem(ctx, awaitKey(channel), id).Err()
	}
}

// ClaimProviderID makes a provider's id this message's unless another
// message holds it already (true when it is, or already was, id's).
func (l *Ledger) ClaimProviderID(ctx context.Context, channel, providerID, id string) (bool, error) {
	ok, err := l.rdb.SetNX(ctx, providerKey(channel, providerID), id, l.retention).Result()
	if err != nil || ok {
		return ok, err
	}
	owner, err := l.rdb.Get(ctx, providerKey(channel, providerID)).Result()
	if err != nil {
		return false, err
	}
	return owner == id, nil
}
