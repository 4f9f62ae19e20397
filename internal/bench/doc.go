// Package bench holds the gateway's end-to-end benchmark (go tool task
// bench). It has no code of its own outside its test file.
//
// BenchmarkGatewayVsAsynq starts one throwaway redis-server on a loopback
// port and loopback provider simulators, then measures, one phase after the
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
//     are printed: (b)/(a2), against Asynq doing the same provider work, is
//     the headline number and the target is at least 0.6: what the
//     gateway's ledger, API and delivery guarantees cost on top of that
//     work; (b)/(a), against a no-op Asynq task, says what the provider
//     work itself costs besides.
//   - (a), (a2) and (b) run in turn BENCH_ROUNDS times (default 3), and the
//     figures printed are those of the round with the median (b)/(a2),
//     every round's rates and ratios listed below them: the machine's load
//     moves a single round's ratio by a fifth or more.
//   - (b-voice), (b-wechat), (b-email): the gateway end to end on its other
//     channels, each phase with a fresh gateway that has every channel
//     configured as service.New builds them (SMS and voice on the Twilio
//     simulator with its Calls API on, WeChat on wechatsim, email on smtpsim
//     over STARTTLS with AUTH PLAIN and the default SMTP_POOL_SIZE, call
//     recordings in a file:// blob store in a temporary directory). Each is
//     reported in msgs/s and as a ratio against (a) and against (b)'s SMS
//     figure. (a2) sends SMS through Twilio, and no bare-Asynq floor with
//     call, WeChat or SMTP work is measured, so only SMS has a (b)/(a2) ratio.
//     The end of a channel phase is the latest time the ledger stamped on a
//     message's final event (taken by the gateway as it wrote it); the phase
//     waits on cheap signals (simulator counters, or the gateway's queues
//     draining) and reads the ledger once afterwards.
//   - (b-voice): BENCH_N_VOICE calls (default 500; calls are chattier) through
//     POST /v1/messages, each with a one-key question (gather) and a spoken
//     answer (record). The simulator answers every call, presses 1 and speaks
//     for 1 s, so each call makes 8 signed requests to the gateway: three
//     progress callbacks, the TwiML fetch, the gather and record actions, the
//     recording callback and the completed callback. The figure is first POST
//     → every message "delivered" in the ledger. Recordings are not skipped: a
//     worker task downloads each from the simulator into the blob store after
//     the recording callback, so they may lag the deliveries; the report gives
//     first POST → last recording stored separately, and the phase fails
//     unless every message has the keypad answer and a stored 1 s recording.
//     VOICE_CALLS_PER_SECOND is 1000000 so the per-caller-id rate limit does
//     not pace the phase: the limiter has a burst of 1 and puts a call that
//     must wait back to the next whole second, and at 100000/s (10µs spacing)
//     a few reservations per run still waited, adding up to a second each.
//     The report counts reservations and waits.
//   - (b-wechat): N template messages (no customer-service window needed)
//     until every message is "delivered" in the ledger: the simulator
//     pushes TEMPLATESENDJOBFINISH for each to the gateway's signed,
//     safe-mode webhook, as WeChat does (servicetest.Options.Reports). The
//     phase checks the simulator accepted exactly N template messages and
//     no customer-service ones, and the gateway took every report.
//   - (b-email): N emails until every message is "delivered" in the ledger:
//     the SMTP server, asked for success DSNs (NOTIFY=SUCCESS), sends one
//     for each to the gateway's inbound SMTP listener, as a relay does. It
//     must have received all N, each matching one request exactly once (by
//     its X-Gateway-Message-Id header), and the listener taken every DSN.
//     smtpsim.WaitFor is called once at the end (it copies every message
//     received at each arrival); the phase waits for the gateway's queues
//     to drain and the DSNs to be sent first.
//   - (c) API accept latency (p50/p90/p99/max of POST /v1/messages) at a
//     fixed, open-loop request rate with the workers running.
//   - (d) Redis memory per queued message (used_memory from INFO memory,
//     after minus before, divided by M) with an API-only gateway, so messages
//     stay queued; and the same for bare Asynq tasks with a tiny payload.
//     Also the memory a delivered SMS keeps: used_memory growth over
//     BENCH_DELIVERED (default 20,000) SMS sent end to end as in (b) by a
//     fresh gateway, read once the queues are empty, again once the audit
//     log's export has run as it does every minute (its tree hashes leave
//     Redis: what a delivered SMS keeps while the gateway runs steadily),
//     then once the archive has moved them to the blob store (each round of
//     (b) prints the first and the last over its N).
//
// For (a), (a2), (b) and the channel phases the report also says where the
// time goes, per message: Redis round trips and Redis commands (counted by
// a go-redis hook on the client the phase uses: a pipeline is one round
// trip and as many commands as it holds; the gateway sends the commands
// its requests and tasks have waiting at the same moment as one pipeline), redis-server CPU (INFO cpu), this process' CPU
// (getrusage; it holds the load generator, the gateway or bare Asynq, the
// simulators and (a2)'s callback receiver), how busy the machine's cores
// were, and how many connections the provider client opened (for email, the
// SMTP connections). The voice row runs until every recording is stored.
// Any failed call webhook, rejected API request, archived task or (except
// for voice, whose rate-limit waits are retries) task put back for a retry
// fails the benchmark at once with the ledger's counts.
//
// Everything runs on 127.0.0.1: provider calls go through a RoundTripper
// that refuses non-loopback hosts, configured otherwise as the gateway's
// default provider transport (256 idle connections, 128 per host).
// Environment variables:
//
//   - BENCH_N (default 5000; also the WeChat and email phases), BENCH_N_VOICE
//     (default 500), BENCH_M (default 5000), BENCH_RATE (requests/s, default
//     500), BENCH_RATE_SECONDS (default 4) and BENCH_DELIVERED (default
//     20,000) change the sizes;
//     BENCH_ROUNDS (default 3) the rounds of (a), (a2) and (b), and of the
//     broadcast against bare Asynq's enqueue.
//   - BENCH_REDIS_CALLERS=1 attributes every Redis round trip of (a), (a2),
//     (b) and the channel phases to its caller (ledger.(*Ledger).Claim,
//     rdb.(*RDB).Dequeue [gw:high], …) and prints the count per message, the
//     mean latency and the sum as a share of the phase's wall time (a share
//     near 100% for Dequeue means Asynq's single fetch loop is saturated). It
//     costs some CPU.
//   - BENCH_PROFILE_DIR=dir writes a CPU profile of phases (a), (a2), (b)
//     (their last round's), the delivered SMS for memory and the channel
//     phases to dir/asynq.cpu.pprof, dir/asynq-same-work.cpu.pprof,
//     dir/gateway.cpu.pprof, dir/gateway-delivered.cpu.pprof and
//     dir/gateway-{voice,wechat,email}.cpu.pprof. Samples carry the label
//     side=gateway|simulator|load-generator|asynq-server|callback-receiver, so
//     "go tool pprof -tags" splits the CPU and -tagfocus=side=gateway keeps
//     the gateway's own. Build the test binary with -o to symbolise them.
//
// BenchmarkDeliveryControl (delivery_test.go) measures the senders' pacing
// with four worker processes sharing one sender (BENCH_RL_RATE segments/s,
// default 200, for BENCH_RL_SECONDS, default 30), the latency of crisis
// messages behind 10,000 and BENCH_BACKLOG (default 1,000,000) queued bulk
// tasks, normal SMS throughput behind them and Redis memory per queued task.
//
// BenchmarkBroadcastFanout (broadcast_test.go) sends a broadcast to
// BENCH_BROADCAST people (default 100,000) uploaded as a CSV, against bare
// Asynq enqueueing as many tasks from 8 goroutines: the API's answer, the
// first message at the simulator, the time until every person's message is
// queued, Redis memory per person, and how long 100 answers ("2", need
// help) take from the inbound webhook to the roster while it sends; bare
// Asynq and the broadcast run in turn BENCH_ROUNDS times, and the figures
// are those of the round with the median ratio (each round's listed). Then
// the answers again, with a crisis broadcast to BENCH_ANSWER_PEOPLE
// (default 10,000) sending and BENCH_ANSWER_BACKLOG (default 1,000,000)
// bulk messages queued.
//
// BenchmarkQuestionnaireAnswers (questionnaire_test.go) has
// BENCH_QN_PATIENTS (default 10,000) patients start a five-question SMS
// questionnaire and answer it through the signed inbound webhook at
// BENCH_QN_RATE (default 200) answers/s, and times each answer from the
// webhook POST to the next question's acceptance by the simulator, against
// bare Asynq sending the same messages at the same rate (enqueue →
// accepted) for BENCH_QN_BASELINE_SECONDS (default 60). It fails unless
// every response completes.
//
// BenchmarkSoak (soak_test.go) and BenchmarkMemoryCurve (curve_test.go)
// run only when asked (BENCH_SOAK_SECONDS, BENCH_CURVE): a long steady
// run with replies, callbacks and a broadcast, sampled for Redis memory,
// RSS, goroutines and p99; and Redis memory after 10,000, 100,000 and
// 1,000,000 SMS once the archive and the audit export have caught up,
// with the throughput before and after.
package bench
