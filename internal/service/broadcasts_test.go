package service_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/patientmsg/gateway/channels/channeltest"
	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/channels/wechat/wechatsim"
	"github.com/patientmsg/gateway/internal/config"
	"github.com/patientmsg/gateway/internal/service"
	"github.com/patientmsg/gateway/workers"
)

// person returns a broadcast's person by index from the recipients list of a state.
func (e *env) roster(id string) map[string]any {
	e.t.Helper()
	a := e.do("GET", "/v1/broadcasts/"+id, keyA, "")
	if a.Status != 200 {
		e.t.Fatalf("GET broadcast = %d %s", a.Status, a.Raw)
	}
	return a.Body
}

func count(m map[string]any, path ...string) float64 {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return 0
		}
		cur = mm[p]
	}
	f, _ := cur.(float64)
	return f
}

// waitRoster polls the roster until ok holds.
func (e *env) waitRoster(id string, within time.Duration, what string, ok func(r map[string]any) bool) map[string]any {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for {
		r := e.roster(id)
		if ok(r) {
			return r
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("broadcast %s: %s did not happen within %s; roster %v", id, what, within, r)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestABroadcastCascadesUntilEachPersonAnswers(t *testing.T) {
	e := start(t, config.RoleAll)
	const openid = "oCrisisPatient000000000001"
	body := `{"name":"Flood: are you safe?","channels":["wechat","sms","voice"],
	  "body":{"en":"Riverside Clinic: flooding near the hospital. Reply 1 if you are safe, 2 if you need help.",
	          "zh-CN":"仁济医院：医院附近发生洪水。安全请回复1，需要帮助请回复2。"},
	  "poll":{"question":"Press 1 if you are safe, 2 if you need help.","options":{"1":"safe","2":"need_help"}},
	  "ack_timeout":"2s","priority":"crisis",
	  "audience":[{"phone":"+14155550101","wechat_openid":"` + openid + `","locale":"zh-CN","external_id":"MRN-1"},
	              {"phone":"+14155550102","locale":"en","external_id":"MRN-2"},
	              {"email":"nochannel@example.org","external_id":"MRN-3"}]}`
	// The patient wrote to the clinic's account today: WeChat lets the
	// clinic write back (customer-service text) for 48 hours.
	if code, _ := e.userWrites("gh_clinic", openid, "你好", 24100000000); code != 200 {
		t.Fatalf("wechat push = %d", code)
	}
	// The preview, before sending: who gets which channel first, what the
	// Chinese text costs, how long it takes.
	pv := e.do("POST", "/v1/broadcasts/preview", keyA, body)
	if pv.Status != 200 || pv.Body["recipients"].(float64) != 3 || pv.Body["unreachable"].(float64) != 1 {
		t.Fatalf("preview = %d %s", pv.Status, pv.Raw)
	}
	for _, ch := range pv.Body["channels"].([]any) {
		c := ch.(map[string]any)
		if c["channel"] == "sms" && (c["first"].(float64) != 1 || !strings.Contains(fmt.Sprint(c["sms"]), "UCS-2")) {
			t.Fatalf("preview sms = %v", c)
		}
	}
	a := e.do("POST", "/v1/broadcasts", keyA, body)
	if a.Status != 202 || a.Body["recipients"].(float64) != 3 {
		t.Fatalf("POST /v1/broadcasts = %d %s", a.Status, a.Raw)
	}
	id := a.Body["id"].(string)

	// The second person (SMS only) needs help; the third has none of the channels.
	e.waitRoster(id, 10*time.Second, "the SMS-only person's message", func(r map[string]any) bool {
		return count(r, "by_channel", "sms", "delivered") >= 1 && count(r, "people", "unreachable") == 1
	})
	if code, _ := e.inbound("+14155550102", "2", e.sim.AuthToken()); code != 200 {
		t.Fatalf("inbound = %d", code)
	}
	// The first person does not answer on WeChat: after 2 s the SMS goes,
	// and their "1" by SMS stops the cascade before the call.
	e.waitRoster(id, 10*time.Second, "the cascade to SMS", func(r map[string]any) bool {
		return count(r, "by_channel", "wechat", "sent") == 1 && count(r, "by_channel", "sms", "delivered") == 2
	})
	if code, _ := e.inbound("+14155550101", "1", e.sim.AuthToken()); code != 200 {
		t.Fatalf("inbound = %d", code)
	}
	r := e.waitRoster(id, 10*time.Second, "both answers", func(r map[string]any) bool {
		return count(r, "poll", "safe") == 1 && count(r, "poll", "need_help") == 1
	})
	if count(r, "poll", "unreachable") != 1 || count(r, "poll", "no_answer_yet") != 0 || count(r, "people", "acknowledged") != 2 {
		t.Fatalf("roster %v", r)
	}
	// The repair pass finds a healthy roster (what it fixes is tested in
	// package broadcasts, with failures injected between writes).
	if rp := e.do("POST", "/v1/broadcasts/"+id+"/repair", keyA, ""); rp.Status != 200 || rp.Body["people"].(float64) != 3 {
		t.Fatalf("repair = %d %s", rp.Status, rp.Raw)
	}
	// That nobody who answered is called when their deadline passes is
	// checked with a clock the test moves, in package broadcasts
	// (TestTheCascadeMovesOnlyThoseWhoDidNotAnswerWhenTheClockPassesTheirDeadline).
	if calls := e.sim.Calls(); len(calls) != 0 {
		t.Fatalf("%d calls placed after the answers", len(calls))
	}
	// A duplicated answer changes nothing; a later one counts instead.
	e.inbound("+14155550101", "1", e.sim.AuthToken())
	code, _ := e.push(wechatsim.TextMessage("gh_clinic", openid, "2", 24100000001, time.Now()), openid)
	if code != 200 {
		t.Fatalf("wechat push = %d", code)
	}
	r = e.waitRoster(id, 10*time.Second, "the later answer", func(r map[string]any) bool {
		return count(r, "poll", "need_help") == 2
	})
	if count(r, "poll", "safe") != 0 {
		t.Fatalf("a person counts once, by their latest answer: %v", r["poll"])
	}
	help := e.do("GET", "/v1/broadcasts/"+id+"/recipients?state=need_help", keyA, "")
	if help.Status != 200 || !strings.Contains(help.Raw, "MRN-1") || !strings.Contains(help.Raw, "MRN-2") || strings.Contains(help.Raw, "MRN-3") {
		t.Fatalf("need_help list = %d %s", help.Status, help.Raw)
	}
	// An answer filed late but received before the latest one does not
	// override it (workers may file answers out of order).
	var list struct {
		Recipients []struct {
			Index      int       `json:"index"`
			AnsweredAt time.Time `json:"answered_at"`
			Tries      []struct {
				MessageID string `json:"message_id"`
			} `json:"tries"`
		} `json:"recipients"`
	}
	_ = json.Unmarshal([]byte(help.Raw), &list)
	p0 := list.Recipients[0]
	// A message sent is in the message ledger like any other, linked to
	// its broadcast and person.
	sent := e.do("GET", "/v1/messages/"+p0.Tries[0].MessageID, keyA, "")
	if meta, _ := sent.Body["metadata"].(map[string]any); sent.Status != 200 || meta["broadcast_id"] != id ||
		meta["broadcast_person"] != float64(p0.Index) || sent.Body["status"] == "queued" {
		t.Fatalf("a broadcast message in the ledger = %d %.400s", sent.Status, sent.Raw)
	}
	if err := e.svc.Broadcast.Answer(context.Background(), fmt.Sprintf("%s:%d", id, p0.Index), p0.Tries[len(p0.Tries)-1].MessageID,
		"sms", "safe", "", p0.AnsweredAt.Add(-time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if r := e.roster(id); count(r, "poll", "need_help") != 2 || count(r, "poll", "safe") != 0 {
		t.Fatalf("an older answer filed late changed the tally: %v", r["poll"])
	}
	// The progress stream replays the people's changes, then the roster.
	req, _ := http.NewRequest("GET", e.base+"/v1/broadcasts/"+id+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+keyA)
	resp, err := e.http.Do(req)
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events = %v %v", resp, err)
	}
	sc := bufio.NewScanner(resp.Body)
	seen := map[string]bool{}
	for sc.Scan() && !(seen["event: person"] && seen["event: roster"]) {
		if line := sc.Text(); strings.HasPrefix(line, "event: ") {
			seen[line] = true
		}
	}
	resp.Body.Close()
	if !seen["event: person"] || !seen["event: roster"] {
		t.Fatalf("the stream had %v", seen)
	}
	rep := e.do("GET", "/v1/broadcasts/"+id+"/report.csv", keyA, "")
	if rep.Status != 200 || strings.Count(rep.Raw, "\n") != 4 || !strings.Contains(rep.Raw, "MRN-1") || !strings.Contains(rep.Raw, "wechat ") {
		t.Fatalf("report = %d %s", rep.Status, rep.Raw)
	}
	if got := e.do("GET", "/v1/broadcasts/"+id, keyB, ""); got.Status != 404 {
		t.Fatalf("another tenant's broadcast: %d", got.Status)
	}
	if list := e.do("GET", "/v1/broadcasts", keyA, ""); list.Status != 200 || !strings.Contains(list.Raw, id) {
		t.Fatalf("GET /v1/broadcasts = %d %.300s", list.Status, list.Raw)
	}
	if list := e.do("GET", "/v1/broadcasts", keyB, ""); strings.Contains(list.Raw, id) {
		t.Fatal("another tenant lists the broadcast")
	}
	// Nothing about the people is logged in clear: no number, openid,
	// external id or text of the broadcast.
	logs := e.logs.String()
	for _, secret := range []string{"4155550101", "4155550102", openid, "MRN-1", "nochannel@example.org", "洪水", "flooding near"} {
		if strings.Contains(logs, secret) {
			t.Fatalf("%q appears in the logs", secret)
		}
	}
	// The Chinese speaker got the Chinese text.
	for _, req := range e.sim.Requests() {
		if req.Form.Get("To") == "+14155550101" && !strings.Contains(req.Form.Get("Body"), "洪水") {
			t.Fatalf("zh-CN person got %q", req.Form.Get("Body"))
		}
	}
}

func TestABroadcastCanBeCanceledMidFanOut(t *testing.T) {
	e := start(t, config.RoleAll, func(c *config.Config) { c.Senders.SMSPerSecond = 50 })
	var csv strings.Builder
	csv.WriteString("phone,external_id\n")
	for i := 0; i < 3000; i++ {
		fmt.Fprintf(&csv, "+1415556%04d,P%d\n", i, i)
	}
	up := e.do("POST", "/v1/audiences", keyA, csv.String(), "Content-Type", "text/csv")
	if up.Status != 201 {
		t.Fatalf("upload = %d %s", up.Status, up.Raw)
	}
	a := e.do("POST", "/v1/broadcasts", keyA, `{"channels":["sms"],"body":{"en":"The clinic is closed today."},
	  "audience_csv_upload_id":"`+up.Body["id"].(string)+`"}`)
	if a.Status != 202 {
		t.Fatalf("POST = %d %s", a.Status, a.Raw)
	}
	id := a.Body["id"].(string)
	e.waitRoster(id, 10*time.Second, "the first sends", func(r map[string]any) bool {
		return count(r, "people", "sent")+count(r, "people", "acknowledged") >= 50
	})
	if c := e.do("POST", "/v1/broadcasts/"+id+"/cancel", keyA, ""); c.Status != 200 {
		t.Fatalf("cancel = %d %s", c.Status, c.Raw)
	}
	r := e.waitRoster(id, 20*time.Second, "the cancel", func(r map[string]any) bool {
		return count(r, "people", "queued")+count(r, "people", "pending") == 0
	})
	sentAtCancel := e.sim.Accepted()
	time.Sleep(2 * time.Second)
	if later := e.sim.Accepted(); later > sentAtCancel+60 {
		t.Fatalf("%d more messages went out after the cancel was done", later-sentAtCancel)
	}
	done := count(r, "people", "acknowledged") + count(r, "people", "sent") + count(r, "people", "delivered")
	if done >= 3000 || count(r, "people", "canceled") == 0 || done+count(r, "people", "canceled") != count(r, "fanned_out") {
		t.Fatalf("after cancel: %v", r["people"])
	}
	// The messages canceled before they reached the provider say so.
	if count(r, "by_channel", "sms", "canceled") == 0 || count(r, "by_channel", "sms", "queued") != 0 {
		t.Fatalf("messages after cancel: %v", r["by_channel"])
	}
	// A message canceled before its turn has a record, canceled, though
	// its record would only have been written when it was sent.
	list := e.do("GET", "/v1/broadcasts/"+id+"/recipients?state=canceled&limit=5", keyA, "")
	recips, _ := list.Body["recipients"].([]any)
	if list.Status != 200 || len(recips) == 0 {
		t.Fatalf("canceled recipients = %d %.300s", list.Status, list.Raw)
	}
	tries := recips[0].(map[string]any)["tries"].([]any)
	msgID := tries[len(tries)-1].(map[string]any)["message_id"].(string)
	if m := e.do("GET", "/v1/messages/"+msgID, keyA, ""); m.Status != 200 || m.Body["status"] != "canceled" {
		t.Fatalf("a canceled person's message = %d %.300s", m.Status, m.Raw)
	}
	// Their send tasks end without waiting for the sender: at 50 a second
	// the thousands canceled would hold it for a minute. (Those the sender
	// had put back for their turn are made due now.)
	insp := asynq.NewInspectorFromRedisClient(e.svc.Redis)
	if _, err := insp.RunAllRetryTasks(workers.QueueFor("crisis")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		q, err := insp.GetQueueInfo(workers.QueueFor("crisis"))
		if err == nil && q.Pending+q.Retry+q.Active+q.Scheduled == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("canceled messages still queued 10 s after the cancel: %+v %v", q, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestARestartedWorkerLosesAndRepeatsNoRecipient(t *testing.T) {
	const n = 2500
	e := start(t, config.RoleAPI)
	worker := func() *service.Service {
		cfg := e.cfg
		cfg.ShutdownTimeout = 100 * time.Millisecond // a worker stopped mid-chunk
		cfg.OpsAddr = ""
		w, err := service.New(cfg, config.RoleWorker, service.Options{Logger: discardLogger(), Transport: channeltest.LoopbackOnly(nil),
			WebhookGuard: channeltest.LoopbackOnly, EmailTLS: e.smtp.ClientTLSConfig()})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		return w
	}
	var csv strings.Builder
	csv.WriteString("phone\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&csv, "+1415557%04d\n", i)
	}
	up := e.do("POST", "/v1/audiences", keyA, csv.String(), "Content-Type", "text/csv")
	a := e.do("POST", "/v1/broadcasts", keyA, `{"channels":["sms"],"body":{"en":"Clinic closed today."},"audience_csv_upload_id":"`+up.Body["id"].(string)+`"}`)
	if a.Status != 202 {
		t.Fatalf("POST = %d %s", a.Status, a.Raw)
	}
	id := a.Body["id"].(string)
	w1 := worker()
	e.waitRoster(id, 20*time.Second, "a fan-out under way", func(r map[string]any) bool {
		return count(r, "fanned_out") >= 200
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_ = w1.Shutdown(ctx)
	cancel()
	if r := e.roster(id); count(r, "people", "acknowledged") >= n {
		t.Fatalf("the first worker finished before it was stopped: the restart tested nothing (%v)", r["people"])
	}
	w2 := worker()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w2.Shutdown(ctx)
	})
	e.waitRoster(id, 60*time.Second, "every person reached", func(r map[string]any) bool {
		return count(r, "people", "acknowledged") == n
	})
	if got := e.sim.Accepted(); got != n {
		t.Fatalf("the provider got %d messages for %d people", got, n)
	}
	for i := 0; i < n; i += 97 {
		if c := e.sim.MessagesTo(fmt.Sprintf("+1415557%04d", i)); c != 1 {
			t.Fatalf("person %d got %d messages", i, c)
		}
	}
}

func TestNeedHelpEscalatesAndAFollowUpSkipsThoseSafe(t *testing.T) {
	e := start(t, config.RoleAll)
	const nurse = "+14155550177"
	rules := `{"options":["need_help"],"on_call":[{"channel":"sms","phone":"` + nurse + `"}],"ack_timeout_seconds":600}`
	if a := e.do("PUT", "/v1/escalation-rules", keyA, rules); a.Status != 200 {
		t.Fatalf("rules = %d %s", a.Status, a.Raw)
	}
	a := e.do("POST", "/v1/broadcasts", keyA, `{"channels":["sms"],"template":"crisis_safety_check",
	  "vars":{"clinic_name":"Riverside Clinic","clinic_phone":"555-0100"},
	  "poll":{"options":{"1":"safe","2":"need_help"}},
	  "audience":[{"phone":"+14155550201"},{"phone":"+14155550202"},{"phone":"+14155550203"}]}`)
	if a.Status != 202 {
		t.Fatalf("POST = %d %s", a.Status, a.Raw)
	}
	id := a.Body["id"].(string)
	e.waitRoster(id, 10*time.Second, "three deliveries", func(r map[string]any) bool {
		return count(r, "by_channel", "sms", "delivered") == 3
	})
	e.inbound("+14155550201", "1", e.sim.AuthToken())
	e.inbound("+14155550202", "2", e.sim.AuthToken())
	e.waitRoster(id, 10*time.Second, "the answers", func(r map[string]any) bool {
		return count(r, "poll", "safe") == 1 && count(r, "poll", "need_help") == 1
	})
	// The nurse on call is told about the person who needs help.
	waitUntil(t, 10*time.Second, "the escalation", func() bool {
		return e.sim.MessagesTo(nurse) == 1
	})
	if open := e.do("GET", "/v1/escalations?state=open", keyA, ""); !strings.Contains(open.Raw, `"state":"open"`) {
		t.Fatalf("open escalations: %s", open.Raw)
	}
	// An update to those not yet safe: the second and third person only.
	update := `{"channels":["sms"],"body":{"en":"Update: shelters are open at the school."},"follow_up_of":"` + id + `","only_not_safe":true}`
	if pv := e.do("POST", "/v1/broadcasts/preview", keyA, update); pv.Status != 200 || pv.Body["recipients"].(float64) != 2 {
		t.Fatalf("the follow-up's preview = %d %s", pv.Status, pv.Raw)
	}
	f := e.do("POST", "/v1/broadcasts", keyA, update)
	if f.Status != 202 {
		t.Fatalf("follow-up = %d %s", f.Status, f.Raw)
	}
	if f.Body["recipients"].(float64) != 2 {
		t.Fatalf("the follow-up counts %v recipients, want the 2 not safe", f.Body["recipients"])
	}
	r := e.waitRoster(f.Body["id"].(string), 10*time.Second, "the follow-up", func(r map[string]any) bool {
		return count(r, "fanned_out") == 2 && count(r, "people", "acknowledged") == 2
	})
	if e.sim.MessagesTo("+14155550201") != 1 || e.sim.MessagesTo("+14155550203") != 2 {
		t.Fatalf("the safe person got the update (or the others did not): %v", r["people"])
	}
	// With everyone acknowledged, the broadcast's timeout sweep stops.
	insp := asynq.NewInspectorFromRedisClient(e.redis.Client())
	waitUntil(t, 5*time.Second, "the sweep to stop", func() bool {
		tasks, _ := insp.ListScheduledTasks(workers.QueueFor(workers.PriorityHigh), asynq.PageSize(1000))
		for _, task := range tasks {
			if strings.HasPrefix(task.ID, f.Body["id"].(string)+":sweep") {
				return false
			}
		}
		return true
	})
}

func TestACallNobodyAnswersMovesThePersonOnAndAKeyCanAskForHelp(t *testing.T) {
	e := start(t, config.RoleAll)
	const nurse = "+14155550177"
	if a := e.do("PUT", "/v1/escalation-rules", keyA, `{"options":["need_help"],"on_call":[{"channel":"sms","phone":"`+nurse+`"}],"ack_timeout_seconds":600}`); a.Status != 200 {
		t.Fatalf("rules = %d %s", a.Status, a.Raw)
	}
	// The first person does not answer the call: no redial, the SMS goes at
	// once. The second presses 2 on the call: they need help.
	e.sim.ScriptCalls(twiliosim.CallPlan{Outcome: twiliosim.CallNoAnswer}, twiliosim.CallPlan{Digits: []string{"2"}})
	a := e.do("POST", "/v1/broadcasts", keyA, `{"channels":["voice","sms"],"ack_timeout":"1h",
	  "body":{"en":"This is Riverside Clinic. The hospital is closed because of the flood."},
	  "poll":{"question":"Press 1 if you are safe, 2 if you need help.","options":{"1":"safe","2":"need_help"}},
	  "audience":[{"phone":"+14155550301"}]}`)
	if a.Status != 202 {
		t.Fatalf("POST = %d %s", a.Status, a.Raw)
	}
	id := a.Body["id"].(string)
	e.waitRoster(id, 10*time.Second, "the SMS after the unanswered call", func(r map[string]any) bool {
		return count(r, "by_channel", "voice", "undelivered") == 1 && count(r, "by_channel", "sms", "delivered") == 1
	})
	if n := len(e.sim.Calls()); n != 1 {
		t.Fatalf("%d calls: a broadcast's call is placed once", n)
	}
	// The question is asked in the person's language.
	b := e.do("POST", "/v1/broadcasts", keyA, `{"channels":["voice"],
	  "body":{"en":"This is Riverside Clinic. The hospital is closed because of the flood."},
	  "poll":{"question":{"en":"Press 1 if you are safe, 2 if you need help.","zh-CN":"安全请按1，需要帮助请按2。"},
	    "options":{"1":"safe","2":"need_help"}},
	  "audience":[{"phone":"+14155550302","locale":"zh-CN"}]}`)
	if b.Status != 202 {
		t.Fatalf("POST = %d %s", b.Status, b.Raw)
	}
	e.waitRoster(b.Body["id"].(string), 10*time.Second, "the keypad answer", func(r map[string]any) bool {
		return count(r, "poll", "need_help") == 1
	})
	calls := e.sim.Calls()
	if spoken := fmt.Sprint(calls[len(calls)-1].Hooks); !strings.Contains(spoken, "需要帮助请按2") || strings.Contains(spoken, "Press 1") {
		t.Fatalf("the zh-CN person's call asked %s", spoken)
	}
	if bad := e.do("POST", "/v1/broadcasts", keyA, `{"channels":["voice"],"body":{"en":"Closed."},
	  "poll":{"question":{"klingon!":"?"},"options":{"1":"safe"}},"audience":[{"phone":"+14155550303"}]}`); bad.Status != 422 ||
		!strings.Contains(bad.Raw, "poll.question") {
		t.Fatalf("a question in an unknown locale = %d %s", bad.Status, bad.Raw)
	}
	waitUntil(t, 10*time.Second, "the nurse told", func() bool { return e.sim.MessagesTo(nurse) == 1 })
	// The pressed key reaches the reply feed with its meaning, as a texted
	// "2" does.
	feed := e.do("GET", "/v1/replies", keyA, "")
	pressed := 0
	for _, r := range feed.Body["replies"].([]any) {
		if rep := r.(map[string]any); rep["channel"] == "voice" && rep["body"] == "2" {
			pressed++
			if rep["option"] != "need_help" {
				t.Fatalf("the keypad answer in the feed has no meaning: %v", rep)
			}
		}
	}
	if pressed != 1 {
		t.Fatalf("want the pressed 2 once in the reply feed: %s", feed.Raw)
	}
}

// TestThePreviewNamesAChannelThatWouldReachTheUnreachable: people with no
// address on the cascade's channels are told apart by what they do have.
func TestThePreviewNamesAChannelThatWouldReachTheUnreachable(t *testing.T) {
	e := start(t, config.RoleAPI)
	pv := e.do("POST", "/v1/broadcasts/preview", keyA, `{"channels":["wechat"],"body":{"en":"Shelter open."},
	  "audience":[{"wechat_openid":"oAAAA1"},{"phone":"+14155550301"},{"phone":"+14155550302","email":"p@example.org"}]}`)
	if pv.Status != 200 {
		t.Fatalf("preview = %d %s", pv.Status, pv.Raw)
	}
	if !strings.Contains(pv.Raw, "add to the cascade a channel they have") || !strings.Contains(pv.Raw, "2 sms") {
		t.Fatalf("the preview does not say which channel would reach the 2 without WeChat: %s", pv.Raw)
	}
}
