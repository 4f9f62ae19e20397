package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/patientmsg/gateway/channels/channeltest"
	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/channels/wechat/wechatsim"
	"github.com/patientmsg/gateway/internal/redistest"
)

const (
	tenant    = "riverside"
	apiKey    = "riverside-chaos-key-0123456789"
	twilioNum = "+15005550006"
	wcToken   = "chaosServerToken2026"
	wcAESKey  = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	// crisisConcurrency is WORKER_CRISIS_CONCURRENCY: the most crisis sends
	// one worker has in flight, so the most a kill can leave unconfirmed.
	crisisConcurrency = 8
	// redisGrace is how long after Redis is back a 503 still counts as
	// Redis's (connection pools notice the restart on their next command).
	redisGrace = 5 * time.Second
	// settleAfter bounds the wait, after the last fault, for everything to
	// come out: a task a kill or the Redis restart caught waits for Asynq
	// to take it back, 60 to 120 s later (see tasksLeft).
	settleAfter = 150 * time.Second
)

// loopbackOnly carries every request the test makes: it refuses any host
// that is not loopback.
var loopbackOnly = channeltest.LoopbackOnly(nil)

// TestBroadcastsSurviveKilledWorkersAndARedisRestart is the chaos test: it
// runs crisis broadcasts on real processes (one API, two workers, a
// redis-server with AOF) while it kills workers with SIGKILL at random
// moments and restarts Redis once, then checks that nobody got a message
// twice (beyond what the faults can cost), every person and message ended,
// every answer was counted and filed once, and nothing answered a 5xx
// other than 503 while Redis was down. See doc.go for the settings.
func TestBroadcastsSurviveKilledWorkersAndARedisRestart(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("the chaos test needs a redis-server binary (apt-get install redis-server)")
	}
	s := settingsFromEnv(t)
	bin := buildGateway(t, t.TempDir())
	for i := range s.runs {
		seed := s.first + uint64(i)
		t.Logf("chaos run %d of %d: seed %d (replay: %s)", i+1, s.runs, seed, s.replay(seed))
		ok := t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			r := newRun(t, s, seed, bin)
			r.play()
		})
		if !ok {
			t.Logf("seed %d failed; replay it: %s", seed, s.replay(seed))
			return
		}
	}
}

// settings are a chaos test's sizes (see doc.go for their variables).
type settings struct {
	first   uint64 // the first run's seed
	runs    int
	people  int // of the SMS broadcast
	cascade int // of the WeChat → SMS → voice broadcast
	kills   int
	window  time.Duration // when the faults happen, from the broadcasts' start
}

// replay is the command that runs a seed again with the same sizes.
func (s settings) replay(seed uint64) string {
	return fmt.Sprintf("CHAOS_SEED=%d CHAOS_PEOPLE=%d CHAOS_CASCADE=%d CHAOS_KILLS=%d CHAOS_WINDOW=%s go test -count=1 -run '^TestBroadcastsSurviveKilledWorkersAndARedisRestart$' ./internal/chaos/",
		seed, s.people, s.cascade, s.kills, s.window)
}

func settingsFromEnv(t *testing.T) settings {
	s := settings{runs: 1, people: 300, cascade: 40, kills: 3, window: 20 * time.Second}
	num := func(name string, dst *int) {
		if v := os.Getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				t.Fatalf("%s=%q: want a positive whole number", name, v)
			}
			*dst = n
		}
	}
	num("CHAOS_RUNS", &s.runs)
	num("CHAOS_PEOPLE", &s.people)
	num("CHAOS_CASCADE", &s.cascade)
	num("CHAOS_KILLS", &s.kills)
	if v := os.Getenv("CHAOS_WINDOW"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 5*time.Second {
			t.Fatalf("CHAOS_WINDOW=%q: want a duration of 5s or more", v)
		}
		s.window = d
	}
	s.first = rand.Uint64() % 1_000_000_000
	if v := os.Getenv("CHAOS_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("CHAOS_SEED=%q: want a whole number", v)
		}
		s.first, s.runs = n, 1
	}
	if s.people > 99999 || s.cascade > 9999 {
		t.Fatal("CHAOS_PEOPLE: at most 99999; CHAOS_CASCADE: at most 9999")
	}
	return s
}

// run is one chaos run: its processes, simulators, patients and what was
// seen.
type run struct {
	t *testing.T
	settings
	seed uint64
	rng  *rand.Rand
	bin  string
	dir  string

	redis   *redistest.Server
	inspect *asynq.Inspector // only to know when the queues are idle
	sim     *twiliosim.Server
	wsim    *wechatsim.Server
	env     []string
	base    string // the API, and the public URL providers call back
	http    *http.Client
	serve   *proc
	workers [2]*proc
	procs   []*proc // every process started, the killed ones too

	seen      *recorder
	start     time.Time // the broadcasts were created
	settledAt time.Time
	faults    faultLog
	main      *broadcast
	casc      *broadcast
	byPhone   map[string]*person
	byOpen    map[string]*person
	answers   sync.WaitGroup
	answering atomic.Int64 // answers being sent
}

// faultLog is what the test did to the processes, and when.
type faultLog struct {
	mu        sync.Mutex
	kills     []kill
	redisDown time.Time
	redisUp   time.Time
	last      time.Time
}

type kill struct {
	at       time.Time
	worker   string
	inFlight int // provider calls the Twilio simulator was answering at that moment
	back     time.Time
}

// redisOutage says whether t falls while Redis was down, or within
// redisGrace after it came back.
func (f *faultLog) redisOutage(t time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.redisDown.IsZero() || t.Before(f.redisDown) {
		return false
	}
	return f.redisUp.IsZero() || t.Before(f.redisUp.Add(redisGrace))
}

func newRun(t *testing.T, s settings, seed uint64, bin string) *run {
	r := &run{t: t, settings: s, seed: seed, rng: rand.New(rand.NewPCG(seed, 0x5eed)), bin: bin, dir: t.TempDir(),
		seen: &recorder{}, byPhone: map[string]*person{}, byOpen: map[string]*person{}}
	r.http = &http.Client{Timeout: 15 * time.Second, Transport: loopbackOnly}
	r.redis = redistest.StartWithArgs(t, "--appendonly", "yes", "--appendfsync", "always")
	if c, err := r.redis.Client().ConfigGet(context.Background(), "append*").Result(); err != nil ||
		c["appendonly"] != "yes" || c["appendfsync"] != "always" {
		t.Fatalf("redis-server is not writing an AOF on every write: %v %v", c, err)
	}
	r.inspect = asynq.NewInspectorFromRedisClient(r.redis.Client())
	r.sim = twiliosim.New(twiliosim.Options{Voice: true, CallbackDelay: 20 * time.Millisecond})
	t.Cleanup(r.sim.Close)
	// Every provider call takes a while: the workers' crisis sends are
	// mostly in flight, so that a kill catches some, and the SMS broadcast
	// is still sending (about 60 % of the window) while the faults happen.
	perSecond := float64(s.people) / (0.6 * s.window.Seconds())
	latency := time.Duration(float64(2*crisisConcurrency) / perSecond * float64(time.Second))
	r.sim.SetLatency(min(max(latency, 50*time.Millisecond), time.Second))
	r.wsim = wechatsim.New(wechatsim.Options{})
	t.Cleanup(r.wsim.Close)
	r.wsim.SetLatency(30 * time.Millisecond)
	apiAddr := freeAddr(t)
	r.base = "http://" + apiAddr
	r.env = []string{
		"REDIS_URL=" + r.redis.URL,
		"GATEWAY_PUBLIC_URL=" + r.base,
		"GATEWAY_API_KEYS=" + tenant + ":" + apiKey,
		"TWILIO_ACCOUNT_SID=" + r.sim.AccountSID(),
		"TWILIO_AUTH_TOKEN=" + r.sim.AuthToken(),
		"TWILIO_FROM=" + twilioNum,
		"TWILIO_API_URL=" + r.sim.URL(),
		"TWILIO_VOICE_FROM=" + twilioNum,
		"VOICE_CALLS_PER_SECOND=20",
		"WECHAT_APP_ID=" + r.wsim.AppID(),
		"WECHAT_APP_SECRET=" + r.wsim.AppSecret(),
		"WECHAT_API_URL=" + r.wsim.URL(),
		"WECHAT_TOKEN=" + wcToken,
		"WECHAT_ENCODING_AES_KEY=" + wcAESKey,
		"BLOB_URL=file://" + r.dir + "/blobs?create_dir=true",
		"GATEWAY_WEBHOOK_ALLOW_NETWORKS=127.0.0.0/8",
		"QUIET_HOURS=off",
		"GATEWAY_TENANT_RATE_LIMIT=off",
		"BROADCAST_MIN_ACK_TIMEOUT=1s",
		"WORKER_POLL_INTERVAL=20ms",
		"WORKER_DELAYED_POLL_INTERVAL=100ms",
		"WORKER_CRISIS_CONCURRENCY=" + strconv.Itoa(crisisConcurrency),
		"PROVIDER_TIMEOUT=2s",
		"DELIVERY_UNCONFIRMED_GRACE=3s",
		"GATEWAY_SHUTDOWN_TIMEOUT=5s",
		"SMS_SEGMENTS_PER_SECOND=1000",
		"WECHAT_MESSAGES_PER_SECOND=1000",
		"LOG_LEVEL=info",
		"LOG_FORMAT=json",
	}
	r.serve = r.startProc("serve", "serve", apiAddr)
	for i := range r.workers {
		r.workers[i] = r.startProc(fmt.Sprintf("worker-%d", i+1), "worker", "")
	}
	return r
}

// startProc starts a gateway process; a worker gets an ops listener of
// its own (a free loopback port each time).
func (r *run) startProc(name, role, apiAddr string) *proc {
	env := slices.Clone(r.env)
	health := apiAddr
	if role == "serve" {
		env = append(env, "GATEWAY_ADDR="+apiAddr, "GATEWAY_OPS_ADDR=off")
	} else {
		health = freeAddr(r.t)
		env = append(env, "GATEWAY_OPS_ADDR="+health)
	}
	p := startProc(r.t, r.bin, r.dir, name, role, env, health)
	r.procs = append(r.procs, p)
	return p
}

// play runs the whole scenario: people, broadcasts, faults, the wait for
// everything to come out, the checks and the figures.
func (r *run) play() {
	t := r.t
	r.main = r.newBroadcast("main", r.people, false)
	r.casc = r.newBroadcast("cascade", r.cascade, true)
	r.uploadAudience(r.main)
	r.uploadAudience(r.casc)
	r.openWeChatWindows(r.casc)
	r.scriptCalls()

	r.start = time.Now()
	// Each step of the cascade waits half the window for an answer: people
	// wait on WeChat, then on SMS, while the faults happen.
	r.createBroadcast(r.casc, `"channels":["wechat","sms","voice"],"ack_timeout":"`+(r.window/2).String()+`"`)
	// The cascade's first messages are queued before the SMS broadcast's,
	// so that they do not wait behind all of them.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	waitUntil(ctx, 20*time.Millisecond, func() bool { ro, err := r.roster(r.casc); return err == nil && ro.FanOutDone })
	cancel()
	r.createBroadcast(r.main, `"channels":["sms"],"ack_timeout":"24h"`)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var bg sync.WaitGroup
	bg.Add(2)
	go func() { defer bg.Done(); r.watchProviders(ctx) }()
	go func() { defer bg.Done(); r.pollRosters(ctx) }()
	defer func() { stop(); bg.Wait() }()
	r.runFaults()
	if t.Failed() {
		return
	}
	settled := r.settle(settleAfter, false)
	repairs := r.repair()
	settled = r.settle(30*time.Second, true) && settled
	stop()
	bg.Wait()
	r.answers.Wait()
	f := r.check(settled, repairs)
	r.stopAll()
	r.checkLogs()
	r.report(f, repairs)
}

// recorder keeps every HTTP status the gateway answered the test and the
// simulators.
type recorder struct {
	mu   sync.Mutex
	seen []answer
}

type answer struct {
	sent time.Time // when the request was made (zero: not known)
	at   time.Time // when it was answered
	what string
	code int // 0: no answer (connection refused, timeout)
	// noRetryAfter is set when the answer had no Retry-After header.
	noRetryAfter bool
}

func (c *recorder) add(what string, code int, sent time.Time) {
	c.addResponse(what, code, sent, true)
}

// addResponse records an answer; retryAfter says whether it carried a
// Retry-After header (every 503 must).
func (c *recorder) addResponse(what string, code int, sent time.Time, retryAfter bool) {
	c.mu.Lock()
	c.seen = append(c.seen, answer{sent: sent, at: time.Now(), what: what, code: code, noRetryAfter: !retryAfter})
	c.mu.Unlock()
}

func (c *recorder) all() []answer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.seen)
}

// api calls the gateway's API with the tenant's key and decodes a JSON
// answer into out (when not nil). The status is recorded under what.
func (r *run) api(method, path, what, contentType string, body []byte, out any) (int, error) {
	req, err := http.NewRequest(method, r.base+path, strings.NewReader(string(body)))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	sent := time.Now()
	resp, err := r.http.Do(req)
	if err != nil {
		r.seen.add(what, 0, sent)
		return 0, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r.seen.addResponse(what, resp.StatusCode, sent, resp.Header.Get("Retry-After") != "")
	if resp.StatusCode/100 == 2 && out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	if resp.StatusCode/100 != 2 {
		// The problem's type and title only: a detail may quote a value.
		var p struct{ Type, Title string }
		_ = json.Unmarshal(raw, &p)
		return resp.StatusCode, fmt.Errorf("%s %s = %d %s (%s)", method, what, resp.StatusCode, p.Title, p.Type)
	}
	return resp.StatusCode, nil
}

// runFaults plays the faults the seed chose, on the test goroutine: kills
// of a worker (each started again 0.3–2 s later, once Redis is up) and
// one Redis restart (down 1–3 s, in the first half of the window).
func (r *run) runFaults() {
	type event struct {
		at     time.Duration
		kind   string // kill, redis
		worker int
		pause  time.Duration
	}
	outage := event{at: r.between(r.window/5, r.window/2), kind: "redis", pause: r.between(time.Second, 3*time.Second)}
	evs := []event{outage}
	for i := range r.kills {
		// The last kill comes after Redis is back: the worker started
		// after it takes back, a minute later, the tasks the outage caught
		// (Asynq's recoverer runs a minute after a worker starts, then
		// every minute), so that a run need not wait up to two minutes for
		// a recoverer started before the outage.
		from := time.Second
		if i == r.kills-1 {
			from = outage.at + outage.pause + time.Second
		}
		evs = append(evs, event{at: r.between(from, r.window), kind: "kill", worker: r.rng.IntN(len(r.workers)),
			pause: r.between(300*time.Millisecond, 2*time.Second)})
	}
	slices.SortFunc(evs, func(a, b event) int { return int(a.at - b.at) })
	for _, ev := range evs {
		time.Sleep(time.Until(r.start.Add(ev.at)))
		switch ev.kind {
		case "kill":
			w := r.workers[ev.worker]
			k := kill{at: time.Now(), worker: w.name, inFlight: r.sim.Stats().InFlight}
			w.kill()
			time.Sleep(ev.pause)
			r.waitRedis()
			r.workers[ev.worker] = r.startProc(w.name, "worker", "")
			k.back = time.Now()
			r.faults.mu.Lock()
			r.faults.kills = append(r.faults.kills, k)
			r.faults.last = time.Now()
			r.faults.mu.Unlock()
		case "redis":
			r.faults.mu.Lock()
			r.faults.redisDown = time.Now()
			r.faults.mu.Unlock()
			r.redis.Stop()
			time.Sleep(ev.pause)
			r.redis.Restart()
			r.faults.mu.Lock()
			r.faults.redisUp = time.Now()
			r.faults.last = time.Now()
			r.faults.mu.Unlock()
		}
		r.checkAlive()
	}
}

// waitRedis waits until Redis is up again (a restarted worker that cannot
// reach it exits at start-up, as it should).
func (r *run) waitRedis() {
	for {
		r.faults.mu.Lock()
		down := !r.faults.redisDown.IsZero() && r.faults.redisUp.IsZero()
		r.faults.mu.Unlock()
		if !down {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// between is a random duration in [lo, hi) from the run's seed.
func (r *run) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(r.rng.Int64N(int64(hi-lo)))
}

// checkAlive fails the run when a process ended without the test ending it.
func (r *run) checkAlive() {
	for _, p := range r.procs {
		if crashed, err := p.crashed(); crashed {
			r.t.Errorf("%s exited by itself (%v); its last log lines:\n%s", p.name, err, p.logTail(30))
		}
	}
}

// stopAll stops every running process with SIGTERM: each must exit 0.
func (r *run) stopAll() {
	r.checkAlive()
	for _, p := range r.procs {
		select {
		case <-p.done:
			continue
		default:
		}
		if err := p.stop(15 * time.Second); err != nil {
			r.t.Errorf("%v; its last log lines:\n%s", err, p.logTail(20))
		}
	}
}
