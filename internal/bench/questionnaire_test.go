package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/service/servicetest"
	"github.com/patientmsg/gateway/workers"
)

// BenchmarkQuestionnaireAnswers measures how fast a patient who answers an
// SMS questionnaire gets the next question. BENCH_QN_PATIENTS (default
// 10,000, at most 10,000) patients each start a five-question choice
// questionnaire (defined with PUT /v1/questionnaires/{name}, started with
// POST /v1/questionnaires/{name}/responses); once every first question is
// at the simulator, their answers arrive through the signed Twilio inbound
// webhook at BENCH_QN_RATE (default 200) answers/s, open loop, round by
// round (every patient answers question 1, then every patient question 2,
// …), until each has answered all five. A patient answers a question only
// once the simulator accepted it (the schedule waits, and says so, if it
// has not). For each answer it takes the time from the webhook POST to
// the simulator's acceptance of the next question (or of the closing line
// after the fifth), as the simulator recorded it, and fails unless every
// response is completed with five answers.
//
// In the same run, on the same Redis (flushed), bare Asynq does the same
// provider work at the same rate: one task per answer, in the same order,
// whose handler sends the message the gateway sent for that answer (same
// recipient, same body) through the real SMS channel to a fresh simulator;
// timed from the enqueue to the simulator's acceptance, for
// BENCH_QN_BASELINE_SECONDS (default 60) of answers.
func BenchmarkQuestionnaireAnswers(b *testing.B) {
	n := envInt(b, "BENCH_QN_PATIENTS", 10_000)
	rate := envInt(b, "BENCH_QN_RATE", 200)
	baseSecs := envInt(b, "BENCH_QN_BASELINE_SECONDS", 60)
	if n > 10_000 {
		b.Fatalf("BENCH_QN_PATIENTS=%d: at most 10,000 (the patients' numbers are +1 415 555 0000 to 9999)", n)
	}
	e := newEnv(b)
	defaults := config.NewDefaultConfig()
	e.configure(&defaults)
	concurrency := defaults.Worker.Concurrency + defaults.Worker.CrisisConcurrency
	load := loadAverage()

	b.ResetTimer()
	gw := e.runQuestionnaire(n, rate)
	base := e.runQuestionnaireBaseline(gw, min(len(gw.lat), rate*baseSecs), rate, concurrency)
	b.StopTimer()
	if refused := e.guard.refused.Load(); refused > 0 {
		b.Fatalf("the loopback guard refused %d provider calls to non-loopback hosts", refused)
	}
	r := qnReport{gw: gw, base: base, rate: rate, concurrency: concurrency, redisVersion: e.redisVersion(),
		loadBefore: load, loadAfter: loadAverage()}
	r.print(os.Stdout)

	b.ReportMetric(ms(pctDur(gw.lat, 50)), "answer_p50_ms")
	b.ReportMetric(ms(pctDur(gw.lat, 99)), "answer_p99_ms")
	b.ReportMetric(ms(pctDur(base.lat, 99)), "asynq_p99_ms")
	b.ReportMetric(float64(pctDur(gw.lat, 99))/float64(pctDur(base.lat, 99)), "p99_ratio")
	b.ReportMetric(rateOf(len(gw.lat), gw.sent.span), "answers/s")
	b.ReportMetric(float64(gw.completed), "completed")
}

// qnName is the benchmark's questionnaire.
const qnName = "bench_recovery"

// qnQuestions is how many questions it has; every patient answers all.
const qnQuestions = 5

// qnSpec is its definition: five choice questions of three options, in
// order, no risk rules, reminders and expiry far beyond the run.
var qnSpec = func() []byte {
	type opt struct {
		Key    string            `json:"key"`
		Text   map[string]string `json:"text"`
		Points float64           `json:"points"`
	}
	type question struct {
		ID      string            `json:"id"`
		Type    string            `json:"type"`
		Text    map[string]string `json:"text"`
		Options []opt             `json:"options"`
	}
	texts := [qnQuestions][4]string{
		{"How is your pain today?", "None", "Mild", "Bad"},
		{"How are you sleeping?", "Well", "Poorly", "Hardly"},
		{"How is your appetite?", "Normal", "Low", "None"},
		{"Can you walk around the house?", "Easily", "With help", "No"},
		{"How do you feel overall?", "Better", "The same", "Worse"},
	}
	var qs []question
	for i, t := range texts {
		q := question{ID: fmt.Sprintf("q%d", i+1), Type: "choice", Text: map[string]string{"en": t[0]}}
		for k := 1; k <= 3; k++ {
			q.Options = append(q.Options, opt{Key: fmt.Sprint(k), Text: map[string]string{"en": t[k]}, Points: float64(k - 1)})
		}
		qs = append(qs, q)
	}
	spec, err := json.Marshal(map[string]any{
		"title": map[string]string{"en": "Recovery check"}, "code": "RC",
		"intro":     map[string]string{"en": "Five short questions about your recovery."},
		"questions": qs, "remind_after": "24h", "expire_after": "72h",
	})
	if err != nil {
		panic(err)
	}
	return spec
}()

// qnPhone is patient i's number: +1 415 555 and four digits, as the
// voice phase's.
func qnPhone(i int) string { return fmt.Sprintf("+1415555%04d", i) }

// qnAnswer is answer j of n patients: patient j%n answers question j/n+1
// with one of the three keys.
func qnAnswer(j, n int) string { return fmt.Sprint(1 + (j%n+j/n)%3) }

// qnResult is the gateway's run.
type qnResult struct {
	n       int
	started time.Duration // the first POST …/responses → the last answered
	asked   time.Duration // the first POST …/responses → every first question accepted
	sent    paced         // the answers through the webhook
	lat     []time.Duration
	// to and body are, for each answer, the message the gateway sent for
	// it (the baseline sends the same).
	to, body []string
	// spans of a sample of answers: POST → the next question's ledger
	// record made, and from there → accepted.
	toLedger, toSim []time.Duration
	extra           int      // messages accepted beyond the questions and closing lines
	ids             []string // the responses
	completed       int
	listed          int // responses the questionnaire's list showed, page after page
	states          map[string]int
	retries         int64 // the gateway's tasks that went back for a retry
	use             usage
	accepted        int // messages the simulator accepted during the answers
	// deepest are the most tasks the replies queue and the high-priority
	// send queue held waiting, and when (since the first answer).
	deepest [2]queueDepth
}

type queueDepth struct {
	pending int64
	at      time.Duration
}

// watchQueues samples how many tasks wait in each of two queues every
// 20 ms until the function it returns is called, which returns the
// deepest each was.
func (e *env) watchQueues(a, b string) func() [2]queueDepth {
	done, out := make(chan struct{}), make(chan [2]queueDepth)
	go func() {
		var deepest [2]queueDepth
		start := time.Now()
		ctx := context.Background()
		for t := time.NewTicker(20 * time.Millisecond); ; {
			select {
			case <-done:
				t.Stop()
				out <- deepest
				return
			case <-t.C:
			}
			for i, q := range []string{a, b} {
				if n, err := e.rdb.LLen(ctx, "asynq:{"+q+"}:pending").Result(); err == nil && n > deepest[i].pending {
					deepest[i] = queueDepth{pending: n, at: time.Since(start)}
				}
			}
		}
	}()
	return func() [2]queueDepth { close(done); return <-out }
}

// runQuestionnaire starts every patient's questionnaire, then has their
// answers arrive at rate per second through the signed inbound webhook.
func (e *env) runQuestionnaire(n, rate int) *qnResult {
	b := e.b
	e.reset()
	tally := newRedisTally()
	acc := &acceptLog{guard: e.guard, count: map[string]int{}}
	// The simulator records every request (the time it accepted each
	// message); acc counts them as the gateway's client gets its 201.
	g := e.start(servicetest.Options{Role: config.RoleAll, Transport: acc, Hooks: []redis.Hook{tally}})
	defer e.stopGateway(g)
	e.call(g.URL, "PUT", "/v1/questionnaires/"+qnName, "application/json", qnSpec)

	res := &qnResult{n: n, ids: make([]string, n)}
	start := time.Now()
	failed, firstErr := parallel(n, httpClients, func(i int) error {
		body := fmt.Appendf(nil, `{"channel":"sms","to":{"phone":%q},"locale":"en"}`, qnPhone(i))
		out, err := e.request(g.URL, "POST", "/v1/questionnaires/"+qnName+"/responses", "application/json", body)
		if err == nil && out["state"] != "in_progress" {
			err = fmt.Errorf("a started response is %v", out["state"])
		}
		res.ids[i], _ = out["id"].(string)
		return err
	})
	res.started = time.Since(start)
	if failed > 0 {
		b.Fatalf("questionnaire: %d of %d starts failed; first: %v", failed, n, firstErr)
	}
	// Every first question accepted, and its callbacks in: the answers
	// start on a quiet gateway.
	e.waitSim(g, "first questions", n, true)
	res.asked = time.Since(start)

	total := qnQuestions * n
	meter := e.startMeter(tally, "gateway-questionnaire")
	before := g.Twilio.Stats().Accepted
	depth := e.watchQueues(workers.QueueReplies, workers.QueueFor(workers.PriorityHigh))
	res.sent = pace(total, rate, 2*time.Minute,
		// Answer j is to question j/n+1: the patient has it once the
		// simulator accepted j/n+1 messages to them.
		func(j int) bool { return acc.accepted(qnPhone(j%n)) > j/n },
		func(j int) error { return e.inbound(g, qnPhone(j%n), qnAnswer(j, n), j) })
	if res.sent.err != nil || res.sent.failed > 0 {
		b.Fatalf("questionnaire: %d of %d answers refused by the webhook (first: %v); %v", res.sent.failed, total,
			res.sent.firstErr, res.sent.err)
	}
	// Every answer's next question or closing line accepted.
	end := e.waitSim(g, "answers", (qnQuestions+1)*n, false)
	res.deepest = depth()
	res.use = meter.stop(end.Sub(res.sent.at[0]))
	res.accepted = g.Twilio.Stats().Accepted - before
	res.retries = e.retriedTasks()

	e.checkResponses(g, res)

	byTo := simMessages(g.Twilio.Requests())
	for _, msgs := range byTo {
		res.extra += max(0, len(msgs)-(qnQuestions+1))
	}
	res.lat, res.to, res.body = make([]time.Duration, total), make([]string, total), make([]string, total)
	var sample []int // every tenth answer: its next message's ledger record
	var ids []string
	for j := range total {
		to := qnPhone(j % n)
		m, i := nextMessage(byTo[to], res.sent.at[j])
		if i != j/n+1 {
			b.Fatalf("questionnaire: answer %d to question %d: the next message to the patient is their message %d (want %d)",
				j, j/n+1, i+1, j/n+2)
		}
		res.lat[j], res.to[j], res.body[j] = m.at.Sub(res.sent.at[j]), to, m.body
		if j%10 == 0 {
			sample = append(sample, j)
			ids = append(ids, m.id)
		}
	}
	msgs, h := e.messages(ids)
	if h.missing+h.errs > 0 {
		b.Fatalf("questionnaire: the next questions' ledger records: %s", h)
	}
	for k, j := range sample {
		made := msgs[k].CreatedAt
		res.toLedger = append(res.toLedger, made.Sub(res.sent.at[j]))
		res.toSim = append(res.toSim, res.sent.at[j].Add(res.lat[j]).Sub(made))
	}
	return res
}

// waitSim waits until the gateway's simulator has accepted want messages
// in all (and, with callbacks, made both status callbacks of each), and
// returns when it had. It fails the phase on a failed callback, an
// archived task or at its deadline.
func (e *env) waitSim(g *servicetest.Gateway, what string, want int, callbacks bool) time.Time {
	b := e.b
	deadline := time.Now().Add(timeoutFor(want))
	for nextCheck := time.Now(); ; time.Sleep(2 * time.Millisecond) {
		st := g.Twilio.Stats()
		if st.CallbackErrors > 0 || st.Rejected > 0 {
			b.Fatalf("questionnaire (%s): %d status callbacks failed, %d messages refused (sim stats %+v)", what, st.CallbackErrors, st.Rejected, st)
		}
		if st.Accepted >= want && (!callbacks || st.Callbacks >= 2*want) {
			return time.Now()
		}
		if time.Now().After(nextCheck) {
			e.failOnTroubledTasks("questionnaire ("+what+")", nil, false)
			nextCheck = time.Now().Add(100 * time.Millisecond)
		}
		if time.Now().After(deadline) {
			b.Fatalf("questionnaire (%s): after %s the simulator accepted %d of %d messages (answers lost)", what, timeoutFor(want), st.Accepted, want)
		}
	}
}

// retriedTasks counts the tasks of the gateway that failed once and went
// back for a retry, over all queues (Asynq's per-queue failure counters).
func (e *env) retriedTasks() int64 {
	in := asynq.NewInspectorFromRedisClient(e.rdb)
	qs, err := in.Queues()
	if err != nil {
		return -1
	}
	var n int64
	for _, q := range qs {
		if info, err := in.GetQueueInfo(q); err == nil {
			n += int64(info.FailedTotal)
		}
	}
	return n
}

// checkResponses reads every response through the API (GET
// /v1/questionnaire-responses/{id}) and fails unless each is completed
// with all its answers. It also counts what the questionnaire's list (GET
// /v1/questionnaires/{name}/responses, 1,000 a page) shows.
func (e *env) checkResponses(g *servicetest.Gateway, res *qnResult) {
	res.states = map[string]int{}
	var mu sync.Mutex
	failed, firstErr := parallel(len(res.ids), 16, func(i int) error {
		r, err := e.request(g.URL, "GET", "/v1/questionnaire-responses/"+url.PathEscape(res.ids[i]), "", nil)
		if err != nil {
			return err
		}
		answers, _ := r["answers"].([]any)
		state, _ := r["state"].(string)
		mu.Lock()
		defer mu.Unlock()
		res.states[state]++
		if state == "completed" && len(answers) == qnQuestions {
			res.completed++
		}
		return nil
	})
	if failed > 0 || res.completed != res.n {
		e.b.Fatalf("questionnaire: %d of %d responses completed with %d answers; states %v; %d could not be read (first: %v)",
			res.completed, res.n, qnQuestions, res.states, failed, firstErr)
	}
	for before := ""; ; {
		page := e.call(g.URL, "GET", "/v1/questionnaires/"+qnName+"/responses?limit=1000"+before, "", nil)
		list, _ := page["responses"].([]any)
		res.listed += len(list)
		next, _ := page["next"].(string)
		if next == "" || len(list) == 0 {
			return
		}
		before = "&before=" + url.QueryEscape(next)
	}
}

// qnBaseline is bare Asynq's run.
type qnBaseline struct {
	sent paced
	lat  []time.Duration
	use  usage
}

// runQuestionnaireBaseline has bare Asynq send, at the same rate, the
// messages the gateway sent for the first m answers, one task per answer
// enqueued when the answer was due, to a fresh simulator through the real
// SMS channel.
func (e *env) runQuestionnaireBaseline(q *qnResult, m, rate, concurrency int) *qnBaseline {
	b := e.b
	e.reset()
	rdb, tally := e.newTalliedRedis()
	defer rdb.Close()
	w := e.startSameWork("questionnaire baseline", rdb, concurrency, twiliosim.Options{})
	defer w.stop()
	cl := asynq.NewClientFromRedisClient(rdb)
	defer cl.Close()

	ctx := context.Background()
	res := &qnBaseline{}
	meter := e.startMeter(tally, "asynq-questionnaire")
	res.sent = pace(m, rate, time.Minute, nil, func(j int) error {
		return w.enqueue(ctx, cl, a2Task{ID: ledger.NewID(), To: q.to[j], Body: q.body[j]})
	})
	if res.sent.err != nil || res.sent.failed > 0 {
		b.Fatalf("questionnaire baseline: %d of %d enqueues failed (first: %v); %v", res.sent.failed, m, res.sent.firstErr, res.sent.err)
	}
	deadline := time.Now().Add(timeoutFor(m))
	for ; ; time.Sleep(2 * time.Millisecond) {
		st := w.sim.Stats()
		w.failOnErrors(st)
		if st.Accepted >= m {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("questionnaire baseline: after %s the simulator accepted %d of %d messages", timeoutFor(m), st.Accepted, m)
		}
	}
	res.use = meter.stop(time.Since(res.sent.at[0]))
	byTo := simMessages(w.sim.Requests())
	res.lat = make([]time.Duration, m)
	for j := range m {
		msg, i := nextMessage(byTo[q.to[j]], res.sent.at[j])
		if i < 0 {
			b.Fatalf("questionnaire baseline: task %d: no message to its recipient accepted after the enqueue", j)
		}
		res.lat[j] = msg.at.Sub(res.sent.at[j])
	}
	return res
}

// ---------------------------------------------------------------------------
// pacing, and what the simulator accepted

// paced is one open-loop run of sends at a steady rate.
type paced struct {
	at     []time.Time     // when send j started
	took   []time.Duration // how long send j took
	span   time.Duration   // the first send → the last
	maxLag time.Duration   // how late a send started after it was due, at worst
	held   int             // sends that waited for ready
	failed int
	// firstErr is the first send's error; err says why the schedule
	// stopped early.
	firstErr, err error
}

// paceInFlight bounds the sends running at once.
const paceInFlight = 256

// pace calls send(0..count-1) at rate per second, open loop: send j is due
// at start + j/rate and runs on a goroutine of its own (at most
// paceInFlight at once), so a slow one holds up no other. When ready is
// set and ready(j) is false when j is due, the schedule waits for it (for
// holdMax at most, then stops).
func pace(count, rate int, holdMax time.Duration, ready func(j int) bool, send func(j int) error) paced {
	p := paced{at: make([]time.Time, count), took: make([]time.Duration, count)}
	interval := time.Second / time.Duration(rate)
	slots := make(chan struct{}, paceInFlight)
	var mu sync.Mutex
	var wg sync.WaitGroup
	ctx := pprof.WithLabels(context.Background(), pprof.Labels("side", "load-generator"))
	start := time.Now()
	for j := range count {
		if d := time.Until(start.Add(time.Duration(j) * interval)); d > 0 {
			time.Sleep(d)
		}
		if ready != nil && !ready(j) {
			p.held++
			for waited := time.Now(); !ready(j); time.Sleep(time.Millisecond) {
				if time.Since(waited) > holdMax {
					p.err = fmt.Errorf("send %d not ready after %s", j, holdMax)
					wg.Wait()
					return p
				}
			}
		}
		slots <- struct{}{}
		p.maxLag = max(p.maxLag, time.Since(start.Add(time.Duration(j)*interval)))
		wg.Add(1)
		go pprof.Do(ctx, pprof.Labels(), func(context.Context) {
			defer func() { <-slots; wg.Done() }()
			t0 := time.Now()
			err := send(j)
			p.at[j], p.took[j] = t0, time.Since(t0)
			if err != nil {
				mu.Lock()
				p.failed++
				if p.firstErr == nil {
					p.firstErr = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	p.span = p.at[count-1].Sub(p.at[0])
	return p
}

// simMessage is a message the simulator accepted.
type simMessage struct {
	at       time.Time
	id, body string // the gateway's message id (from its status callback URL) and the text
}

// simMessages groups the messages a simulator accepted by recipient, in
// the order it accepted them.
func simMessages(reqs []twiliosim.Request) map[string][]simMessage {
	out := map[string][]simMessage{}
	for _, r := range reqs {
		if r.Method != http.MethodPost || r.Reply != http.StatusCreated || !strings.HasSuffix(r.Path, "/Messages.json") {
			continue
		}
		var id string
		if cb, err := url.Parse(r.Form.Get("StatusCallback")); err == nil {
			id = cb.Query().Get("m")
		}
		to := r.Form.Get("To")
		out[to] = append(out[to], simMessage{at: r.At, id: id, body: r.Form.Get("Body")})
	}
	for _, msgs := range out {
		slices.SortStableFunc(msgs, func(a, b simMessage) int { return a.at.Compare(b.at) })
	}
	return out
}

// nextMessage is the first of msgs accepted after t, and its index (-1
// when none was).
func nextMessage(msgs []simMessage, t time.Time) (simMessage, int) {
	i, _ := slices.BinarySearchFunc(msgs, t, func(m simMessage, t time.Time) int {
		if m.at.After(t) {
			return 1
		}
		return -1
	})
	if i == len(msgs) {
		return simMessage{}, -1
	}
	return msgs[i], i
}

// acceptLog carries the gateway's provider calls through the benchmark's
// loopback guard and counts, per recipient, the messages the simulator
// accepted (201 from Messages.json), as the gateway's client receives
// the answer: a patient answers a question only once it was sent.
type acceptLog struct {
	guard *loopbackTransport
	mu    sync.Mutex
	count map[string]int
}

func (t *acceptLog) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.guard.RoundTrip(req)
	if err != nil || req.Method != http.MethodPost || resp.StatusCode != http.StatusCreated || !strings.HasSuffix(req.URL.Path, "/Messages.json") {
		return resp, err
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(raw))
	var m struct {
		To string `json:"to"`
	}
	if json.Unmarshal(raw, &m) == nil {
		t.mu.Lock()
		t.count[m.To]++
		t.mu.Unlock()
	}
	return resp, nil
}

// CloseIdleConnections closes the guard's idle connections.
func (t *acceptLog) CloseIdleConnections() { t.guard.CloseIdleConnections() }

// accepted is how many messages to phone the simulator accepted so far.
func (t *acceptLog) accepted(phone string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.count[phone]
}

// ---------------------------------------------------------------------------
// report

type qnReport struct {
	gw                                  *qnResult
	base                                *qnBaseline
	rate, concurrency                   int
	redisVersion, loadBefore, loadAfter string
}

// qnTarget is the goal for an answer's next question: p99 at most 1 s.
const qnTarget = time.Second

func (r qnReport) print(out io.Writer) {
	g, a := r.gw, r.base
	fmt.Fprintf(out, "\n=== questionnaire answers — redis-server %s on 127.0.0.1, GOMAXPROCS=%d, %d CPUs ===\n",
		r.redisVersion, runtime.GOMAXPROCS(0), runtime.NumCPU())
	fmt.Fprintf(out, "load average before %s, after %s (other processes on the machine skew every number)\n", r.loadBefore, r.loadAfter)
	fmt.Fprintf(out, "%d patients, a %d-question SMS questionnaire (3 choices a question); answers through the signed Twilio inbound webhook at %d/s, open loop,\n",
		g.n, qnQuestions, r.rate)
	fmt.Fprintf(out, "round by round (each patient's answers %s apart); worker concurrency %d sends (bare Asynq's too) + %d filing answers, poll %s\n\n",
		(time.Duration(g.n) * time.Second / time.Duration(r.rate)).Round(time.Millisecond), r.concurrency, workers.DefaultReplyConcurrency, pollInterval)
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "started\t%d POST /v1/questionnaires/{name}/responses in %s (%.0f/s); every first question accepted by the simulator after %s\n",
		g.n, g.started.Round(time.Millisecond), rateOf(g.n, g.started), g.asked.Round(time.Millisecond))
	fmt.Fprintf(w, "answers sent\t%d in %s = %.1f/s (worst start lag %s; %d waited for their question)\n",
		len(g.lat), g.sent.span.Round(time.Millisecond), rateOf(len(g.lat)-1, g.sent.span), g.sent.maxLag.Round(time.Millisecond), g.sent.held)
	fmt.Fprintf(w, "responses completed\t%d of %d (%d answers each, each read by id); states %v\n", g.completed, g.n, qnQuestions, g.states)
	fmt.Fprintf(w, "GET /v1/questionnaires/{name}/responses\tlisted %d of the %d, 1,000 a page\n", g.listed, g.n)
	fmt.Fprintf(w, "messages accepted during the answers\t%d (%d next questions, %d closing lines; %d beyond those); %d gateway tasks retried\n",
		g.accepted, (qnQuestions-1)*g.n, g.n, g.extra, g.retries)
	fmt.Fprintf(w, "deepest queues while answering\treplies to file (%s) %d waiting, %s into the answers; high-priority sends %d waiting, at %s\n",
		workers.QueueReplies, g.deepest[0].pending, g.deepest[0].at.Round(time.Second), g.deepest[1].pending, g.deepest[1].at.Round(time.Second))
	w.Flush()
	fmt.Fprintln(out)
	w = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "latency\tcount\tp50\tp95\tp99\tmax\n")
	row := func(name string, ds []time.Duration) {
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\n", name, len(ds), pct(ds, 50), pct(ds, 95), pct(ds, 99), pct(ds, 100))
	}
	row("gateway: answer webhook POST → next question (or closing line) accepted by the simulator", g.lat)
	for q := range qnQuestions { // round by round: do the figures drift as the run goes on?
		next := "question " + fmt.Sprint(q+2)
		if q == qnQuestions-1 {
			next = "the closing line"
		}
		row(fmt.Sprintf("  answers to question %d (→ %s), %s–%s into the answers", q+1, next,
			g.sent.at[q*g.n].Sub(g.sent.at[0]).Round(time.Second), g.sent.at[(q+1)*g.n-1].Sub(g.sent.at[0]).Round(time.Second)),
			g.lat[q*g.n:(q+1)*g.n])
	}
	row("  of which: the webhook answered 200", g.sent.took)
	row("  every 10th answer: webhook POST → next question's ledger record made (reply filed, answer taken)", g.toLedger)
	row("  every 10th answer: ledger record made → accepted by the simulator (queued, sent)", g.toSim)
	row(fmt.Sprintf("bare Asynq, same Twilio call: enqueue → accepted by the simulator (%.1f/s)", rateOf(len(a.lat)-1, a.sent.span)), a.lat)
	w.Flush()
	verdict := "OK"
	if pctDur(g.lat, 99) > qnTarget {
		verdict = "ABOVE TARGET"
	}
	fmt.Fprintf(out, "\ngateway / bare Asynq: p50 %.1f×, p99 %.1f×; gateway p99 %s against the target ≤ %s: %s\n",
		float64(pctDur(g.lat, 50))/float64(pctDur(a.lat, 50)), float64(pctDur(g.lat, 99))/float64(pctDur(a.lat, 99)),
		pct(g.lat, 99), qnTarget, verdict)
	fmt.Fprintf(out, "\nwhere it goes (per answer; 'bench process' is client + gateway + simulator, one process):\n")
	w = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "    \tRedis round trips\tredis-server CPU\tbench process CPU\tCPU busy (of %d cores)\n", runtime.NumCPU())
	for _, u := range []struct {
		name string
		u    usage
		n    int
	}{{"gateway", g.use, len(g.lat)}, {"bare Asynq, same Twilio call", a.use, len(a.lat)}} {
		fmt.Fprintf(w, "    %s\t%.1f\t%.0fµs\t%.0fµs\t%.0f%%\n", u.name, float64(u.u.trips)/float64(u.n),
			u.u.redisCPU.Seconds()*1e6/float64(u.n), u.u.procCPU.Seconds()*1e6/float64(u.n),
			100*(u.u.redisCPU+u.u.procCPU).Seconds()/u.u.wall.Seconds()/float64(runtime.NumCPU()))
	}
	w.Flush()
	g.use.printCallers(out, "gateway", len(g.lat))
	fmt.Fprintln(out)
}
