package bench

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/service/servicetest"
)

// BenchmarkSoak runs one gateway (API and workers) at a steady SMS rate
// for a long time and reports whether it stays flat: Redis used_memory,
// this process' RSS (load generator, gateway and simulator together) and
// goroutines, sampled through the run, and the API's p99 per interval.
// Patients reply while it runs (signed inbound webhooks), every SMS gets
// its two status callbacks, and a broadcast to BENCH_SOAK_BROADCAST people
// (default 2,000) starts half-way. The hot window is BENCH_SOAK_HOT
// seconds (default 300), so the archive moves messages out of Redis
// during the run, as GATEWAY_HOT_RETENTION does over days; the audit
// log is exported every 10 s and its events stay in Redis for the hot
// window too (GATEWAY_AUDIT_RETENTION, 90 days by default). Once the
// window is full, it prints what Redis still gains per SMS.
//
// It runs only when asked: BENCH_SOAK_SECONDS (30 minutes is 1800) and
// BENCH_SOAK_RATE (default 200 SMS/s). It fails on any refused request,
// failed callback or message left undelivered.
func BenchmarkSoak(b *testing.B) {
	if os.Getenv("BENCH_SOAK_SECONDS") == "" {
		b.Skip("the soak runs only when asked: BENCH_SOAK_SECONDS=1800 for 30 minutes")
	}
	secs := envInt(b, "BENCH_SOAK_SECONDS", 1800)
	rate := envInt(b, "BENCH_SOAK_RATE", 200)
	hot := time.Duration(envInt(b, "BENCH_SOAK_HOT", 300)) * time.Second
	people := envInt(b, "BENCH_SOAK_BROADCAST", 2000)
	e := newEnv(b)
	// The audit log is exported every 10 s and its events stay in Redis
	// for the hot window, as GATEWAY_AUDIT_RETENTION does over days.
	skey := e.signingKey()
	g := e.start(servicetest.Options{Role: config.RoleAll, Twilio: twiliosim.Options{NoRecord: true},
		Configure: func(c *config.Config) {
			c.Audit.SigningKey, c.Audit.BlobURL, c.Audit.Retention, c.Audit.ExportInterval = skey, c.BlobURL, hot, 10*time.Second
		}})
	defer e.stopGateway(g)
	// The archive's clock runs ahead by GATEWAY_HOT_RETENTION − hot, so it
	// moves messages once they are `hot` old (the setting cannot be shorter
	// than an hour). Set before its loop first reads it, a minute on.
	ahead := g.Service.Config.HotRetention - hot
	g.Service.Archive.Now = func() time.Time { return time.Now().Add(ahead) }
	load := loadAverage()

	b.ResetTimer()
	run := time.Duration(secs) * time.Second
	every := max(run/20, 10*time.Second)
	var (
		mu      sync.Mutex
		lat     []time.Duration // this interval's API latencies
		refused atomic.Int64
		posted  atomic.Int64
		wg      sync.WaitGroup
	)
	sem := make(chan struct{}, 64)
	var samples []soakSample
	sample := func(at time.Duration) {
		mu.Lock()
		l := lat
		lat = nil
		mu.Unlock()
		samples = append(samples, soakSample{at: at, redis: e.usedMemory(), rss: rssBytes(), goroutines: runtime.NumGoroutine(),
			p99: pctDur(l, 99), requests: len(l), posted: posted.Load()})
	}
	start := time.Now()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	next, broadcastAt, broadcast := start.Add(every), start.Add(run/2), ""
	for i := 0; time.Since(start) < run; i++ {
		<-tick.C
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			phone := fmt.Sprintf("+1415%07d", 3000000+i%10000)
			body := []byte(`{"channel":"sms","to":{"phone":"` + phone + `"},"body":"Reminder: your appointment is tomorrow at 10:00. Reply 1 to confirm."}`)
			t0 := time.Now()
			_, err := e.post(g.URL, body)
			d := time.Since(t0)
			if err != nil {
				refused.Add(1)
				return
			}
			posted.Add(1)
			mu.Lock()
			lat = append(lat, d)
			mu.Unlock()
			if i%20 == 0 { // one patient in twenty replies
				if err := e.inbound(g, phone, "1", i); err != nil {
					refused.Add(1)
				}
			}
		}(i)
		if broadcast == "" && time.Now().After(broadcastAt) {
			broadcast = e.soakBroadcast(g, people)
		}
		if time.Now().After(next) {
			sample(time.Since(start))
			next = next.Add(every)
		}
	}
	wg.Wait()
	sample(time.Since(start))
	// Everything sent is delivered: the simulator took every message and
	// posted both status callbacks of each (timers the replies and the
	// broadcast set may still wait in the queues, as they would).
	want := posted.Load() + int64(people)
	deadline := time.Now().Add(5 * time.Minute)
	for st := g.Twilio.Stats(); int64(st.Callbacks) < 2*want && time.Now().Before(deadline); st = g.Twilio.Stats() {
		time.Sleep(100 * time.Millisecond)
	}
	b.StopTimer()
	st := g.Twilio.Stats()
	switch {
	case broadcast == "":
		b.Fatal("soak: the broadcast never started")
	case refused.Load() > 0:
		b.Fatalf("soak: %d requests refused or failed", refused.Load())
	case st.CallbackErrors > 0:
		b.Fatalf("soak: %d status callbacks failed", st.CallbackErrors)
	case int64(st.Accepted) != want || int64(st.Callbacks) < 2*want:
		b.Fatalf("soak: the simulator accepted %d of %d messages and posted %d of %d callbacks", st.Accepted, want, st.Callbacks, 2*want)
	}

	w := os.Stdout
	fmt.Fprintf(w, "\n=== soak — %d SMS/s for %s, hot window %s, a broadcast to %d people at %s (load average before %s, after %s) ===\n",
		rate, run, hot, people, run/2, load, loadAverage())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "at\tSMS posted\tRedis used_memory\tprocess RSS\tgoroutines\tAPI p99 (interval)\trequests")
	for _, s := range samples {
		fmt.Fprintf(tw, "%s\t%d\t%.1f MB\t%.1f MB\t%d\t%s\t%d\n", s.at.Round(time.Second), s.posted, float64(s.redis)/1e6,
			float64(s.rss)/1e6, s.goroutines, fmtDur(s.p99), s.requests)
	}
	tw.Flush()
	first, last := samples[0], samples[len(samples)-2] // the last full interval
	fmt.Fprintf(w, "%d SMS and %d broadcast messages delivered, no request refused, no callback failed; API p99 first interval %s, last %s\n",
		posted.Load(), people, fmtDur(first.p99), fmtDur(last.p99))
	// Once the hot window is full (and the archive, a pass a minute, has
	// caught up), what Redis still gains per SMS.
	for _, s := range samples {
		if s.at >= hot+2*time.Minute && last.posted > s.posted {
			fmt.Fprintf(w, "from %s (hot window full) to %s: Redis %+.1f MB over %d SMS, %.0f B per SMS; RSS %+.1f MB; goroutines %+d\n",
				s.at.Round(time.Second), last.at.Round(time.Second), float64(last.redis-s.redis)/1e6, last.posted-s.posted,
				float64(last.redis-s.redis)/float64(last.posted-s.posted), float64(last.rss-s.rss)/1e6, last.goroutines-s.goroutines)
			break
		}
	}
	b.ReportMetric(ms(first.p99), "p99_first_ms")
	b.ReportMetric(ms(last.p99), "p99_last_ms")
	b.ReportMetric(float64(last.redis)/1e6, "redis_MB_last")
}

type soakSample struct {
	at         time.Duration
	redis, rss int64
	goroutines int
	p99        time.Duration
	requests   int
	posted     int64
}

// soakBroadcast uploads people numbers and starts a high-priority SMS
// broadcast to them, returning its id.
func (e *env) soakBroadcast(g *servicetest.Gateway, people int) string {
	var csv strings.Builder
	csv.WriteString("phone\n")
	for i := range people {
		fmt.Fprintf(&csv, "+1415%07d\n", 5000000+i)
	}
	up := e.call(g.URL, "POST", "/v1/audiences", "text/csv", []byte(csv.String()))
	audience, _ := up["id"].(string)
	body := fmt.Sprintf(`{"name":"Clinic closed","channels":["sms"],"priority":"high","audience_csv_upload_id":%q,
	  "body":{"en":"The clinic is closed tomorrow; your appointment moves to Friday."}}`, audience)
	created := e.call(g.URL, "POST", "/v1/broadcasts", "application/json", []byte(body))
	id, _ := created["id"].(string)
	if id == "" {
		e.b.Fatalf("soak broadcast: %v", created)
	}
	return id
}

// rssBytes is this process' resident set size (/proc/self/status).
func rssBytes() int64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range bytes.Split(raw, []byte("\n")) {
		if f := strings.Fields(string(line)); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}
