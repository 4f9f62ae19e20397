package bench

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/redistest"
)

// BenchmarkReplicatedAcks measures what an acknowledgement that means
// replicated costs (REDIS_MIN_REPLICAS_ACK, docs/failover.md): the same
// BENCH_N SMS end to end, and the API's latency at a steady rate, with the
// setting at 0 (the single-Redis default) and at 1, on the same primary
// with one replica (redis-server processes on loopback), in the same run.
func BenchmarkReplicatedAcks(b *testing.B) {
	n := envInt(b, "BENCH_N", 5000)
	e := newEnv(b)
	if e.redis.Kind != redistest.KindProcess {
		b.Skip("needs redis-server processes (a replica)")
	}
	replica := redistest.StartReplica(b, e.redis)
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, _ := e.rdb.Info(b.Context(), "replication").Result()
		if strings.Contains(info, "state=online") {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("the replica %s never came online", replica.Addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	type result struct {
		total, accept time.Duration
		lat           latency
	}
	run := func(acks int) result {
		e.tune = func(c *config.Config) { c.Replication.MinReplicasAck = acks }
		total, accept, _, _ := e.runGateway(n, "gateway")
		return result{total: total, accept: accept, lat: e.runLatency(200, 5)}
	}
	b.ResetTimer()
	off, on := run(0), run(1)
	b.StopTimer()
	e.tune = nil

	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "\nAcknowledged writes (redis %s, one replica on loopback), %d SMS end to end and the API at 200 requests/s\n", e.redisVersion(), n)
	fmt.Fprintf(w, "REDIS_MIN_REPLICAS_ACK\tmsgs/s end to end\tall 202s in\tAPI p50\tAPI p99\n")
	for _, r := range []struct {
		name string
		r    result
	}{{"0 (default)", off}, {"1", on}} {
		fmt.Fprintf(w, "%s\t%.0f\t%s\t%s\t%s\n", r.name, rateOf(n, r.r.total), r.r.accept.Round(time.Millisecond), fmtDur(r.r.lat.p50), fmtDur(r.r.lat.p99))
	}
	fmt.Fprintf(w, "cost of acknowledged writes\t%.0f%% of the throughput\t\t%+.2f ms\t%+.2f ms\n", 100*off.total.Seconds()/on.total.Seconds(),
		ms(on.lat.p50-off.lat.p50), ms(on.lat.p99-off.lat.p99))
	w.Flush()
	b.ReportMetric(rateOf(n, off.total), "unacked_msgs/s")
	b.ReportMetric(rateOf(n, on.total), "acked_msgs/s")
	b.ReportMetric(ms(on.lat.p99), "acked_api_p99_ms")
	b.ReportMetric(ms(off.lat.p99), "unacked_api_p99_ms")
}
