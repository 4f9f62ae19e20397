// Package bench holds the gateway's end-to-end benchmark (go tool task
// bench). It has no code of its own outside its test file.
//
// BenchmarkGatewayVsAsynq starts one throwaway redis-server on a loopback
// port and the loopback Twilio simulator, then measures, one phase after the
// other and with Redis flushed between phases:
//
//   - (a) bare Asynq: N no-op tasks enqueued with asynq.Client and processed
//     by one asynq.Server whose concurrency is the gateway's total
//     (WORKER_CONCURRENCY + WORKER_CRISIS_CONCURRENCY) and whose poll
//     intervals are the gateway's. Timed from the first enqueue to the last
//     task processed.
//   - (b) the gateway end to end: N POST /v1/messages over real HTTP (a
//     bounded pool of keep-alive clients) to the real Fiber listener, the
//     worker, the real twilio-go client, the simulator, and its signed status
//     callbacks back over HTTP, until the ledger says "delivered" for every
//     message. Timed from the first POST to the last delivery. The ratio
//     (b)/(a) is the headline number; the target is at least 0.6.
//   - (c) API accept latency (p50/p90/p99/max of POST /v1/messages) at a
//     fixed, open-loop request rate with the workers running.
//   - (d) Redis memory per queued message (used_memory from INFO memory,
//     after minus before, divided by M) with an API-only gateway, so messages
//     stay queued; and the same for bare Asynq tasks with a tiny payload.
//
// For (a) and (b) the report also says where the time goes, per message:
// Redis round trips (counted by a go-redis hook on the client the phase
// uses), redis-server CPU (INFO cpu), this process' CPU (getrusage; it holds
// the load generator, the gateway and the simulator), how busy the machine's
// cores were, and how many connections the provider client opened.
//
// Everything runs on 127.0.0.1: provider calls go through a RoundTripper
// that refuses non-loopback hosts. Environment variables:
//
//   - BENCH_N (default 5000), BENCH_M (default 5000), BENCH_RATE (requests/s,
//     default 500) and BENCH_RATE_SECONDS (default 4) change the sizes.
//   - BENCH_REDIS_CALLERS=1 attributes every Redis round trip of (a) and (b)
//     to its caller (ledger.(*Ledger).Claim, rdb.(*RDB).Dequeue [gw:high], …)
//     and prints the count per message, the mean latency and the sum as a
//     share of the phase's wall time (a share near 100% for Dequeue means
//     Asynq's single fetch loop is saturated). It costs some CPU.
//   - BENCH_PROFILE_DIR=dir writes a CPU profile of phases (a) and (b) to
//     dir/asynq.cpu.pprof and dir/gateway.cpu.pprof. Samples carry the label
//     side=gateway|simulator|load-generator|asynq-server, so
//     "go tool pprof -tags" splits the CPU and -tagfocus=side=gateway keeps
//     the gateway's own. Build the test binary with -o to symbolise them.
package bench
