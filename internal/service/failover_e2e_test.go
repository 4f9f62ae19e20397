package service_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/channels/channeltest"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/redistest"
)

// The failover test: a gateway on Redis Sentinel (a primary, two replicas,
// three sentinels, all on loopback) takes messages with Idempotency-Keys
// from clients that retry a 503 with the same key, while the primary
// fails. Every message the API accepted must be sent exactly once, be
// found by its id and by its key, and end in the status the provider
// reported last; no request may get a 5xx other than 503, and the gateway
// is never restarted. GATEWAY_FAILOVER_LONG=1 (go tool task
// test:failover) runs each fault several times under a longer load;
// GATEWAY_FAILOVER_ROUNDS sets how many times (1 in the short form, 3 in
// the long one).

// failoverFault makes the primary fail.
type failoverFault struct {
	name, slug string
	inject     func(t *testing.T, r *redistest.Replicated, primary *redistest.Server)
}

var failoverFaults = []failoverFault{
	{"kill -9 of the primary", "kill", func(t *testing.T, _ *redistest.Replicated, p *redistest.Server) { p.Stop() }},
	{"a planned failover (SENTINEL FAILOVER)", "planned", func(t *testing.T, r *redistest.Replicated, _ *redistest.Server) {
		if err := r.Failover(context.Background()); err != nil {
			t.Errorf("SENTINEL FAILOVER: %v", err)
		}
	}},
	{"a primary that stops answering for 5 s (DEBUG SLEEP)", "sleep", func(t *testing.T, _ *redistest.Replicated, p *redistest.Server) {
		go func() {
			c := redis.NewClient(&redis.Options{Addr: p.Addr, ReadTimeout: 10 * time.Second})
			defer c.Close()
			_ = c.Do(context.Background(), "DEBUG", "SLEEP", "5").Err()
		}()
	}},
}

func TestAcceptedMessagesSurviveAFailover(t *testing.T) {
	plan := failoverPlan{rounds: 1, before: 1500 * time.Millisecond, after: 1500 * time.Millisecond, clients: 8, every: 80 * time.Millisecond}
	if os.Getenv("GATEWAY_FAILOVER_LONG") != "" {
		plan = failoverPlan{rounds: 3, before: 5 * time.Second, after: 10 * time.Second, clients: 16, every: 80 * time.Millisecond}
	}
	if v := os.Getenv("GATEWAY_FAILOVER_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("GATEWAY_FAILOVER_ROUNDS=%q: want a positive whole number", v)
		}
		plan.rounds = n
	}
	for _, f := range failoverFaults {
		for round := 1; round <= plan.rounds; round++ {
			name := f.name
			if plan.rounds > 1 {
				name += ", round " + strconv.Itoa(round)
			}
			t.Run(name, func(t *testing.T) { runFailover(t, f, plan) })
		}
	}
}

// failoverPlan shapes the load around one fault.
type failoverPlan struct {
	rounds int
	// before is the load before the fault, after the load once the
	// sentinels agree on the new primary.
	before, after time.Duration
	// clients post one message every `every` each.
	clients int
	every   time.Duration
}

// keyed is one message a client asked for, under its Idempotency-Key.
type keyed struct {
	key, body string
	// id is the message the API acknowledged (202, or 200 replayed).
	id string
	// start is when the client first posted it.
	start time.Time
	// answers are the statuses of every attempt (0: no answer), and when;
	// problems the problem types of those that were not 2xx.
	answers  []int
	at       []time.Time
	problems []string
}

func runFailover(t *testing.T, f failoverFault, plan failoverPlan) {
	args := []string{"--min-replicas-to-write", "1", "--min-replicas-max-lag", "5"}
	if f.slug == "sleep" {
		if redistest.MajorVersion() < 7 {
			t.Skip("DEBUG SLEEP on a Redis before 7 is not tested (enable-debug-command)")
		}
		args = append(args, "--enable-debug-command", "local")
	}
	// down-after 2 s (the shipped topology has 5 s): with 1 s, the
	// sentinels of a loaded machine elected twice after a kill in about
	// one round of ten, and the replica left over waited for the
	// failover-timeout (see docs/failover.md).
	r := redistest.StartReplicated(t, redistest.ReplicatedOptions{Replicas: 2, Sentinels: 3, DownAfter: 2 * time.Second,
		FailoverTimeout: 10 * time.Second, Args: args})
	e := startOn(t, r.Servers[0], config.RoleAll, func(c *config.Config) {
		c.RedisURL = "redis://ignored-host:1/0" // with Sentinel only the password and database are read
		c.RedisSentinelMaster = r.MasterName
		c.RedisSentinelAddrs = r.Sentinels
		c.Replication = config.ReplicationConfig{MinReplicasAck: 1, AckTimeout: 500 * time.Millisecond, FailoverWait: 2 * time.Second}
		// The production order of magnitude: long enough for a status
		// callback held up by the failover to arrive before a resend.
		c.Worker.UnconfirmedGrace = 15 * time.Second
		c.LogLevel = "info"
	})
	// Twilio retries a status callback answered 5xx when its URL asks to
	// (connection overrides); without that a report refused during the
	// failover would be lost, and the last check below meaningless.
	e.sim.SetCallbackRetries(60, 250*time.Millisecond)
	hc := &http.Client{Timeout: 30 * time.Second, Transport: channeltest.LoopbackOnly(nil)}
	// What the sentinels did, and when: a long 503 window is explained by
	// when they reconfigured the other replica.
	type sentinelEvent struct {
		at   time.Time
		what string
	}
	var seMu sync.Mutex
	var sentinelEvents []sentinelEvent
	sentinel := redis.NewClient(&redis.Options{Addr: r.Sentinels[0]})
	t.Cleanup(func() { sentinel.Close() })
	events := sentinel.PSubscribe(context.Background(), "+*", "-*")
	t.Cleanup(func() { events.Close() })
	go func() {
		for m := range events.Channel() {
			seMu.Lock()
			sentinelEvents = append(sentinelEvents, sentinelEvent{time.Now(), m.Channel})
			seMu.Unlock()
		}
	}()

	var mu sync.Mutex
	var all []*keyed
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := range plan.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(plan.every)
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				k := &keyed{key: fmt.Sprintf("fo-%s-%d-%d", f.slug, c, n), start: time.Now()}
				k.body = "Failover check " + k.key
				mu.Lock()
				all = append(all, k)
				mu.Unlock()
				// Retry with the same key until the message is acknowledged,
				// as a client must after a 503 (or a 429: a request held up
				// in Redis by the fault may come out over the tenant's rate).
				for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
					status, id, problem := postKeyed(hc, e.base, k.key, k.body)
					mu.Lock()
					k.answers, k.at = append(k.answers, status), append(k.at, time.Now())
					if problem != "" {
						k.problems = append(k.problems, problem)
					}
					if status == http.StatusAccepted || status == http.StatusOK {
						k.id = id
					}
					mu.Unlock()
					if status != http.StatusServiceUnavailable && status != http.StatusTooManyRequests && status != 0 {
						break
					}
				}
			}
		}()
	}

	time.Sleep(plan.before)
	old := r.Primary()
	faultAt := time.Now()
	f.inject(t, r, old)
	promoted := r.WaitNewPrimary(old, 30*time.Second)
	promotedAt := time.Since(faultAt)
	time.Sleep(plan.after)
	close(stop)
	wg.Wait()
	loadEnded := time.Since(faultAt)

	// Every acknowledged message reaches the provider's final status. One
	// that a worker had taken from its queue when the primary died waits
	// for Asynq to find its task's lease expired (30 s, looked for every
	// minute), and for the ledger's grace period if its claim was kept.
	ctx := context.Background()
	deadline := time.Now().Add(150 * time.Second)
	for _, k := range all {
		if k.id == "" {
			continue
		}
		for {
			m, err := e.svc.Ledger.Get(ctx, "", k.id)
			if err == nil && m.Status.Final() {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("message %s (key %s) is not final within the drain time: %+v %v", k.id, k.key, m, err)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	settled := time.Since(faultAt)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_ = e.sim.WaitCallbacks(wctx)
	cancel()

	// What the provider was given: one create per message body.
	sent, sid := map[string]int{}, map[string]string{}
	for _, req := range e.sim.Requests() {
		if req.Reply == http.StatusCreated && req.Form != nil {
			sent[req.Form.Get("Body")]++
			sid[req.Form.Get("Body")] = req.SID
		}
	}
	lastReport := map[string]string{}
	for _, cb := range e.sim.Callbacks() {
		switch {
		case cb.Code >= 500 && cb.Code != http.StatusServiceUnavailable, cb.Code >= 400 && cb.Code < 500:
			t.Errorf("a status callback was answered %d", cb.Code)
		case cb.Code >= 200 && cb.Code < 300:
			lastReport[cb.MessageSID] = cb.Status
		}
	}

	var accepted, refused, limited, unanswered, twice, unsent int
	var first503, last503 time.Duration = -1, -1
	var longest time.Duration
	for _, k := range all {
		for i, st := range k.answers {
			switch {
			case st == http.StatusServiceUnavailable:
				refused++
				since := k.at[i].Sub(faultAt)
				if first503 < 0 || since < first503 {
					first503 = since
				}
				last503 = max(last503, since)
			case st == 0:
				unanswered++
			case st == http.StatusTooManyRequests:
				limited++
			case st >= 400:
				t.Errorf("key %s was answered %d %v (only 202, 200, 503 or 429 are right)", k.key, st, k.problems)
			}
		}
		if k.id == "" {
			t.Errorf("key %s was never acknowledged (answers %v)", k.key, k.answers)
			continue
		}
		accepted++
		longest = max(longest, k.at[len(k.at)-1].Sub(k.start))
		switch n := sent[k.body]; {
		case n == 0:
			unsent++
			t.Errorf("message %s (key %s) was acknowledged but never sent", k.id, k.key)
		case n > 1:
			twice++
			t.Errorf("message %s (key %s) was sent %d times", k.id, k.key, n)
		}
		m, err := e.svc.Ledger.Get(ctx, "", k.id)
		if err != nil {
			t.Errorf("message %s (key %s) is not in the ledger: %v", k.id, k.key, err)
			continue
		}
		if want := twilioFinal(lastReport[sid[k.body]]); m.Status != want || m.ProviderID != sid[k.body] {
			t.Errorf("message %s ends %s with provider id %q; the provider reported %s last, for %q", k.id, m.Status, m.ProviderID, want, sid[k.body])
		}
	}
	if unanswered > 0 {
		t.Errorf("%d requests got no answer at all", unanswered)
	}
	// Found by its id and by its key, through the API, after the fault.
	for _, k := range all {
		if k.id == "" {
			continue
		}
		if a := e.do("GET", "/v1/messages/"+k.id, keyA, ""); a.Status != http.StatusOK {
			t.Errorf("GET message %s (key %s) = %d %s", k.id, k.key, a.Status, a.Raw)
		}
		if a := e.do("POST", "/v1/messages", keyA, smsBody(patientPhone, k.body), "Idempotency-Key", k.key); a.Status != http.StatusOK ||
			a.Body["id"] != k.id || a.Header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("key %s again = %d %v, want 200 with message %s", k.key, a.Status, a.Body["id"], k.id)
		}
	}
	// The gateway followed the new primary without a restart.
	if a := e.do("GET", "/readyz", "", ""); a.Status != http.StatusOK {
		t.Errorf("the gateway is not ready after the failover: %d %s", a.Status, a.Raw)
	}
	window := "no 503"
	if refused > 0 {
		kinds := map[string]int{}
		for _, k := range all {
			for _, p := range k.problems {
				kinds[strings.TrimPrefix(p, "/problems/")]++
			}
		}
		window = fmt.Sprintf("503s from %s to %s after the fault (problems: %v)", first503.Round(10*time.Millisecond), last503.Round(10*time.Millisecond), kinds)
	}
	seMu.Lock()
	var steps []string
	for _, ev := range sentinelEvents {
		if d := ev.at.Sub(faultAt); d >= 0 && (strings.Contains(ev.what, "reconf") || strings.Contains(ev.what, "failover-end") || strings.Contains(ev.what, "switch-master")) {
			steps = append(steps, fmt.Sprintf("%s %s", ev.what, d.Round(10*time.Millisecond)))
		}
	}
	seMu.Unlock()
	t.Logf("%s: sentinels: %s", f.name, strings.Join(steps, ", "))
	t.Logf("%s: %d messages accepted (%d never sent, %d sent twice); %d answers 503, %s; %d answers 429; new primary %s agreed %s after the fault; load ended at %s; longest wait of a client for one message %s; all final %s after the fault",
		f.name, accepted, unsent, twice, refused, window, limited, promoted.Addr, promotedAt.Round(10*time.Millisecond),
		loadEnded.Round(10*time.Millisecond), longest.Round(10*time.Millisecond), settled.Round(10*time.Millisecond))
}

// postKeyed posts a message under an Idempotency-Key and returns the
// status (0 when no answer came), the message id and a problem's type.
func postKeyed(hc *http.Client, base, key, body string) (int, string, string) {
	req, err := http.NewRequest("POST", base+"/v1/messages", strings.NewReader(smsBody(patientPhone, body)))
	if err != nil {
		return 0, "", ""
	}
	req.Header.Set("Authorization", "Bearer "+keyA)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err.Error()
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out struct {
		ID     string `json:"id"`
		Type   string `json:"type"`
		Detail string `json:"detail"`
	}
	_ = json.Unmarshal(raw, &out)
	if out.Type != "" {
		out.Type += ": " + out.Detail
	}
	return resp.StatusCode, out.ID, out.Type
}

// twilioFinal is the gateway status of Twilio's last reported status.
func twilioFinal(reported string) ledger.Status {
	switch reported {
	case "delivered":
		return ledger.StatusDelivered
	case "undelivered":
		return ledger.StatusUndelivered
	case "failed":
		return ledger.StatusFailed
	}
	return ledger.StatusSent
}

func TestARequestWhoseWritesMissTheReplicasIs503AndItsRetryFindsTheMessage(t *testing.T) {
	primary := redistest.StartWithArgs(t)
	replica := redistest.StartReplica(t, primary)
	e := startOn(t, primary, config.RoleAll, func(c *config.Config) {
		// Long enough that a loaded machine's healthy replica always
		// answers in time; the frozen one below never does.
		c.Replication = config.ReplicationConfig{MinReplicasAck: 1, AckTimeout: time.Second}
	})
	e.sim.SetCallbackRetries(40, 100*time.Millisecond)
	first := e.sendRetrying(keyA, smsBody(patientPhone, "before"), "k-before")
	e.waitFor(first, ledger.StatusDelivered, 10*time.Second)

	// A replica that is connected but acknowledges nothing, as in the
	// moment before a failover.
	pid := replica.Pid()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	t.Cleanup(thaw)
	a := e.do("POST", "/v1/messages", keyA, smsBody(patientPhone, "during"), "Idempotency-Key", "k-during")
	if a.Status != http.StatusServiceUnavailable || a.Body["type"] != "/problems/not-replicated" || a.Header.Get("Retry-After") == "" {
		t.Fatalf("a message whose writes miss the replicas = %d %s", a.Status, a.Raw)
	}
	// The API's writes stay on the primary: its worker claims the message
	// but calls no provider while the claim is not on the replica.
	time.Sleep(1500 * time.Millisecond)
	if n := len(e.sim.Requests()); n != 1 {
		t.Fatalf("the provider got %d messages while the replica was frozen, want only the one before", n)
	}
	thaw()
	// The thawed replica catches up within moments (on a loaded machine,
	// perhaps after one more 503): the client retries with the same key.
	again := e.do("POST", "/v1/messages", keyA, smsBody(patientPhone, "during"), "Idempotency-Key", "k-during")
	for deadline := time.Now().Add(10 * time.Second); again.Status == http.StatusServiceUnavailable && time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
		again = e.do("POST", "/v1/messages", keyA, smsBody(patientPhone, "during"), "Idempotency-Key", "k-during")
	}
	if again.Status != http.StatusOK || again.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("the retry with the same key = %d %s", again.Status, again.Raw)
	}
	id := again.Body["id"].(string)
	m := e.waitFor(id, ledger.StatusDelivered, 15*time.Second)
	if e.sim.MessagesTo(patientPhone) != 2 || m.Attempts != 1 {
		t.Fatalf("after the replica is back: %d messages at the provider, %d attempts", e.sim.MessagesTo(patientPhone), m.Attempts)
	}
	var given bool
	for _, ev := range m.Events {
		given = given || strings.Contains(ev.Detail, "claim could not be confirmed")
	}
	if !given {
		t.Fatalf("the history does not say the unconfirmed attempt was given back: %+v", m.Events)
	}
}

func TestAGatewayOnReplicatedRedisWithoutAcknowledgementWarnsAtStartUp(t *testing.T) {
	primary := redistest.StartWithArgs(t)
	redistest.StartReplica(t, primary)
	e := startOn(t, primary, config.RoleAPI)
	logs := e.logs.String()
	if !strings.Contains(logs, "REDIS_MIN_REPLICAS_ACK is 0") || !strings.Contains(logs, "min-replicas-to-write 0") {
		t.Fatalf("no warning of an unfenced topology in:\n%s", logs)
	}
}
