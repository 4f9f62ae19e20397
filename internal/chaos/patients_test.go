package chaos

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/patientmsg/gateway/channels/twilio"
	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/channels/wechat"
	"github.com/patientmsg/gateway/channels/wechat/wechatsim"
)

// broadcast is one of the run's broadcasts and its people.
type broadcast struct {
	name    string
	id      string
	cascade bool
	people  []*person
}

// person is a simulated patient: what they will answer, decided by the
// seed before anything runs, and what they did.
type person struct {
	b      *broadcast
	index  int
	phone  string
	openid string // cascade only
	// smsAnswer ("", "1" or "2") is texted back delay after their SMS
	// reaches the simulator; wechatAnswer likewise after their WeChat
	// message (cascade only).
	smsAnswer    string
	wechatAnswer string
	delay        time.Duration

	mu       sync.Mutex
	firstSMS time.Time   // when their first SMS reached the simulator
	sentID   string      // the message of their SMS try (from the roster, at the end)
	wechatAt []time.Time // when each WeChat message to them was seen at the simulator
	texted   bool        // an answer was started (at most one text per person)
	answers  []given
}

// given is an answer the gateway took (2xx): by text, or a key pressed on
// a call (from the simulator's records).
type given struct {
	channel string // sms, wechat, voice
	body    string // "1" or "2"
	at      time.Time
}

// options are the polls' answers.
var options = map[string]string{"1": "safe", "2": "need_help"}

// newBroadcast makes the people of a broadcast, and what each will
// answer: in the SMS broadcast 30 % answer 1 and 5 % answer 2; in the
// cascade 20 % answer on WeChat and 30 % of the others by SMS (mostly 1),
// and the rest meet the calls the simulator is scripted with.
func (r *run) newBroadcast(name string, n int, cascade bool) *broadcast {
	b := &broadcast{name: name, cascade: cascade}
	for i := range n {
		p := &person{b: b, index: i, delay: r.between(100*time.Millisecond, 2*time.Second)}
		pick := func(yes float64) string {
			if r.rng.Float64() >= yes {
				return ""
			}
			if r.rng.Float64() < 0.8 {
				return "1"
			}
			return "2"
		}
		if cascade {
			p.phone = fmt.Sprintf("+1415559%04d", i)
			p.openid = fmt.Sprintf("oChaosPatient%015d", i)
			p.wechatAnswer = pick(0.2)
			if p.wechatAnswer == "" {
				p.smsAnswer = pick(0.3)
			}
			r.byOpen[p.openid] = p
		} else {
			p.phone = fmt.Sprintf("+141557%05d", i)
			switch x := r.rng.Float64(); {
			case x < 0.30:
				p.smsAnswer = "1"
			case x < 0.35:
				p.smsAnswer = "2"
			}
		}
		r.byPhone[p.phone] = p
		b.people = append(b.people, p)
	}
	return b
}

// scriptCalls programs the calls the cascade will place, in the order they
// are placed: half press 1, a tenth press 2, the rest press nothing.
func (r *run) scriptCalls() {
	plans := make([]twiliosim.CallPlan, 0, len(r.casc.people)*2)
	for range cap(plans) {
		switch x := r.rng.Float64(); {
		case x < 0.5:
			plans = append(plans, twiliosim.CallPlan{Digits: []string{"1"}})
		case x < 0.6:
			plans = append(plans, twiliosim.CallPlan{Digits: []string{"2"}})
		default:
			plans = append(plans, twiliosim.CallPlan{})
		}
	}
	r.sim.ScriptCalls(plans...)
}

// uploadAudience uploads a broadcast's people as a CSV.
func (r *run) uploadAudience(b *broadcast) {
	var csv strings.Builder
	csv.WriteString("phone,wechat_openid,external_id\n")
	for _, p := range b.people {
		fmt.Fprintf(&csv, "%s,%s,%s-%d\n", p.phone, p.openid, b.name, p.index)
	}
	var up struct {
		ID    string `json:"id"`
		Count int    `json:"count"`
	}
	if _, err := r.api("POST", "/v1/audiences", "POST /v1/audiences", "text/csv", []byte(csv.String()), &up); err != nil {
		r.t.Fatal(err)
	}
	if up.Count != len(b.people) {
		r.t.Fatalf("the %s audience has %d people, want %d", b.name, up.Count, len(b.people))
	}
	b.id = up.ID // the audience's, until the broadcast is created
}

// createBroadcast creates a broadcast of the uploaded audience with a
// poll (1 safe, 2 need help).
func (r *run) createBroadcast(b *broadcast, channels string) {
	body := `{"name":"Flood warning (` + b.name + `)",` + channels + `,"priority":"crisis",
	  "audience_csv_upload_id":"` + b.id + `",
	  "body":{"en":"Riverside Clinic flood alert. Reply 1 if you are safe, 2 if you need help."},
	  "poll":{"question":"Press 1 if you are safe, 2 if you need help.","options":{"1":"safe","2":"need_help"}}}`
	var out struct {
		ID         string `json:"id"`
		Recipients int    `json:"recipients"`
	}
	if _, err := r.api("POST", "/v1/broadcasts", "POST /v1/broadcasts", "application/json", []byte(body), &out); err != nil {
		r.t.Fatal(err)
	}
	if out.Recipients != len(b.people) {
		r.t.Fatalf("broadcast %s: %d recipients, want %d", b.name, out.Recipients, len(b.people))
	}
	b.id = out.ID
}

// openWeChatWindows has every cascade patient send the clinic's account a
// picture, which opens their 48-hour customer-service window (and is no
// answer to anything).
func (r *run) openWeChatWindows(b *broadcast) {
	for _, p := range b.people {
		msg := wechatsim.Message("gh_riverside", p.openid, "image", 7_000_000_000+int64(p.index), time.Now())
		if code := r.push(msg, p.openid, "wechat push (picture)"); code != http.StatusOK {
			r.t.Fatalf("a WeChat picture push was answered %d", code)
		}
		// What WeChat itself knows from that message: the patient may be
		// written to for 48 hours (a few messages).
		r.wsim.Interact(p.openid, 5, 48*time.Hour)
	}
}

// watchProviders plays the patients: each one who decided to answer does
// so, delay after their message reached the simulator.
func (r *run) watchProviders(ctx context.Context) {
	seenSMS, seenWeChat := 0, 0
	for ctx.Err() == nil {
		reqs := r.sim.Requests()
		for _, q := range reqs[seenSMS:] {
			if q.Reply != http.StatusCreated || !strings.HasPrefix(q.SID, "SM") {
				continue
			}
			p := r.byPhone[q.Form.Get("To")]
			if p == nil {
				continue
			}
			p.mu.Lock()
			if p.firstSMS.IsZero() {
				p.firstSMS = q.At
			}
			start := p.smsAnswer != "" && !p.texted
			p.texted = p.texted || start
			p.mu.Unlock()
			if start {
				r.answerLater(p, "sms", p.smsAnswer)
			}
		}
		seenSMS = len(reqs)
		wreqs := r.wsim.Requests()
		for _, q := range wreqs[seenWeChat:] {
			if q.Path != wechatsim.CustomSendPath || q.ErrCode != 0 {
				continue
			}
			to, _ := q.JSON["touser"].(string)
			p := r.byOpen[to]
			if p == nil {
				continue
			}
			p.mu.Lock()
			p.wechatAt = append(p.wechatAt, time.Now())
			start := p.wechatAnswer != "" && !p.texted
			p.texted = p.texted || start
			p.mu.Unlock()
			if start {
				r.answerLater(p, "wechat", p.wechatAnswer)
			}
		}
		seenWeChat = len(wreqs)
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// answerLater sends a person's answer after their delay: a signed inbound
// SMS webhook, or a WeChat text push. An answer the gateway could not take
// (503, no answer) is sent again with the same MessageSid or MsgId, as a
// provider's retry would be, every 300 ms for up to two minutes.
func (r *run) answerLater(p *person, channel, body string) {
	r.answers.Add(1)
	r.answering.Add(1)
	time.AfterFunc(p.delay, func() {
		defer r.answers.Done()
		defer r.answering.Add(-1)
		deadline := time.Now().Add(2 * time.Minute)
		push := wechatsim.TextMessage("gh_riverside", p.openid, body, 8_000_000_000+int64(p.index), time.Now())
		for {
			var code int
			switch channel {
			case "sms":
				code = r.inboundSMS(p, body)
			case "wechat":
				code = r.push(push, p.openid, "wechat push (answer)")
			}
			if code/100 == 2 {
				p.mu.Lock()
				p.answers = append(p.answers, given{channel: channel, body: body, at: time.Now()})
				p.mu.Unlock()
				return
			}
			if (code != 0 && code != http.StatusServiceUnavailable) || time.Now().After(deadline) {
				return // recorded; the checks fail the run
			}
			time.Sleep(300 * time.Millisecond)
		}
	})
}

// inboundSMS posts a patient's text as Twilio does: a signed form, with a
// MessageSid of their own that a retry repeats.
func (r *run) inboundSMS(p *person, body string) int {
	kind := uint64(1)
	if p.b.cascade {
		kind = 2
	}
	sid := fmt.Sprintf("SM%016x%016x", r.seed, kind<<40|uint64(p.index)) // "SM" + 32 hex digits
	form := url.Values{"MessageSid": {sid}, "SmsSid": {sid}, "AccountSid": {r.sim.AccountSID()}, "From": {p.phone},
		"To": {twilioNum}, "Body": {body}, "NumSegments": {"1"}, "NumMedia": {"0"}, "SmsStatus": {"received"},
		"ApiVersion": {twiliosim.APIVersion}}
	u := r.base + twilio.InboundPath
	req, _ := http.NewRequest("POST", u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", twiliosim.Sign(r.sim.AuthToken(), u, form))
	return r.send(req, "sms webhook (answer)")
}

// push posts a WeChat push (safe mode) and returns the status.
func (r *run) push(xml []byte, openid, what string) int {
	pusher := wechatsim.Pusher{Token: wcToken, EncodingAESKey: wcAESKey, AppID: r.wsim.AppID()}
	q, body, err := pusher.Push(xml, openid)
	if err != nil {
		r.t.Errorf("wechat push: %v", err)
		return 0
	}
	req, _ := http.NewRequest("POST", r.base+wechat.InboundPath+"?"+q.Encode(), bytes.NewReader(body))
	req.Header.Set("Content-Type", "text/xml")
	return r.send(req, what)
}

// send does a request and records its status (0 without an answer).
func (r *run) send(req *http.Request, what string) int {
	sent := time.Now()
	resp, err := r.http.Do(req)
	if err != nil {
		r.seen.add(what, 0, sent)
		return 0
	}
	resp.Body.Close()
	r.seen.addResponse(what, resp.StatusCode, sent, resp.Header.Get("Retry-After") != "")
	return resp.StatusCode
}

// pollRosters reads both rosters every 300 ms, as a clinic's screen would,
// so that the API is exercised (and its answers recorded) throughout.
func (r *run) pollRosters(ctx context.Context) {
	for ctx.Err() == nil {
		for _, b := range []*broadcast{r.main, r.casc} {
			_, _ = r.api("GET", "/v1/broadcasts/"+b.id, "GET /v1/broadcasts/{id}", "", nil, nil)
		}
		select {
		case <-ctx.Done():
		case <-time.After(300 * time.Millisecond):
		}
	}
}
