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
//   - (a2) bare Asynq doing the same provider work: (a)'s Redis, server
//     settings and enqueueing, but each task's handler sends one SMS through
//     the real twilio-go client — the real SMS channel (twilio.NewSMS, built
//     from the configuration (b) uses, on the same loopback-guarded
//     transport) — to a fresh simulator with callbacks on, whose public URL
//     is a bare net/http receiver on 127.0.0.1 that only counts the
//     callbacks. Timed from the first enqueue until the simulator has
//     delivered 2N callbacks (none may fail, every send must succeed, and
//     the simulator must accept exactly N messages). No ledger, no gateway
//     API, no signature check: it is the floor (b) could reach with Asynq
//     and the same provider round trips.
//   - (b) the gateway end to end: N POST /v1/messages over real HTTP (a
//     bounded pool of keep-alive clients) to the real Fiber listener, the
//     worker, the real twilio-go client, the simulator, and its signed status
//     callbacks back over HTTP, until the ledger says "delivered" for every
//     message. Timed from the first POST to the last delivery. Two ratios
//     are printed: (b)/(a), against a no-op Asynq task, is the headline
//     number and the target is at least 0.6; (b)/(a2), against Asynq doing
//     the same provider work, shows what the gateway's ledger, API and
//     delivery guarantees cost on top of that work.
//   - (c) API accept latency (p50/p90/p99/max of POST /v1/messages) at a
//     fixed, open-loop request rate with the workers running.
//   - (d) Redis memory per queued message (used_memory from INFO memory,
//     after minus before, divided by M) with an API-only gateway, so messages
//     stay queued; and the same for bare Asynq tasks with a tiny payload.
//
// For (a), (a2) and (b) the report also says where the time goes, per
// message: Redis round trips (counted by a go-redis hook on the client the
// phase uses), redis-server CPU (INFO cpu), this process' CPU (getrusage; it
// holds the load generator, the gateway or bare Asynq, the simulator and
// (a2)'s callback receiver), how busy the machine's cores were, and how many
// connections the provider client opened.
//
// Everything runs on 127.0.0.1: provider calls go through a RoundTripper
// that refuses non-loopback hosts. Environment variables:
//
//   - BENCH_N (default 5000), BENCH_M (default 5000), BENCH_RATE (requests/s,
//     default 500) and BENCH_RATE_SECONDS (default 4) change the sizes.
//   - BENCH_REDIS_CALLERS=1 attributes every Redis round trip of (a), (a2)
//     and (b) to its caller (ledger.(*Ledger).Claim,
//     rdb.(*RDB).Dequeue [gw:high], …) and prints the count per message, the
//     mean latency and the sum as a share of the phase's wall time (a share
//     near 100% for Dequeue means Asynq's single fetch loop is saturated). It
//     costs some CPU.
//   - BENCH_PROFILE_DIR=dir writes a CPU profile of phases (a), (a2) and (b)
//     to dir/asynq.cpu.pprof, dir/asynq-same-work.cpu.pprof and
//     dir/gateway.cpu.pprof. Samples carry the label
//     side=gateway|simulator|load-generator|asynq-server|callback-receiver, so
//     "go tool pprof -tags" splits the CPU and -tagfocus=side=gateway keeps
//     the gateway's own. Build the test binary with -o to symbolise them.
package bench
