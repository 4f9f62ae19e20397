// Package chaos holds the gateway's chaos tests,
// TestBroadcastsSurviveKilledWorkersAndARedisRestart (below) and
// TestAKillDuringTheFanOutHoldsBackFewPeople (the cost of a kill during a
// broadcast's fan-out, against an undisturbed run; `go tool task
// chaos:fanout` runs it on 10,000 people). It has no code of its own
// outside its test files.
//
// The test builds the production binary (go build ./cmd/gateway, no dev
// tag) and runs it as real processes, all on 127.0.0.1: one `serve` and
// two `worker` processes, on a throwaway redis-server with AOF
// (appendfsync always). Twilio is the loopback simulator (twiliosim), with
// its Calls API, posting signed status callbacks and call webhooks to the
// gateway's public URL; WeChat is wechatsim. Simulated patients answer as
// real ones would: once their SMS reaches the simulator, some text back 1
// (safe) or 2 (need help) through the signed inbound SMS webhook; in the
// cascade some answer the WeChat message by a signed, encrypted push, and
// the calls are scripted to press 1, 2 or nothing.
//
// Two crisis broadcasts run at once, with a poll: one by SMS, and a
// cascade WeChat → SMS → voice whose ack_timeout is half the faults'
// window, so that people wait on a pending step while the faults happen.
// From a seeded math/rand the test then kills a worker with SIGKILL at
// random moments (each is started again a moment later; the last kill
// comes after the Redis restart) and stops Redis once (SIGKILL too, in
// the first half of the window) and starts it again on its AOF. Every
// HTTP status the gateway answers (API, webhooks, pushes, and the
// simulators' callbacks) is kept.
//
// Once everything has come out (a bounded wait until the task queues are
// idle: a task a fault caught waits for Asynq to take it back) and the
// repair pass has run on both broadcasts, the test checks:
//
//   - each person got one message per step of their cascade that was
//     handed to the provider, and none for a step that was not (canceled,
//     moved on); a second copy of the same message only around a fault,
//     at most the sends in flight (WORKER_CRISIS_CONCURRENCY per kill, both
//     workers' for the Redis restart), and reported; a message that is not
//     the person's own try fails;
//   - no step runs twice, and the steps follow the cascade;
//   - every person and message ended: the SMS broadcast's people are
//     acknowledged or delivered (sent only when their delivery report was
//     refused while Redis was down), the cascade's acknowledged or
//     unreachable; no step is left queued or sending;
//   - the poll's safe and need_help counts, and the need_help list, are
//     the patients' latest answers; the reply feed has one entry per
//     answer the gateway took, with its meaning;
//   - no 5xx other than 503, and 503s (with Retry-After) or no answer
//     only while Redis was down and a few seconds after; no 4xx;
//   - no process ended by itself, each exits 0 on SIGTERM at the end, and
//     no log line holds a panic, a patient's number or openid, or the
//     broadcast's text.
//
// It prints the seed first, and the figures at the end: the faults and the
// sends in flight at each, the duplicates, who was held back and how long,
// the 503 window, and what the repair pass fixed. A failure names the
// people by index, with their message's history and what the processes
// logged about it (ids only).
//
// Environment variables (the short form's defaults in brackets):
//
//   - CHAOS_SEED replays one run with that seed (the seed decides the
//     faults, their moments and who answers what); otherwise a random seed
//     is printed;
//   - CHAOS_RUNS [1] runs in a row, with seeds seed, seed+1, …; the first
//     failing run stops the test;
//   - CHAOS_PEOPLE [300] people of the SMS broadcast, CHAOS_CASCADE [40] of
//     the cascade (at most 99,999 and 9,999);
//   - CHAOS_KILLS [3] worker kills, within CHAOS_WINDOW [20s] of the
//     broadcasts' start; Redis restarts once within it.
//
// The long form is `go tool task chaos` (see docs/testing.md).
package chaos
