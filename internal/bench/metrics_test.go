package bench

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/service/servicetest"
)

// BenchmarkMetricsCost measures what the Prometheus metrics cost: the
// end-to-end SMS rate of the gateway (phase b's run: API → ledger →
// Asynq → worker → Twilio simulator → status callbacks) with its metrics
// on and off, in alternating rounds on the same Redis, with bare Asynq's
// rate in the same run for scale. The target is a rate with metrics within
// 5 % of the rate without.
func BenchmarkMetricsCost(b *testing.B) {
	n := envInt(b, "BENCH_METRICS_N", 3000)
	rounds := envInt(b, "BENCH_METRICS_ROUNDS", 3)
	e := newEnv(b)
	defaults := config.NewDefaultConfig()
	e.configure(&defaults)
	concurrency := defaults.Worker.Concurrency + defaults.Worker.CrisisConcurrency
	load := loadAverage()
	b.ResetTimer()
	asynqTook, _ := e.runAsynq(n, concurrency)
	var on, off []float64
	for i := range rounds {
		// Alternate which goes first, so a machine warming up or slowing
		// down does not favour one side.
		order := []bool{false, true}
		if i%2 == 1 {
			order = []bool{true, false}
		}
		for _, noMetrics := range order {
			took := e.runGatewayOpts(n, servicetest.Options{Role: config.RoleAll, Twilio: twiliosim.Options{NoRecord: true}, NoMetrics: noMetrics})
			if noMetrics {
				off = append(off, rateOf(n, took))
			} else {
				on = append(on, rateOf(n, took))
			}
		}
	}
	b.StopTimer()
	median := func(v []float64) float64 {
		s := slices.Clone(v)
		slices.Sort(s)
		return s[len(s)/2]
	}
	asynqRate, onRate, offRate := rateOf(n, asynqTook), median(on), median(off)
	w := os.Stdout
	fmt.Fprintf(w, "\n=== metrics cost — redis-server %s, GOMAXPROCS=%d; load average before %s, after %s ===\n",
		e.redisVersion(), runtime.GOMAXPROCS(0), load, loadAverage())
	fmt.Fprintf(w, "%d SMS end to end a run, %d rounds of each, alternating\n", n, rounds)
	fmt.Fprintf(w, "%-34s %s\n", "bare Asynq, no-op tasks", fmtRate(asynqRate))
	fmt.Fprintf(w, "%-34s %s (runs %v)\n", "gateway, metrics on", fmtRate(onRate), rates(on))
	fmt.Fprintf(w, "%-34s %s (runs %v)\n", "gateway, metrics off", fmtRate(offRate), rates(off))
	fmt.Fprintf(w, "metrics on / off: %.3f (target ≥ 0.95); gateway with metrics / bare Asynq: %.2f\n", onRate/offRate, onRate/asynqRate)
	b.ReportMetric(onRate, "metrics_on_msgs/s")
	b.ReportMetric(offRate, "metrics_off_msgs/s")
	b.ReportMetric(onRate/offRate, "on_off_ratio")
	b.ReportMetric(asynqRate, "asynq_msgs/s")
}

func fmtRate(r float64) string { return fmt.Sprintf("%8.0f msgs/s", r) }

func rates(v []float64) []string {
	out := make([]string, len(v))
	for i, r := range v {
		out[i] = fmt.Sprintf("%.0f", r)
	}
	return out
}

// runGatewayOpts is runGateway (phase b) with a gateway of its own options.
func (e *env) runGatewayOpts(n int, o servicetest.Options) time.Duration {
	e.reset()
	g := e.start(o)
	defer e.stopGateway(g)
	ids := make([]string, n)
	start := time.Now()
	failed, firstErr := parallel(n, httpClients, func(i int) error {
		id, err := e.post(g.URL, msgJSON)
		ids[i] = id
		return err
	})
	if failed > 0 {
		e.b.Fatalf("gateway: %d of %d POST /v1/messages failed; first: %v", failed, n, firstErr)
	}
	end := e.waitCallbacks(g, ids)
	e.verifyDelivered(g, ids)
	return end.Sub(start)
}
