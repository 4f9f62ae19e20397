package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/service/servicetest"
)

// BenchmarkMemoryCurve sends SMS end to end through one gateway (API and
// workers, the archive and the audit log's export on, as in production)
// up to each point of BENCH_CURVE (default 10,000, 100,000 and 1,000,000
// messages in all), to BENCH_CURVE_PATIENTS different numbers in turn
// (default 100,000: a hospital group's patients, each getting several
// messages). Every BENCH_CURVE_STEP messages (default 100,000) and at
// each point it runs the archive and the audit export (their clocks 3
// days on, past GATEWAY_HOT_RETENTION and GATEWAY_AUDIT_RETENTION) until
// they are caught up,
// as their minute-by-minute loops would, so no more than a step is ever
// in the hot window. At each point it reads Redis used_memory with the
// last step's messages delivered and still hot, and again once they are
// archived: what that many messages leave in Redis for good. It also times BENCH_CURVE_PROBE (default
// 5,000) SMS end to end before the first message and after the last
// point, to compare the gateway's throughput with an empty history and
// with the whole curve's messages in it.
//
// It runs only when asked (BENCH_CURVE=10000,100000,1000000: a million
// SMS take about a quarter of an hour on two cores). It fails if a send or
// callback fails, the simulator did not take every message exactly once,
// or a delivered message is still in Redis after the archive.
func BenchmarkMemoryCurve(b *testing.B) {
	spec := os.Getenv("BENCH_CURVE")
	if spec == "" {
		b.Skip("the memory curve runs only when asked: BENCH_CURVE=10000,100000,1000000")
	}
	var points []int
	for _, f := range strings.Split(spec, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 || (len(points) > 0 && n <= points[len(points)-1]) {
			b.Fatalf("BENCH_CURVE=%s: want increasing message counts", spec)
		}
		points = append(points, n)
	}
	patients := envInt(b, "BENCH_CURVE_PATIENTS", 100000)
	probe := envInt(b, "BENCH_CURVE_PROBE", 5000)
	step := envInt(b, "BENCH_CURVE_STEP", 100000)
	e := newEnv(b)
	skey := e.signingKey()
	g := e.start(servicetest.Options{Role: config.RoleAll, Twilio: twiliosim.Options{NoRecord: true},
		Configure: func(c *config.Config) {
			c.HotRetention, c.Audit.SigningKey, c.Audit.BlobURL = 48*time.Hour, skey, c.BlobURL
		}})
	defer e.stopGateway(g)
	// The archive's clock is 3 days on from the start: every delivered
	// message is past the hot window when the archive looks. Set before its
	// loop first reads it, a minute on.
	// The audit export's too: exported events older than
	// GATEWAY_AUDIT_RETENTION (48h) leave Redis for the export.
	g.Service.Archive.Now = func() time.Time { return time.Now().Add(72 * time.Hour) }
	g.Service.AuditExport.Now = g.Service.Archive.Now
	ctx := context.Background()
	load := loadAverage()
	base := e.usedMemory()

	sent := 0
	// send posts n SMS, the patients in turn, and waits until the simulator
	// has posted both status callbacks of every message sent so far.
	send := func(n int) time.Duration {
		start := time.Now()
		failed, first := parallel(n, httpClients, func(i int) error {
			phone := fmt.Sprintf("+1415%07d", 2000000+(sent+i)%patients)
			_, err := e.post(g.URL, []byte(`{"channel":"sms","to":{"phone":"`+phone+
				`"},"body":"Reminder: your appointment at the clinic is tomorrow at 10:00. Reply STOP to opt out."}`))
			return err
		})
		if failed > 0 {
			b.Fatalf("curve: %d of %d POST /v1/messages failed; first: %v", failed, n, first)
		}
		sent += n
		deadline := time.Now().Add(timeoutFor(n))
		for {
			st := g.Twilio.Stats()
			if st.CallbackErrors > 0 {
				b.Fatalf("curve: %d status callbacks failed", st.CallbackErrors)
			}
			if st.Callbacks >= 2*sent {
				if st.Accepted != sent {
					b.Fatalf("curve: the simulator accepted %d messages for %d requests", st.Accepted, sent)
				}
				return time.Since(start)
			}
			if time.Now().After(deadline) {
				b.Fatalf("curve: %d of %d callbacks after %s", st.Callbacks, 2*sent, timeoutFor(n))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// settle archives every delivered message and catches the audit
	// export up, and checks no message is left in Redis.
	settle := func() (archived int, took time.Duration) {
		for deadline := time.Now().Add(time.Minute); e.unfinishedTasks() > 0 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		start := time.Now()
		// The gateway's own archive runs every minute too: while it holds
		// the tenant's lease a pass here archives nothing, so the passes
		// go on until Redis holds no message (the count is this loop's).
		for deadline := start.Add(5 * time.Minute); ; {
			res, err := g.Service.Archive.Pass(ctx)
			if err != nil {
				b.Fatalf("curve: archive pass: %v", err)
			}
			archived += res.Archived
			if res.Archived > 0 {
				continue
			}
			page, err := g.Service.Ledger.Find(ctx, tenant, ledger.Query{HotOnly: true, Limit: 1})
			if err == nil && len(page.Messages) == 0 {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("curve: after the archive, Redis still holds %d messages (%v)", len(page.Messages), err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		for range 2 { // the second run, caught up, trims
			if err := g.Service.ExportAudit(ctx); err != nil {
				b.Fatalf("curve: audit export: %v", err)
			}
		}
		took = time.Since(start)
		return archived, took
	}

	b.ResetTimer()
	empty := send(probe)
	settle()
	type point struct {
		n, chunk       int
		hot, kept      int64
		archived       int
		took, sendTook time.Duration
	}
	var curve []point
	for _, p := range points {
		chunk := p - sent
		var took time.Duration
		for {
			took += send(min(step, p-sent))
			if sent == p {
				break
			}
			settle() // the archive keeps up, as its minute-by-minute loop does
		}
		hot := e.usedMemory()
		archived, archTook := settle()
		curve = append(curve, point{n: sent, chunk: chunk, hot: hot - base, kept: e.usedMemory() - base, archived: archived,
			sendTook: took, took: archTook})
	}
	full := send(probe)
	b.StopTimer()

	w := os.Stdout
	fmt.Fprintf(w, "\n=== memory curve — SMS end to end to %d patients in turn, archive and audit export on (load average before %s, after %s) ===\n",
		patients, load, loadAverage())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SMS sent in all\tsend rate\tRedis, the last step hot\tRedis once archived and exported\tper SMS kept\tarchive + export, last step")
	for _, c := range curve {
		fmt.Fprintf(tw, "%d\t%.0f msgs/s\t%.1f MB\t%.1f MB\t%.0f B\t%d moved by these passes (the rest by the archive's own loop) in %s\n", c.n, rateOf(c.chunk, c.sendTook),
			float64(c.hot)/1e6, float64(c.kept)/1e6, float64(c.kept)/float64(c.n), c.archived, c.took.Round(time.Millisecond))
	}
	tw.Flush()
	ratio := rateOf(probe, full) / rateOf(probe, empty)
	fmt.Fprintf(w, "%d SMS end to end: %.0f msgs/s with an empty history, %.0f msgs/s with %d messages in it: %.2f (target ≥ 0.90)\n",
		probe, rateOf(probe, empty), rateOf(probe, full), sent-probe, ratio)
	last := curve[len(curve)-1]
	b.ReportMetric(float64(last.kept)/1e6, "redis_MB_kept")
	b.ReportMetric(ratio, "throughput_full_vs_empty")
}
