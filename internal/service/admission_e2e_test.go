package service_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/channels/channeltest"
	"github.com/patientmsg/gateway/channels/twilio"
	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/internal/admission"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/redistest"
)

// redisMemory reads used_memory and maxmemory.
func redisMemory(t *testing.T, rdb *redis.Client) admission.Memory {
	t.Helper()
	info, err := rdb.Info(context.Background(), "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	m, err := admission.ParseInfoMemory(info)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// tally counts a flood's answers, and what was wrong with any of them.
type tally struct {
	mu       sync.Mutex
	statuses map[int]int
	types    map[string]int
	bad      []string // 5xx other than 503, 429/503 without Retry-After, …
	first429 time.Duration
}

func (tl *tally) add(since time.Duration, status int, header http.Header, body []byte) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.statuses[status]++
	var p struct{ Type string }
	_ = json.Unmarshal(body, &p)
	if p.Type != "" {
		tl.types[p.Type]++
	}
	if status == 429 && tl.first429 == 0 {
		tl.first429 = since
	}
	if status >= 500 && status != 503 {
		tl.bad = append(tl.bad, fmt.Sprintf("a %d: %s", status, body))
	}
	if status == 429 || status == 503 {
		if ra, err := strconv.Atoi(header.Get("Retry-After")); err != nil || ra < 1 {
			tl.bad = append(tl.bad, fmt.Sprintf("a %d without a Retry-After: %q", status, header.Get("Retry-After")))
		}
	}
	if status == 429 && p.Type == "/problems/rate-limited" && header.Get("RateLimit-Policy") == "" {
		tl.bad = append(tl.bad, "a rate-limited 429 without RateLimit-Policy")
	}
}

func TestOneTenantsFloodIsRefusedBeforeRedisFillsAndEveryClinicsCrisisMessagesGetThrough(t *testing.T) {
	const (
		clients  = 16
		floodFor = 10 * time.Second
		most     = 60_000 // requests, in case the machine is fast
	)
	rs := redistest.StartWithArgs(t, "--maxmemory", "32mb", "--maxmemory-policy", "noeviction")
	e := startOn(t, rs, config.RoleAll, func(c *config.Config) {
		// One long code: 1 segment a second, as in production.
		c.Senders.SMSPerSecond = 1
		c.Admission = config.AdmissionConfig{
			TenantRate:   config.RateLimit{PerSecond: 100, Burst: 200},
			BacklogHours: 0.1, // 360 segments of this sender: reached in about 2 s at the rate limit
			MemoryGuard:  config.MemoryGuard{Bulk: 0.80, Routine: 0.90, Urgent: 0.97},
		}
	})
	rdb := rs.Client()
	before := redisMemory(t, rdb)
	backlogCap := e.svc.Admission.BacklogCap("sms")

	// Clinic A's runaway integration: 16 clients posting bulk SMS as fast
	// as they can.
	base := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
	defer base.CloseIdleConnections()
	client := &http.Client{Transport: channeltest.LoopbackOnly(base), Timeout: 10 * time.Second}
	tl := &tally{statuses: map[int]int{}, types: map[string]int{}}
	var sent atomic.Int64
	var transportErrs atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < clients; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Since(start) < floodFor && sent.Add(1) <= most; i++ {
				body := smsBody(fmt.Sprintf("+1415555%04d", (w*1000+i)%10000), "Flu shots are available this week at Riverside Clinic.", "priority", "bulk")
				req, _ := http.NewRequest("POST", e.base+"/v1/messages", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+keyA)
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					transportErrs.Add(1)
					continue
				}
				raw, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				tl.add(time.Since(start), resp.StatusCode, resp.Header, raw)
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	after := redisMemory(t, rdb)
	total := 0
	for _, n := range tl.statuses {
		total += n
	}
	accepted, refused := tl.statuses[202], tl.statuses[429]
	t.Logf("flood: %d requests from %d clients in %s (%.0f/s): %d accepted (202), %d refused (429: %d rate-limited, %d backlog-full), %d 503, first 429 after %s, %d transport errors",
		total, clients, took.Round(time.Millisecond), float64(total)/took.Seconds(), accepted, refused,
		tl.types["/problems/rate-limited"], tl.types["/problems/backlog-full"], tl.statuses[503], tl.first429.Round(time.Millisecond), transportErrs.Load())
	perMsg := float64(after.Used-before.Used) / float64(max(accepted, 1))
	t.Logf("Redis: %.1f MB of %.0f MB used before, %.1f MB (%.1f%%) after; about %.0f B per accepted message, so the %d refused requests would have needed about %.0f MB more",
		float64(before.Used)/(1<<20), float64(after.Max)/(1<<20), float64(after.Used)/(1<<20), 100*after.Ratio(), perMsg, refused, perMsg*float64(refused)/(1<<20))

	for _, b := range tl.bad {
		t.Error(b)
	}
	if transportErrs.Load() > 0 {
		t.Errorf("%d requests failed at the transport", transportErrs.Load())
	}
	if refused == 0 || tl.types["/problems/backlog-full"] == 0 {
		t.Fatalf("the flood was not refused by its backlog cap: %v %v", tl.statuses, tl.types)
	}
	for status, n := range tl.statuses {
		if status != 202 && status != 429 {
			t.Errorf("%d answers were %d: a flood must get 202 or 429 only while Redis has room", n, status)
		}
	}
	// Every accepted message was counted against the cap (minus those the
	// sender sent meanwhile, at one a second).
	if int64(accepted) > backlogCap+int64(took/time.Second)+2 {
		t.Errorf("%d messages accepted with a backlog cap of %d", accepted, backlogCap)
	}
	if after.Ratio() >= 0.80 {
		t.Errorf("Redis is %.1f%% full after the flood: the flood must be refused well before the memory guard", 100*after.Ratio())
	}

	// Afterwards: the other clinic's crisis and routine messages, and the
	// flooding clinic's own crisis message, are accepted at once.
	for _, tc := range []struct {
		name, key, priority string
		want                int
	}{
		{"clinic B's crisis message", keyB, "crisis", 202},
		{"clinic B's routine reminder", keyB, "normal", 202},
		{"clinic B's bulk message", keyB, "bulk", 202},
		{"clinic A's own crisis message", keyA, "crisis", 202},
	} {
		a := e.do("POST", "/v1/messages", tc.key, smsBody("+14155550199", "Ward 3 is being evacuated: go to the east entrance.", "priority", tc.priority))
		if a.Status != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, a.Status, a.Raw, tc.want)
			continue
		}
		if tc.want == 202 && tc.priority == "crisis" {
			e.waitFor(a.Body["id"].(string), ledger.StatusSent, 10*time.Second)
		}
	}
	if a := e.do("GET", "/readyz", "", ""); a.Status != 200 || a.Body["redis_memory"] == nil {
		t.Errorf("readyz: %d %s", a.Status, a.Raw)
	} else {
		t.Logf("readyz: %s", a.Raw)
	}
}

// fillRedis stores filler values until used_memory reaches ratio of
// maxmemory (from below, within a few KB).
func fillRedis(t *testing.T, rdb *redis.Client, ratio float64) admission.Memory {
	t.Helper()
	ctx := context.Background()
	for i := 0; ; i++ {
		m := redisMemory(t, rdb)
		need := int64(ratio*float64(m.Max)) - m.Used
		if need <= 0 {
			return m
		}
		// Small values: the query buffer of a large SET counts in
		// used_memory until Redis trims it, which would overshoot.
		size := min(max(need, 4<<10), 64<<10)
		if err := rdb.Set(ctx, fmt.Sprintf("test:filler:%d:%d", time.Now().UnixNano(), i), strings.Repeat("f", int(size)), 0).Err(); err != nil {
			t.Fatalf("filling Redis to %.0f%%: %v", 100*ratio, err)
		}
	}
}

// emptyRedis removes the filler.
func emptyRedis(t *testing.T, rdb *redis.Client) {
	t.Helper()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, "test:filler:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) > 0 {
		if err := rdb.Del(ctx, keys...).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// seeMemory waits until the API's reading of Redis memory (cached for a
// second) is at least ratio, or below it when below is true. Waiting for at
// least ratio, it tops the filler up with rdb: Redis gives back a little
// memory now and then (buffers it trims), which could leave the reading
// just under the mark.
func (e *env) seeMemory(t *testing.T, rdb *redis.Client, ratio float64, below bool) map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if !below {
			fillRedis(t, rdb, ratio+0.005)
		}
		a := e.do("GET", "/readyz", "", "")
		m, _ := a.Body["redis_memory"].(map[string]any)
		r, _ := m["used_ratio"].(float64)
		if m != nil && (r >= ratio) != below {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("readyz never showed Redis memory %s %.3f: %s", map[bool]string{false: "at", true: "below"}[below], ratio, a.Raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// inboundSMS posts a signed incoming SMS as Twilio would, answering the response.
func (e *env) inboundSMS(from, body string) *http.Response {
	e.t.Helper()
	sid := fmt.Sprintf("SM%032d", time.Now().UnixNano())
	form := url.Values{"MessageSid": {sid}, "SmsSid": {sid}, "AccountSid": {e.sim.AccountSID()}, "From": {from},
		"To": {"+15005550006"}, "Body": {body}, "NumSegments": {"1"}}
	u := e.base + twilio.InboundPath
	req, _ := http.NewRequest("POST", u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", twiliosim.Sign(e.sim.AuthToken(), u, form))
	resp, err := e.http.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func TestTheMemoryGuardRefusesBulkThenRoutineAndKeepsTheLastFewPercentForCrisis(t *testing.T) {
	rs := redistest.StartWithArgs(t, "--maxmemory", "32mb", "--maxmemory-policy", "noeviction")
	e := startOn(t, rs, config.RoleAll) // the default guard: 80, 90, 97 %
	rdb := rs.Client()
	msg := func(priority string) string {
		return smsBody("+14155550177", "Your test results are ready.", "priority", priority)
	}
	later := smsBody("+14155550178", "See you next week.", "send_at", time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	phases := []struct {
		name     string
		fill     float64
		refusing []string
		answers  map[string]int // priority → status
		webhook  int            // a patient's SMS
		write    int            // a routine write other than a message
		ack      int            // an escalation acknowledgement (urgent): 404 means it got through
	}{
		{"85 %: bulk is refused", 0.85, []string{"bulk"},
			map[string]int{"bulk": 503, "normal": 202, "high": 202, "crisis": 202}, 200, 200, 404},
		{"93 %: routine is refused too", 0.93, []string{"bulk", "routine"},
			map[string]int{"bulk": 503, "normal": 503, "high": 503, "crisis": 202}, 200, 503, 404},
		{"98 %: the last few percent, crisis too", 0.98, []string{"bulk", "routine", "urgent"},
			map[string]int{"bulk": 503, "normal": 503, "crisis": 503}, 503, 503, 503},
	}
	var scheduled string
	for _, ph := range phases {
		t.Run(ph.name, func(t *testing.T) {
			m := fillRedis(t, rdb, ph.fill)
			seen := e.seeMemory(t, rdb, ph.fill-0.005, false)
			t.Logf("Redis %.1f%% full (%d of %d bytes); readyz: %v", 100*m.Ratio(), m.Used, m.Max, seen)
			if fmt.Sprint(seen["refusing"]) != fmt.Sprint(ph.refusing) {
				t.Errorf("readyz refusing %v, want %v", seen["refusing"], ph.refusing)
			}
			for _, priority := range []string{"bulk", "normal", "high", "crisis"} {
				want, ok := ph.answers[priority]
				if !ok {
					continue
				}
				a := e.do("POST", "/v1/messages", keyB, msg(priority))
				if a.Status != want {
					t.Errorf("%s message: %d %s, want %d", priority, a.Status, a.Raw, want)
				}
				if a.Status == 503 && (a.Body["type"] != "/problems/store-full" || a.Header.Get("Retry-After") == "") {
					t.Errorf("%s message refused without store-full and Retry-After: %v %s", priority, a.Header, a.Raw)
				}
			}
			if scheduled == "" {
				scheduled = e.send(keyB, later)
			}
			if resp := e.inboundSMS("+14155550177", "Thank you"); resp.StatusCode != ph.webhook ||
				(resp.StatusCode == 503 && resp.Header.Get("Retry-After") == "") {
				t.Errorf("a patient's SMS: %d (Retry-After %q), want %d", resp.StatusCode, resp.Header.Get("Retry-After"), ph.webhook)
			}
			if a := e.do("PUT", "/v1/help-text", keyB, `{"en":"Riverside Clinic: call 555-0100."}`); a.Status != ph.write {
				t.Errorf("a routine write: %d %s, want %d", a.Status, a.Raw, ph.write)
			}
			if a := e.do("POST", "/v1/escalations/esc_none/ack", keyB, `{}`); a.Status != ph.ack {
				t.Errorf("an escalation acknowledgement: %d %s, want %d", a.Status, a.Raw, ph.ack)
			}
			// Reads and cancellations are never refused for memory.
			if a := e.do("GET", "/v1/messages/"+scheduled, keyB, ""); a.Status != 200 {
				t.Errorf("a read: %d %s", a.Status, a.Raw)
			}
			if a := e.do("GET", "/readyz", "", ""); a.Status != 200 {
				t.Errorf("readyz must stay ready while crisis messages are taken: %d", a.Status)
			}
		})
	}
	t.Run("a cancellation at 98 %", func(t *testing.T) {
		if a := e.do("POST", "/v1/messages/"+scheduled+"/cancel", keyB, ""); a.Status != 200 {
			t.Errorf("cancel: %d %s", a.Status, a.Raw)
		}
	})
	t.Run("room again", func(t *testing.T) {
		emptyRedis(t, rdb)
		e.seeMemory(t, rdb, 0.80, true)
		for _, priority := range []string{"bulk", "crisis"} {
			if a := e.do("POST", "/v1/messages", keyB, msg(priority)); a.Status != 202 {
				t.Errorf("%s message once Redis has room: %d %s", priority, a.Status, a.Raw)
			}
		}
	})
}

func TestAMessageLeavesItsTenantsBacklogOnceThoughItsSendIsRetried(t *testing.T) {
	e := start(t, config.RoleAll)
	queued := func() int64 {
		n, _, err := e.svc.Admission.Backlog(context.Background(), "clinic-a", "sms")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	soon := func(d time.Duration) string { return time.Now().Add(d).UTC().Format(time.RFC3339) }
	// A crisis message is never counted.
	crisis := e.send(keyA, smsBody("+14155550183", "Shelter in place", "priority", "crisis"))
	e.waitFor(crisis, ledger.StatusDelivered, 10*time.Second)
	// A message for in an hour is counted (within the 4 h cap) and stays queued.
	waiting := e.send(keyA, smsBody("+14155550181", "See you next week", "send_at", soon(time.Hour)))
	// A two-segment message whose first attempt fails and is retried.
	long := strings.Repeat("Your appointment is confirmed. ", 6)
	e.sim.Script(twiliosim500())
	retried := e.send(keyA, smsBody("+14155550182", long, "send_at", soon(2*time.Second)))
	if n := queued(); n != 3 {
		t.Fatalf("backlog %d segments, want 3: one for the message next week, two for the long one, none for crisis", n)
	}
	m := e.waitFor(retried, ledger.StatusDelivered, 20*time.Second)
	if m.Attempts != 2 {
		t.Fatalf("the long message took %d attempts, want 2 (one failed, one retried)", m.Attempts)
	}
	if n := queued(); n != 1 {
		t.Fatalf("backlog %d after the retried message was delivered, want 1 (the message next week)", n)
	}
	if a := e.do("POST", "/v1/messages/"+waiting+"/cancel", keyA, ""); a.Status != 200 {
		t.Fatalf("cancel: %d %s", a.Status, a.Raw)
	}
	if n := queued(); n != 0 {
		t.Fatalf("backlog %d after the cancellation, want 0", n)
	}
}

// A message request is counted against its tenant's rate once, whatever
// becomes of it: the rate is counted with the message's backlog, in one
// round trip, or on its own when the request ends before that.
func TestEveryMessageRequestMeetsTheRateOnce(t *testing.T) {
	e := start(t, config.RoleAll, func(c *config.Config) {
		// A burst of 6 that takes 6 minutes to come back: the test never
		// sees one return.
		c.Admission.TenantRate = config.RateLimit{PerSecond: 1.0 / 60, Burst: 6}
	})
	remaining := func(a answer) string {
		t.Helper()
		if a.Header.Get("RateLimit-Policy") != `"tenant";q=6;w=360` {
			t.Fatalf("%d without the tenant's RateLimit-Policy: %q %s", a.Status, a.Header.Get("RateLimit-Policy"), a.Raw)
		}
		r, _, _ := strings.Cut(strings.TrimPrefix(a.Header.Get("RateLimit"), `"tenant";r=`), ";")
		return r
	}
	// Messages for in an hour stay in the backlog (within its 4 h horizon).
	later := func(phone, body string) string {
		return smsBody(phone, body, "send_at", time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	}
	steps := []struct {
		name    string
		body    string
		headers []string
		status  int
		left    string
	}{
		{"a message", later("+14155550191", "See you on Monday"), nil, 202, "5"},
		{"a body that is not JSON", `{"channel":`, nil, 400, "4"},
		{"a draft that does not validate", smsBody("not a number", "See you on Monday"), nil, 422, "3"},
		{"a message with a key", later("+14155550192", "See you on Tuesday"), []string{"Idempotency-Key", "k-1"}, 202, "2"},
		{"its replay", later("+14155550192", "See you on Tuesday"), []string{"Idempotency-Key", "k-1"}, 200, "1"},
		{"the burst's last", later("+14155550193", "See you on Wednesday"), nil, 202, "0"},
		{"one over the rate", later("+14155550194", "See you on Thursday"), nil, 429, "0"},
		{"a crisis message passes it", smsBody("+14155550195", "Shelter in place", "priority", "crisis"), nil, 202, "0"},
	}
	for _, s := range steps {
		a := e.do("POST", "/v1/messages", keyA, s.body, s.headers...)
		if a.Status != s.status {
			t.Fatalf("%s: %d %s, want %d", s.name, a.Status, a.Raw, s.status)
		}
		if got := remaining(a); got != s.left {
			t.Fatalf("%s: %s requests left, want %s", s.name, got, s.left)
		}
	}
	// The refused message was not counted in the backlog: the three
	// messages of the burst were (one segment each; crisis never is).
	n, _, err := e.svc.Admission.Backlog(context.Background(), "clinic-a", "sms")
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Fatalf("backlog %d segments, want the burst's 3 messages", n)
	}
}

// A client whose answer was lost retries with its Idempotency-Key: it is
// told of the message it made even when the tenant's backlog has filled
// since, so that it never gives up and sends it again under a new key. A
// new message with a key is refused by the full backlog without keeping
// the key, and a request over the rate writes nothing at all.
func TestARetryIsAnsweredWithItsMessageWhenTheBacklogIsFull(t *testing.T) {
	rs := redistest.Start(t)
	e := startOn(t, rs, config.RoleAPI, func(c *config.Config) {
		c.Senders.SMSPerSecond = 1
		// 0.001 h of one SMS a second: a backlog of 4 segments.
		c.Admission.BacklogHours = 0.001
	})
	body := func(i int) string { return smsBody(fmt.Sprintf("+1415555%04d", i), "Your results are ready to view.") }
	first := e.send(keyA, body(0), "Idempotency-Key", "k-0")
	for i := 1; i < 4; i++ {
		e.send(keyA, body(i))
	}
	if a := e.do("POST", "/v1/messages", keyA, body(4)); a.Status != 429 || !strings.Contains(a.Raw, "backlog-full") {
		t.Fatalf("a fifth message: %d %s, want 429 backlog-full", a.Status, a.Raw)
	}
	a := e.do("POST", "/v1/messages", keyA, body(0), "Idempotency-Key", "k-0")
	if a.Status != 200 || a.Body["id"] != first || a.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("the retry of the first message: %d %s, want 200 with %s", a.Status, a.Raw, first)
	}
	if a := e.do("POST", "/v1/messages", keyA, body(5), "Idempotency-Key", "k-5"); a.Status != 429 {
		t.Fatalf("a new message with a key: %d %s, want 429", a.Status, a.Raw)
	}
	// Room again: the refused key makes its message now, as a new one.
	if a := e.do("POST", "/v1/messages/"+first+"/cancel", keyA, ""); a.Status != 200 {
		t.Fatalf("cancel: %d %s", a.Status, a.Raw)
	}
	if a := e.do("POST", "/v1/messages", keyA, body(5), "Idempotency-Key", "k-5"); a.Status != 202 {
		t.Fatalf("the refused key once there is room: %d %s, want 202", a.Status, a.Raw)
	}
}

func TestARequestOverTheRateWritesNothing(t *testing.T) {
	rs := redistest.Start(t)
	e := startOn(t, rs, config.RoleAPI, func(c *config.Config) {
		c.Admission.TenantRate = config.RateLimit{PerSecond: 1.0 / 60, Burst: 1}
	})
	e.send(keyA, smsBody("+14155550101", "Your results are ready to view."), "Idempotency-Key", "k-1")
	// Writes, counted by Redis (a script's own commands included).
	writes := func() map[string]string {
		info, err := rs.Client().Info(context.Background(), "commandstats").Result()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, line := range strings.Split(info, "\n") {
			name, stats, ok := strings.Cut(strings.TrimSpace(line), ":")
			if cmd, isCmd := strings.CutPrefix(name, "cmdstat_"); ok && isCmd && cmd != "set" {
				switch cmd {
				case "hset", "hsetnx", "hincrby", "del", "unlink", "pexpire", "expire", "zadd", "lpush", "rpush":
					calls, _, _ := strings.Cut(stats, ",")
					out[cmd] = calls
				}
			}
		}
		return out
	}
	before := writes()
	for i, key := range []string{"k-2", ""} {
		a := e.do("POST", "/v1/messages", keyA, smsBody(fmt.Sprintf("+1415555020%d", i), "Your results are ready to view."), "Idempotency-Key", key)
		if a.Status != 429 || !strings.Contains(a.Raw, "rate-limited") {
			t.Fatalf("over the rate: %d %s", a.Status, a.Raw)
		}
	}
	if after := writes(); !reflect.DeepEqual(after, before) {
		t.Fatalf("two requests over the rate wrote to Redis: commands %v before, %v after", before, after)
	}
}
