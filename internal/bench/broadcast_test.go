package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/hibiken/asynq"

	"github.com/patientmsg/gateway/internal/config"
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

	// Bare Asynq: n tasks from 8 goroutines.
	e.reset()
	client := asynq.NewClientFromRedisClient(e.newRedis())
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				if _, err := client.Enqueue(asynq.NewTask("bench:noop", []byte("x"))); err != nil {
					b.Errorf("enqueue: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	bare := time.Since(start)
	client.Close()

	// The gateway.
	e.reset()
	g := e.startGateway(config.RoleAll)
	defer e.stopGateway(g)
	var csv strings.Builder
	csv.WriteString("phone,external_id\n")
	for i := range n {
		fmt.Fprintf(&csv, "+1415%07d,P%d\n", 2000000+i, i)
	}
	uploadStart := time.Now()
	up := e.call(g.base, "POST", "/v1/audiences", "text/csv", []byte(csv.String()))
	upload := time.Since(uploadStart)
	audience, _ := up["id"].(string)
	if audience == "" || int(up["count"].(float64)) != n {
		b.Fatalf("upload: %v", up)
	}
	before := e.usedMemory()
	body := fmt.Sprintf(`{"name":"Flood","channels":["sms"],"priority":"crisis","audience_csv_upload_id":%q,
	  "body":{"en":"Riverside Clinic: flooding near the hospital. Reply 1 if you are safe, 2 if you need help."},
	  "poll":{"options":{"1":"safe","2":"need_help"}}}`, audience)
	t0 := time.Now()
	created := e.call(g.base, "POST", "/v1/broadcasts", "application/json", []byte(body))
	accepted := time.Since(t0)
	id, _ := created["id"].(string)
	if id == "" {
		b.Fatalf("broadcast: %v", created)
	}
	var first, queued time.Duration
	deadline := time.Now().Add(10 * time.Minute)
	for (queued == 0 || first == 0) && time.Now().Before(deadline) {
		r := e.call(g.base, "GET", "/v1/broadcasts/"+id, "", nil)
		people, _ := r["people"].(map[string]any)
		num := func(k string) float64 { f, _ := people[k].(float64); return f }
		fanned, _ := r["fanned_out"].(float64)
		if first == 0 && num("sent")+num("delivered")+num("acknowledged") > 0 {
			first = time.Since(t0)
		}
		if queued == 0 && int(fanned) == n && num("pending") == 0 {
			queued = time.Since(t0)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if queued == 0 || first == 0 {
		b.Fatal("the fan-out did not finish, or nothing was sent, within 10 minutes")
	}
	perPerson := float64(e.usedMemory()-before) / float64(n)
	b.StopTimer()

	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "\nBroadcast fan-out, %d people on SMS (redis %s)\n", n, e.redisVersion())
	fmt.Fprintf(w, "bare Asynq, %d tasks enqueued from 8 goroutines\t%s\t(%.0f/s)\n", n, bare.Round(time.Millisecond), rateOf(n, bare))
	fmt.Fprintf(w, "CSV upload (parse, check every number, store)\t%s\n", upload.Round(time.Millisecond))
	fmt.Fprintf(w, "POST /v1/broadcasts answered 202\t%s\t(target < 1 s)\n", accepted.Round(time.Millisecond))
	fmt.Fprintf(w, "first message accepted by the simulator\t%s after the call\t(target ≤ 1 s)\n", first.Round(time.Millisecond))
	fmt.Fprintf(w, "every person's message queued\t%s\t= %.2f× bare Asynq (target ≤ 1.5×)\n", queued.Round(time.Millisecond), queued.Seconds()/bare.Seconds())
	fmt.Fprintf(w, "Redis memory per person once queued (person, send task; ledger records of those sent meanwhile)\t%.0f B\n", perPerson)
	w.Flush()
	b.ReportMetric(accepted.Seconds()*1000, "accept_ms")
	b.ReportMetric(first.Seconds()*1000, "first_msg_ms")
	b.ReportMetric(queued.Seconds()/bare.Seconds(), "queued_vs_asynq")
	b.ReportMetric(perPerson, "redis_B/person")
}

// call makes one API request and decodes its JSON answer.
func (e *env) call(base, method, path, ctype string, body []byte) map[string]any {
	req, err := http.NewRequest(method, base+path, bytes.NewReader(body))
	if err != nil {
		e.b.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := e.http.Do(req)
	if err != nil {
		e.b.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		e.b.Fatalf("%s %s: HTTP %d: %.500s", method, path, resp.StatusCode, raw)
	}
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return out
}
