package ratelimit

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	_ "time/tzdata" // the quota tests need Asia/Shanghai and America/New_York on any host

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/redistest"
)

// realRedis starts a Redis for a test that depends on the server clock.
func realRedis(t *testing.T) *redistest.Server {
	t.Helper()
	srv := redistest.Start(t)
	if srv.Kind == redistest.KindMiniredis {
		t.Skip("miniredis has no TIME-based clock to test against")
	}
	return srv
}

func newSenders(t *testing.T, rdb redis.UniversalClient, o Options, cfgs ...SenderConfig) *Senders {
	t.Helper()
	s, err := NewSenders(rdb, cfgs, o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func reserve(t *testing.T, s *Senders, r Request) Decision {
	t.Helper()
	d, err := s.Reserve(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func status(t *testing.T, s *Senders, key string) SenderStatus {
	t.Helper()
	all, err := s.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range all {
		if st.Key == key {
			return st
		}
	}
	t.Fatalf("no status for %q in %+v", key, all)
	return SenderStatus{}
}

// sendOne behaves like a worker holding one message: it asks until it is
// allowed, sleeping each refusal's Wait (the task is re-scheduled, not
// retried), and returns when it was admitted and how often it was refused.
func sendOne(ctx context.Context, s *Senders, r Request) (admitted time.Time, refusals int, err error) {
	for {
		d, err := s.Reserve(ctx, r)
		if err != nil {
			return time.Time{}, refusals, err
		}
		if d.Allowed {
			return time.Now(), refusals, nil
		}
		refusals++
		select {
		case <-ctx.Done():
			return time.Time{}, refusals, ctx.Err()
		case <-time.After(d.Wait):
		}
	}
}

func TestSendersHoldTheRateAcrossProcesses(t *testing.T) {
	srv := realRedis(t)
	const rate, burst, run = 50.0, 5, 2 * time.Second
	cfg := SenderConfig{Key: "sms:+15005550006", PerSecond: rate, Burst: burst}
	// Two clients with their own connection pools stand for two worker processes.
	procs := []*Senders{newSenders(t, srv.Client(), Options{}, cfg), newSenders(t, srv.Client(), Options{}, cfg)}

	var admitted, refused atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(run)
	for p, s := range procs {
		for w := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := Request{Sender: cfg.Key, Tenant: []string{"clinic-a", "clinic-b", "clinic-c"}[(p+w)%3], Priority: "normal", Cost: 1}
				for time.Now().Before(deadline) {
					d, err := s.Reserve(context.Background(), r)
					if err != nil {
						t.Error(err)
						return
					}
					if d.Allowed {
						admitted.Add(1)
						continue
					}
					refused.Add(1)
					if d.Wait <= 0 {
						t.Errorf("refused with wait %s", d.Wait)
						return
					}
					time.Sleep(min(d.Wait, time.Until(deadline)))
				}
			}()
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	got := admitted.Load()
	// The documented bound for unit-cost normal traffic: r×W + (B − ¼) + 1.
	limit := int64(math.Floor(rate*elapsed.Seconds() + burst - 0.25 + 1))
	t.Logf("%d admitted, %d refused in %s (limit %d)", got, refused.Load(), elapsed, limit)
	if got > limit {
		t.Fatalf("%d admitted in %s at %v/s with burst %d: over the limit %d", got, elapsed, rate, burst, limit)
	}
	if want := int64(0.95 * rate * run.Seconds()); got < want {
		t.Fatalf("%d admitted in %s at %v/s: under 95%% of the rate (%d); refused tasks do not come back in time", got, run, rate, want)
	}
	// The refusals are paced, not spinning: about one per admission per busy lane.
	if r := refused.Load(); r > 10*got {
		t.Fatalf("%d refusals for %d admissions: workers are spinning", r, got)
	}
}

func TestCostWeighsLikeThatManyRequests(t *testing.T) {
	srv := realRedis(t)
	const interval = 100 * time.Millisecond
	s := newSenders(t, srv.Client(), Options{},
		SenderConfig{Key: "sms:a", PerSecond: 10, Burst: 3},
		SenderConfig{Key: "sms:b", PerSecond: 10, Burst: 3},
		SenderConfig{Key: "sms:c", PerSecond: 10, Burst: 1})

	// One 3-segment SMS uses the burst of 3 like three 1-segment ones.
	if d := reserve(t, s, Request{Sender: "sms:a", Cost: 3}); !d.Allowed {
		t.Fatalf("a 3-segment SMS on an idle sender with burst 3 refused: %+v", d)
	}
	for i := range 3 {
		if d := reserve(t, s, Request{Sender: "sms:b", Cost: 1}); !d.Allowed {
			t.Fatalf("segment %d refused: %+v", i, d)
		}
	}
	// (After a single unit the next one would be admitted: the burst is 3.)
	for _, k := range []string{"sms:a", "sms:b"} {
		d := reserve(t, s, Request{Sender: k, Cost: 1})
		if d.Allowed || d.Reason != ReasonRate || d.Wait <= 0 || d.Wait > interval+interval/4 {
			t.Fatalf("%s after 3 units: %+v, want refused for at most an interval and a quarter", k, d)
		}
	}
	if st := status(t, s, "sms:a"); st.UsedToday != 3 {
		t.Fatalf("sms:a used %d today, want 3 units", st.UsedToday)
	}

	// A request larger than the burst is still admitted on an idle sender,
	// and the units it borrowed are paid for by the next request.
	if d := reserve(t, s, Request{Sender: "sms:c", Priority: "bulk", Cost: 3}); !d.Allowed {
		t.Fatalf("a 3-segment SMS refused on an idle sender with burst 1: %+v", d)
	}
	// A bulk request is due when the TAT is within half an interval, and
	// slots are rounded up to the interval grid: 2.5 to 3.5 intervals.
	d := reserve(t, s, Request{Sender: "sms:c", Priority: "bulk", Cost: 1})
	if d.Allowed || d.Wait < 5*interval/2-10*time.Millisecond || d.Wait > 7*interval/2 {
		t.Fatalf("after a 3-segment SMS at 10/s: %+v, want a wait of about %s", d, 3*interval)
	}
}

func TestCrisisPassesBulkThatSaturatesTheSender(t *testing.T) {
	srv := realRedis(t)
	const rate, run = 20.0, 1500 * time.Millisecond
	key := "sms:+15005550006"
	s := newSenders(t, srv.Client(), Options{}, SenderConfig{Key: key, PerSecond: rate, Burst: 1})

	// Bulk takes every slot it can: then more bulk is refused, crisis is not.
	if d := reserve(t, s, Request{Sender: key, Tenant: "newsletter", Priority: "bulk", Cost: 2}); !d.Allowed {
		t.Fatalf("bulk refused on an idle sender: %+v", d)
	}
	if d := reserve(t, s, Request{Sender: key, Tenant: "other", Priority: "bulk", Cost: 1}); d.Allowed || d.Reason != ReasonRate {
		t.Fatalf("bulk on a sender saturated by bulk: %+v, want refused", d)
	}
	for i := range 2 {
		if d := reserve(t, s, Request{Sender: key, Tenant: "ward-3", Priority: "crisis", Cost: 1}); !d.Allowed {
			t.Fatalf("crisis request %d waits %s behind bulk (%s)", i, d.Wait, d.Reason)
		}
	}

	// The same while bulk workers keep the sender busy.
	ctx, cancel := context.WithTimeout(context.Background(), run)
	defer cancel()
	var bulk, bulkUnits atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				cost := 1 + w%2
				if _, _, err := sendOne(ctx, s, Request{Sender: key, Tenant: "newsletter", Priority: "bulk", Cost: cost}); err == nil {
					bulk.Add(1)
					bulkUnits.Add(int64(cost))
				}
			}
		}()
	}
	crisis := 2 + 2 // the units admitted above
	for range 3 {
		time.Sleep(run / 4)
		if d := reserve(t, s, Request{Sender: key, Tenant: "ward-3", Priority: "crisis", Cost: 1}); !d.Allowed {
			t.Fatalf("a crisis request waits %s behind bulk workers (%s)", d.Wait, d.Reason)
		}
		if d := reserve(t, s, Request{Sender: key, Tenant: "ward-3", Priority: "high", Cost: 1}); !d.Allowed {
			t.Fatalf("a high request waits %s behind bulk workers", d.Wait)
		}
		crisis += 2
	}
	wg.Wait()
	elapsed := time.Since(start)
	// Crisis traffic only borrowed from its headroom: the total stays within
	// r×W + H(crisis) + c.
	units := float64(bulkUnits.Load() + int64(crisis))
	headroom := 0.75 + math.Max(2, rate*2)
	if limit := rate*elapsed.Seconds() + headroom + 2; units > limit {
		t.Fatalf("%.0f units in %s at %v/s: over the bound %.1f", units, elapsed, rate, limit)
	}
	t.Logf("%d bulk requests (%d units) and %d crisis/high units in %s", bulk.Load(), bulkUnits.Load(), crisis, elapsed)
	// Bulk had the rest of the sender.
	if min := int64((rate*run.Seconds() - float64(crisis)) * 0.7); bulkUnits.Load() < min {
		t.Fatalf("only %d bulk units in %s (want ≥ %d): bulk did not get the rest of the sender", bulkUnits.Load(), run, min)
	}
}

func TestRefusedRequestsComeBackSpreadOut(t *testing.T) {
	srv := realRedis(t)
	const interval = 20 * time.Millisecond
	key := "sms:+15005550006"
	s := newSenders(t, srv.Client(), Options{}, SenderConfig{Key: key, PerSecond: 50, Burst: 1})
	// A 25-unit request keeps the sender busy for half a second, longer than
	// it takes to ask 200 times.
	if d := reserve(t, s, Request{Sender: key, Tenant: "a", Priority: "bulk", Cost: 25}); !d.Allowed {
		t.Fatalf("first request refused: %+v", d)
	}
	// 200 tasks refused one after the other each get their own slot, one
	// interval after the previous one. The limiter reads the Redis
	// server's clock somewhere within each call, so a slot is known to
	// within that call's duration: [lo, hi] since t0.
	t0 := time.Now()
	var lo, hi []time.Duration
	for range 200 {
		before := time.Since(t0)
		d := reserve(t, s, Request{Sender: key, Tenant: "a", Priority: "bulk", Cost: 1})
		after := time.Since(t0)
		if d.Allowed || d.Reason != ReasonRate {
			t.Fatalf("Reserve: %+v; want refused for rate", d)
		}
		lo, hi = append(lo, before+d.Wait), append(hi, after+d.Wait)
	}
	if hi[0] < 24*interval || lo[0] > 26*interval {
		t.Fatalf("the first refused task comes back after %s–%s, want when the 25 units are through (%s)", lo[0], hi[0], 25*interval)
	}
	for i := 1; i < len(lo); i++ {
		// The gap lies within [lo_i − hi_{i−1}, hi_i − lo_{i−1}]; it must be
		// able to be about one interval.
		least, most := lo[i]-hi[i-1], hi[i]-lo[i-1]
		if most < interval/2 || least > 3*interval/2 {
			t.Fatalf("tasks %d and %d come back %s–%s apart, want about %s (a herd or a hole)", i-1, i, least, most, interval)
		}
	}
	// Refusing took no capacity: once the first slot is surely reached (its
	// upper bound: the lower one may still be a few milliseconds early on
	// a busy machine) the sender admits again.
	time.Sleep(time.Until(t0.Add(hi[0])))
	if d := reserve(t, s, Request{Sender: key, Tenant: "b", Priority: "bulk", Cost: 1}); !d.Allowed {
		t.Fatalf("200 refusals took capacity: %+v", d)
	}
}

func TestATenantWithFewMessagesIsNotStuckBehindABacklog(t *testing.T) {
	srv := realRedis(t)
	const rate, interval = 25.0, 40 * time.Millisecond
	key := "sms:+15005550006"
	s := newSenders(t, srv.Client(), Options{}, SenderConfig{Key: key, PerSecond: rate, Burst: 1})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()

	// admissions records, in order, which tenant each admitted message was of.
	var mu sync.Mutex
	var admissions []string
	admitted := func(tenant string) {
		mu.Lock()
		admissions = append(admissions, tenant)
		mu.Unlock()
	}
	bDone := make(chan struct{})
	var bLeft atomic.Int32
	bLeft.Store(20)
	// worker is a message's task: first decision d, then sleep and ask again.
	worker := func(r Request, d Decision) {
		defer wg.Done()
		if !d.Allowed {
			select {
			case <-ctx.Done():
				return
			case <-time.After(d.Wait):
			}
			if _, _, err := sendOne(ctx, s, r); err != nil {
				return
			}
		}
		admitted(r.Tenant)
		if r.Tenant == "clinic-b" && bLeft.Add(-1) == 0 {
			close(bDone)
		}
	}

	// Tenant A queues 500 messages, then tenant B 20 at the same priority;
	// each task sleeps the Wait it got, as a re-scheduled task would.
	for _, q := range []struct {
		tenant string
		n      int
	}{{"clinic-a", 500}, {"clinic-b", 20}} {
		r := Request{Sender: key, Tenant: q.tenant, Priority: "normal", Cost: 1}
		for range q.n {
			d := reserve(t, s, r)
			wg.Add(1)
			go worker(r, d)
		}
	}
	bStart := time.Now()
	select {
	case <-bDone:
	case <-time.After(4 * time.Second):
		t.Fatal("tenant B's 20 messages were not all sent within 4s")
	}
	took := time.Since(bStart)
	mu.Lock()
	aFirst := 0
	for _, tenant := range admissions {
		if tenant == "clinic-a" {
			aFirst++
		}
	}
	mu.Unlock()
	t.Logf("B's 20 sent in %s (%.1f intervals); A sent %d by then", took, float64(took)/float64(interval), aFirst)
	// Behind A's backlog, B would come after 500 of A's. Shared fairly, A and
	// B alternate: about 20 of A's go first (more than 60 is off by ~6σ).
	if aFirst > 60 {
		t.Fatalf("%d of tenant A's messages went before tenant B's 20: B waited behind A's backlog", aFirst)
	}
	if aFirst < 3 {
		t.Fatalf("only %d of tenant A's messages went while B sent 20: A was starved", aFirst)
	}
}

func TestThrottlesSlowTheSenderAndItRecovers(t *testing.T) {
	srv := realRedis(t)
	ctx := context.Background()
	key := "sms:+15005550006"
	s := newSenders(t, srv.Client(), Options{Recovery: time.Second, Hold: 300 * time.Millisecond},
		SenderConfig{Key: key, PerSecond: 10, Burst: 1})

	if st := status(t, s, key); st.EffectivePerSecond != 10 || st.LastThrottleAt != nil || st.Throttles != 0 || st.BackoffUntil != nil {
		t.Fatalf("status of an untouched sender: %+v", st)
	}
	if err := s.Throttled(ctx, key, 0, "20429"); err != nil {
		t.Fatal(err)
	}
	st := status(t, s, key)
	if st.EffectivePerSecond < 5 || st.EffectivePerSecond > 5.5 {
		t.Fatalf("effective rate after a throttle %v, want about half of 10", st.EffectivePerSecond)
	}
	// A second throttle within Hold was a request sent at the old rate.
	if err := s.Throttled(ctx, key, 0, "30001"); err != nil {
		t.Fatal(err)
	}
	st = status(t, s, key)
	if st.EffectivePerSecond < 5 || st.EffectivePerSecond > 5.5 {
		t.Fatalf("effective rate after two throttles within Hold %v, want it halved once", st.EffectivePerSecond)
	}
	if st.ConfiguredPerSecond != 10 || st.Throttles != 2 || st.LastThrottleCode != "30001" || st.LastThrottleAt == nil || st.BackoffUntil != nil {
		t.Fatalf("status after two throttles: %+v", st)
	}
	if ago := time.Since(*st.LastThrottleAt); ago < -time.Second || ago > time.Second {
		t.Fatalf("last throttle reported %s ago", ago)
	}
	// The sender is now paced at the lower rate: 5 units take about a
	// second instead of half of one.
	if d := reserve(t, s, Request{Sender: key, Priority: "bulk", Cost: 5}); !d.Allowed {
		t.Fatalf("refused on an idle sender: %+v", d)
	}
	if d := reserve(t, s, Request{Sender: key, Priority: "bulk", Cost: 1}); d.Allowed || d.Wait < 750*time.Millisecond {
		t.Fatalf("at about 5/s the next slot is ~1s away, got %+v", d)
	}

	// The rate climbs back over Recovery.
	time.Sleep(500 * time.Millisecond)
	if eff := status(t, s, key).EffectivePerSecond; eff < 6.5 || eff > 9 {
		t.Fatalf("effective rate half-way through recovery %v, want about 7.5", eff)
	}
	time.Sleep(600 * time.Millisecond)
	if eff := status(t, s, key).EffectivePerSecond; eff != 10 {
		t.Fatalf("effective rate after Recovery %v, want the configured 10", eff)
	}

	// Retry-After blocks every priority until it has passed.
	if err := s.Throttled(ctx, key, 400*time.Millisecond, "429"); err != nil {
		t.Fatal(err)
	}
	st = status(t, s, key)
	if st.BackoffUntil == nil || time.Until(*st.BackoffUntil) < 250*time.Millisecond || time.Until(*st.BackoffUntil) > 450*time.Millisecond {
		t.Fatalf("backoff after Retry-After 400ms: %v", st.BackoffUntil)
	}
	if st.Throttles != 3 || st.LastThrottleCode != "429" || st.EffectivePerSecond > 5.5 {
		t.Fatalf("status after a third throttle past Hold: %+v", st)
	}
	var waits []time.Duration
	for _, p := range []string{"crisis", "crisis", "bulk"} {
		d := reserve(t, s, Request{Sender: key, Tenant: "ward-3", Priority: p, Cost: 1})
		if d.Allowed || d.Reason != ReasonProviderBackoff || d.Wait < 250*time.Millisecond {
			t.Fatalf("%s request during a Retry-After: %+v, want refused until it passes", p, d)
		}
		waits = append(waits, d.Wait)
	}
	// It comes back when the Retry-After ends, give or take the 100ms grid.
	if waits[0] > 520*time.Millisecond {
		t.Fatalf("the first crisis request waits %s, well past the Retry-After", waits[0])
	}
	// One effective interval (~200ms at 5/s), give or take the 100ms grid.
	if gap := waits[1] - waits[0]; gap < 90*time.Millisecond || gap > 310*time.Millisecond {
		t.Fatalf("two refused crisis requests come back %s apart, want about one interval (~200ms at 5/s)", gap)
	}
	time.Sleep(waits[0])
	if d := reserve(t, s, Request{Sender: key, Tenant: "ward-3", Priority: "crisis", Cost: 1}); !d.Allowed {
		t.Fatalf("crisis refused after the Retry-After passed: %+v", d)
	}
	if st := status(t, s, key); st.BackoffUntil != nil {
		t.Fatalf("backoff still reported after it passed: %v", st.BackoffUntil)
	}
}

func TestThrottlesStopAtMinFraction(t *testing.T) {
	srv := realRedis(t)
	key := "wechat:wx123"
	s := newSenders(t, srv.Client(), Options{Hold: 10 * time.Millisecond, MinFraction: 0.1, Recovery: time.Minute},
		SenderConfig{Key: key, PerSecond: 10})
	for range 6 {
		if err := s.Throttled(context.Background(), key, 0, "45009"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(15 * time.Millisecond)
	}
	st := status(t, s, key)
	if st.EffectivePerSecond < 1 || st.EffectivePerSecond > 1.05 || st.Throttles != 6 {
		t.Fatalf("after 6 halvings of 10/s with a floor of 10%%: %+v, want 1/s", st)
	}
	if st.Channel != "wechat" {
		t.Fatalf("channel %q, want it taken from the key", st.Channel)
	}
}

func TestTheDailyQuotaResetsAtLocalMidnight(t *testing.T) {
	srv := realRedis(t)
	shanghai, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		t.Fatal(err)
	}
	nextMidnight := func() time.Time {
		y, m, d := time.Now().In(shanghai).Date()
		return time.Date(y, m, d+1, 0, 0, 0, 0, shanghai)
	}
	if time.Until(nextMidnight()) < 10*time.Second {
		time.Sleep(time.Until(nextMidnight()) + time.Second)
	}
	key := "wechat:wx123"
	s := newSenders(t, srv.Client(), Options{}, SenderConfig{Key: key, PerSecond: 10, Burst: 10, PerDay: 5, DayZone: shanghai})

	for i := range 2 {
		if d := reserve(t, s, Request{Sender: key, Tenant: "t", Cost: 2}); !d.Allowed {
			t.Fatalf("request %d within the quota refused: %+v", i, d)
		}
	}
	first := reserve(t, s, Request{Sender: key, Tenant: "t", Cost: 2})
	want := time.Until(nextMidnight())
	if first.Allowed || first.Reason != ReasonDailyQuota || first.Wait < want-2*time.Second || first.Wait > want+time.Second {
		t.Fatalf("over the quota: %+v, want refused until midnight Asia/Shanghai (in %s)", first, want)
	}
	if d := reserve(t, s, Request{Sender: key, Tenant: "t", Cost: 1}); !d.Allowed {
		t.Fatalf("the last unit of the quota refused: %+v", d)
	}
	crisis := reserve(t, s, Request{Sender: key, Tenant: "t", Priority: "crisis", Cost: 1})
	if crisis.Allowed || crisis.Reason != ReasonDailyQuota {
		t.Fatalf("crisis over the quota: %+v, want refused (the provider would refuse it)", crisis)
	}
	// The backlog returns after midnight at the sender's pace, not all at once.
	next := reserve(t, s, Request{Sender: key, Tenant: "t", Cost: 1})
	if gap := next.Wait - first.Wait; next.Reason != ReasonDailyQuota || gap < 150*time.Millisecond || gap > 200*time.Millisecond {
		t.Fatalf("after a refused 2-unit request, the next returns %s later (%+v), want 2 intervals (200ms)", gap, next)
	}
	if st := status(t, s, key); st.UsedToday != 5 || st.PerDay != 5 {
		t.Fatalf("status: used %d of %d, want 5 of 5", st.UsedToday, st.PerDay)
	}
	ttl := srv.Client().PTTL(context.Background(), stateKey(key)+":day:"+time.Now().In(shanghai).Format("20060102")).Val()
	if ttl < want || ttl > want+time.Hour+time.Minute {
		t.Fatalf("the day counter expires in %s, want about an hour after midnight (%s)", ttl, want)
	}
}

func TestDayWindowFollowsTheZone(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	// 2026-03-08 is the 23-hour day when New York moves to summer time.
	labels, starts := dayWindow(time.Date(2026, 3, 8, 17, 0, 0, 0, time.UTC), ny)
	if labels != [3]string{"20260307", "20260308", "20260309"} {
		t.Fatalf("labels %v", labels)
	}
	if d := time.Duration(starts[2]-starts[1]) * time.Microsecond; d != 23*time.Hour {
		t.Fatalf("2026-03-08 in New York lasts %s, want 23h", d)
	}
	if got := time.UnixMicro(starts[1]).UTC(); !got.Equal(time.Date(2026, 3, 8, 5, 0, 0, 0, time.UTC)) {
		t.Fatalf("the day starts at %s, want 05:00 UTC", got)
	}
	shanghai, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		t.Fatal(err)
	}
	// 23:30 UTC is already the next morning in Shanghai.
	labels, starts = dayWindow(time.Date(2026, 11, 22, 23, 30, 0, 0, time.UTC), shanghai)
	if labels[1] != "20261123" || !time.UnixMicro(starts[2]).Equal(time.Date(2026, 11, 23, 16, 0, 0, 0, time.UTC)) {
		t.Fatalf("Shanghai day %s ending %s", labels[1], time.UnixMicro(starts[2]).UTC())
	}
}

func TestSendersRunOnRedisClusterAndLeaveNothingBehind(t *testing.T) {
	rs := redistest.StartCluster(t)
	rdb := rs.Client()
	ctx := context.Background()
	if err := rdb.Eval(ctx, "return 1", []string{"a", "b"}).Err(); err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
		t.Fatalf("the test cluster does not refuse a cross-slot script: %v", err)
	}
	key := "sms:+15005550006"
	s := newSenders(t, rdb, Options{}, SenderConfig{Key: key, PerSecond: 5, Burst: 1, PerDay: 1000})
	if d := reserve(t, s, Request{Sender: key, Tenant: "a", Cost: 1}); !d.Allowed {
		t.Fatalf("first request refused: %+v", d)
	}
	if d := reserve(t, s, Request{Sender: key, Tenant: "a", Cost: 1}); d.Allowed {
		t.Fatal("second request at 5/s with burst 1 admitted")
	}
	if err := s.Throttled(ctx, key, time.Second, "20429"); err != nil {
		t.Fatal(err)
	}
	if st := status(t, s, key); st.UsedToday != 1 || st.Throttles != 1 {
		t.Fatalf("status %+v", st)
	}
	keys, err := rdb.Keys(ctx, "gw:snd:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 3 {
		t.Fatalf("keys %v, want the state, the lanes and today's counter", keys)
	}
	slot := rdb.ClusterKeySlot(ctx, keys[0]).Val()
	for _, k := range keys {
		if got := rdb.ClusterKeySlot(ctx, k).Val(); got != slot {
			t.Fatalf("%s is in slot %d, %s in %d", k, got, keys[0], slot)
		}
		if ttl := rdb.PTTL(ctx, k).Val(); ttl <= 0 {
			t.Fatalf("%s has no TTL (%s)", k, ttl)
		}
	}
}

func TestStaleLanesAreForgotten(t *testing.T) {
	srv := realRedis(t)
	key := "sms:+15005550006"
	rdb := srv.Client()
	s := newSenders(t, rdb, Options{}, SenderConfig{Key: key, PerSecond: 100, Burst: 1})
	ctx := context.Background()
	// 10 units keep the sender busy for 100ms, while 20 tenants are refused.
	if d := reserve(t, s, Request{Sender: key, Priority: "bulk", Cost: 10}); !d.Allowed {
		t.Fatalf("first request refused: %+v", d)
	}
	lanes := stateKey(key) + ":lanes"
	for i := range 20 {
		if d := reserve(t, s, Request{Sender: key, Tenant: string(rune('a' + i)), Priority: "bulk", Cost: 1}); d.Allowed {
			t.Fatalf("tenant %d admitted on a busy sender", i)
		}
	}
	if n := rdb.ZCard(ctx, lanes).Val(); n != 20 {
		t.Fatalf("%d lanes, want one per refused tenant (20)", n)
	}
	time.Sleep(250 * time.Millisecond) // every lane's slot has passed
	// Each call forgets at most 16 stale lanes.
	for i := range 2 {
		if d := reserve(t, s, Request{Sender: key, Priority: "crisis", Cost: 1}); !d.Allowed {
			t.Fatalf("crisis request %d refused on an idle sender: %+v", i, d)
		}
	}
	if n := rdb.ZCard(ctx, lanes).Val(); n != 0 {
		t.Fatalf("%d stale lanes left, want none", n)
	}
}

// TestSendersWorkOnEveryRedis runs the scripts on whatever Redis the host
// offers, miniredis included (the embedded Redis of the dev mode).
func TestSendersWorkOnEveryRedis(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	key := "email:smtp.example.org"
	s := newSenders(t, srv.Client(), Options{}, SenderConfig{Key: key, PerSecond: 1, PerDay: 10})
	if d := reserve(t, s, Request{Sender: key, Tenant: "a", Priority: "bulk", Cost: 1}); !d.Allowed {
		t.Fatalf("first request refused: %+v", d)
	}
	d := reserve(t, s, Request{Sender: key, Tenant: "a", Priority: "bulk", Cost: 1})
	if d.Allowed || d.Reason != ReasonRate || d.Wait <= 0 || d.Wait > 2*time.Second {
		t.Fatalf("second request at 1/s: %+v, want refused for about a second", d)
	}
	if err := s.Throttled(ctx, key, time.Minute, "421"); err != nil {
		t.Fatal(err)
	}
	if d := reserve(t, s, Request{Sender: key, Priority: "crisis", Cost: 1}); d.Allowed || d.Reason != ReasonProviderBackoff {
		t.Fatalf("crisis during a Retry-After: %+v", d)
	}
	st := status(t, s, key)
	if st.EffectivePerSecond < 0.5 || st.EffectivePerSecond > 0.6 || st.UsedToday != 1 || st.BackoffUntil == nil || st.LastThrottleCode != "421" {
		t.Fatalf("status %+v", st)
	}
}

func TestUnknownSendersAreNotLimited(t *testing.T) {
	srv := redistest.Start(t)
	s := newSenders(t, srv.Client(), Options{}, SenderConfig{Key: "voice:+15005550006", PerSecond: 1})
	for range 3 {
		if d := reserve(t, s, Request{Sender: "sms:+15005550009", Cost: 5}); !d.Allowed {
			t.Fatalf("unknown sender refused: %+v", d)
		}
	}
	if err := s.Throttled(context.Background(), "sms:+15005550009", time.Second, "429"); err != nil {
		t.Fatal(err)
	}
	c, ok := s.Config("voice:+15005550006")
	if !ok || c.Burst != 1 || c.DayZone != time.UTC || c.Channel != "voice" {
		t.Fatalf("Config: %+v, %v; want defaults applied", c, ok)
	}
	if _, ok := s.Config("sms:+15005550009"); ok {
		t.Fatal("Config of an unknown sender")
	}
}

func TestSenderConfigurationIsValidated(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	t.Cleanup(func() { _ = rdb.Close() })
	ok := SenderConfig{Key: "sms:a", PerSecond: 1}
	for _, tt := range []struct {
		name string
		cfgs []SenderConfig
		o    Options
		want string
	}{
		{"zero rate", []SenderConfig{{Key: "sms:a"}}, Options{}, "rate must be positive"},
		{"negative rate", []SenderConfig{{Key: "sms:a", PerSecond: -1}}, Options{}, "rate must be positive"},
		{"NaN rate", []SenderConfig{{Key: "sms:a", PerSecond: math.NaN()}}, Options{}, "rate must be positive"},
		{"infinite rate", []SenderConfig{{Key: "sms:a", PerSecond: math.Inf(1)}}, Options{}, "rate must be positive"},
		{"duplicate key", []SenderConfig{ok, {Key: "sms:a", PerSecond: 2}}, Options{}, "configured twice"},
		{"empty key", []SenderConfig{{PerSecond: 1}}, Options{}, "no key"},
		{"negative burst", []SenderConfig{{Key: "sms:a", PerSecond: 1, Burst: -1}}, Options{}, "burst"},
		{"negative quota", []SenderConfig{{Key: "sms:a", PerSecond: 1, PerDay: -1}}, Options{}, "daily quota"},
		{"decrease above 1", []SenderConfig{ok}, Options{Decrease: 1.5}, "Decrease"},
		{"negative min fraction", []SenderConfig{ok}, Options{MinFraction: -0.1}, "MinFraction"},
		{"negative recovery", []SenderConfig{ok}, Options{Recovery: -time.Second}, "Recovery"},
		{"negative hold", []SenderConfig{ok}, Options{Hold: -time.Second}, "Hold"},
	} {
		if _, err := NewSenders(rdb, tt.cfgs, tt.o); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one mentioning %q", tt.name, err, tt.want)
		}
	}
	if _, err := NewSenders(nil, []SenderConfig{ok}, Options{}); err == nil {
		t.Error("a nil client was accepted")
	}
	s, err := NewSenders(rdb, []SenderConfig{ok, {Key: "sms:b", PerSecond: 0.5, Burst: 3}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s.opts != (Options{Decrease: DefaultDecrease, MinFraction: DefaultMinFraction, Recovery: DefaultRecovery, Hold: DefaultHold}) {
		t.Fatalf("defaults %+v", s.opts)
	}
	// A Redis failure is an error, not a decision.
	closed := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	_ = closed.Close()
	s, err = NewSenders(closed, []SenderConfig{ok}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d, err := s.Reserve(context.Background(), Request{Sender: "sms:a"}); err == nil {
		t.Fatalf("Reserve without Redis: %+v and no error", d)
	}
	if err := s.Throttled(context.Background(), "sms:a", 0, "429"); err == nil {
		t.Fatal("Throttled without Redis: no error")
	}
	if _, err := s.Status(context.Background()); err == nil {
		t.Fatal("Status without Redis: no error")
	}
}

// A task queue brings refused requests back in whole-second batches, in an
// order of its own: a request that was refused keeps its place in line, so
// the batch is admitted by place, not by who asks first.
func TestARefusedRequestKeepsItsPlaceInLine(t *testing.T) {
	srv := realRedis(t)
	s := newSenders(t, srv.Client(), Options{}, SenderConfig{Key: "sms:+15005550006", PerSecond: 20, Burst: 20})
	ask := func(tenant string, i int) Decision {
		return reserve(t, s, Request{Sender: "sms:+15005550006", Tenant: tenant, Priority: "bulk", ID: fmt.Sprintf("%s-%03d", tenant, i)})
	}
	// Clinic A's backlog of 200 takes the burst and lines up behind it.
	var aRefused []int
	for i := 0; i < 200; i++ {
		if !ask("a", i).Allowed {
			aRefused = append(aRefused, i)
		}
	}
	// Clinic B's 10 come later: their lane starts at the sender's pace.
	var bWaits []time.Duration
	for i := 0; i < 10; i++ {
		d := ask("b", i)
		if d.Allowed {
			t.Fatalf("clinic B's request %d was admitted while the sender was saturated", i)
		}
		bWaits = append(bWaits, d.Wait)
	}
	time.Sleep(slices.Max(bWaits) + 50*time.Millisecond)
	// The batch comes back with all of clinic A's due requests asking first.
	admittedA, admittedB := 0, 0
	for _, i := range aRefused[:40] {
		if ask("a", i).Allowed {
			admittedA++
		}
	}
	for i := 0; i < 10; i++ {
		if ask("b", i).Allowed {
			admittedB++
		}
	}
	// About half a second has freed about 10 places, and clinic B's places
	// are among the first 10 as often as clinic A's: asking first must not
	// have given them to clinic A.
	if admittedB < 4 || admittedA+admittedB > 12 {
		t.Fatalf("admitted A %d, B %d: clinic A's requests that asked first took clinic B's places", admittedA, admittedB)
	}
	// A request that never comes back gives up its place after lineStale.
	if n, _ := srv.Client().ZCard(context.Background(), waitKey("sms:+15005550006", levelBulk)).Result(); n == 0 {
		t.Fatal("the line is empty while clinic A still waits")
	}
}
