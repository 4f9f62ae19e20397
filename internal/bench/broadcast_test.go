package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/hibiken/asynq"

	"github.com/patientmsg/gateway/channels/twilio"
	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/service/servicetest"
	"github.com/patientmsg/gateway/workers"
)

// BenchmarkBroadcastFanout measures a crisis broadcast to BENCH_BROADCAST
// (default 100,000) people on SMS, against bare Asynq enqueueing as many
// tasks from 8 goroutines on the same Redis in the same run:
//
//   - the API's answer to POST /v1/broadcasts (202; target < 1 s),
//   - the time until every person's message is queued (target ≤ 1.5× bare
//     Asynq's enqueue),
//   - the time until the first message reaches the simulator (≤ 1 s),
//   - Redis memory per person once queued (the person and the send task;
//     each message's ledger record is written when its turn to send comes,
//     so the figure also holds the records of the messages sent meanwhile).
func BenchmarkBroadcastFanout(b *testing.B) {
	n := envInt(b, "BENCH_BROADCAST", 100_000)
	e := newEnv(b)
	b.ResetTimer()

	// Bare Asynq's enqueue and the broadcast run in turn BENCH_ROUNDS
	// times: the report is the round of the median ratio (the console's
	// pages are timed in the first round only).
	var rounds []broadcastRound
	for i := range max(1, envInt(b, "BENCH_ROUNDS", 3)) {
		bare := e.bareEnqueue(n)
		rounds = append(rounds, broadcastRound{bare: bare, res: e.broadcastRun(n, 0, i == 0)})
	}
	med := rounds[medianRound(rounds, broadcastRound.ratio)]
	bare, res := med.bare, med.res
	res.pages = rounds[0].res.pages
	// The same answers with a crisis broadcast to BENCH_ANSWER_PEOPLE
	// (default 10,000) sending and BENCH_ANSWER_BACKLOG (default 1,000,000)
	// bulk messages queued: filing answers must wait behind neither.
	behind := e.broadcastRun(envInt(b, "BENCH_ANSWER_PEOPLE", 10_000), envInt(b, "BENCH_ANSWER_BACKLOG", 1_000_000), false)
	b.StopTimer()

	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "\nBroadcast fan-out, %d people on SMS (redis %s)\n", n, e.redisVersion())
	fmt.Fprintf(w, "bare Asynq, %d tasks enqueued from 8 goroutines\t%s\t(%.0f/s)\n", n, bare.Round(time.Millisecond), rateOf(n, bare))
	fmt.Fprintf(w, "CSV upload (parse, check every number, store)\t%s\n", res.upload.Round(time.Millisecond))
	fmt.Fprintf(w, "POST /v1/broadcasts answered 202\t%s\t(target < 1 s)\n", res.accepted.Round(time.Millisecond))
	fmt.Fprintf(w, "first message accepted by the simulator\t%s after the call\t(target ≤ 1 s)\n", res.first.Round(time.Millisecond))
	fmt.Fprintf(w, "every person's message queued\t%s\t= %.2f× bare Asynq (target ≤ 1.5×)\n", res.queued.Round(time.Millisecond), res.queued.Seconds()/bare.Seconds())
	if len(rounds) > 1 {
		fmt.Fprintf(w, "  %d rounds of bare Asynq's enqueue and the broadcast in turn; these figures are the round of the median ratio:\t", len(rounds))
		for i, x := range rounds {
			if i > 0 {
				fmt.Fprint(w, ", ")
			}
			fmt.Fprintf(w, "%s / %s = %.2f×", x.res.queued.Round(time.Millisecond), x.bare.Round(time.Millisecond), x.ratio())
		}
		fmt.Fprint(w, "\n")
	}
	fmt.Fprintf(w, "  SMS accepted by the simulator meanwhile (senders unpaced: sending shares the cores)\t%d\t\n", res.sentMeanwhile)
	fmt.Fprintf(w, "Redis memory per person once queued (person, send task; ledger records of those sent meanwhile)\t%.0f B\n", res.perPerson)
	fmt.Fprintf(w, "an answer (\"2\") from the inbound webhook to the roster, %d answers while the broadcast sends\tp50 %s, p99 %s, max %s\t(target p99 ≤ 2 s)\n",
		len(res.ans.lat), pct(res.ans.lat, 50), pct(res.ans.lat, 99), pct(res.ans.lat, 100))
	fmt.Fprintf(w, "  of them answered before every person's message was queued\t%d\n", res.ans.during(res.t0.Add(res.queued)))
	fmt.Fprintf(w, "\nConsole pages with this broadcast in the store (a lead signed in; %d requests each, from loopback)\tmedian\tslowest\tsize\t(target ≤ 200 ms)\n", consoleTries)
	for _, p := range res.pages {
		fmt.Fprintf(w, "  %s\t%s\t%s\t%d KB\n", p.name, p.median().Round(100*time.Microsecond),
			p.slowest().Round(100*time.Microsecond), p.bytes/1024)
	}
	fmt.Fprintf(w, "  (an after-action report reads every person on its first request, the slowest; later ones reuse it while the broadcast is unchanged)\n")
	fmt.Fprintf(w, "\nAnswers behind a backlog: a crisis broadcast to %d people sending, %d bulk messages queued (enqueued by bare Asynq in %s)\n",
		behind.n, behind.backlog, behind.enqueue.Round(time.Millisecond))
	fmt.Fprintf(w, "an answer (\"2\") from the inbound webhook to the roster, %d answers while the broadcast sends\tp50 %s, p99 %s, max %s\t(target p99 ≤ 2 s)\n",
		len(behind.ans.lat), pct(behind.ans.lat, 50), pct(behind.ans.lat, 99), pct(behind.ans.lat, 100))
	fmt.Fprintf(w, "  bulk messages still queued when the last answer was counted\t%d\n", behind.bulkLeft)
	w.Flush()
	b.ReportMetric(res.accepted.Seconds()*1000, "accept_ms")
	b.ReportMetric(res.first.Seconds()*1000, "first_msg_ms")
	b.ReportMetric(res.queued.Seconds()/bare.Seconds(), "queued_vs_asynq")
	b.ReportMetric(res.perPerson, "redis_B/person")
	b.ReportMetric(float64(pctDur(res.ans.lat, 99))/float64(time.Millisecond), "answer_p99_ms")
	b.ReportMetric(float64(pctDur(behind.ans.lat, 99))/float64(time.Millisecond), "answer_behind_backlog_p99_ms")
	var slowestPage time.Duration
	for _, p := range res.pages {
		slowestPage = max(slowestPage, p.slowest())
	}
	b.ReportMetric(float64(slowestPage)/float64(time.Millisecond), "console_page_max_ms")
}

// broadcastRound is bare Asynq's enqueue of n tasks and then a broadcast
// to n people.
type broadcastRound struct {
	bare time.Duration
	res  broadcastResult
}

// ratio is the broadcast's time to queue everyone against bare Asynq's.
func (x broadcastRound) ratio() float64 { return x.res.queued.Seconds() / x.bare.Seconds() }

// bareEnqueue is the time bare Asynq takes to enqueue n no-op tasks from
// 8 goroutines on a flushed Redis.
func (e *env) bareEnqueue(n int) time.Duration {
	b := e.b
	e.reset()
	client, closeClient := e.bareClient()
	defer closeClient()
	start := time.Now()
	failed, first := parallel(n, 8, func(int) error {
		_, err := client.Enqueue(asynq.NewTask("bench:noop", []byte("x")))
		return err
	})
	took := time.Since(start)
	if failed > 0 {
		b.Fatalf("bare asynq: %d of %d enqueues failed; first: %v", failed, n, first)
	}
	return took
}

// broadcastResult is one crisis broadcast's figures.
type broadcastResult struct {
	n, backlog int
	enqueue    time.Duration // the backlog, by bare Asynq
	bulkLeft   int           // backlog tasks still queued at the end
	upload     time.Duration
	t0         time.Time // POST /v1/broadcasts
	accepted   time.Duration
	first      time.Duration
	queued     time.Duration
	// sentMeanwhile is how many SMS the simulator had accepted by then:
	// the senders are unpaced, so those sends shared the cores with the
	// fan-out.
	sentMeanwhile int
	perPerson     float64
	ans           answerResult
	// pages are the console's pages timed once the answers are in (the
	// first run only).
	pages []consolePage
}

// broadcastRun sends a crisis SMS broadcast with a poll to n people, with
// backlog bulk send tasks queued first (none when 0), and has 100 of them
// answer "2" while it sends; with pages, it then times the console's pages.
func (e *env) broadcastRun(n, backlog int, pages bool) broadcastResult {
	r := broadcastResult{n: n, backlog: backlog}
	e.reset()
	if backlog > 0 {
		r.enqueue, _ = e.queueBacklog(backlog)
	}
	g := e.startGateway(config.RoleAll)
	defer e.stopGateway(g)
	b := e.b
	var csv strings.Builder
	csv.WriteString("phone,external_id\n")
	for i := range n {
		fmt.Fprintf(&csv, "+1415%07d,P%d\n", 2000000+i, i)
	}
	uploadStart := time.Now()
	up := e.call(g.URL, "POST", "/v1/audiences", "text/csv", []byte(csv.String()))
	r.upload = time.Since(uploadStart)
	audience, _ := up["id"].(string)
	if audience == "" || int(up["count"].(float64)) != n {
		b.Fatalf("upload: %v", up)
	}
	before := e.usedMemory()
	body := fmt.Sprintf(`{"name":"Flood","channels":["sms"],"priority":"crisis","audience_csv_upload_id":%q,
	  "body":{"en":"Riverside Clinic: flooding near the hospital. Reply 1 if you are safe, 2 if you need help."},
	  "poll":{"options":{"1":"safe","2":"need_help"}}}`, audience)
	r.t0 = time.Now()
	t0 := r.t0
	created := e.call(g.URL, "POST", "/v1/broadcasts", "application/json", []byte(body))
	r.accepted = time.Since(t0)
	id, _ := created["id"].(string)
	if id == "" {
		b.Fatalf("broadcast: %v", created)
	}
	var first, queued time.Duration
	var answers chan answerResult
	deadline := time.Now().Add(10 * time.Minute)
	for (queued == 0 || first == 0) && time.Now().Before(deadline) {
		if first > 0 && answers == nil {
			// While the broadcast sends, people answer "2" (need help)
			// through the signed inbound webhook, one after another.
			answers = make(chan answerResult, 1)
			go func() { answers <- e.answerDuring(g, id, 100) }()
		}
		st := e.call(g.URL, "GET", "/v1/broadcasts/"+id, "", nil)
		people, _ := st["people"].(map[string]any)
		num := func(k string) float64 { f, _ := people[k].(float64); return f }
		fanned, _ := st["fanned_out"].(float64)
		if first == 0 && num("sent")+num("delivered")+num("acknowledged") > 0 {
			first = time.Since(t0)
		}
		if queued == 0 && int(fanned) == n && num("pending") == 0 {
			queued = time.Since(t0)
			r.sentMeanwhile = g.Twilio.Stats().Accepted
		}
		time.Sleep(10 * time.Millisecond)
	}
	if queued == 0 || first == 0 {
		b.Fatal("the fan-out did not finish, or nothing was sent, within 10 minutes")
	}
	r.perPerson = float64(e.usedMemory()-before) / float64(n)
	if answers == nil {
		answers = make(chan answerResult, 1)
		answers <- e.answerDuring(g, id, 100)
	}
	r.ans = <-answers
	if r.ans.err != nil {
		b.Fatalf("answers: %v", r.ans.err)
	}
	r.first, r.queued = first, queued
	if pages {
		r.pages = e.consolePages(g, id)
	}
	if backlog > 0 {
		if info, err := asynq.NewInspectorFromRedisClient(e.rdb).GetQueueInfo(workers.QueueFor(workers.PriorityBulk)); err == nil {
			r.bulkLeft = info.Pending + info.Scheduled + info.Retry + info.Active
		}
	}
	return r
}

type answerResult struct {
	lat []time.Duration
	at  []time.Time // when each answer was sent
	err error
}

// during counts the answers sent before t.
func (r answerResult) during(t time.Time) int {
	n := 0
	for _, at := range r.at {
		if at.Before(t) {
			n++
		}
	}
	return n
}

// answerDuring has k people whose message was delivered answer "2" by the
// signed inbound webhook, one at a time, and measures each answer's time
// from the webhook's answer to the roster listing the person as needing
// help.
func (e *env) answerDuring(g *servicetest.Gateway, id string, k int) answerResult {
	var r answerResult
	after := -1
	deadline := time.Now().Add(5 * time.Minute)
	for len(r.lat) < k {
		if time.Now().After(deadline) {
			r.err = fmt.Errorf("only %d answers in 5 minutes", len(r.lat))
			return r
		}
		list, err := e.get(g, fmt.Sprintf("/v1/broadcasts/%s/recipients?state=delivered&limit=1%s", id, afterParam(after)))
		if err != nil {
			r.err = err
			return r
		}
		people, _ := list["recipients"].([]any)
		if len(people) == 0 {
			// People are delivered out of their order: start again from
			// the first (those who answered are no longer "delivered").
			after = -1
			time.Sleep(5 * time.Millisecond)
			continue
		}
		p := people[0].(map[string]any)
		idx := int(p["index"].(float64))
		phone, _ := p["to"].(map[string]any)["phone"].(string)
		after = idx
		sent := time.Now()
		if err := e.inbound(g, phone, "2", len(r.lat)); err != nil {
			r.err = err
			return r
		}
		for {
			l, err := e.get(g, fmt.Sprintf("/v1/broadcasts/%s/recipients?state=need_help&limit=1%s", id, afterParam(idx-1)))
			if err != nil {
				r.err = err
				return r
			}
			if got, _ := l["recipients"].([]any); len(got) > 0 && int(got[0].(map[string]any)["index"].(float64)) == idx {
				break
			}
			if time.Since(sent) > time.Minute {
				ack, _ := e.get(g, fmt.Sprintf("/v1/broadcasts/%s/recipients?state=acknowledged&limit=1%s", id, afterParam(idx-1)))
				feed, _ := e.get(g, "/v1/replies")
				r.err = fmt.Errorf("person %d's answer never reached the roster (acknowledged: %.400v; feed: %.600v)", idx, ack, feed)
				return r
			}
			time.Sleep(2 * time.Millisecond)
		}
		r.lat = append(r.lat, time.Since(sent))
		r.at = append(r.at, sent)
	}
	return r
}

// get is one API GET, safe from any goroutine.
func (e *env) get(g *servicetest.Gateway, path string) (map[string]any, error) {
	req, _ := http.NewRequest("GET", g.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := e.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: HTTP %d: %.300s", path, resp.StatusCode, raw)
	}
	var out map[string]any
	return out, json.Unmarshal(raw, &out)
}

// inbound posts a patient's SMS as Twilio would, signed.
func (e *env) inbound(g *servicetest.Gateway, from, body string, n int) error {
	sid := fmt.Sprintf("SM%032d", 900000+n) // Twilio's form: SM and 32 hex digits
	form := url.Values{"MessageSid": {sid}, "SmsSid": {sid}, "AccountSid": {g.Twilio.AccountSID()}, "From": {from},
		"To": {g.Service.Config.Twilio.From}, "Body": {body}, "NumSegments": {"1"}}
	u := g.URL + twilio.InboundPath
	req, _ := http.NewRequest("POST", u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", twiliosim.Sign(g.Twilio.AuthToken(), u, form))
	resp, err := e.http.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("inbound webhook: HTTP %d", resp.StatusCode)
	}
	return nil
}

// call makes one API request and decodes its JSON answer; it fails the
// benchmark on any error.
func (e *env) call(base, method, path, ctype string, body []byte) map[string]any {
	out, err := e.request(base, method, path, ctype, body)
	if err != nil {
		e.b.Fatal(err)
	}
	return out
}

// request makes one API request and decodes its JSON answer; a status of
// 300 or more is an error. It is safe from any goroutine.
func (e *env) request(base, method, path, ctype string, body []byte) (map[string]any, error) {
	req, err := http.NewRequest(method, base+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := e.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return nil, fmt.Errorf("%s %s: HTTP %d: %.500s", method, path, resp.StatusCode, raw)
	}
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return out, nil
}

// pctDur is the p-th percentile (nearest rank) of ds; 0 for none.
func pctDur(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (p*len(s)+99)/100 - 1
	return s[min(max(i, 0), len(s)-1)]
}

// pct formats pctDur.
func pct(ds []time.Duration, p int) string { return fmtDur(pctDur(ds, p)) }

// afterParam is the after= of a recipients page ("" before the first).
func afterParam(i int) string {
	if i < 0 {
		return ""
	}
	return "&after=" + strconv.Itoa(i)
}
