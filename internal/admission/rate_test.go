package admission

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/redistest"
)

// clock is a clock tests move instead of sleeping.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) move(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newController(t *testing.T, cfg Config) (*Controller, *clock) {
	t.Helper()
	clk := newClock()
	cfg.Now, cfg.Logger = clk.Now, quiet()
	c, err := New(redistest.Start(t).Client(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, clk
}

// step is one request of a rate scenario, after moving the clock.
type step struct {
	move      time.Duration
	tenant    string
	exempt    bool
	admitted  bool
	forced    bool
	remaining int
	wait      time.Duration // of a refused request
	reset     time.Duration
}

func TestTheTenantRateLimit(t *testing.T) {
	ms := time.Millisecond
	cases := []struct {
		name  string
		cfg   Config
		steps []step
	}{
		{
			name: "a burst is admitted at once, then one request per interval",
			cfg:  Config{TenantRate: Rate{PerSecond: 10, Burst: 3}},
			steps: []step{
				{tenant: "a", admitted: true, remaining: 2, reset: 100 * ms},
				{tenant: "a", admitted: true, remaining: 1, reset: 200 * ms},
				{tenant: "a", admitted: true, remaining: 0, reset: 300 * ms},
				{tenant: "a", admitted: false, wait: 100 * ms, reset: 300 * ms},
				{move: 40 * ms, tenant: "a", admitted: false, wait: 60 * ms, reset: 260 * ms},
				{move: 60 * ms, tenant: "a", admitted: true, remaining: 0, reset: 300 * ms},
			},
		},
		{
			name: "the burst comes back at the rate",
			cfg:  Config{TenantRate: Rate{PerSecond: 2, Burst: 4}},
			steps: []step{
				{tenant: "a", admitted: true, remaining: 3}, {tenant: "a", admitted: true, remaining: 2},
				{tenant: "a", admitted: true, remaining: 1}, {tenant: "a", admitted: true, remaining: 0},
				{move: time.Second, tenant: "a", admitted: true, remaining: 1, reset: 1500 * ms},
				{move: 10 * time.Second, tenant: "a", admitted: true, remaining: 3, reset: 500 * ms},
			},
		},
		{
			name: "a crisis request over the rate is admitted and counted, without locking the tenant out",
			cfg:  Config{TenantRate: Rate{PerSecond: 1, Burst: 2}},
			steps: []step{
				{tenant: "a", admitted: true, remaining: 1}, {tenant: "a", admitted: true, remaining: 0, reset: 2 * time.Second},
				{tenant: "a", admitted: false, wait: time.Second, reset: 2 * time.Second},
				// Half a second later a routine request would wait 0.5 s; a
				// crisis request is admitted and takes that half second.
				{move: 500 * ms, tenant: "a", exempt: true, admitted: true, forced: true, reset: 2 * time.Second},
				{tenant: "a", admitted: false, wait: time.Second, reset: 2 * time.Second},
				// More crisis requests at once run up no further debt…
				{tenant: "a", exempt: true, admitted: true, forced: true, reset: 2 * time.Second},
				{tenant: "a", exempt: true, admitted: true, forced: true, reset: 2 * time.Second},
				{tenant: "a", exempt: true, admitted: true, forced: true, reset: 2 * time.Second},
				{tenant: "a", admitted: false, wait: time.Second, reset: 2 * time.Second},
				// …so routine requests pass again one interval later.
				{move: time.Second, tenant: "a", admitted: true, remaining: 0, reset: 2 * time.Second},
			},
		},
		{
			name: "an exempt request within the rate is an ordinary one",
			cfg:  Config{TenantRate: Rate{PerSecond: 1, Burst: 2}},
			steps: []step{
				{tenant: "a", exempt: true, admitted: true, remaining: 1, reset: time.Second},
			},
		},
		{
			name: "tenants are limited apart, each with its own override",
			cfg: Config{TenantRate: Rate{PerSecond: 1, Burst: 1},
				TenantRates: map[string]Rate{"big": {PerSecond: 100, Burst: 2}, "free": {}}},
			steps: []step{
				{tenant: "a", admitted: true, remaining: 0},
				{tenant: "a", admitted: false, wait: time.Second},
				{tenant: "b", admitted: true, remaining: 0},
				{tenant: "big", admitted: true, remaining: 1, reset: 10 * ms},
				{tenant: "big", admitted: true, remaining: 0, reset: 20 * ms},
				{tenant: "big", admitted: false, wait: 10 * ms, reset: 20 * ms},
				// "free" has no limit: never refused, no state.
				{tenant: "free", admitted: true}, {tenant: "free", admitted: true}, {tenant: "free", admitted: true},
			},
		},
		{
			name: "a burst of 0 is two seconds' worth",
			cfg:  Config{TenantRate: Rate{PerSecond: 1.5}},
			steps: []step{
				{tenant: "a", admitted: true, remaining: 2}, {tenant: "a", admitted: true, remaining: 1},
				{tenant: "a", admitted: true, remaining: 0}, {tenant: "a", admitted: false},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, clk := newController(t, tc.cfg)
			for i, s := range tc.steps {
				clk.move(s.move)
				st, err := c.Rate(context.Background(), s.tenant, s.exempt)
				var rl *RateLimitedError
				refused := errors.As(err, &rl)
				if err != nil && !refused {
					t.Fatalf("step %d: %v", i, err)
				}
				if refused == s.admitted {
					t.Fatalf("step %d (%s): admitted = %v, want %v (state %+v)", i, s.tenant, !refused, s.admitted, st)
				}
				if st.Forced != s.forced || st.Remaining != s.remaining {
					t.Fatalf("step %d: forced %v remaining %d, want %v %d (state %+v)", i, st.Forced, st.Remaining, s.forced, s.remaining, st)
				}
				if s.wait != 0 && st.Wait != s.wait {
					t.Fatalf("step %d: wait %s, want %s", i, st.Wait, s.wait)
				}
				if refused && rl.RetryAfter() != st.Wait {
					t.Fatalf("step %d: the error's RetryAfter %s is not the state's wait %s", i, rl.RetryAfter(), st.Wait)
				}
				if s.reset != 0 && st.Reset != s.reset {
					t.Fatalf("step %d: reset %s, want %s", i, st.Reset, s.reset)
				}
			}
		})
	}
}

func TestARateLimiterOutageAdmits(t *testing.T) {
	rs := redistest.Start(t)
	if !rs.CanRestart() {
		t.Skip("needs a redis-server the test can stop")
	}
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr, MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	defer rdb.Close()
	c, err := New(rdb, Config{TenantRate: Rate{PerSecond: 1, Burst: 1}, Logger: quiet(),
		BacklogHours: smallBacklog.BacklogHours, SenderRates: smallBacklog.SenderRates})
	if err != nil {
		t.Fatal(err)
	}
	rs.Stop()
	st, err := c.Rate(context.Background(), "a", false)
	if err != nil || !st.Rate.Unlimited() {
		t.Fatalf("with Redis down the request must be admitted (unlimited): %+v %v", st, err)
	}
	// A new message too, uncounted in its backlog.
	st, counted, err := c.AdmitMessage(context.Background(), sms("m1", 1))
	if err != nil || counted || !st.Rate.Unlimited() {
		t.Fatalf("with Redis down a message must be admitted uncounted: %+v counted %v, %v", st, counted, err)
	}
}

func TestRateWindowAndQuota(t *testing.T) {
	cases := []struct {
		name          string
		rate          Rate
		quota, window int
	}{
		{"100/s with a burst of 200", Rate{PerSecond: 100, Burst: 200}, 200, 2},
		{"a default burst is two seconds' worth", Rate{PerSecond: 50}, 100, 2},
		{"a slow rate", Rate{PerSecond: 0.5, Burst: 1}, 1, 2},
		{"a window is at least a second", Rate{PerSecond: 1000, Burst: 10}, 10, 1},
		{"no limit", Rate{}, 1, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if q, w := tc.rate.Quota(), tc.rate.Window(); q != tc.quota || w != tc.window {
				t.Fatalf("quota %d window %d, want %d %d", q, w, tc.quota, tc.window)
			}
		})
	}
}
