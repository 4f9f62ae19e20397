package bench

import (
	"bufio"
	"bytes"
	"cmp"
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
	"github.com/patientmsg/gateway/channels/email/smtpsim"
	"github.com/patientmsg/gateway/channels/twilio"
	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/internal/audit"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/redistest"
	"github.com/patientmsg/gateway/internal/service/servicetest"
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
	// targetRatio is the goal for the gateway's throughput against bare
	// Asynq making the same provider call, (b)/(a2).
	targetRatio = 0.6
)

// msgJSON is the body of every POST: one GSM-7 segment, normal priority.
var msgJSON = []byte(`{"channel":"sms","to":{"phone":"+14155550100"},"body":"Reminder: your appointment at the clinic is tomorrow at 10:00. Reply STOP to opt out."}`)

func BenchmarkGatewayVsAsynq(b *testing.B) {
	n := envInt(b, "BENCH_N", 5000)
	m := envInt(b, "BENCH_M", 5000)
	rate := envInt(b, "BENCH_RATE", 500)
	rateSecs := envInt(b, "BENCH_RATE_SECONDS", 4)
	nVoice := envInt(b, "BENCH_N_VOICE", 500)

	e := newEnv(b)
	defaults := config.NewDefaultConfig()
	e.configure(&defaults)
	def := defaults.Worker
	concurrency := def.Concurrency + def.CrisisConcurrency
	load := loadAverage()

	b.ResetTimer()
	var r report
	r.n, r.m, r.concurrency, r.mainPool, r.crisisPool = n, m, concurrency, def.Concurrency, def.CrisisConcurrency
	// (a), (a2) and (b) run in turn BENCH_ROUNDS times: a machine's load
	// moves each by a fifth or more from one run to the next, so one round's
	// ratio says little. The report is the round of the median (b)/(a2).
	for range max(1, envInt(b, "BENCH_ROUNDS", 3)) {
		var x smsRound
		x.asynq, x.asynqUse = e.runAsynq(n, concurrency)
		x.asynq2, x.asynq2Use = e.runAsynqSameWork(n, concurrency)
		x.gateway, x.accepted, x.gwUse, x.deliveredMem = e.runGateway(n, "gateway")
		r.rounds = append(r.rounds, x)
	}
	r.smsRound = r.rounds[medianRound(r.rounds, func(x smsRound) float64 { return x.ratio2(n) })]
	// Redis per delivered SMS over BENCH_DELIVERED (default 20,000) SMS end
	// to end, as the performance issue measures it: what a redis-server
	// allocates once (its clients' buffers) weighs less than over N.
	_, _, _, r.hot = e.runGateway(envInt(b, "BENCH_DELIVERED", 20_000), "gateway-delivered")
	r.voice = e.runVoice(nVoice)
	r.wechat = e.runWeChat(n)
	r.email = e.runEmail(n)
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
	for _, c := range []struct {
		name string
		r    chanResult
	}{{"voice", r.voice}, {"wechat", r.wechat}, {"email", r.email}} {
		b.ReportMetric(rateOf(c.r.n, c.r.total), c.name+"_msgs/s")
		b.ReportMetric(rateOf(c.r.n, c.r.total)/rateOf(n, r.asynq), c.name+"_ratio")
	}
	b.ReportMetric(r.voice.recordings.Seconds(), "voice_recordings_stored_s")
	b.ReportMetric(ms(r.lat.p50), "accept_p50_ms")
	b.ReportMetric(ms(r.lat.p99), "accept_p99_ms")
	b.ReportMetric(r.gwMem.perMsg, "gw_redis_B/msg")
	b.ReportMetric(r.hot.delivered, "gw_redis_B/delivered")
	b.ReportMetric(r.hot.steady, "gw_redis_B/delivered_steady")
	b.ReportMetric(r.hot.archived, "gw_redis_B/archived")
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
	rdb, tally := e.newTalliedRedis()
	defer rdb.Close()

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
	rdb, tally := e.newTalliedRedis()
	defer rdb.Close()
	w := e.startSameWork("same-work asynq", rdb, concurrency, twiliosim.Options{NoRecord: true})
	defer w.stop()
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
		return w.enqueue(ctx, cl, a2Task{ID: ledger.NewID(), To: msg.To.Phone, Body: msg.Body})
	})
	if failed > 0 {
		b.Fatalf("same-work asynq: %d of %d enqueues failed; first: %v", failed, n, firstErr)
	}
	timeout := timeoutFor(n)
	deadline := time.Now().Add(timeout)
	var end time.Time
	for {
		st := w.sim.Stats()
		w.failOnErrors(st)
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
	if st := w.sim.Stats(); st.Accepted != n || st.Callbacks != 2*n || w.received.Load() != int64(2*n) {
		b.Fatalf("same-work asynq: want %d messages and %d callbacks; simulator accepted %d and made %d callbacks, receiver counted %d",
			n, 2*n, st.Accepted, st.Callbacks, w.received.Load())
	}
	return end.Sub(start), use
}

// sameWork is bare Asynq doing the gateway's provider work: an asynq.Server
// with the gateway's poll intervals on queue "bench", whose handler sends
// each task's SMS (an a2Task) through the real SMS channel (twilio.NewSMS,
// built from the configuration the gateway phases use, on the benchmark's
// loopback-guarded transport) to a fresh simulator with callbacks on, whose
// public URL is a bare net/http receiver on 127.0.0.1 that only counts the
// callbacks. No ledger, no gateway API, no signature check.
type sameWork struct {
	e        *env
	phase    string
	sim      *twiliosim.Server
	received atomic.Int64 // status callbacks the receiver counted
	sendErrs atomic.Int64
	firstErr atomic.Value
	closers  []func() // run last first by stop
}

// startSameWork starts a simulator with the options given, the callback
// receiver and the Asynq server of the given concurrency on rdb. phase
// prefixes its failures.
func (e *env) startSameWork(phase string, rdb *redis.Client, concurrency int, simOpts twiliosim.Options) *sameWork {
	b := e.b
	w := &sameWork{e: e, phase: phase}
	labelled("simulator", func() { w.sim = twiliosim.New(simOpts) })
	w.closers = append(w.closers, w.sim.Close,
		// Runs before sim.Close: the provider transport's spare connections
		// that never carried a request would hold it up (net/http's
		// Shutdown waits 5s for such "new" connections before it counts
		// them idle).
		e.guard.CloseIdleConnections)

	// The callback receiver: counts and answers 204, nothing else.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		w.stop()
		b.Fatalf("%s: listen: %v", phase, err)
	}
	rcv := &http.Server{
		Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.received.Add(1)
			rw.WriteHeader(http.StatusNoContent)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	labelled("callback-receiver", func() { go rcv.Serve(ln) })
	w.closers = append(w.closers, func() { rcv.Close() })

	// Built as service.New builds the gateway's channel, from the same
	// configuration the gateway phases use, with the receiver as the
	// public URL.
	cfg := config.NewDefaultConfig()
	cfg.Twilio = servicetest.TwilioConfig(w.sim)
	e.configure(&cfg)
	cfg.PublicURL = "http://" + ln.Addr().String()
	sms, err := twilio.NewSMS(twilio.Config{
		AccountSID: cfg.Twilio.AccountSID, AuthToken: cfg.Twilio.AuthToken, From: cfg.Twilio.From,
		MessagingServiceSID: cfg.Twilio.MessagingServiceSID, APIURL: cfg.Twilio.APIURL, PublicURL: cfg.PublicURL,
		Timeout: cfg.Worker.ProviderTimeout, Transport: e.guard, Logger: e.log,
	})
	if err != nil {
		w.stop()
		b.Fatalf("%s: twilio.NewSMS: %v", phase, err)
	}

	h := asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		var p a2Task
		err := json.Unmarshal(t.Payload(), &p)
		if err == nil {
			_, err = sms.Send(ctx, channels.Message{ID: p.ID, Tenant: tenant, To: ledger.Recipient{Phone: p.To}, Body: p.Body})
		}
		if err != nil {
			w.sendErrs.Add(1)
			w.firstErr.CompareAndSwap(nil, err.Error())
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
		w.stop()
		b.Fatalf("%s: start server: %v", phase, err)
	}
	w.closers = append(w.closers, srv.Shutdown)
	return w
}

// enqueue queues one SMS for the handler.
func (w *sameWork) enqueue(ctx context.Context, cl *asynq.Client, t a2Task) error {
	payload, err := json.Marshal(t)
	if err != nil {
		return err
	}
	_, err = cl.EnqueueContext(ctx, asynq.NewTask("bench:sms", payload, asynq.Queue("bench")))
	return err
}

// failOnErrors fails the phase if a send or a status callback failed.
func (w *sameWork) failOnErrors(st twiliosim.Stats) {
	if st.CallbackErrors > 0 || w.sendErrs.Load() > 0 {
		w.e.b.Fatalf("%s: %d sends failed (first: %v), %d status callbacks failed (sim stats %+v)",
			w.phase, w.sendErrs.Load(), w.firstErr.Load(), st.CallbackErrors, st)
	}
}

// stop shuts the server down, then the receiver, then the simulator.
func (w *sameWork) stop() {
	for i := len(w.closers) - 1; i >= 0; i-- {
		w.closers[i]()
	}
	w.closers = nil
}

// ---------------------------------------------------------------------------
// (b) the gateway end to end

// runGateway sends n messages and returns the time from the first POST to
// the last delivery, and to the last 202; phase names its CPU profile.
func (e *env) runGateway(n int, phase string) (time.Duration, time.Duration, usage, hotMemory) {
	b := e.b
	e.reset()
	tally := newRedisTally()
	// The archive is on (GATEWAY_HOT_RETENTION=48h), as in production; the
	// phase's messages are young, so nothing moves until the end.
	// The audit log is exported, as in production (GATEWAY_AUDIT_SIGNING_KEY).
	blobs := "file://" + b.TempDir() + "?create_dir=true"
	skey := e.signingKey()
	// With BENCH_REDIS_CALLERS=1, the commands are attributed to their
	// callers before the gateway batches them, and the tally on its Redis
	// client counts the batches by what they hold.
	var byCaller []redis.Hook
	if tally.callers {
		tally.callers = false
		byCaller = append(byCaller, newRedisTally())
	}
	g := e.start(servicetest.Options{Role: config.RoleAll, Twilio: twiliosim.Options{NoRecord: true}, Hooks: []redis.Hook{tally},
		BatchedHooks: byCaller,
		Configure: func(c *config.Config) {
			c.HotRetention, c.BlobURL, c.Audit.BlobURL, c.Audit.SigningKey = 48*time.Hour, blobs, blobs, skey
		}})
	defer e.stopGateway(g)

	memBefore := e.usedMemory()
	ids := make([]string, n)
	meter := e.startMeter(tally, phase)
	if len(byCaller) > 0 {
		meter.byCaller = byCaller[0].(*redisTally)
		meter.byCaller.reset()
	}
	start := time.Now()
	failed, firstErr := parallel(n, httpClients, func(i int) error {
		id, err := e.post(g.URL, msgJSON)
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
	// What the delivered messages keep in Redis (their records, history
	// and indexes in the hot window, the audit log's events), measured
	// from outside once the queues are empty.
	for deadline := time.Now().Add(10 * time.Second); e.unfinishedTasks() > 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	hm := hotMemory{n: n}
	delivered := e.usedMemory()
	hm.delivered = float64(delivered-memBefore) / float64(n)
	hm.deliveredKinds = e.memoryByKind()
	// Then the audit log's export, as the workers run it every minute (its
	// clock now): it writes the events' tree hashes to the blob store and
	// trims them from Redis; the events stay for GATEWAY_AUDIT_RETENTION.
	// What is left is what a delivered SMS keeps in the hot window once
	// the gateway runs steadily.
	if err := g.Service.ExportAudit(context.Background()); err != nil {
		b.Fatalf("gateway: audit export: %v", err)
	}
	hm.steady = float64(e.usedMemory()-memBefore) / float64(n)
	// Then the archive's pass, its clock 3 days on: every delivered SMS
	// leaves Redis for the blob store.
	g.Service.Archive.Now = func() time.Time { return time.Now().Add(72 * time.Hour) }
	archStart := time.Now()
	res, err := g.Service.Archive.Pass(context.Background())
	hm.archiveTook = time.Since(archStart)
	if err != nil || res.Archived != n {
		b.Fatalf("gateway: the archive pass moved %d of %d delivered messages: %v", res.Archived, n, err)
	}
	// And the audit log's export, caught up (a second run trims what the
	// first exported), as the workers run it every minute, its clock 3
	// days on too: the events leave Redis after GATEWAY_AUDIT_RETENTION.
	g.Service.AuditExport.Now = g.Service.Archive.Now
	for range 2 {
		if err := g.Service.ExportAudit(context.Background()); err != nil {
			b.Fatalf("gateway: audit export: %v", err)
		}
	}
	hm.archived = float64(e.usedMemory()-memBefore) / float64(n)
	hm.archivedKinds = e.memoryByKind()
	return end.Sub(start), accept, use, hm
}

// hotMemory is what phase (b)'s delivered SMS keep in Redis: in the hot
// window, then once the archive moved them to the blob store.
type hotMemory struct {
	n int // SMS delivered
	// used_memory growth per SMS: right after the sends, once the audit
	// export ran (steady), once archived
	delivered, steady, archived float64
	// MEMORY USAGE by kind of key, delivered and once archived
	deliveredKinds, archivedKinds []kindMemory
	archiveTook                   time.Duration
}

// waitDelivered waits for every message's callbacks, then checks the ledger.
func (e *env) waitDelivered(g *servicetest.Gateway, ids []string) {
	e.waitCallbacks(g, ids)
	e.verifyDelivered(g, ids)
}

// waitCallbacks waits until the simulator has posted both status callbacks
// ("sent", "delivered") of every message and returns when the last one was
// counted (the gateway has answered it, so the ledger has it).
func (e *env) waitCallbacks(g *servicetest.Gateway, ids []string) time.Time {
	b := e.b
	n := len(ids)
	timeout := timeoutFor(n)
	deadline := time.Now().Add(timeout)
	var end time.Time
	for {
		st := g.Twilio.Stats()
		if st.CallbackErrors > 0 {
			b.Fatalf("gateway: %d status callbacks failed or were refused (sim stats %+v); ledger: %s",
				st.CallbackErrors, st, e.statuses(ids))
		}
		if st.Callbacks >= 2*n {
			end = time.Now()
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("gateway: not all %d messages delivered after %s: simulator accepted %d, callbacks %d of %d; ledger: %s",
				n, timeout, st.Accepted, st.Callbacks, 2*n, e.statuses(ids))
		}
		time.Sleep(2 * time.Millisecond)
	}
	return end
}

// verifyDelivered checks that the ledger says delivered for every message
// and that the simulator took each exactly once.
func (e *env) verifyDelivered(g *servicetest.Gateway, ids []string) {
	b, n := e.b, len(ids)
	h := e.statuses(ids)
	if h.counts[ledger.StatusDelivered] != n {
		b.Fatalf("gateway: %d callbacks arrived but only %d of %d messages are delivered in the ledger: %s",
			g.Twilio.Stats().Callbacks, h.counts[ledger.StatusDelivered], n, h)
	}
	if acc := g.Twilio.Stats().Accepted; acc != n {
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
func (e *env) statuses(ids []string) histogram {
	_, h := e.messages(ids)
	return h
}

// messages reads every message's ledger record (nil where it could not be
// read) over the benchmark's own Redis client, and counts their statuses.
func (e *env) messages(ids []string) ([]*ledger.Message, histogram) {
	h := histogram{counts: map[ledger.Status]int{}}
	msgs := make([]*ledger.Message, len(ids))
	var mu sync.Mutex
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	parallel(len(ids), 16, func(i int) error {
		msg, err := e.ledger.Get(ctx, tenant, ids[i])
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
			msgs[i] = msg
			h.counts[msg.Status]++
		}
		return nil
	})
	return msgs, h
}

// ---------------------------------------------------------------------------
// (b-voice), (b-wechat), (b-email): the gateway end to end on its other
// channels

// voiceCallsPerSecond is VOICE_CALLS_PER_SECOND in the channel phases,
// high enough that the caller id's limit does not pace the phase (every
// call still takes its slot, as in production). The report counts the
// reservations that waited.
const voiceCallsPerSecond = 1_000_000

// voicePlan is how every simulated call goes: answered, the patient presses
// 1 at the question and speaks for 1 s at the recording prompt.
var voicePlan = twiliosim.CallPlan{Digits: []string{"1"}, RecordSeconds: 1}

const (
	smtpUser     = "gateway"
	smtpPassword = "bench-smtp-secret"
	emailFrom    = "Bench Clinic <noreply@example-clinic.org>"
	templateID   = "TPL-bench-reminder"
)

// voiceBody is call i: a message, a one-key question and a recording.
func voiceBody(i int) []byte {
	return fmt.Appendf(nil, `{"channel":"voice","to":{"phone":"+1415555%04d"},`+
		`"body":"Hello, this is the clinic calling about your visit last week.",`+
		`"gather":{"prompt":"If you feel better, press 1. If not, press 2.","digits":"12"},`+
		`"record":{"prompt":"After the tone, tell us how you are feeling.","max_length":30}}`, i%10000)
}

// wechatBody is WeChat message i: a template message (no customer-service
// window needed).
func wechatBody(i int) []byte {
	return fmt.Appendf(nil, `{"channel":"wechat","to":{"wechat_openid":"oBench%08d-abcdefghijklmn"},`+
		`"body":"Your follow-up visit is tomorrow at 10:00.",`+
		`"wechat":{"kind":"template","template_id":%q,"data":{"time":"tomorrow 10:00","clinic":"Bench Clinic"}}}`, i, templateID)
}

// emailBody is email i: a subject and a text part.
func emailBody(i int) []byte {
	return fmt.Appendf(nil, `{"channel":"email","to":{"email":"patient-%d@example.org"},`+
		`"subject":"Appointment reminder",`+
		`"body":"Reminder: your appointment at the clinic is tomorrow at 10:00. Please arrive 15 minutes early."}`, i)
}

// chanResult is one channel phase.
type chanResult struct {
	n      int
	final  ledger.Status
	total  time.Duration // first POST → last message final in the ledger (by the ledger's own event times)
	accept time.Duration // first POST → last 202
	use    usage
	// voice only: first POST → last recording stored (blob store and ledger)
	recordings time.Duration
	notes      []string
}

// postAll POSTs the bodies from httpClients goroutines and returns the ids,
// when the first POST went out and how long until the last was answered.
func (e *env) postAll(g *servicetest.Gateway, phase string, bodies [][]byte) ([]string, time.Time, time.Duration) {
	n := len(bodies)
	ids := make([]string, n)
	start := time.Now()
	failed, firstErr := parallel(n, httpClients, func(i int) error {
		id, err := e.post(g.URL, bodies[i])
		ids[i] = id
		return err
	})
	accept := time.Since(start)
	if failed > 0 {
		e.b.Fatalf("%s: %d of %d POST /v1/messages failed; first: %v", phase, failed, n, firstErr)
	}
	return ids, start, accept
}

// runVoice places n calls through the API: each is answered, plays its
// TwiML, takes the key 1 at the question and a 1 s recording, and reports
// back on its status callbacks; the recording is then fetched into the blob
// store by a worker task. It returns when every message is delivered in the
// ledger and every recording is stored.
func (e *env) runVoice(n int) chanResult {
	b := e.b
	e.reset()
	tally, lim := newRedisTally(), &limiterTally{}
	g := e.startAllChannels(tally, lim)
	defer e.stopGateway(g)
	bodies := make([][]byte, n)
	for i := range bodies {
		bodies[i] = voiceBody(i)
	}

	meter := e.startMeter(tally, "gateway-voice")
	ids, start, accept := e.postAll(g, "voice", bodies)
	// Wait on the simulator's counters (cheap): every call created and
	// played to its end (the completed callback answered, so the ledger has
	// it), then every recording downloaded. The ledger is read afterwards.
	deadline := time.Now().Add(timeoutFor(n))
	var st twiliosim.Stats
	for nextCheck := time.Now(); ; time.Sleep(2 * time.Millisecond) {
		st = g.Twilio.Stats()
		if st.CallWebhookErrors > 0 || st.Rejected > 0 {
			b.Fatalf("voice: %d call webhooks failed or were refused, %d API requests rejected (sim stats %+v); ledger: %s",
				st.CallWebhookErrors, st.Rejected, st, e.statuses(ids))
		}
		if time.Now().After(nextCheck) {
			e.failOnTroubledTasks("voice", ids, false)
			nextCheck = time.Now().Add(100 * time.Millisecond)
		}
		if downloads := st.Requests - st.Calls - st.Rejected; st.Calls >= n && downloads >= n && simIdle(g.Twilio) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("voice: after %s the simulator created %d of %d calls (%d webhooks, %d recording downloads); ledger: %s",
				timeoutFor(n), st.Calls, n, st.CallWebhooks, st.Requests-st.Calls-st.Rejected, e.statuses(ids))
		}
	}
	use := meter.stop(time.Since(start))

	msgs := e.waitLedger("voice", ids, deadline, "delivered with the recording stored", func(m *ledger.Message) bool {
		return m.Status == ledger.StatusDelivered && m.Recording != nil
	})
	var delivered, stored time.Time
	var answered, recorded int
	wav := int64(len(twiliosim.ToneWAV(voicePlan.RecordSeconds)))
	for _, m := range msgs {
		delivered = later(delivered, eventAt(m, ledger.StatusDelivered))
		stored = later(stored, m.Recording.StoredAt)
		if m.Recording.Size == wav && m.Recording.Duration == voicePlan.RecordSeconds {
			recorded++
		}
		for _, ev := range m.Events {
			if ev.Answer != nil && ev.Answer.Digits == voicePlan.Digits[0] {
				answered++
				break
			}
		}
	}
	if answered != n || recorded != n || st.Calls != n {
		b.Fatalf("voice: %d calls placed for %d messages; %d have the keypad answer %q, %d a %d-byte %ds recording",
			st.Calls, n, answered, voicePlan.Digits[0], recorded, wav, voicePlan.RecordSeconds)
	}
	res := chanResult{n: n, final: ledger.StatusDelivered, total: delivered.Sub(start), accept: accept, use: use,
		recordings: stored.Sub(start)}
	res.notes = append(res.notes,
		fmt.Sprintf("%.1f simulator requests to the gateway per call (TwiML, gather and record actions, recording and status callbacks), none failed", float64(st.CallWebhooks)/float64(n)),
		fmt.Sprintf("VOICE_CALLS_PER_SECOND=%d so the limit does not pace the phase: %d reservations, %d had to wait (each such call goes back to the next whole second)",
			voiceCallsPerSecond, lim.reserves.Load(), lim.waits.Load()))
	return res
}

// runWeChat sends n WeChat template messages through the API, until WeChat
// (the simulator) has reported each delivered through the gateway's
// signed, safe-mode webhook (TEMPLATESENDJOBFINISH) and the ledger says
// delivered.
func (e *env) runWeChat(n int) chanResult {
	b := e.b
	e.reset()
	tally := newRedisTally()
	g := e.startAllChannels(tally)
	defer e.stopGateway(g)
	bodies := make([][]byte, n)
	for i := range bodies {
		bodies[i] = wechatBody(i)
	}

	meter := e.startMeter(tally, "gateway-wechat")
	ids, start, accept := e.postAll(g, "wechat", bodies)
	deadline := time.Now().Add(timeoutFor(n))
	for nextCheck := time.Now(); g.WeChat.ReportCount() < n; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			custom, template := g.WeChat.Accepted()
			b.Fatalf("wechat: after %s the simulator accepted %d template and %d customer-service messages of %d and pushed %d reports; ledger: %s",
				timeoutFor(n), template, custom, n, g.WeChat.ReportCount(), e.statuses(ids))
		}
		if time.Now().After(nextCheck) {
			e.failOnTroubledTasks("wechat", ids, true)
			nextCheck = time.Now().Add(100 * time.Millisecond)
		}
	}
	use := meter.stop(time.Since(start))

	msgs := e.waitLedger("wechat", ids, deadline, "delivered", func(m *ledger.Message) bool { return m.Status == ledger.StatusDelivered })
	var end time.Time
	templates := 0
	for _, m := range msgs {
		end = later(end, eventAt(m, ledger.StatusDelivered))
		if strings.HasPrefix(m.ProviderID, "tmpl:") {
			templates++
		}
	}
	refused := 0
	for _, r := range g.WeChat.Reports() {
		if r.HTTPStatus != 200 {
			refused++
		}
	}
	if custom, template := g.WeChat.Accepted(); template != n || custom != 0 || templates != n || refused != 0 {
		b.Fatalf("wechat: the simulator accepted %d template and %d customer-service messages for %d requests; %d ledger records have a template provider id; the gateway refused %d reports",
			template, custom, n, templates, refused)
	}
	res := chanResult{n: n, final: ledger.StatusDelivered, total: end.Sub(start), accept: accept, use: use}
	res.notes = append(res.notes, fmt.Sprintf("template messages, access token fetched %d time(s); delivered by WeChat's TEMPLATESENDJOBFINISH push to the signed, safe-mode webhook", g.WeChat.TokenFetches()))
	return res
}

// runEmail sends n emails through the API to the in-process SMTP server,
// which (asked by NOTIFY=SUCCESS) sends a success DSN for each to the
// gateway's inbound SMTP listener, until the ledger says delivered.
func (e *env) runEmail(n int) chanResult {
	b := e.b
	e.reset()
	tally := newRedisTally()
	g := e.startAllChannels(tally)
	defer e.stopGateway(g)
	bodies := make([][]byte, n)
	for i := range bodies {
		bodies[i] = emailBody(i)
	}

	meter := e.startMeter(tally, "gateway-email")
	ids, start, accept := e.postAll(g, "email", bodies)
	// smtpsim.WaitFor copies every message received so far each time one
	// arrives, too costly to run during the phase: wait for the gateway's
	// queues to drain (every send task done) and the server to have sent
	// every DSN, then ask it once.
	deadline := time.Now().Add(timeoutFor(n))
	for nextCheck := time.Now(); ; time.Sleep(5 * time.Millisecond) {
		if left := e.unfinishedTasks(); left == 0 && g.SMTP.SentCount() >= n {
			break
		} else if time.Now().After(deadline) {
			b.Fatalf("email: after %s %d send tasks are unfinished, the SMTP server received %d of %d messages and sent %d DSNs; ledger: %s",
				timeoutFor(n), left, len(g.SMTP.Messages()), n, g.SMTP.SentCount(), e.statuses(ids))
		}
		if time.Now().After(nextCheck) {
			e.failOnTroubledTasks("email", ids, true)
			nextCheck = time.Now().Add(100 * time.Millisecond)
		}
	}
	use := meter.stop(time.Since(start))
	use.dials = int64(g.SMTP.Connections()) // SMTP, not the HTTP provider transport
	if got, err := g.SMTP.WaitFor(n, 5*time.Second); err != nil {
		b.Fatalf("email: every send task is done but the SMTP server received %d of %d messages (%v); ledger: %s",
			len(got), n, err, e.statuses(ids))
	}

	msgs := e.waitLedger("email", ids, deadline, "delivered", func(m *ledger.Message) bool { return m.Status == ledger.StatusDelivered })
	var end time.Time
	for _, m := range msgs {
		end = later(end, eventAt(m, ledger.StatusDelivered))
	}
	// Every message arrived exactly once, each the one the gateway sent,
	// and every DSN reached the gateway.
	want := make(map[string]bool, n)
	for _, id := range ids {
		want[id] = true
	}
	got := g.SMTP.Messages()
	matched := 0
	for _, r := range got {
		if id := r.Header.Get("X-Gateway-Message-Id"); want[id] && r.ParseErr == "" {
			delete(want, id)
			matched++
		}
	}
	refused := 0
	for _, m := range g.SMTP.SentMail() {
		if m.Err != nil {
			refused++
		}
	}
	if len(got) != n || matched != n || refused != 0 {
		b.Fatalf("email: the SMTP server received %d messages for %d requests; %d match a request exactly once; the gateway refused %d DSNs",
			len(got), n, matched, refused)
	}
	res := chanResult{n: n, final: ledger.StatusDelivered, total: end.Sub(start), accept: accept, use: use}
	res.notes = append(res.notes, fmt.Sprintf("STARTTLS and AUTH PLAIN, SMTP_POOL_SIZE=%d, %d SMTP connections opened; delivered by a success DSN (NOTIFY=SUCCESS) to the inbound SMTP listener",
		g.Service.Config.Email.PoolSize, g.SMTP.Connections()))
	return res
}

// simIdle reports whether every call the simulator created has ended and
// made all its requests (waiting 1ms at most).
func simIdle(sim *twiliosim.Server) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	return sim.WaitCallbacks(ctx) == nil
}

// unfinishedTasks counts the gateway's tasks not yet done (pending,
// running, waiting for a retry, scheduled) over every priority queue, in
// one round trip.
func (e *env) unfinishedTasks() int64 {
	ctx := context.Background()
	pipe := e.rdb.Pipeline()
	var counts []*redis.IntCmd
	for _, p := range workers.Priorities {
		q := "asynq:{" + workers.QueueFor(p) + "}"
		counts = append(counts, pipe.LLen(ctx, q+":pending"), pipe.LLen(ctx, q+":active"),
			pipe.ZCard(ctx, q+":retry"), pipe.ZCard(ctx, q+":scheduled"))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		e.b.Fatalf("reading the queues: %v", err)
	}
	var left int64
	for _, c := range counts {
		left += c.Val()
	}
	return left
}

// failOnTroubledTasks fails the phase as soon as a task was archived (a
// message failed for good) or, with noRetries, put back for a retry (a send
// failed; these channels never wait for a rate limit). It costs one Redis
// round trip.
func (e *env) failOnTroubledTasks(phase string, ids []string, noRetries bool) {
	ctx := context.Background()
	pipe := e.rdb.Pipeline()
	var retry, archived []*redis.IntCmd
	for _, p := range workers.Priorities {
		q := "asynq:{" + workers.QueueFor(p) + "}"
		retry = append(retry, pipe.ZCard(ctx, q+":retry"))
		archived = append(archived, pipe.ZCard(ctx, q+":archived"))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		e.b.Fatalf("%s: reading the queues: %v", phase, err)
	}
	var r, a int64
	for i := range retry {
		r += retry[i].Val()
		a += archived[i].Val()
	}
	if a > 0 || (noRetries && r > 0) {
		e.b.Fatalf("%s: %d tasks archived (failed for good), %d waiting for a retry; ledger: %s", phase, a, r, e.statuses(ids))
	}
}

// waitLedger reads every message until ok holds for all of them, or fails
// the phase at the deadline with the ledger's counts.
func (e *env) waitLedger(phase string, ids []string, deadline time.Time, want string, ok func(*ledger.Message) bool) []*ledger.Message {
	for {
		msgs, h := e.messages(ids)
		good := 0
		for _, m := range msgs {
			if m != nil && ok(m) {
				good++
			}
		}
		if good == len(ids) {
			return msgs
		}
		if time.Now().After(deadline) {
			e.b.Fatalf("%s: %d of %d messages are %s in the ledger: %s", phase, good, len(ids), want, h)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// eventAt is when the message's history first shows status: the ledger's
// own time of the transition, taken as the gateway wrote it.
func eventAt(m *ledger.Message, status ledger.Status) time.Time {
	for _, ev := range m.Events {
		if ev.Status == status {
			return ev.At
		}
	}
	return time.Time{}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// limiterTally is a go-redis hook counting the voice rate limiter's
// reservations and those that had to wait.
type limiterTally struct{ reserves, waits atomic.Int64 }

func (t *limiterTally) DialHook(next redis.DialHook) redis.DialHook { return next }

func (t *limiterTally) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		t.note(cmd)
		return err
	}
}

// The gateway batches its commands into pipelines: each is looked at.
func (t *limiterTally) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, cmd := range cmds {
			t.note(cmd)
		}
		return err
	}
}

func (t *limiterTally) note(cmd redis.Cmder) {
	args := cmd.Args()
	if cmd.Err() != nil || len(args) < 4 || (cmd.Name() != "evalsha" && cmd.Name() != "eval") {
		return
	}
	if key, _ := args[3].(string); strings.HasPrefix(key, "gw:snd:{voice:") {
		t.reserves.Add(1)
		if c, ok := cmd.(*redis.Cmd); ok {
			if v, err := c.Int64Slice(); err == nil && len(v) > 0 && v[0] == 0 {
				t.waits.Add(1)
			}
		}
	}
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
			id, err := e.post(g.URL, msgJSON)
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
	// MEMORY USAGE by kind of key over the counted messages, gateway only
	kinds   []kindMemory
	counted int
}

func (e *env) gatewayMemory(m int) memory {
	b := e.b
	e.reset()
	g := e.startGateway(config.RoleAPI) // no workers: messages stay queued
	defer e.stopGateway(g)

	post := func(count int) []string {
		ids := make([]string, count)
		failed, firstErr := parallel(count, httpClients, func(i int) error {
			id, err := e.post(g.URL, msgJSON)
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
	post(m)
	after := e.usedMemory()

	ctx := context.Background()
	pending := "asynq:{" + workers.QueueFor(workers.PriorityNormal) + "}:pending"
	if q, err := e.rdb.LLen(ctx, pending).Result(); err != nil || q != int64(warmup+m) {
		b.Fatalf("memory: want %d tasks pending in %s, found %d (err %v)", warmup+m, pending, q, err)
	}
	// What a queued message keeps, by kind of key (the warm-up's
	// messages are there too, so the sums are shared among all of them).
	return memory{before: before, after: after, perMsg: float64(after-before) / float64(m),
		kinds: e.memoryByKind(), counted: warmup + m}
}

func (e *env) asynqMemory(m int) memory {
	b := e.b
	e.reset()
	cl, closeClient := e.bareClient()
	defer closeClient()
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
	// ledger reads message records over rdb, so the reads are not counted
	// as the gateway's round trips (the channel phases read it while
	// their meter runs).
	ledger *ledger.Ledger
	guard  *loopbackTransport
	http   *http.Client
	log    *slog.Logger
	// tune, when set, changes every gateway configuration the phases use.
	tune func(*config.Config)
}

func newEnv(b *testing.B) *env {
	rs := redistest.Start(b)
	if rs.Kind != redistest.KindProcess {
		b.Logf("note: Redis is %s, not a throwaway redis-server; numbers are not comparable", rs)
	}
	e := &env{b: b, redis: rs, rdb: rs.Client(), log: slog.New(slog.DiscardHandler)}
	e.ledger = ledger.New(e.rdb, config.NewDefaultConfig().Retention)
	e.guard = newLoopbackTransport()
	b.Cleanup(e.guard.CloseIdleConnections)
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

// bareClient is a bare Asynq client on a Redis client of its own, and
// what closes both.
func (e *env) bareClient() (*asynq.Client, func()) {
	rdb := e.newRedis()
	cl := asynq.NewClientFromRedisClient(rdb)
	return cl, func() {
		cl.Close()
		rdb.Close()
	}
}

// newTalliedRedis is a new client on the benchmark's Redis whose round
// trips a fresh tally counts.
func (e *env) newTalliedRedis() (*redis.Client, *redisTally) {
	rdb, tally := e.newRedis(), newRedisTally()
	rdb.AddHook(tally)
	return rdb, tally
}

// configure makes the benchmark's choices on a gateway configuration: the
// harness's, or the defaults for (a)'s pool sizes and (a2)'s SMS channel.
func (e *env) configure(cfg *config.Config) {
	cfg.APIKeys = map[string]string{apiKey: tenant}
	cfg.LogLevel = "error"
	cfg.Worker.PollInterval = pollInterval
	cfg.Worker.DelayedPollInterval = delayedPollInterval
	// Throughput phases measure the gateway, not a provider's limits: the
	// senders are paced (every send still takes its slot) far above what
	// the machine can reach (and the harness turns quiet hours off).
	cfg.Senders.SMSPerSecond, cfg.Senders.WeChatPerSecond, cfg.Senders.EmailPerSecond = unpaced, unpaced, unpaced
	// Nor a tenant's request rate: one tenant posts thousands of messages
	// a second. Admission control still runs (every request is counted,
	// every message enters and leaves its tenant's backlog).
	cfg.Admission.TenantRate = config.RateLimit{PerSecond: unpaced, Burst: unpaced}
	if e.tune != nil {
		e.tune(cfg)
	}
}

// unpaced is a sender rate no phase reaches.
const unpaced = 1_000_000

// startGateway starts a simulator (callbacks on, default 2ms delay, counters
// only) and a gateway of the given role on a fresh loopback listener, with
// the SMS channel only. hooks are added to the gateway's Redis client, which
// its API and workers share.
func (e *env) startGateway(role config.Role, hooks ...redis.Hook) *servicetest.Gateway {
	return e.start(servicetest.Options{Role: role, Twilio: twiliosim.Options{NoRecord: true}, Hooks: hooks})
}

// startAllChannels starts a gateway (API and workers) with every channel
// configured, as service.New builds them: SMS and voice on the Twilio
// simulator (Calls API on, counters only, every call answered with
// voicePlan), WeChat on its simulator, email on an in-process SMTP server
// (STARTTLS and AUTH, as smtp:// requires) and call recordings in a
// file:// blob store in a temporary directory.
func (e *env) startAllChannels(hooks ...redis.Hook) *servicetest.Gateway {
	g := e.start(servicetest.Options{Role: config.RoleAll, AllChannels: true, Reports: true, Twilio: twiliosim.Options{NoRecord: true},
		SMTP: smtpsim.Options{Username: smtpUser, Password: smtpPassword, TLS: true}, Hooks: hooks,
		Configure: func(cfg *config.Config) {
			cfg.Voice.CallsPerSecond = voiceCallsPerSecond
			cfg.Email.From = emailFrom
		}})
	g.Twilio.SetCallPlan(voicePlan) // before the phase's first call
	return g
}

// start starts a gateway on the benchmark's Redis, logger and provider
// transport (o.Transport when set, which must wrap e.guard), configured by
// e.configure and then o.Configure.
func (e *env) start(o servicetest.Options) *servicetest.Gateway {
	e.b.Helper()
	phase := o.Configure
	o.RedisURL, o.Logger = e.redis.URL, e.log
	if o.Transport == nil {
		o.Transport = e.guard
	}
	o.Configure = func(cfg *config.Config) {
		e.configure(cfg)
		if phase != nil {
			phase(cfg)
		}
	}
	return servicetest.Start(e.b, o)
}

// stopGateway closes the benchmark's idle connections to the gateway, then
// stops it (servicetest.Gateway.Stop: the simulators first).
func (e *env) stopGateway(g *servicetest.Gateway) {
	e.http.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	if err := g.Stop(ctx); err != nil {
		e.b.Errorf("service shutdown: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		e.b.Logf("note: the gateway and its simulators took %s to stop", d.Round(time.Millisecond))
	}
}

// post sends one message (msg is its JSON) and returns its id.
func (e *env) post(base string, msg []byte) (string, error) {
	req, err := http.NewRequest(http.MethodPost, base+"/v1/messages", bytes.NewReader(msg))
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
// (after name resolution). Otherwise it is what the gateway uses in
// production when service.Options.Transport is nil — http.DefaultTransport's
// configuration with 256 idle connections, 128 per host (service
// buildChannels) — so connection reuse is measured as deployed.
type loopbackTransport struct {
	base    *http.Transport
	refused atomic.Int64
	dials   atomic.Int64 // connections opened to the provider
}

func newLoopbackTransport() *loopbackTransport {
	t := &loopbackTransport{base: http.DefaultTransport.(*http.Transport).Clone()}
	t.base.Proxy = nil
	t.base.MaxIdleConns, t.base.MaxIdleConnsPerHost = 256, 128
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: channeltest.DialControl}
	t.base.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		t.dials.Add(1)
		return dialer.DialContext(ctx, network, addr)
	}
	return t
}

// CloseIdleConnections closes the idle provider connections.
func (t *loopbackTransport) CloseIdleConnections() { t.base.CloseIdleConnections() }

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
	// smsRound is the round of the median (b)/(a2), of rounds in turn.
	smsRound
	rounds               []smsRound
	voice, wechat, email chanResult
	lat                  latency
	gwMem, asynqMem      memory
	// hot is Redis per SMS delivered over BENCH_DELIVERED SMS.
	hot hotMemory
}

// smsRound is one run of (a), (a2) and (b), one after the other.
type smsRound struct {
	asynq, asynq2, gateway, accepted time.Duration
	asynqUse, asynq2Use, gwUse       usage
	// deliveredMem is Redis used_memory growth per SMS delivered in (b),
	// before and after the archive's pass.
	deliveredMem hotMemory
}

// ratio and ratio2 are the round's (b)/(a) and (b)/(a2) for n messages.
func (x smsRound) ratio(n int) float64  { return rateOf(n, x.gateway) / rateOf(n, x.asynq) }
func (x smsRound) ratio2(n int) float64 { return rateOf(n, x.gateway) / rateOf(n, x.asynq2) }

// medianRound is the index of the round whose key is the median (the
// lower middle one of an even count).
func medianRound[T any](rounds []T, key func(T) float64) int {
	idx := make([]int, len(rounds))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(key(rounds[a]), key(rounds[b])) })
	return idx[(len(idx)-1)/2]
}

func (r report) print(w io.Writer) {
	asynqRate, asynq2Rate, gwRate := rateOf(r.n, r.asynq), rateOf(r.n, r.asynq2), rateOf(r.n, r.gateway)
	ratio, ratio2 := gwRate/asynqRate, gwRate/asynq2Rate
	verdict := "OK"
	if ratio2 < targetRatio {
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
	v, wc, em := r.voice, r.wechat, r.email
	fmt.Fprintf(tw, "(b-voice) gateway, calls with a question and a recording (first POST → last delivered in ledger)\t%d\t%s\t%.0f\n", v.n, v.total.Round(time.Millisecond), rateOf(v.n, v.total))
	fmt.Fprintf(tw, "    of which: all POST /v1/messages answered 202\t%d\t%s\t%.0f\n", v.n, v.accept.Round(time.Millisecond), rateOf(v.n, v.accept))
	fmt.Fprintf(tw, "    and: all recordings stored (first POST → last in blob store and ledger)\t%d\t%s\t%.0f\n", v.n, v.recordings.Round(time.Millisecond), rateOf(v.n, v.recordings))
	fmt.Fprintf(tw, "(b-wechat) gateway, WeChat template messages (first POST → last delivered in ledger, by WeChat's report)\t%d\t%s\t%.0f\n", wc.n, wc.total.Round(time.Millisecond), rateOf(wc.n, wc.total))
	fmt.Fprintf(tw, "    of which: all POST /v1/messages answered 202\t%d\t%s\t%.0f\n", wc.n, wc.accept.Round(time.Millisecond), rateOf(wc.n, wc.accept))
	fmt.Fprintf(tw, "(b-email) gateway, email over SMTP (first POST → last delivered in ledger, by a success DSN; SMTP server got all N)\t%d\t%s\t%.0f\n", em.n, em.total.Round(time.Millisecond), rateOf(em.n, em.total))
	fmt.Fprintf(tw, "    of which: all POST /v1/messages answered 202\t%d\t%s\t%.0f\n", em.n, em.accept.Round(time.Millisecond), rateOf(em.n, em.accept))
	tw.Flush()
	fmt.Fprintf(w, "\nratio (b)/(a2) = %.2f   vs Asynq doing the same provider work, without the gateway's ledger, API and guarantees (the target ≥ %.1f)   %s\n", ratio2, targetRatio, verdict)
	fmt.Fprintf(w, "ratio (b)/(a)  = %.2f   vs a no-op Asynq task\n", ratio)
	if len(r.rounds) > 1 {
		fmt.Fprintf(w, "%d rounds of (a), (a2) and (b) in turn; the figures above and below are the round of the median (b)/(a2):\n", len(r.rounds))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "    round\t(a) msgs/s\t(a2) msgs/s\t(b) msgs/s\t(b)/(a)\t(b)/(a2)\tround trips per SMS\tRedis per SMS delivered, archived (over N)\n")
		for i, x := range r.rounds {
			fmt.Fprintf(tw, "    %d\t%.0f\t%.0f\t%.0f\t%.2f\t%.2f\t%.1f\t%.0f B, %.0f B\n", i+1, rateOf(r.n, x.asynq), rateOf(r.n, x.asynq2), rateOf(r.n, x.gateway),
				x.ratio(r.n), x.ratio2(r.n), float64(x.gwUse.trips)/float64(r.n), x.deliveredMem.delivered, x.deliveredMem.archived)
		}
		fmt.Fprintf(tw, "    (the first round runs on a fresh redis-server: its Redis figures are higher, part of it the buffers of clients it grows once)\n")
		tw.Flush()
	}

	fmt.Fprintf(w, "\nper channel, gateway end to end, same run and Redis (Redis flushed and a fresh gateway with every channel configured per phase):\n")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "    \tmessages\tmsgs/s\tvs (a) no-op Asynq\tvs (a2) Asynq+SMS work\tvs (b) SMS\tsuccess is\n")
	fmt.Fprintf(tw, "    (b) sms\t%d\t%.0f\t%.2f\t%.2f\t1.00\tdelivered\n", r.n, gwRate, ratio, ratio2)
	for _, c := range []struct {
		name string
		r    chanResult
	}{{"(b-voice) voice", v}, {"(b-wechat) wechat", wc}, {"(b-email) email", em}} {
		rate := rateOf(c.r.n, c.r.total)
		fmt.Fprintf(tw, "    %s\t%d\t%.0f\t%.2f\t—\t%.2f\t%s\n", c.name, c.r.n, rate, rate/asynqRate, rate/gwRate, c.r.final)
	}
	tw.Flush()
	fmt.Fprintf(w, "    (a2) sends SMS through Twilio; no bare-Asynq floor with call, WeChat or SMTP work is measured, so only SMS has a (b)/(a2) ratio.\n")
	fmt.Fprintf(w, "    The end of each channel phase is the latest time the ledger stamped on a final event; the waits watch simulator counters (email: the gateway's queues), then read the ledger once.\n")
	fmt.Fprintf(w, "    voice: recordings stored %s after the last delivery (a worker task downloads each; not in the voice msgs/s)\n",
		(v.recordings - v.total).Round(time.Millisecond))
	for _, c := range []struct {
		name string
		r    chanResult
	}{{"voice", v}, {"wechat", wc}, {"email", em}} {
		for _, note := range c.r.notes {
			fmt.Fprintf(w, "    %s: %s\n", c.name, note)
		}
	}

	fmt.Fprintf(w, "\nwhere it goes (per message; 'bench process' is client + gateway + simulators, one process):\n")
	rows := []struct {
		name string
		u    usage
		n    int
	}{{"(a) bare Asynq", r.asynqUse, r.n}, {"(a2) Asynq, same work", r.asynq2Use, r.n}, {"(b) gateway", r.gwUse, r.n},
		{"(b-voice) gateway, voice", v.use, v.n}, {"(b-wechat) gateway, WeChat", wc.use, wc.n}, {"(b-email) gateway, email", em.use, em.n}}
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "    \tRedis round trips\tRedis commands\tredis-server CPU\tbench process CPU\tCPU busy (of %d cores)\tprovider connections opened\n", runtime.NumCPU())
	for _, u := range rows {
		fmt.Fprintf(tw, "    %s\t%.1f\t%.1f\t%.0fµs\t%.0fµs\t%.0f%%\t%.2f\n", u.name, float64(u.u.trips)/float64(u.n), float64(u.u.cmds)/float64(u.n),
			u.u.redisCPU.Seconds()*1e6/float64(u.n), u.u.procCPU.Seconds()*1e6/float64(u.n),
			100*(u.u.redisCPU+u.u.procCPU).Seconds()/u.u.wall.Seconds()/float64(runtime.NumCPU()),
			float64(u.u.dials)/float64(u.n))
	}
	tw.Flush()
	fmt.Fprintf(w, "    (the voice row runs until every recording is stored; email's connections are SMTP connections)\n")
	for _, u := range rows {
		u.u.printCallers(w, u.name, u.n)
	}
	r.asynq2Use.printServer(w, "(a2) Asynq, same work", r.n)
	r.gwUse.printServer(w, "(b) gateway", r.n)
	l := r.lat
	fmt.Fprintf(w, "\n(c) API accept latency, POST /v1/messages at %d req/s for %ds, open loop, workers running\n", l.rate, l.secs)
	fmt.Fprintf(w, "    %d requests, issued at %.0f req/s (worst ticker lag %s): p50 %s  p90 %s  p99 %s  max %s\n",
		l.total, l.achieved, l.maxLag.Round(time.Microsecond), fmtDur(l.p50), fmtDur(l.p90), fmtDur(l.p99), fmtDur(l.max))
	fmt.Fprintf(w, "\n(d) Redis used_memory per queued message, M=%d (INFO memory, after − before)\n", r.m)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	g, a := r.gwMem, r.asynqMem
	fmt.Fprintf(tw, "    gateway, API only (workers off)\t%.0f B/msg\t(%d → %d bytes)\n", g.perMsg, g.before, g.after)
	fmt.Fprintf(tw, "    bare Asynq, 1-byte payload\t%.0f B/msg\t(%d → %d bytes)\n", a.perMsg, a.before, a.after)
	h := r.hot
	fmt.Fprintf(tw, "    gateway, per SMS delivered end to end\t%.0f B/msg\t(used_memory growth over %d delivered SMS, as (b) on a fresh gateway, kept in the hot window with their history, indexes and audit events; queues empty)\n",
		h.delivered, h.n)
	fmt.Fprintf(tw, "    the same, steadily\t%.0f B/msg\t(once the audit log's export ran, as it does every minute: the events' tree hashes leave Redis for the blob store, the events stay for the audit retention)\n",
		h.steady)
	fmt.Fprintf(tw, "    the same once archived\t%.0f B/msg\t(after one archive pass moved all %d to the blob store in %s, %.0f msgs/s, and the audit log's export caught up, 3 days on; what stays: conversations, contacts, consent)\n",
		h.archived, h.n, h.archiveTook.Round(time.Millisecond), rateOf(h.n, h.archiveTook))
	tw.Flush()
	fmt.Fprintf(w, "    by kind of key (MEMORY USAGE, which leaves out Redis' own overhead), the %d queued SMS (API only):\n", g.counted)
	printMemoryByKind(w, g.kinds, g.counted)
	fmt.Fprintf(w, "    by kind of key (MEMORY USAGE, which leaves out Redis' own overhead), the %d delivered SMS in the hot window (all to one number):\n", h.n)
	printMemoryByKind(w, h.deliveredKinds, h.n)
	fmt.Fprintf(w, "    and once archived:\n")
	printMemoryByKind(w, h.archivedKinds, h.n)
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
	cmds     int64         // Redis commands, each command of a pipeline counted
	redisCPU time.Duration // redis-server user+sys CPU
	procCPU  time.Duration // this process' user+sys CPU
	dials    int64         // provider (simulator) connections opened
	rows     []tallyRow    // by caller, with BENCH_REDIS_CALLERS=1; by command otherwise
	server   []serverStat  // INFO commandstats: what redis-server spent its time on
}

type meter struct {
	e        *env
	byCaller *redisTally // the batched commands by caller (BENCH_REDIS_CALLERS=1), if counted apart
	stats    map[string]serverStat
	tally    *redisTally
	redisCPU time.Duration
	procCPU  time.Duration
	profile  *os.File
	dials    int64
}

func (e *env) startMeter(t *redisTally, phase string) *meter {
	t.reset()
	m := &meter{e: e, tally: t, stats: e.commandStats(), redisCPU: e.redisCPU(), procCPU: processCPU(), dials: e.guard.dials.Load()}
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
	trips, cmds, rows := m.tally.snapshot()
	if m.byCaller != nil {
		_, _, rows = m.byCaller.snapshot()
	}
	var server []serverStat
	for name, after := range m.e.commandStats() {
		before := m.stats[name]
		if d := (serverStat{name: name, calls: after.calls - before.calls, usec: after.usec - before.usec}); d.calls > 0 {
			server = append(server, d)
		}
	}
	slices.SortFunc(server, func(a, b serverStat) int { return int(b.usec - a.usec) })
	return usage{wall: wall, trips: trips, cmds: cmds, rows: rows, server: server, dials: m.e.guard.dials.Load() - m.dials,
		redisCPU: m.e.redisCPU() - m.redisCPU, procCPU: processCPU() - m.procCPU}
}

func (u usage) printCallers(w io.Writer, name string, n int) {
	if len(u.rows) == 0 {
		return
	}
	fmt.Fprintf(w, "    %s, Redis commands by %s (a pipeline counts once; the mean includes waiting for a pooled connection, or for a batch):\n", name, u.rows[0].kind)
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

// serverStat is one command's line of INFO commandstats: how often Redis
// ran it and the time it spent (scripts: EVALSHA and EVAL, whatever the
// script).
type serverStat struct {
	name  string
	calls int64
	usec  int64
}

func (e *env) commandStats() map[string]serverStat {
	info, err := e.rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		e.b.Fatalf("INFO commandstats: %v", err)
	}
	out := map[string]serverStat{}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		st := serverStat{name: strings.TrimPrefix(name, "cmdstat_")}
		for _, kv := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "calls":
				st.calls, _ = strconv.ParseInt(v, 10, 64)
			case "usec":
				st.usec, _ = strconv.ParseInt(v, 10, 64)
			}
		}
		out[st.name] = st
	}
	return out
}

// printServer prints what redis-server spent a phase's time on, by
// command, per message (the commands run inside scripts count under their
// own names too, so the shares overlap).
func (u usage) printServer(w io.Writer, name string, n int) {
	if len(u.server) == 0 {
		return
	}
	fmt.Fprintf(w, "    %s, redis-server time by command (INFO commandstats; commands called by scripts count in both):\n", name)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "      \tcalls per msg\tµs per call\tµs per msg\n")
	for i, st := range u.server {
		if i == 12 {
			break
		}
		fmt.Fprintf(tw, "      %s\t%.2f\t%.1f\t%.1f\n", st.name, float64(st.calls)/float64(n),
			float64(st.usec)/float64(st.calls), float64(st.usec)/float64(n))
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
	cmds    int64
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
	t.trips, t.cmds, t.by = 0, 0, map[string]*tallyRow{}
	t.mu.Unlock()
}

func (t *redisTally) snapshot() (trips, cmds int64, rows []tallyRow) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rows = make([]tallyRow, 0, len(t.by))
	for _, r := range t.by {
		rows = append(rows, *r)
	}
	slices.SortFunc(rows, func(a, b tallyRow) int { return int(b.total - a.total) })
	return t.trips, t.cmds, rows
}

func (t *redisTally) record(cmdName string, args []any, n int, d time.Duration) {
	kind, label := "command", cmdName
	if t.callers {
		kind, label = "caller", caller()+queueOf(args)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.trips++
	t.cmds += int64(n)
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
		t.record(cmd.Name(), cmd.Args(), 1, time.Since(start))
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
		t.record("pipeline("+strings.Join(names, ",")+")", args, len(cmds), time.Since(start))
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
			!strings.HasPrefix(fn, "github.com/patientmsg/gateway/internal/bench.(*redisTally)") &&
			!strings.HasPrefix(fn, "github.com/patientmsg/gateway/internal/autopipe.") &&
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

// memoryByKind groups every key in Redis by its kind (its name with ids,
// hash tags and numbers as *) and sums MEMORY USAGE per kind, largest
// first.
func (e *env) memoryByKind() []kindMemory {
	ctx := context.Background()
	sums := map[string]*kindMemory{}
	it := e.rdb.Scan(ctx, 0, "*", 1000).Iterator()
	var batch []string
	flush := func() {
		pipe := e.rdb.Pipeline()
		cmds := make([]*redis.IntCmd, len(batch))
		for i, k := range batch {
			cmds[i] = pipe.MemoryUsage(ctx, k, 0)
		}
		_, _ = pipe.Exec(ctx)
		for i, k := range batch {
			kind := keyKind(k)
			s := sums[kind]
			if s == nil {
				s = &kindMemory{kind: kind}
				sums[kind] = s
			}
			s.keys++
			s.bytes += cmds[i].Val()
		}
		batch = batch[:0]
	}
	for it.Next(ctx) {
		if batch = append(batch, it.Val()); len(batch) == 1000 {
			flush()
		}
	}
	flush()
	out := make([]kindMemory, 0, len(sums))
	for _, s := range sums {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b kindMemory) int { return int(b.bytes - a.bytes) })
	return out
}

type kindMemory struct {
	kind  string
	keys  int
	bytes int64
}

// keyKind is a key's name with its variable parts as *: "gw:m:{*}:ev".
func keyKind(k string) string {
	parts := strings.Split(k, ":")
	for i, p := range parts {
		switch {
		case strings.HasPrefix(p, "{") && strings.HasSuffix(p, "}"):
			parts[i] = "{*}"
		case len(p) >= 12 || strings.ContainsAny(p, "0123456789+"):
			parts[i] = "*"
		}
	}
	return strings.Join(parts, ":")
}

func printMemoryByKind(w io.Writer, kinds []kindMemory, n int) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "      key\tkeys\tMEMORY USAGE per SMS\n")
	var rest int64
	for i, k := range kinds {
		if i >= 12 {
			rest += k.bytes
			continue
		}
		fmt.Fprintf(tw, "      %s\t%d\t%.0f B\n", k.kind, k.keys, float64(k.bytes)/float64(n))
	}
	if rest > 0 {
		fmt.Fprintf(tw, "      (the other %d kinds)\t\t%.0f B\n", len(kinds)-12, float64(rest)/float64(n))
	}
	tw.Flush()
}

// signingKey is a new audit signing key (GATEWAY_AUDIT_SIGNING_KEY): the
// gateway exports its audit log, as in production.
func (e *env) signingKey() string {
	skey, _, err := audit.GenerateKey("bench")
	if err != nil {
		e.b.Fatal(err)
	}
	return skey
}
