package admission

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// admitScript counts a message request against its tenant's rate and,
// when the rate admits it, reserves the message's place in its backlog:
// both checks of a new message in one round trip (the two keys share the
// tenant's slot).
//
// KEYS rate, backlog  ARGV now_us, interval_us (0: no rate), burst,
// exempt (0/1), id, cost, cap (0: not counted)
// Returns {rate outcome (-1: no rate), debt, backlog outcome (-1: not
// counted), queued cost}.
var admitScript = redis.NewScript(gcraLua + reserveLua + `
local admitted, debt = -1, 0
if tonumber(ARGV[2]) > 0 then
  admitted, debt = gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4])
  if admitted == 0 then return {0, debt, -1, 0} end
end
if tonumber(ARGV[7]) <= 0 then return {admitted, debt, -1, 0} end
local added, queued = reserve(KEYS[2], ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]))
return {admitted, debt, added, queued}
`)

// AdmitMessage is Rate and Reserve of a message request in one round
// trip: the request is counted against its tenant's rate (a crisis
// message is exempt: counted, never refused) and, when the rate admits
// it, the message is counted in its tenant's backlog. It returns where
// the tenant stands against its rate, whether the message was counted in
// the backlog (the caller releases it if the message is not queued after
// all), and the refusal: a *RateLimitedError, or a *BacklogFullError (the
// request was counted against the rate then). Redis trouble admits the
// message uncounted, and is logged.
func (c *Controller) AdmitMessage(ctx context.Context, m Message) (RateState, bool, error) {
	rate := c.RateFor(m.Tenant)
	var interval int64
	if !rate.Unlimited() {
		interval = rate.interval()
	}
	var limit int64
	if c.Counted(m) {
		limit = c.BacklogCap(m.Channel)
	}
	if interval == 0 && limit == 0 {
		return RateState{}, false, nil
	}
	now := c.cfg.Now()
	res, err := admitScript.Run(ctx, c.rdb, []string{rateKey(m.Tenant), backlogKey(m.Tenant, m.Channel)},
		now.UnixMicro(), interval, rate.Quota(), b01(m.Priority == PriorityCrisis),
		m.ID, max(m.Cost, 1), limit).Int64Slice()
	if err != nil || len(res) != 4 {
		c.log.Warn("tenant request rate and backlog not checked: message admitted uncounted", "tenant", m.Tenant, "channel", m.Channel, "err", err)
		return RateState{}, false, nil
	}
	var st RateState
	if res[0] >= 0 {
		if st, err = rateStateOf(m.Tenant, rate, res[0], res[1]); err != nil {
			return st, false, err
		}
	}
	if res[2] < 0 {
		return st, false, nil
	}
	counted, err := c.reserved(m, res[2], res[3])
	return st, counted, err
}
