package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/hibiken/asynq"

	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/service"
	"github.com/patientmsg/gateway/internal/service/servicetest"
	"github.com/patientmsg/gateway/workers"
)

// BenchmarkDeliveryControl measures what delivery control promises:
//
//	(r) rate-limit accuracy: four worker processes share one sender paced
//	    at BENCH_RL_RATE segments/s; the simulator's arrival times give the
//	    rate actually sent against the limit;
//	(q) a crisis message behind BENCH_BACKLOG (default 1,000,000) queued
//	    bulk messages: p50/p99 from the API call to the provider's
//	    acceptance, for messages sent open-loop at 20/s;
//	(t) SMS throughput with 10,000 and with BENCH_BACKLOG bulk tasks queued
//	    ahead, and the Redis memory a queued task takes, against bare Asynq's
//	    enqueue of the same backlog on the same Redis.
func BenchmarkDeliveryControl(b *testing.B) {
	rlRate := envInt(b, "BENCH_RL_RATE", 200)
	rlSecs := envInt(b, "BENCH_RL_SECONDS", 30)
	backlog := envInt(b, "BENCH_BACKLOG", 1_000_000)
	nThroughput := envInt(b, "BENCH_N", 5000)
	e := newEnv(b)
	b.ResetTimer()
	var r deliveryReport
	r.rl = e.runRateAccuracy(rlRate, rlSecs, 4)
	for _, depth := range []int{10_000, backlog} {
		r.backlogs = append(r.backlogs, e.runBehindBacklog(depth, nThroughput))
	}
	b.StopTimer()
	if refused := e.guard.refused.Load(); refused > 0 {
		b.Fatalf("the loopback guard refused %d provider calls to non-loopback hosts", refused)
	}
	r.redisVersion = e.redisVersion()
	r.print(os.Stdout)
	b.ReportMetric(r.rl.used*100, "rl_used_%")
	b.ReportMetric(max(r.rl.used-1, 0)*100, "rl_over_%")
	b.ReportMetric(r.rl.steady*100, "rl_steady_%")
	last := r.backlogs[len(r.backlogs)-1]
	b.ReportMetric(ms(last.crisisP99), "crisis_p99_ms")
	b.ReportMetric(last.perTask, "backlog_redis_B/task")
}

type rateAccuracy struct {
	rate, workers, n int
	burst            int           // the sender's configured burst (two seconds' worth)
	span             time.Duration // first to last send
	allowed          float64       // what GCRA allows over the span: burst + rate×span
	used             float64       // sent / allowed
	steady           float64       // sent per second after the first 5 s (start-up) over the rate
	peak5s           float64       // most sends in any 5 s window after the first second
	attempts         int           // provider attempts over all messages (n when none was wasted)
}

// runRateAccuracy posts rate×secs one-segment SMS through an API process to
// `procs` worker processes that share one sender limited to rate/s.
func (e *env) runRateAccuracy(rate, secs, procs int) rateAccuracy {
	b := e.b
	e.reset()
	n := rate * secs
	// The API process, with the simulator (every request recorded); the
	// worker processes run on its configuration.
	g := e.start(servicetest.Options{Role: config.RoleAPI, Configure: func(cfg *config.Config) {
		cfg.Senders.SMSPerSecond = float64(rate)
		cfg.OpsAddr = ""
	}})
	sim := g.Twilio
	svcs := []*service.Service{g.Service}
	defer func() {
		e.http.CloseIdleConnections()
		for _, s := range svcs {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_ = s.Shutdown(ctx)
			cancel()
		}
		g.CloseSimulators()
	}()
	var ws []*service.Service
	for range procs {
		w, err := service.New(g.Config, config.RoleWorker, service.Options{Logger: e.log, Transport: e.guard})
		if err != nil {
			b.Fatal(err)
		}
		ws = append(ws, w)
	}
	for _, w := range ws {
		if err := w.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		svcs = append(svcs, w)
	}
	bodies := make([][]byte, n)
	for i := range bodies {
		bodies[i] = msgJSON
	}
	ids, _, _ := e.postAll(g, "rate", bodies)
	msgs := e.waitLedger("rate", ids, time.Now().Add(time.Duration(secs)*3*time.Second+time.Minute), "sent",
		func(m *ledger.Message) bool { return m.Status.Rank() >= ledger.StatusSent.Rank() })
	var at []time.Time
	for _, r := range sim.Requests() {
		if r.Method == "POST" && strings.HasSuffix(r.Path, "/Messages.json") && r.Reply < 300 {
			at = append(at, r.At)
		}
	}
	slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
	res := rateAccuracy{rate: rate, workers: procs, n: len(at)}
	for _, m := range msgs {
		res.attempts += m.Attempts
	}
	if len(at) != n {
		b.Fatalf("rate: the simulator got %d messages, want %d", len(at), n)
	}
	// GCRA lets the burst go at once and then one every 1/rate: over the
	// span of the run at most burst + rate×span may go out.
	res.burst = service.SenderBurst(float64(rate))
	res.span = at[len(at)-1].Sub(at[0])
	res.allowed = float64(res.burst) + float64(rate)*res.span.Seconds()
	res.used = float64(len(at)) / res.allowed
	warm := at[0].Add(5 * time.Second)
	fromWarm, _ := slices.BinarySearchFunc(at, warm, func(a, b time.Time) int { return a.Compare(b) })
	if d := at[len(at)-1].Sub(warm); d > 0 {
		res.steady = float64(len(at)-fromWarm) / d.Seconds() / float64(rate)
	}
	firstAfter, _ := slices.BinarySearchFunc(at, at[0].Add(time.Second), func(a, b time.Time) int { return a.Compare(b) })
	for i := firstAfter; i < len(at); i++ {
		j := i
		for j < len(at) && at[j].Sub(at[i]) < 5*time.Second {
			j++
		}
		res.peak5s = max(res.peak5s, float64(j-i))
	}
	return res
}

type backlogRun struct {
	depth              int
	enqueue            time.Duration // bare Asynq enqueue of the backlog, 8 goroutines
	perTask            float64       // Redis bytes per queued backlog task
	crisis             int
	crisisP50          time.Duration
	crisisP99          time.Duration
	crisisMax          time.Duration
	n                  int
	throughput         time.Duration // n normal SMS from the first POST to the last delivered
	bulkLeft, bulkDone int64         // backlog tasks still queued when the phase ended
}

// queueBacklog queues depth bulk send tasks, from 8 goroutines by bare
// Asynq, for messages whose records do not exist, so a worker drops each
// after its pacing and claim: the cheapest a queued message can be. It
// returns how long that took and the Redis memory per task.
func (e *env) queueBacklog(depth int) (time.Duration, float64) {
	b := e.b
	before := e.usedMemory()
	client, closeClient := e.bareClient()
	defer closeClient()
	start := time.Now()
	failed, first := parallel(depth, 8, func(i int) error {
		t, err := workers.NewSendTask(workers.SendOptions{MessageID: fmt.Sprintf("BACKLOG%019d", i+1), Channel: "sms",
			Priority: workers.PriorityBulk, Tenant: "bulk-clinic", Cost: 1, MaxAttempts: 8})
		if err == nil {
			_, err = client.Enqueue(t)
		}
		return err
	})
	took := time.Since(start)
	if failed > 0 {
		b.Fatalf("enqueue backlog: %d of %d failed; first: %v", failed, depth, first)
	}
	return took, float64(e.usedMemory()-before) / float64(depth)
}

// runBehindBacklog queues depth bulk send tasks (for messages whose records
// are gone, so a worker drops each after its pacing and claim: the cheapest
// a queued message can be), then measures crisis latency and the
// throughput of normal SMS while the workers work through the backlog.
func (e *env) runBehindBacklog(depth, n int) backlogRun {
	b := e.b
	e.reset()
	res := backlogRun{depth: depth, n: n}
	res.enqueue, res.perTask = e.queueBacklog(depth)

	g := e.startGateway(config.RoleAll)
	defer e.stopGateway(g)
	// (q) crisis messages, open loop at 20/s for 10 s.
	crisis := []byte(`{"channel":"sms","to":{"phone":"+14155550100"},"priority":"crisis","body":"The clinic is closed today because of the flood. Do not travel."}`)
	var ids []string
	var mu sync.Mutex
	var wg sync.WaitGroup
	tick := time.NewTicker(50 * time.Millisecond)
	for i := 0; i < 200; i++ {
		<-tick.C
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, err := e.post(g.URL, crisis)
			if err != nil {
				b.Errorf("crisis: %v", err)
				return
			}
			mu.Lock()
			ids = append(ids, id)
			mu.Unlock()
		}()
	}
	tick.Stop()
	wg.Wait()
	msgs := e.waitLedger("crisis", ids, time.Now().Add(time.Minute), "sent",
		func(m *ledger.Message) bool { return m.Status.Rank() >= ledger.StatusSent.Rank() })
	var lat []time.Duration
	for _, m := range msgs {
		lat = append(lat, eventAt(m, ledger.StatusSent).Sub(m.CreatedAt))
	}
	slices.Sort(lat)
	res.crisis = len(lat)
	res.crisisP50, res.crisisP99, res.crisisMax = lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1]

	// (t) normal SMS throughput with the backlog still queued ahead.
	bodies := make([][]byte, n)
	for i := range bodies {
		bodies[i] = msgJSON
	}
	ids2, first, _ := e.postAll(g, "throughput", bodies)
	e.waitLedger("throughput", ids2, time.Now().Add(timeoutFor(n)), "delivered",
		func(m *ledger.Message) bool { return m.Status == ledger.StatusDelivered })
	res.throughput = time.Since(first)
	info, err := asynq.NewInspectorFromRedisClient(e.rdb).GetQueueInfo(workers.QueueFor(workers.PriorityBulk))
	if err == nil {
		res.bulkLeft = int64(info.Pending + info.Scheduled + info.Retry + info.Active)
		res.bulkDone = int64(depth) - res.bulkLeft
	}
	return res
}

type deliveryReport struct {
	redisVersion string
	rl           rateAccuracy
	backlogs     []backlogRun
}

func (r deliveryReport) print(out io.Writer) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "\nDelivery control (redis %s)\n", r.redisVersion)
	rl := r.rl
	fmt.Fprintf(w, "rate limit\t%d worker processes, one sender at %d segments/s, %d messages\n", rl.workers, rl.rate, rl.n)
	fmt.Fprintf(w, "  sent vs allowed\t%d in %s; the limit allows %.0f (burst %d + %d/s): %.1f%% used, %.1f%% above (target: ≥ 98%% used, ≤ 1%% above)\n",
		rl.n, rl.span.Round(time.Millisecond), rl.allowed, rl.burst, rl.rate, rl.used*100, max(rl.used-1, 0)*100)
	fmt.Fprintf(w, "  after start-up\tfrom 5 s on, %.1f%% of the rate (above 100%%: the burst left unused while the backlog was first queued, caught up within the bound)\n", rl.steady*100)
	fmt.Fprintf(w, "  busiest 5 s\t%.0f sends = %.1f%% of 5 s at the limit (after the first second)\n", rl.peak5s, rl.peak5s/float64(rl.rate*5)*100)
	fmt.Fprintf(w, "  attempts\t%d for %d messages (waiting for the sender spends none)\n", rl.attempts, rl.n)
	for _, q := range r.backlogs {
		fmt.Fprintf(w, "backlog %d bulk tasks\tenqueued by bare Asynq in %s (%.0f/s), %.0f B of Redis per queued task\n",
			q.depth, q.enqueue.Round(time.Millisecond), rateOf(q.depth, q.enqueue), q.perTask)
		fmt.Fprintf(w, "  crisis behind it\t%d messages at 20/s: API call → provider accepted p50 %s, p99 %s, max %s (target p99 ≤ 1 s)\n",
			q.crisis, fmtDur(q.crisisP50), fmtDur(q.crisisP99), fmtDur(q.crisisMax))
		fmt.Fprintf(w, "  normal SMS behind it\t%d in %s = %.0f msgs/s delivered; %d backlog tasks done meanwhile, %d left\n",
			q.n, q.throughput.Round(time.Millisecond), rateOf(q.n, q.throughput), q.bulkDone, q.bulkLeft)
	}
	w.Flush()
}
