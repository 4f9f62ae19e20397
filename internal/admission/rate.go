package admission

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/redis/go-redis/v9"
)

// Rate is a request rate with a burst. The zero Rate is no limit.
type Rate struct {
	// PerSecond is the sustained rate (fractions allowed: 0.5 is one
	// request every two seconds).
	PerSecond float64
	// Burst is how many requests may come at once; 0 means two seconds'
	// worth (at least 1).
	Burst int
}

// Unlimited reports whether r limits nothing.
func (r Rate) Unlimited() bool { return r.PerSecond <= 0 }

// Quota is the burst in force: Burst, or two seconds' worth.
func (r Rate) Quota() int {
	if r.Burst > 0 {
		return r.Burst
	}
	return max(int(math.Ceil(2*r.PerSecond)), 1)
}

// Window is how long, in whole seconds, the full burst takes to come back
// after it was used up (at least 1): the w of the RateLimit-Policy header.
func (r Rate) Window() int {
	if r.Unlimited() {
		return 0
	}
	return max(int(math.Ceil(float64(r.Quota())/r.PerSecond)), 1)
}

func (r Rate) check(what string) error {
	if math.IsNaN(r.PerSecond) || math.IsInf(r.PerSecond, 0) || r.PerSecond < 0 || r.Burst < 0 {
		return fmt.Errorf("admission: %s must be a positive rate with a positive burst: %+v", what, r)
	}
	return nil
}

// interval is the time one request takes from the rate, in microseconds.
func (r Rate) interval() int64 { return max(int64(math.Round(1e6/r.PerSecond)), 1) }

// RateState is where a tenant stands against its request rate after a
// request.
type RateState struct {
	// Rate is the tenant's limit; the zero Rate when it has none (the
	// other fields are then zero too).
	Rate Rate
	// Remaining is how many more requests would be admitted right now.
	Remaining int
	// Reset is how long until the whole burst is available again.
	Reset time.Duration
	// Wait is, for a refused request, how long until one is admitted.
	Wait time.Duration
	// Forced says the request was over the rate but, being exempt,
	// admitted and counted.
	Forced bool
}

// RateFor is a tenant's rate: its override, else the default.
func (c *Controller) RateFor(tenant string) Rate {
	if r, ok := c.cfg.TenantRates[tenant]; ok {
		return r
	}
	return c.cfg.TenantRate
}

func rateKey(tenant string) string { return "gw:adm:{" + tenant + "}:rate" }

// gcraScript is a GCRA (generic cell rate algorithm): the key holds the
// tenant's theoretical arrival time (TAT) in microseconds. A request is
// admitted when TAT − now ≤ τ (τ = interval × (burst − 1)) and moves the
// TAT one interval on. An exempt request over the rate is admitted and
// counted, but moves the TAT no further than one interval past the point
// where requests are refused: exempt traffic uses up the tenant's rate
// without running up a debt that would lock it out afterwards.
// The clock is the caller's (ARGV), so tests can move it.
//
// KEYS rate  ARGV now_us, interval_us, burst, exempt (0/1)
// Returns {admitted (0 refused, 1 admitted, 2 admitted over the rate), TAT − now}.
const gcraLua = `
local function gcra(key, now, interval, burst, exempt)
  local tau = interval * (burst - 1)
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local new = tat + interval
  local admitted = 1
  if tat - now > tau then
    if exempt ~= '1' then return 0, tat - now end
    admitted = 2
    local cap = now + tau + interval
    if new > cap then new = math.max(tat, cap) end
  end
  redis.call('SET', key, string.format('%.0f', new), 'PX', math.ceil((new - now) / 1000) + 1000)
  return admitted, new - now
end
`

var gcraScript = redis.NewScript(gcraLua + `
local admitted, debt = gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4])
return {admitted, debt}
`)

// Rate counts a tenant's request against its rate. A request over the
// rate gets a *RateLimitedError (and takes nothing), unless exempt: then
// it is admitted and counted (crisis messages, broadcasts, cancellations
// are never refused by the rate). When Redis cannot be asked, the request
// is admitted and the trouble logged.
func (c *Controller) Rate(ctx context.Context, tenant string, exempt bool) (RateState, error) {
	rate := c.RateFor(tenant)
	if rate.Unlimited() {
		return RateState{}, nil
	}
	interval, quota := rate.interval(), rate.Quota()
	res, err := gcraScript.Run(ctx, c.rdb, []string{rateKey(tenant)}, c.cfg.Now().UnixMicro(), interval, quota, b01(exempt)).Int64Slice()
	if err != nil || len(res) != 2 {
		c.log.Warn("tenant request rate not checked: request admitted", "tenant", tenant, "err", err)
		return RateState{}, nil
	}
	return rateStateOf(tenant, rate, res[0], res[1])
}

// rateStateOf reads the GCRA's outcome (0 refused, 1 admitted, 2 admitted
// over the rate) and the tenant's debt (TAT − now, in microseconds).
func rateStateOf(tenant string, rate Rate, admitted, debt int64) (RateState, error) {
	interval, quota := rate.interval(), rate.Quota()
	tau := interval * int64(quota-1)
	st := RateState{Rate: rate, Reset: time.Duration(debt) * time.Microsecond}
	if admitted == 0 {
		st.Wait = time.Duration(debt-tau) * time.Microsecond
		return st, &RateLimitedError{Tenant: tenant, State: st}
	}
	st.Forced = admitted == 2
	if debt <= tau {
		st.Remaining = int((tau-debt)/interval) + 1
	}
	return st, nil
}

func b01(b bool) string {
	if b {
		return "1"
	}
	return "0"
}
