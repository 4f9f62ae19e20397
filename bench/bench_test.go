package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/channels/channeltest"
	"github.com/patientmsg/gateway/channels/twilio"
	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/config"
	"github.com/patientmsg/gateway/ledger"
	"github.com/patientmsg/gateway/redistest"
	"github.com/patientmsg/gateway/service"
	"github.com/patientmsg/gateway/workers"
)

const (
	apiKey = "bench-key-0123456789abcdef"
	tenant = "bench-clinic"
	// httpClients is how many goroutines send POSTs (and enqueue bare Asynq
	// tasks) at once in the throughput and memory phases.
	httpClients = 32
	// The gateway's and bare Asynq's poll intervals (asynq TaskCheckInterval
	// and DelayedTaskCheckInterval).
	pollInterval        = 20 * time.Millisecond
	delayedPollInterval = 250 * time.Millisecond
	// warmup messages are sent before each memory measurement so connection
	// pools and Lua script caches exist in the "before" figure too.
	warmup = 64
	// targetRatio is the goal for gateway throughput / bare Asynq throughput.
	targetRatio = 0.6
)

// msgJSON is the body of every POST: one GSM-7 segment, normal priority.
var msgJSON = []byte(`{"channel":"sms","to":{"phone":"+14155550100"},"body":"Reminder: your appointment at the clinic is tomorrow at 10:00. Reply STOP to opt out."}`)

func BenchmarkGatewayVsAsynq(b *testing.B) {
	n := envInt(b, "BENCH_N", 5000)
	m := envInt(b, "BENCH_M", 5000)
	rate := envInt(b, "BENCH_RATE", 500)
	rateSecs := envInt(b, "BENCH_RATE_SECONDS", 4)

	e := newEnv(b)
	def := e.baseConfig(nil).Worker
	concurrency := def.Concurrency + def.CrisisConcurrency
	load := loadAverage()

	b.ResetTimer()
	var r report
	r.n, r.m, r.concurrency, r.mainPool, r.crisisPool = n, m, concurrency, def.Concurrency, def.CrisisConcurrency
	r.asynq, r.asynqUse = e.runAsynq(n, concurrency)
	r.asynq2, r.asynq2Use = e.runAsynqSameWork(n, concurrency)
	r.gateway, r.accepted, r.gwUse = e.runGateway(n)
	r.lat = e.runLatency(rate, rateSecs)
	r.gwMem = e.gatewayMemory(m)
	r.asynqMem = e.asynqMemory(m)
	b.StopTimer()

	if refused := e.guard.refused.Load(); refused > 0 {
		b.Fatalf("the loopback guard refused %d provider calls to non-loopback hosts", refused)
	}
	r.redisVersion, r.loadBefore, r.loadAfter = e.redisVersion(), load, loadAverage()
	r.print(os.Stdout)

	b.ReportMetric(rateOf(n, r.asynq), "asynq_msgs/s")
	b.ReportMetric(rateOf(n, r.gateway), "gateway_msgs/s")
	b.ReportMetric(rateOf(n, r.gateway)/rateOf(n, r.asynq), "ratio")
	b.ReportMetric(rateOf(n, r.asynq2), "asynq_same_work_msgs/s")
	b.ReportMetric(rateOf(n, r.gateway)/rateOf(n, r.asynq2), "ratio_same_work")
	b.ReportMetric(ms(r.lat.p50), "accept_p50_ms")
	b.ReportMetric(ms(r.lat.p99), "accept_p99_ms")
	b.ReportMetric(r.gwMem.perMsg, "gw_redis_B/msg")
	b.ReportMetric(r.asynqMem.perMsg, "asynq_redis_B/msg")
}

// ---------------------------------------------------------------------------
// (a) bare Asynq

// runAsynq enqueues n no-op tasks from httpClients goroutines into a running
// asynq.Server of the given concurrency and returns the time from the first
// enqueue to the last task processed.
func (e *env) runAsynq(n, concurrency int) (time.Duration, usage) {
	b := e.b
	e.reset()
	rdb := e.newRedis()
	defer rdb.Close()
	tally := newRedisTally()
	rdb.AddHook(tally)

	var processed atomic.Int64
	last := make(chan time.Time, 1)
	h := asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
		if processed.Add(1) == int64(n) {
			last <- time.Now()
		}
		return nil
	})
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:              concurrency,
		Queues:                   map[string]int{"bench": 1},
		TaskCheckInterval:        pollInterval,
		DelayedTaskCheckInterval: delayedPollInterval,
		Logger:                   nopLogger{},
		LogLevel:                 asynq.ErrorLevel,
	})
	var err error
	labelled("asynq-server", func() { err = srv.Start(h) })
	if err != nil {
		b.Fatalf("bare asynq: start server: %v", err)
	}
	defer srv.Shutdown()
	cl := asynq.NewClientFromRedisClient(rdb)
	defer cl.Close()

	ctx := context.Background()
	meter := e.startMeter(tally, "asynq")
	start := time.Now()
	failed, firstErr := parallel(n, httpClients, func(int) error {
		_, err := cl.EnqueueContext(ctx, asynq.NewTask("bench:noop", []byte(`{"id":"`+ledger.NewID()+`"}`), asynq.Queue("bench")))
		return err
	})
	if failed > 0 {
		b.Fatalf("bare asynq: %d of %d enqueues failed; first: %v", failed, n, firstErr)
	}
	timeout := timeoutFor(n)
	select {
	case end := <-last:
		return end.Sub(start), meter.stop(end.Sub(start))
	case <-time.After(timeout):
		b.Fatalf("bare asynq: only %d of %d tasks processed after %s", processed.Load(), n, timeout)
	}
	return 0, usage{}
}

// ---------------------------------------------------------------------------
// (a2) bare Asynq doing the same provider work

// a2Task is the payload of an (a2) task: what the handler needs to send the
// message, so it reads nothing else.
type a2Task struct {
	ID   string `json:"id"`
	To   string `json:"to"`
	Body string `json:"body"`
}

// runAsynqSameWork is (a) with the provider work of (b): each task's handler
// sends one SMS through the real twilio-go client (the real SMS channel, on
// the benchmark's loopback-guarded transport) to a fresh simulator, whose
// signed status callbacks go to a bare net/http receiver that only counts
// them. It returns the time from the first enqueue until the simulator has
// delivered 2n callbacks.
func (e *env) runAsynqSameWork(n, concurrency int) (time.Duration, usage) {
	b := e.b
	e.reset()
	rdb := e.newRedis()
	defer rdb.Close()
	tally := newRedisTally()
	rdb.AddHook(tally)

	var sim *twiliosim.Server
	labelled("simulator", func() { sim = twiliosim.New(twiliosim.Options{NoRecord: true}) })
	defer sim.Close()
	// Runs first: the provider transport's spare connections that never
	// carried a request would hold up sim.Close (net/http's Shutdown waits 5s
	// for such "new" connections before it counts them idle).
	defer e.guard.base.CloseIdleConnections()

	// The callback receiver: counts and answers 204, nothing else.
	var received atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatalf("same-work asynq: listen: %v", err)
	}
	rcv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			received.Add(1)
			w.WriteHeader(http.StatusNoContent)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	labelled("callback-receiver", func() { go rcv.Serve(ln) })
	defer rcv.Close()

	// Built as service.New builds the gateway's channel, from the same
	// configuration (b) uses, with the receiver as the public URL.
	cfg := e.baseConfig(sim)
	cfg.PublicURL = "http://" + ln.Addr().String()
	sms, err := twilio.NewSMS(twilio.Config{
		AccountSID: cfg.Twilio.AccountSID, AuthToken: cfg.Twilio.AuthToken, From: cfg.Twilio.From,
		MessagingServiceSID: cfg.Twilio.MessagingServiceSID, APIURL: cfg.Twilio.APIURL, PublicURL: cfg.PublicURL,
		Timeout: cfg.Worker.ProviderTimeout, Transport: e.guard, Logger: e.log,
	})
	if err != nil {
		b.Fatalf("same-work asynq: twilio.NewSMS: %v", err)
	}

	var sendErrs atomic.Int64
	var firstSendErr atomic.Value
	h := asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		var p a2Task
		err := json.Unmarshal(t.Payload(), &p)
		if err == nil {
			_, err = sms.Send(ctx, channels.Message{ID: p.ID, Tenant: tenant, To: ledger.Recipient{Phone: p.To}, Body: p.Body})
		}
		if err != nil {
			sendErrs.Add(1)
			firstSendErr.CompareAndSwap(nil, err.Error())
		}
		return err
	})
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:              concurrency,
		Queues:                   map[string]int{"bench": 1},
		TaskCheckInterval:        pollInterval,
		DelayedTaskCheckInterval: delayedPollInterval,
		Logger:                   nopLogger{},
		LogLevel:                 asynq.ErrorLevel,
	})
	labelled("asynq-server", func() { err = srv.Start(h) })
	if err != nil {
		b.Fatalf("same-work asynq: start server: %v", err)
	}
	defer srv.Shutdown()
	cl := asynq.NewClientFromRedisClient(rdb)
	defer cl.Close()

	var msg struct {
		To   struct{ Phone string }
		Body string
	}
	if err := json.Unmarshal(msgJSON, &msg); err != nil {
		b.Fatalf("same-work asynq: %v", err)
	}

	ctx := context.Background()
	meter := e.startMeter(tally, "asynq-same-work")
	start := time.Now()
	failed, firstErr := parallel(n, httpClients, func(int) error {
		payload, err := json.Marshal(a2Task{ID: ledger.NewID(), To: msg.To.Phone, Body: msg.Body})
		if err != nil {
			return err
		}
		_, err = cl.EnqueueContext(ctx, asynq.NewTask("bench:sms", payload, asynq.Queue("bench")))
		return err
	})
	if failed > 0 {
		b.Fatalf("same-work asynq: %d of %d enqueues failed; first: %v", failed, n, firstErr)
	}
	timeout := timeoutFor(n)
	deadline := time.Now().Add(timeout)
	var end time.Time
	for {
		st := sim.Stats()
		if st.CallbackErrors > 0 || sendErrs.Load() > 0 {
			b.Fatalf("same-work asynq: %d sends failed (first: %v), %d status callbacks failed (sim stats %+v)",
				sendErrs.Load(), firstSendErr.Load(), st.CallbackErrors, st)
		}
		if st.Callbacks >= 2*n {
			end = time.Now()
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("same-work asynq: after %s the simulator accepted %d of %d messages and made %d of %d callbacks",
				timeout, st.Accepted, n, st.Callbacks, 2*n)
		}
		time.Sleep(2 * time.Millisecond)
	}
	use := meter.stop(end.Sub(start))
	if st := sim.Stats(); st.Accepted != n || st.Callbacks != 2*n || received.Load() != int64(2*n) {
		b.Fatalf("same-work asynq: want %d messages and %d callbacks; simulator accepted %d and made %d callbacks, receiver counted %d",
			n, 2*n, st.Accepted, st.Callbacks, received.Load())
	}
	return end.Sub(start), use
}

// ---------------------------------------------------------------------------
// (b) the gateway end to end

// runGateway sends n messages and returns the time from the first POST to
// the last delivery, and to the last 202.
func (e *env) runGateway(n int) (time.Duration, time.Duration, usage) {
	b := e.b
	e.reset()
	tally := newRedisTally()
	g := e.startGateway(config.RoleAll, tally)
	defer e.stopGateway(g)

	ids := make([]string, n)
	meter := e.startMeter(tally, "gateway")
	start := time.Now()
	failed, firstErr := parallel(n, httpClients, func(i int) error {
		id, err := e.post(g.base)
		ids[i] = id
		return err
	})
	accept := time.Since(start)
	if failed > 0 {
		b.Fatalf("gateway: %d of %d POST /v1/messages failed; first: %v", failed, n, firstErr)
	}
	end := e.waitCallbacks(g, ids)
	use := meter.stop(end.Sub(start))
	e.verifyDelivered(g, ids)
	return end.Sub(start), accept, use
}

// waitDelivered waits for every message's callbacks, then checks the ledger.
func (e *env) waitDelivered(g *gateway, ids []string) {
	e.waitCallbacks(g, ids)
	e.verifyDelivered(g, ids)
}

// waitCallbacks waits until the simulator has posted both status callbacks
// ("sent", "delivered") of every message and returns when the last one was
// counted (the gateway has answered it, so the ledger has it).
func (e *env) waitCallbacks(g *gateway, ids []string) time.Time {
	b := e.b
	n := len(ids)
	timeout := timeoutFor(n)
	deadline := time.Now().Add(timeout)
	var end time.Time
	for {
		st := g.sim.Stats()
		if st.CallbackErrors > 0 {
			b.Fatalf("gateway: %d status callbacks failed or were refused (sim stats %+v); ledger: %s",
				st.CallbackErrors, st, e.statuses(g, ids))
		}
		if st.Callbacks >= 2*n {
			end = time.Now()
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("gateway: not all %d messages delivered after %s: simulator accepted %d, callbacks %d of %d; ledger: %s",
				n, timeout, st.Accepted, st.Callbacks, 2*n, e.statuses(g, ids))
		}
		time.Sleep(2 * time.Millisecond)
	}
	return end
}

// verifyDelivered checks that the ledger says delivered for every message
// and that the simulator took each exactly once.
func (e *env) verifyDelivered(g *gateway, ids []string) {
	b, n := e.b, len(ids)
	h := e.statuses(g, ids)
	if h.counts[ledger.StatusDelivered] != n {
		b.Fatalf("gateway: %d callbacks arrived but only %d of %d messages are delivered in the ledger: %s",
			g.sim.Stats().Callbacks, h.counts[ledger.StatusDelivered], n, h)
	}
	if acc := g.sim.Stats().Accepted; acc != n {
		b.Fatalf("gateway: the simulator accepted %d messages for %d requests (duplicate or lost sends)", acc, n)
	}
}

// histogram counts ledger statuses.
type histogram struct {
	counts  map[ledger.Status]int
	missing int
	errs    int
	first   error
}

func (h histogram) String() string {
	statuses := make([]ledger.Status, 0, len(h.counts))
	for s := range h.counts {
		statuses = append(statuses, s)
	}
	slices.SortFunc(statuses, func(a, b ledger.Status) int {
		if a.Rank() != b.Rank() {
			return a.Rank() - b.Rank()
		}
		return strings.Compare(string(a), string(b))
	})
	var parts []string
	for _, s := range statuses {
		parts = append(parts, fmt.Sprintf("%s=%d", s, h.counts[s]))
	}
	if h.missing > 0 {
		parts = append(parts, fmt.Sprintf("missing=%d", h.missing))
	}
	if h.errs > 0 {
		parts = append(parts, fmt.Sprintf("read-errors=%d (first: %v)", h.errs, h.first))
	}
	return strings.Join(parts, " ")
}

// statuses reads every message's ledger status.
func (e *env) statuses(g *gateway, ids []string) histogram {
	h := histogram{counts: map[ledger.Status]int{}}
	var mu sync.Mutex
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	parallel(len(ids), 16, func(i int) error {
		msg, err := g.svc.Ledger.Get(ctx, tenant, ids[i])
		mu.Lock()
		defer mu.Unlock()
		switch {
		case errors.Is(err, ledger.ErrNotFound):
			h.missing++
		case err != nil:
			h.errs++
			if h.first == nil {
				h.first = err
			}
		default:
			h.counts[msg.Status]++
		}
		return nil
	})
	return h
}

// ---------------------------------------------------------------------------
// (c) API accept latency at a fixed rate

type latency struct {
	rate, secs, total int
	achieved          float64 // requests/s actually issued
	p50, p90, p99     time.Duration
	max               time.Duration
	maxLag            time.Duration // how late the open-loop ticker issued a request, at worst
}

func (e *env) runLatency(rate, secs int) latency {
	b := e.b
	e.reset()
	g := e.startGateway(config.RoleAll)
	defer e.stopGateway(g)

	total := rate * secs
	interval := time.Second / time.Duration(rate)
	lat := make([]time.Duration, total)
	ids := make([]string, total)
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	var maxLag time.Duration
	start := time.Now()
	ctx := pprof.WithLabels(context.Background(), pprof.Labels("side", "load-generator"))
	for i := range total {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		} else if -d > maxLag {
			maxLag = -d
		}
		wg.Add(1)
		go pprof.Do(ctx, pprof.Labels(), func(context.Context) {
			defer wg.Done()
			t0 := time.Now()
			id, err := e.post(g.base)
			lat[i] = time.Since(t0)
			ids[i] = id
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
		})
	}
	issued := time.Since(start)
	wg.Wait()
	if f := failed.Load(); f > 0 {
		b.Fatalf("latency: %d of %d POST /v1/messages failed; first: %v", f, total, firstErr.Load())
	}
	e.waitDelivered(g, ids)
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(total-1, int(float64(total)*p))] }
	return latency{rate: rate, secs: secs, total: total, achieved: float64(total) / issued.Seconds(),
		p50: pct(0.50), p90: pct(0.90), p99: pct(0.99), max: lat[total-1], maxLag: maxLag}
}

// ---------------------------------------------------------------------------
// (d) Redis memory per queued message

type memory struct {
	before, after int64
	perMsg        float64
	// per-message key costs (MEMORY USAGE averaged over a sample), gateway only
	ledgerHash, ledgerEvents, task, index float64
}

func (e *env) gatewayMemory(m int) memory {
	b := e.b
	e.reset()
	g := e.startGateway(config.RoleAPI) // no workers: messages stay queued
	defer e.stopGateway(g)

	post := func(count int) []string {
		ids := make([]string, count)
		failed, firstErr := parallel(count, httpClients, func(i int) error {
			id, err := e.post(g.base)
			ids[i] = id
			return err
		})
		if failed > 0 {
			b.Fatalf("memory: %d of %d POST /v1/messages failed; first: %v", failed, count, firstErr)
		}
		return ids
	}
	post(warmup)
	before := e.usedMemory()
	ids := post(m)
	after := e.usedMemory()

	ctx := context.Background()
	pending := "asynq:{" + workers.QueueFor(workers.PriorityNormal) + "}:pending"
	if q, err := e.rdb.LLen(ctx, pending).Result(); err != nil || q != int64(warmup+m) {
		b.Fatalf("memory: want %d tasks pending in %s, found %d (err %v)", warmup+m, pending, q, err)
	}
	mem := memory{before: before, after: after, perMsg: float64(after-before) / float64(m)}
	sample := ids[:min(len(ids), 200)]
	avg := func(key func(id string) string) float64 {
		var sum int64
		for _, id := range sample {
			sum += e.rdb.MemoryUsage(ctx, key(id), 0).Val()
		}
		return float64(sum) / float64(len(sample))
	}
	mem.ledgerHash = avg(func(id string) string { return "gw:m:{" + id + "}" })
	mem.ledgerEvents = avg(func(id string) string { return "gw:m:{" + id + "}:ev" })
	mem.task = avg(func(id string) string { return "asynq:{" + workers.QueueFor(workers.PriorityNormal) + "}:t:" + id })
	idx := "gw:t:{" + tenant + "}:msgs"
	mem.index = float64(e.rdb.MemoryUsage(ctx, idx, 0).Val()) / float64(warmup+m)
	return mem
}

func (e *env) asynqMemory(m int) memory {
	b := e.b
	e.reset()
	rdb := e.newRedis()
	defer rdb.Close()
	cl := asynq.NewClientFromRedisClient(rdb)
	defer cl.Close()
	ctx := context.Background()
	enqueue := func(count int) {
		failed, firstErr := parallel(count, httpClients, func(int) error {
			_, err := cl.EnqueueContext(ctx, asynq.NewTask("bench:noop", []byte("x"), asynq.Queue("bench")))
			return err
		})
		if failed > 0 {
			b.Fatalf("memory: %d of %d asynq enqueues failed; first: %v", failed, count, firstErr)
		}
	}
	enqueue(warmup)
	before := e.usedMemory()
	enqueue(m)
	after := e.usedMemory()
	return memory{before: before, after: after, perMsg: float64(after-before) / float64(m)}
}

// ---------------------------------------------------------------------------
// the environment: one redis-server, one HTTP client; a gateway and its
// simulator per phase

type env struct {
	b     *testing.B
	redis *redistest.Server
	rdb   *redis.Client // the benchmark's own: FLUSHALL, INFO, MEMORY USAGE
	guard *loopbackTransport
	http  *http.Client
	log   *slog.Logger
}

func newEnv(b *testing.B) *env {
	rs := redistest.Start(b)
	if rs.Kind != redistest.KindProcess {
		b.Logf("note: Redis is %s, not a throwaway redis-server; numbers are not comparable", rs)
	}
	e := &env{b: b, redis: rs, rdb: rs.Client(), log: slog.New(slog.DiscardHandler)}
	e.guard = newLoopbackTransport()
	b.Cleanup(e.guard.base.CloseIdleConnections)
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, Control: channeltest.DialControl}).DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     30 * time.Second,
	}
	b.Cleanup(tr.CloseIdleConnections)
	e.http = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	return e
}

// reset flushes Redis, so each phase starts clean.
func (e *env) reset() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.rdb.FlushAll(ctx).Err(); err != nil {
		e.b.Fatalf("FLUSHALL: %v", err)
	}
}

func (e *env) newRedis() *redis.Client {
	opt, err := redis.ParseURL(e.redis.URL)
	if err != nil {
		e.b.Fatalf("redis URL: %v", err)
	}
	return redis.NewClient(opt)
}

// baseConfig is the gateway configuration every phase uses, without the
// listener's address; sim may be nil when only the worker settings matter.
func (e *env) baseConfig(sim *twiliosim.Server) config.Config {
	cfg := config.NewDefaultConfig()
	cfg.APIKeys = map[string]string{apiKey: tenant}
	cfg.RedisURL = e.redis.URL
	cfg.LogLevel = "error"
	if sim != nil {
		cfg.Twilio = config.TwilioConfig{AccountSID: sim.AccountSID(), AuthToken: sim.AuthToken(),
			From: "+15005550006", APIURL: sim.URL()}
	}
	cfg.Worker.PollInterval = pollInterval
	cfg.Worker.DelayedPollInterval = delayedPollInterval
	return cfg
}

// config is a full gateway configuration on the listener, the benchmark's
// Redis and the simulator.
func (e *env) config(ln net.Listener, sim *twiliosim.Server) config.Config {
	cfg := e.baseConfig(sim)
	cfg.Addr = ln.Addr().String()
	cfg.PublicURL = "http://" + ln.Addr().String()
	return cfg
}

// gateway is a running gateway and the simulator it sends to.
type gateway struct {
	svc  *service.Service
	sim  *twiliosim.Server
	base string // http://127.0.0.1:port
}

// startGateway starts a simulator (callbacks on, default 2ms delay, counters
// only) and a gateway of the given role on a fresh loopback listener. hooks
// are added to the gateway's Redis client, which its API and workers share.
func (e *env) startGateway(role config.Role, hooks ...redis.Hook) *gateway {
	b := e.b
	g := &gateway{}
	labelled("simulator", func() { g.sim = twiliosim.New(twiliosim.Options{NoRecord: true}) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		g.sim.Close()
		b.Fatalf("listen: %v", err)
	}
	cfg := e.config(ln, g.sim)
	g.base = cfg.PublicURL
	g.svc, err = service.New(cfg, role, service.Options{Listener: ln, Logger: e.log, Transport: e.guard})
	if err != nil {
		ln.Close()
		g.sim.Close()
		b.Fatalf("service.New: %v", err)
	}
	for _, h := range hooks {
		g.svc.Redis.AddHook(h) // before Start
	}
	labelled("gateway", func() { err = g.svc.Start(context.Background()) })
	if err != nil {
		ln.Close()
		g.sim.Close()
		b.Fatalf("service.Start: %v", err)
	}
	return g
}

// stopGateway closes the simulator and the benchmark's idle connections
// first: fasthttp's graceful shutdown waits (up to its 15s ReadTimeout) for
// connections that never carried a request, and net/http clients dial such
// spare connections under load.
func (e *env) stopGateway(g *gateway) {
	g.sim.Close()
	e.http.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	if err := g.svc.Shutdown(ctx); err != nil {
		e.b.Errorf("service shutdown: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		e.b.Logf("note: the gateway took %s to shut down", d.Round(time.Millisecond))
	}
}

// post sends one message and returns its id.
func (e *env) post(base string) (string, error) {
	req, err := http.NewRequest(http.MethodPost, base+"/v1/messages", bytes.NewReader(msgJSON))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("POST /v1/messages: HTTP %d: %.300s", resp.StatusCode, body)
	}
	var a struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(body, &a); err != nil || a.ID == "" {
		return "", fmt.Errorf("POST /v1/messages: no id in %.300s", body)
	}
	return a.ID, nil
}

// usedMemory is Redis' used_memory.
func (e *env) usedMemory() int64 {
	return e.infoField("memory", "used_memory")
}

func (e *env) redisVersion() string {
	info, _ := e.rdb.Info(context.Background(), "server").Result()
	return field(info, "redis_version")
}

func (e *env) infoField(section, name string) int64 {
	info, err := e.rdb.Info(context.Background(), section).Result()
	if err != nil {
		e.b.Fatalf("INFO %s: %v", section, err)
	}
	v, err := strconv.ParseInt(field(info, name), 10, 64)
	if err != nil {
		e.b.Fatalf("INFO %s: no %s", section, name)
	}
	return v
}

func field(info, name string) string {
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && k == name {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// parallel runs fn(0..n-1) on w goroutines and returns how many calls
// failed and the first error.
func parallel(n, w int, fn func(i int) error) (int, error) {
	var next, failed atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	for range min(w, n) {
		wg.Add(1)
		go pprof.Do(context.Background(), pprof.Labels("side", "load-generator"), func(context.Context) {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					failed.Add(1)
					first.CompareAndSwap(nil, err)
				}
			}
		})
	}
	wg.Wait()
	err, _ := first.Load().(error)
	return int(failed.Load()), err
}

// ---------------------------------------------------------------------------
// loopback guard

// loopbackTransport carries provider calls and refuses any request whose
// host is not loopback; its dialer refuses non-loopback addresses as well
// (after name resolution). Otherwise it is http.DefaultTransport's
// configuration — what the gateway uses in production when
// service.Options.Transport is nil — so connection reuse is measured as
// deployed.
type loopbackTransport struct {
	base    *http.Transport
	refused atomic.Int64
	dials   atomic.Int64 // connections opened to the provider
}

func newLoopbackTransport() *loopbackTransport {
	t := &loopbackTransport{base: http.DefaultTransport.(*http.Transport).Clone()}
	t.base.Proxy = nil
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: channeltest.DialControl}
	t.base.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		t.dials.Add(1)
		return dialer.DialContext(ctx, network, addr)
	}
	return t
}

func (t *loopbackTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !channeltest.IsLoopback(req.URL.Hostname()) {
		t.refused.Add(1)
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, fmt.Errorf("bench: refusing a request to non-loopback host %q", req.URL.Hostname())
	}
	return t.base.RoundTrip(req)
}

// ---------------------------------------------------------------------------
// report

type report struct {
	n, m, concurrency, mainPool, crisisPool int
	redisVersion, loadBefore, loadAfter     string
	asynq, asynq2, gateway, accepted        time.Duration
	asynqUse, asynq2Use, gwUse              usage
	lat                                     latency
	gwMem, asynqMem                         memory
}

func (r report) print(w io.Writer) {
	asynqRate, asynq2Rate, gwRate := rateOf(r.n, r.asynq), rateOf(r.n, r.asynq2), rateOf(r.n, r.gateway)
	ratio, ratio2 := gwRate/asynqRate, gwRate/asynq2Rate
	verdict := "OK"
	if ratio < targetRatio {
		verdict = "BELOW TARGET"
	}
	fmt.Fprintf(w, "\n=== gateway vs bare Asynq — redis-server %s on 127.0.0.1, GOMAXPROCS=%d, %d CPUs ===\n",
		r.redisVersion, runtime.GOMAXPROCS(0), runtime.NumCPU())
	fmt.Fprintf(w, "load average before %s, after %s (other processes on the machine skew every number)\n", r.loadBefore, r.loadAfter)
	fmt.Fprintf(w, "N=%d, worker concurrency %d (gateway: %d main + %d crisis-only), poll %s / delayed poll %s, %d client goroutines\n\n",
		r.n, r.concurrency, r.mainPool, r.crisisPool, pollInterval, delayedPollInterval, httpClients)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "phase\tmessages\ttime\tmsgs/s\n")
	fmt.Fprintf(tw, "(a) bare Asynq, no-op handler (first enqueue → last processed)\t%d\t%s\t%.0f\n", r.n, r.asynq.Round(time.Millisecond), asynqRate)
	fmt.Fprintf(tw, "(a2) bare Asynq, same provider work (first enqueue → 2N callbacks received)\t%d\t%s\t%.0f\n", r.n, r.asynq2.Round(time.Millisecond), asynq2Rate)
	fmt.Fprintf(tw, "(b) gateway end to end (first POST → last delivered in ledger)\t%d\t%s\t%.0f\n", r.n, r.gateway.Round(time.Millisecond), gwRate)
	fmt.Fprintf(tw, "    of which: all POST /v1/messages answered 202\t%d\t%s\t%.0f\n", r.n, r.accepted.Round(time.Millisecond), rateOf(r.n, r.accepted))
	tw.Flush()
	fmt.Fprintf(w, "\nratio (b)/(a)  = %.2f   vs a no-op Asynq task (the target ≥ %.1f)   %s\n", ratio, targetRatio, verdict)
	fmt.Fprintf(w, "ratio (b)/(a2) = %.2f   vs Asynq doing the same provider work, without the gateway's ledger, API and guarantees\n", ratio2)
	fmt.Fprintf(w, "\nwhere it goes (per message; 'bench process' is client + gateway + simulator, one process):\n")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "    \tRedis round trips\tredis-server CPU\tbench process CPU\tCPU busy (of %d cores)\tprovider connections opened\n", runtime.NumCPU())
	for _, u := range []struct {
		name string
		u    usage
	}{{"(a) bare Asynq", r.asynqUse}, {"(a2) Asynq, same work", r.asynq2Use}, {"(b) gateway", r.gwUse}} {
		fmt.Fprintf(tw, "    %s\t%.1f\t%.0fµs\t%.0fµs\t%.0f%%\t%.2f\n", u.name, float64(u.u.trips)/float64(r.n),
			u.u.redisCPU.Seconds()*1e6/float64(r.n), u.u.procCPU.Seconds()*1e6/float64(r.n),
			100*(u.u.redisCPU+u.u.procCPU).Seconds()/u.u.wall.Seconds()/float64(runtime.NumCPU()),
			float64(u.u.dials)/float64(r.n))
	}
	tw.Flush()
	for _, u := range []struct {
		name string
		u    usage
	}{{"(a) bare Asynq", r.asynqUse}, {"(a2) Asynq, same work", r.asynq2Use}, {"(b) gateway", r.gwUse}} {
		u.u.printCallers(w, u.name, r.n)
	}
	l := r.lat
	fmt.Fprintf(w, "\n(c) API accept latency, POST /v1/messages at %d req/s for %ds, open loop, workers running\n", l.rate, l.secs)
	fmt.Fprintf(w, "    %d requests, issued at %.0f req/s (worst ticker lag %s): p50 %s  p90 %s  p99 %s  max %s\n",
		l.total, l.achieved, l.maxLag.Round(time.Microsecond), fmtDur(l.p50), fmtDur(l.p90), fmtDur(l.p99), fmtDur(l.max))
	fmt.Fprintf(w, "\n(d) Redis used_memory per queued message, M=%d (INFO memory, after − before)\n", r.m)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	g, a := r.gwMem, r.asynqMem
	fmt.Fprintf(tw, "    gateway, API only (workers off)\t%.0f B/msg\t(%d → %d bytes)\n", g.perMsg, g.before, g.after)
	fmt.Fprintf(tw, "      MEMORY USAGE per message:\tledger hash %.0f B, events list %.0f B, asynq task hash %.0f B, tenant index %.0f B\n",
		g.ledgerHash, g.ledgerEvents, g.task, g.index)
	fmt.Fprintf(tw, "    bare Asynq, 1-byte payload\t%.0f B/msg\t(%d → %d bytes)\n", a.perMsg, a.before, a.after)
	tw.Flush()
	fmt.Fprintln(w)
}

// ---------------------------------------------------------------------------
// helpers

// labelled runs f with the pprof label side=<side>; goroutines f starts
// inherit it, so BENCH_PROFILE_DIR profiles split CPU by side
// (go tool pprof -tags).
func labelled(side string, f func()) {
	pprof.Do(context.Background(), pprof.Labels("side", side), func(context.Context) { f() })
}

// loadAverage is the 1-minute load average, "?" when unknown.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

func rateOf(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func fmtDur(d time.Duration) string { return fmt.Sprintf("%.2fms", ms(d)) }

// timeoutFor bounds waiting for n messages or tasks.
func timeoutFor(n int) time.Duration { return 60*time.Second + time.Duration(n)*10*time.Millisecond }

func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive whole number", name, v)
	}
	return n
}

// nopLogger discards Asynq's logs.
type nopLogger struct{}

func (nopLogger) Debug(...any) {}
func (nopLogger) Info(...any)  {}
func (nopLogger) Warn(...any)  {}
func (nopLogger) Error(...any) {}
func (nopLogger) Fatal(...any) {}

// ---------------------------------------------------------------------------
// where the time goes: Redis round trips, CPU

// usage is what one phase cost.
type usage struct {
	wall     time.Duration
	trips    int64         // Redis round trips (commands and pipelines) by the measured client
	redisCPU time.Duration // redis-server user+sys CPU
	procCPU  time.Duration // this process' user+sys CPU
	dials    int64         // provider (simulator) connections opened
	rows     []tallyRow    // by caller, with BENCH_REDIS_CALLERS=1; by command otherwise
}

type meter struct {
	e        *env
	tally    *redisTally
	redisCPU time.Duration
	procCPU  time.Duration
	profile  *os.File
	dials    int64
}

func (e *env) startMeter(t *redisTally, phase string) *meter {
	t.reset()
	m := &meter{e: e, tally: t, redisCPU: e.redisCPU(), procCPU: processCPU(), dials: e.guard.dials.Load()}
	if dir := os.Getenv("BENCH_PROFILE_DIR"); dir != "" {
		f, err := os.Create(filepath.Join(dir, phase+".cpu.pprof"))
		if err == nil {
			if err = pprof.StartCPUProfile(f); err != nil {
				f.Close()
			} else {
				m.profile = f
			}
		}
		if err != nil {
			e.b.Logf("BENCH_PROFILE_DIR: no profile of phase %s: %v", phase, err)
		}
	}
	return m
}

func (m *meter) stop(wall time.Duration) usage {
	if m.profile != nil {
		pprof.StopCPUProfile()
		m.profile.Close()
		m.e.b.Logf("CPU profile of this phase: %s", m.profile.Name())
	}
	trips, rows := m.tally.snapshot()
	return usage{wall: wall, trips: trips, rows: rows, dials: m.e.guard.dials.Load() - m.dials,
		redisCPU: m.e.redisCPU() - m.redisCPU, procCPU: processCPU() - m.procCPU}
}

func (u usage) printCallers(w io.Writer, name string, n int) {
	if len(u.rows) == 0 {
		return
	}
	fmt.Fprintf(w, "    %s, Redis round trips by %s (mean includes waiting for a pooled connection):\n", name, u.rows[0].kind)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "      \tper msg\tmean\tsum / wall time\n")
	for _, r := range u.rows {
		if float64(r.calls)/float64(n) < 0.01 {
			continue
		}
		fmt.Fprintf(tw, "      %s\t%.2f\t%.0fµs\t%.0f%%\n", r.label, float64(r.calls)/float64(n),
			float64(r.total.Microseconds())/float64(r.calls), 100*r.total.Seconds()/u.wall.Seconds())
	}
	tw.Flush()
}

func (e *env) redisCPU() time.Duration {
	info, err := e.rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		e.b.Fatalf("INFO cpu: %v", err)
	}
	user, _ := strconv.ParseFloat(field(info, "used_cpu_user"), 64)
	sys, _ := strconv.ParseFloat(field(info, "used_cpu_sys"), 64)
	return time.Duration((user + sys) * float64(time.Second))
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// redisTally is a go-redis hook counting round trips. With
// BENCH_REDIS_CALLERS=1 it attributes each to the first caller outside
// go-redis (ledger.(*Ledger).Claim, rdb.(*RDB).Dequeue [gw:normal], …) and
// times it; otherwise it counts by command name only, to stay cheap.
type redisTally struct {
	callers bool
	mu      sync.Mutex
	trips   int64
	by      map[string]*tallyRow
}

type tallyRow struct {
	kind, label string
	calls       int64
	total       time.Duration
}

func newRedisTally() *redisTally {
	return &redisTally{callers: os.Getenv("BENCH_REDIS_CALLERS") == "1", by: map[string]*tallyRow{}}
}

func (t *redisTally) reset() {
	t.mu.Lock()
	t.trips, t.by = 0, map[string]*tallyRow{}
	t.mu.Unlock()
}

func (t *redisTally) snapshot() (int64, []tallyRow) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rows := make([]tallyRow, 0, len(t.by))
	for _, r := range t.by {
		rows = append(rows, *r)
	}
	slices.SortFunc(rows, func(a, b tallyRow) int { return int(b.total - a.total) })
	return t.trips, rows
}

func (t *redisTally) record(cmdName string, args []any, d time.Duration) {
	kind, label := "command", cmdName
	if t.callers {
		kind, label = "caller", caller()+queueOf(args)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.trips++
	r := t.by[label]
	if r == nil {
		r = &tallyRow{kind: kind, label: label}
		t.by[label] = r
	}
	r.calls++
	r.total += d
}

func (t *redisTally) DialHook(next redis.DialHook) redis.DialHook { return next }

func (t *redisTally) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmd)
		t.record(cmd.Name(), cmd.Args(), time.Since(start))
		return err
	}
}

func (t *redisTally) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmds)
		names := make([]string, len(cmds))
		for i, c := range cmds {
			names[i] = c.Name()
		}
		var args []any
		if len(cmds) > 0 {
			args = cmds[0].Args()
		}
		t.record("pipeline("+strings.Join(names, ",")+")", args, time.Since(start))
		return err
	}
}

// caller names the first function outside go-redis and this file's hook.
func caller() string {
	var pcs [48]uintptr
	frames := runtime.CallersFrames(pcs[:runtime.Callers(3, pcs[:])])
	for {
		f, more := frames.Next()
		fn := f.Function
		if !strings.HasPrefix(fn, "github.com/redis/go-redis/") && !strings.HasPrefix(fn, "runtime.") &&
			!strings.HasPrefix(fn, "github.com/patientmsg/gateway/bench.(*redisTally)") &&
			!strings.Contains(fn, "asynq/internal/rdb.(*RDB).runScript") {
			fn = strings.TrimPrefix(fn, "github.com/")
			fn = strings.TrimPrefix(fn, "hibiken/asynq/internal/")
			fn = strings.TrimPrefix(fn, "patientmsg/gateway/")
			return fn
		}
		if !more {
			return "?"
		}
	}
}

// queueOf returns " [queue]" when the command's first key is an Asynq queue key.
func queueOf(args []any) string {
	for _, a := range args {
		if s, ok := a.(string); ok && strings.HasPrefix(s, "asynq:{") {
			if q, _, ok := strings.Cut(s[len("asynq:{"):], "}"); ok {
				return " [" + q + "]"
			}
		}
	}
	return ""
}
