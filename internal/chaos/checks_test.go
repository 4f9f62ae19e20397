package chaos

import (
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/patientmsg/gateway/channels/twilio/twiliosim"
	"github.com/patientmsg/gateway/channels/wechat/wechatsim"
)

// roster is GET /v1/broadcasts/{id}.
type roster struct {
	FannedOut  int                       `json:"fanned_out"`
	FanOutDone bool                      `json:"fan_out_done"`
	People     map[string]int            `json:"people"`
	ByChannel  map[string]map[string]int `json:"by_channel"`
	Poll       map[string]int            `json:"poll"`
}

// recipient is one person of GET /v1/broadcasts/{id}/recipients.
type recipient struct {
	Index int `json:"index"`
	To    struct {
		Phone        string `json:"phone"`
		WeChatOpenID string `json:"wechat_openid"`
	} `json:"to"`
	Tries []struct {
		Channel   string    `json:"channel"`
		MessageID string    `json:"message_id"`
		At        time.Time `json:"at"`
		Status    string    `json:"status"`
	} `json:"tries"`
	State  string `json:"state"`
	Answer string `json:"answer"`
}

// reply is an entry of GET /v1/replies.
type reply struct {
	ID      string `json:"id"`
	Channel string `json:"channel"`
	From    struct {
		Kind  string `json:"kind"`
		Value string `json:"value"`
	} `json:"from"`
	Body   string `json:"body"`
	Option string `json:"option"`
}

// problems gathers the differences the checks find, by kind, so that a
// run reports each kind once, with how many people it hit and a few of
// them (with their messages' ledger histories, which hold no address).
type problems struct {
	order []string
	hits  map[string][]string
	msgs  map[string]string // kind → a message id of the first person hit
}

func (ps *problems) add(kind, who, messageID string) {
	if ps.hits == nil {
		ps.hits, ps.msgs = map[string][]string{}, map[string]string{}
	}
	if _, ok := ps.hits[kind]; !ok {
		ps.order = append(ps.order, kind)
		ps.msgs[kind] = messageID
	}
	ps.hits[kind] = append(ps.hits[kind], who)
}

func (ps *problems) report(r *run) {
	for _, kind := range ps.order {
		who := ps.hits[kind]
		shown := who[:min(len(who), 8)]
		msg := ""
		if id := ps.msgs[kind]; id != "" {
			msg = "; the first one's message " + id + ": " + r.history(id)
		}
		r.t.Errorf("%s: %d people (%s)%s%s", kind, len(who), strings.Join(shown, ", "), msg, r.logsOf(ps.msgs[kind]))
	}
}

// logsOf is what the processes logged about a message (the gateway logs
// ids, never addresses or text; a line that would hold one is left out).
func (r *run) logsOf(id string) string {
	if id == "" {
		return ""
	}
	var out []string
	for _, p := range r.procs {
		for _, line := range p.logLines() {
			if strings.Contains(line, id) && !holdsSecret(line) && len(out) < 12 {
				out = append(out, p.name+": "+line)
			}
		}
	}
	if len(out) == 0 {
		return ""
	}
	return "\n\t" + strings.Join(out, "\n\t")
}

// history is a message's ledger record in short: its status, attempts
// and events (statuses, details and error codes: no address, no text).
func (r *run) history(id string) string {
	var m struct {
		Status   string `json:"status"`
		Attempts int    `json:"attempts"`
		Events   []struct {
			Status string    `json:"status"`
			At     time.Time `json:"at"`
			Detail string    `json:"detail"`
			Error  *struct {
				Code string `json:"code"`
			} `json:"error"`
		} `json:"events"`
	}
	if code, err := r.api("GET", "/v1/messages/"+id, "GET /v1/messages/{id}", "", nil, &m); err != nil {
		if code == http.StatusNotFound {
			return "no ledger record"
		}
		return err.Error()
	}
	var evs []string
	for _, e := range m.Events {
		ev := e.Status + " at " + e.At.Sub(r.start).Round(100*time.Millisecond).String()
		if e.Detail != "" {
			ev += " (" + e.Detail + ")"
		}
		if e.Error != nil {
			ev += " [" + e.Error.Code + "]"
		}
		evs = append(evs, ev)
	}
	return fmt.Sprintf("%s after %d attempt(s): %s", m.Status, m.Attempts, strings.Join(evs, "; "))
}

// repairs is what the repair passes fixed.
type repairs struct {
	statuses, movedOn, requeued int
}

var personStates = []string{"pending", "queued", "sent", "delivered", "acknowledged", "unreachable", "suppressed", "canceled"}

func (r *run) roster(b *broadcast) (roster, error) {
	var out roster
	_, err := r.api("GET", "/v1/broadcasts/"+b.id, "GET /v1/broadcasts/{id}", "", nil, &out)
	return out, err
}

// recipients lists a broadcast's people in a state (or a poll meaning).
func (r *run) recipients(b *broadcast, state string) ([]recipient, error) {
	var all []recipient
	after := ""
	for {
		var page struct {
			Recipients []recipient `json:"recipients"`
			Next       string      `json:"next_after"`
		}
		path := "/v1/broadcasts/" + b.id + "/recipients?limit=1000&state=" + state
		if after != "" {
			path += "&after=" + after
		}
		if _, err := r.api("GET", path, "GET /v1/broadcasts/{id}/recipients", "", nil, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Recipients...)
		if page.Next == "" {
			return all, nil
		}
		after = page.Next
	}
}

// feed is the whole reply feed.
func (r *run) feed() ([]reply, error) {
	var all []reply
	after := ""
	for {
		var page struct {
			Replies []reply `json:"replies"`
			Next    string  `json:"next"`
		}
		path := "/v1/replies?limit=500"
		if after != "" {
			path += "&after=" + url.QueryEscape(after)
		}
		if _, err := r.api("GET", path, "GET /v1/replies", "", nil, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Replies...)
		if len(page.Replies) == 0 || page.Next == "" || page.Next == after {
			return all, nil
		}
		after = page.Next
	}
}

// expected is every answer the gateway took from a person: their texts,
// and the keys they pressed on calls whose gather the gateway answered 2xx.
func (r *run) expected() map[*person][]given {
	out := map[*person][]given{}
	for _, b := range []*broadcast{r.main, r.casc} {
		for _, p := range b.people {
			p.mu.Lock()
			out[p] = slices.Clone(p.answers)
			p.mu.Unlock()
		}
	}
	for _, c := range r.sim.Calls() {
		p := r.byPhone[c.Form.Get("To")]
		if p == nil {
			continue
		}
		for _, h := range c.HooksOf(twiliosim.HookGather) {
			if d := h.Form.Get("Digits"); d != "" && h.Code/100 == 2 {
				out[p] = append(out[p], given{channel: "voice", body: d, at: h.At})
			}
		}
	}
	return out
}

// latest is the meaning of a person's latest answer ("" without one).
func latest(gs []given) string {
	if len(gs) == 0 {
		return ""
	}
	last := gs[0]
	for _, g := range gs[1:] {
		if !g.at.Before(last.at) {
			last = g
		}
	}
	return options[last.body]
}

// settle waits, up to within, until everything the faults delayed has come
// out: every answer taken and filed, every SMS of the SMS broadcast at the
// provider, every cascade person at the end of their cascade, every call
// over; with strict, also nobody left queued in the SMS broadcast's roster
// (a status the roster missed waits for the repair pass, which the test
// runs in between). It says whether that happened; the checks then say
// what did not.
func (r *run) settle(within time.Duration, strict bool) bool {
	deadline := time.Now().Add(within)
	for {
		missing := r.missing(strict)
		if missing == "" {
			if !strict {
				r.settledAt = time.Now()
			}
			return true
		}
		if time.Now().After(deadline) {
			r.t.Logf("not settled %s later: %s", within, missing)
			return false
		}
		time.Sleep(time.Second)
	}
}

// missing says what has not happened yet ("" once settled).
func (r *run) missing(strict bool) string {
	exp := r.expected()
	answers, acked := 0, 0
	for p, gs := range exp {
		answers += len(gs)
		if len(gs) > 0 && !p.b.cascade {
			acked++
		}
	}
	if n := r.answering.Load(); n > 0 {
		return fmt.Sprintf("%d patients are still answering", n)
	}
	for _, p := range r.main.people {
		p.mu.Lock()
		got := !p.firstSMS.IsZero()
		p.mu.Unlock()
		if !got {
			return fmt.Sprintf("%s person %d has no SMS yet", r.main.name, p.index)
		}
	}
	m, err := r.roster(r.main)
	if err != nil {
		return err.Error()
	}
	if !m.FanOutDone || (strict && m.People["queued"]+m.People["pending"] > 0) || m.People["acknowledged"] != acked {
		return fmt.Sprintf("%s roster: fan-out done %v, people %v (want %d acknowledged)", r.main.name, m.FanOutDone, m.People, acked)
	}
	c, err := r.roster(r.casc)
	if err != nil {
		return err.Error()
	}
	if done := c.People["acknowledged"] + c.People["unreachable"] + c.People["suppressed"] + c.People["canceled"]; !c.FanOutDone || done != len(r.casc.people) {
		return fmt.Sprintf("%s roster: fan-out done %v, people %v", r.casc.name, c.FanOutDone, c.People)
	}
	for _, call := range r.sim.Calls() {
		if !call.Done {
			return "a call is still going on"
		}
	}
	if left := r.tasksLeft(); left != "" {
		return left
	}
	feed, err := r.feed()
	if err != nil {
		return err.Error()
	}
	if len(feed) < answers {
		return fmt.Sprintf("the reply feed has %d entries, want %d", len(feed), answers)
	}
	return ""
}

// tasksLeft says which of the gateway's task queues still hold work due
// ("" when none does). A task a killed worker held, or one whose end could
// not be written while Redis was down, stays active until Asynq's
// recoverer takes it back: its lease (30 s) must have expired 30 s
// before, and the recoverer runs once a minute.
func (r *run) tasksLeft() string {
	qs, err := r.inspect.Queues()
	if err != nil {
		return err.Error()
	}
	for _, q := range qs {
		info, err := r.inspect.GetQueueInfo(q)
		if err != nil {
			return err.Error()
		}
		if n := info.Active + info.Pending + info.Retry; n > 0 {
			return fmt.Sprintf("queue %s: %d active, %d pending, %d to retry", q, info.Active, info.Pending, info.Retry)
		}
	}
	return ""
}

// repair runs the repair pass on both broadcasts and says what it fixed.
func (r *run) repair() repairs {
	var sum repairs
	for _, b := range []*broadcast{r.main, r.casc} {
		var rep struct {
			People   int `json:"people"`
			Statuses int `json:"statuses"`
			MovedOn  int `json:"moved_on"`
			Requeued int `json:"requeued"`
		}
		if _, err := r.api("POST", "/v1/broadcasts/"+b.id+"/repair", "POST /v1/broadcasts/{id}/repair", "", nil, &rep); err != nil {
			r.t.Errorf("repair %s: %v", b.name, err)
			continue
		}
		if rep.People != len(b.people) {
			r.t.Errorf("the repair of %s checked %d people, want %d", b.name, rep.People, len(b.people))
		}
		sum.statuses += rep.Statuses
		sum.movedOn += rep.MovedOn
		sum.requeued += rep.Requeued
	}
	return sum
}

// figures are what a run measured.
type figures struct {
	// Duplicates are provider messages beyond one per person and step, by
	// the fault whose moment the first copy reached the provider at.
	dupOutage, dupKills, dupOther int
	late                          []time.Duration // SMS broadcast: how much later than their neighbours' the delayed people's SMS went
	latest                        string          // the ledger history of the latest one's message
	steps                         map[string]int  // the cascade's tries by channel and status
	stepExample                   map[string]string
	lostReports                   int // status callbacks and call webhooks the gateway did not take
	fiveOhThrees                  int
	first503, last503             time.Time
	settledAfter                  time.Duration
	settled                       bool
	smsSent, wechatSent           int
	callsPlaced, answers          int
}

// copyAt is a message a provider got: the gateway's message id (empty for
// WeChat, whose requests carry none) and when.
type copyAt struct {
	id string
	at time.Time
}

// received groups what the providers got by person and channel: the SMS
// and calls by phone (with the gateway's message id, the m parameter of
// their callback URLs), the WeChat messages by openid.
func (r *run) received() map[*person]map[string][]copyAt {
	out := map[*person]map[string][]copyAt{}
	add := func(p *person, ch string, c copyAt) {
		if p == nil {
			return
		}
		if out[p] == nil {
			out[p] = map[string][]copyAt{}
		}
		out[p][ch] = append(out[p][ch], c)
	}
	for _, q := range r.sim.Requests() {
		if q.Reply == http.StatusCreated && strings.HasPrefix(q.SID, "SM") {
			add(r.byPhone[q.Form.Get("To")], "sms", copyAt{messageOf(q.Form.Get("StatusCallback")), q.At})
		}
	}
	for _, c := range r.sim.Calls() {
		add(r.byPhone[c.Form.Get("To")], "voice", copyAt{messageOf(c.Form.Get("Url")), c.Created})
	}
	n := map[*person]int{}
	for _, q := range r.wsim.Requests() {
		if q.Path != wechatsim.CustomSendPath || q.ErrCode != 0 {
			continue
		}
		to, _ := q.JSON["touser"].(string)
		p := r.byOpen[to]
		if p == nil {
			continue
		}
		c := copyAt{}
		p.mu.Lock()
		if n[p] < len(p.wechatAt) {
			c.at = p.wechatAt[n[p]]
		}
		p.mu.Unlock()
		n[p]++
		add(p, "wechat", c)
	}
	return out
}

func messageOf(callback string) string {
	u, err := url.Parse(callback)
	if err != nil {
		return ""
	}
	return u.Query().Get("m")
}

// check compares the gateway's records with the simulators' and the
// patients', fails the run on every difference, and returns the figures.
func (r *run) check(settled bool, rep repairs) figures {
	t := r.t
	f := figures{settled: settled, steps: map[string]int{}, stepExample: map[string]string{}}
	r.faults.mu.Lock()
	f.settledAfter = r.settledAt.Sub(r.faults.last)
	r.faults.mu.Unlock()
	r.checkStatuses(&f)
	exp := r.expected()
	for _, gs := range exp {
		f.answers += len(gs)
	}
	got := r.received()
	for _, byCh := range got {
		f.smsSent += len(byCh["sms"])
		f.wechatSent += len(byCh["wechat"])
		f.callsPlaced += len(byCh["voice"])
	}
	lostDelivery := r.lostDeliveries()
	var ps problems
	defer ps.report(r)
	for _, b := range []*broadcast{r.main, r.casc} {
		ro, err := r.roster(b)
		if err != nil {
			t.Errorf("%s: %v", b.name, err)
			continue
		}
		people := map[int]recipient{}
		for _, st := range personStates {
			list, err := r.recipients(b, st)
			if err != nil {
				t.Errorf("%s: %v", b.name, err)
				return f
			}
			for _, p := range list {
				if _, dup := people[p.Index]; dup {
					t.Errorf("%s: person %d is listed twice", b.name, p.Index)
				}
				people[p.Index] = p
			}
		}
		if len(people) != len(b.people) || ro.FannedOut != len(b.people) || !ro.FanOutDone {
			t.Errorf("%s: %d people listed, %d fanned out (done %v), want %d", b.name, len(people), ro.FannedOut, ro.FanOutDone, len(b.people))
		}
		for ch, counts := range ro.ByChannel {
			if counts["queued"] > 0 {
				t.Errorf("%s: %d %s messages still queued in the roster (%v)", b.name, counts["queued"], ch, counts)
			}
		}
		wantTally := map[string]int{}
		var wantHelp []int
		for _, p := range b.people {
			rc, ok := people[p.index]
			if !ok {
				continue
			}
			if rc.To.Phone != p.phone || rc.To.WeChatOpenID != p.openid {
				t.Errorf("%s person %d: listed with another person's address", b.name, p.index)
			}
			want := latest(exp[p])
			if want != "" {
				wantTally[want]++
				if want == "need_help" {
					wantHelp = append(wantHelp, p.index)
				}
			}
			r.checkPerson(b, p, rc, want, got[p], lostDelivery, &f, &ps)
		}
		for _, meaning := range []string{"safe", "need_help"} {
			if ro.Poll[meaning] != wantTally[meaning] {
				t.Errorf("%s: the poll counts %d %s, the patients answered %d", b.name, ro.Poll[meaning], meaning, wantTally[meaning])
			}
		}
		help, err := r.recipients(b, "need_help")
		if err != nil {
			t.Errorf("%s: %v", b.name, err)
		}
		var gotHelp []int
		for _, p := range help {
			gotHelp = append(gotHelp, p.Index)
		}
		sort.Ints(gotHelp)
		if !slices.Equal(gotHelp, wantHelp) {
			t.Errorf("%s: the need_help list has %d people, the patients %d (first differences: %v)", b.name, len(gotHelp), len(wantHelp), firstDiff(gotHelp, wantHelp))
		}
	}
	r.checkFeed(exp)
	f.late, f.latest = r.delays()
	if f.latest != "" {
		f.latest = "message " + f.latest + ": " + r.history(f.latest)
	}
	for k, id := range f.stepExample {
		f.stepExample[k] = r.history(id)
	}
	// A kill can cost a second copy of the sends the killed worker had in
	// flight; a Redis outage, of the sends both workers had in flight
	// (their acceptance cannot be recorded, and the provider's reports are
	// refused, so the send is tried again after DELIVERY_UNCONFIRMED_GRACE).
	r.faults.mu.Lock()
	kills := len(r.faults.kills)
	r.faults.mu.Unlock()
	if f.dupKills > kills*crisisConcurrency {
		t.Errorf("%d duplicate messages around the kills; %d kills may cost at most %d (the sends in flight)", f.dupKills, kills, kills*crisisConcurrency)
	}
	if f.dupOutage > len(r.workers)*crisisConcurrency {
		t.Errorf("%d duplicate messages around the Redis restart; it may cost at most %d (the sends in flight)", f.dupOutage, len(r.workers)*crisisConcurrency)
	}
	if f.dupOther > 0 {
		t.Errorf("%d duplicate messages whose first copy went out at no fault", f.dupOther)
	}
	return f
}

// checkPerson checks one person against the simulators and their own
// answers, and counts their duplicate messages.
func (r *run) checkPerson(b *broadcast, p *person, got recipient, want string, sent map[string][]copyAt,
	lostDelivery map[string]bool, f *figures, ps *problems) {
	who := fmt.Sprintf("%d", p.index)
	tried := map[string]string{} // channel → the try's message id
	status := map[string]string{}
	last := ""
	for _, try := range got.Tries {
		if _, again := tried[try.Channel]; again {
			ps.add(b.name+": a step was tried twice", who, try.MessageID)
		}
		tried[try.Channel], status[try.Channel], last = try.MessageID, try.Status, try.MessageID
		if !b.cascade {
			p.sentID = try.MessageID
		}
		if b.cascade {
			k := try.Channel + " " + try.Status
			f.steps[k]++
			if f.stepExample[k] == "" {
				f.stepExample[k] = try.MessageID
			}
		}
	}
	order := []string{"sms"}
	if b.cascade {
		order = []string{"wechat", "sms", "voice"}
	}
	for i, try := range got.Tries {
		if i >= len(order) || try.Channel != order[i] {
			ps.add(fmt.Sprintf("%s: the tries do not follow the cascade %v", b.name, order), who+" "+strings.Join(channelsOf(got), ","), "")
			break
		}
	}
	// A step handed to the provider reached it at least once; a step that
	// never was (canceled, no longer due, refused) never reached it.
	for _, ch := range order {
		copies := sent[ch]
		n := len(copies)
		st := status[ch]
		handed := slices.Contains([]string{"sent", "delivered", "undelivered", "read"}, st)
		switch {
		case handed && n == 0:
			ps.add(fmt.Sprintf("%s: the %s step is %s in the roster, but the provider got nothing", b.name, ch, st), who, tried[ch])
		case st == "queued" || st == "sending":
			got := "nothing"
			if n > 0 {
				got = "the message"
			}
			ps.add(fmt.Sprintf("%s: the %s step is still %q at the end (the provider got %s)", b.name, ch, st, got), who, tried[ch])
		case !handed && n > 0 && st != "":
			ps.add(fmt.Sprintf("%s: the provider got the %s step, but the roster says %q", b.name, ch, st), who, tried[ch])
		case !handed && n > 0:
			ps.add(fmt.Sprintf("%s: the provider got a %s message, but the person has no %s step", b.name, ch, ch), who, last)
		}
		if n > 1 {
			r.countDuplicates(f, copies[0].at, n-1)
		}
		for _, c := range copies {
			if ch != "wechat" && c.id != tried[ch] {
				ps.add(fmt.Sprintf("%s: the provider got a %s message that is not the person's %s step", b.name, ch, ch), who, c.id)
				break
			}
		}
	}
	switch {
	case want != "":
		if got.State != "acknowledged" || got.Answer != want {
			ps.add(fmt.Sprintf("%s: answered %s but not counted so (state %s, answer %q)", b.name, want, got.State, got.Answer), who, last)
		}
	case b.cascade:
		if got.State != "unreachable" {
			ps.add(fmt.Sprintf("%s: did not answer and is %s, not unreachable at the end of the cascade", b.name, got.State), who, last)
		}
	case got.State == "sent":
		// Only when the delivery report never got through.
		if !lostDelivery[tried["sms"]] {
			ps.add(b.name+": sent, though the gateway took the delivery report", who, last)
		}
	case got.State != "delivered":
		ps.add(fmt.Sprintf("%s: did not answer and is %s, not delivered", b.name, got.State), who, last)
	}
}

// delays finds the people of the SMS broadcast whose SMS reached the
// provider more than 15 s after the median of their neighbours' (up to 50
// indexes either side, in the same chunk of 1,000, queued about when they
// were): the sends a fault held back. It returns how much later each was,
// and the message of the latest.
func (r *run) delays() (late []time.Duration, latest string) {
	at := make([]time.Duration, len(r.main.people))
	for i, p := range r.main.people {
		p.mu.Lock()
		if !p.firstSMS.IsZero() {
			at[i] = p.firstSMS.Sub(r.start)
		}
		p.mu.Unlock()
	}
	var worst time.Duration
	for i := range at {
		var near []time.Duration
		for j := max(0, i-50); j < min(len(at), i+51); j++ {
			if j != i && j/1000 == i/1000 && at[j] != 0 {
				near = append(near, at[j])
			}
		}
		if at[i] == 0 || len(near) == 0 {
			continue
		}
		slices.Sort(near)
		if d := at[i] - near[len(near)/2]; d > 15*time.Second {
			late = append(late, d)
			if d > worst {
				worst, latest = d, r.main.people[i].sentID
			}
		}
	}
	return late, latest
}

// countDuplicates counts n duplicates of a message whose first copy
// reached the provider at first: a kill's when that was within 2 s of a
// kill, the Redis outage's when it was from 2 s before Redis went down
// until redisGrace after it came back.
func (r *run) countDuplicates(f *figures, first time.Time, n int) {
	r.faults.mu.Lock()
	defer r.faults.mu.Unlock()
	near := func(at time.Time) bool {
		return !first.Before(at.Add(-2*time.Second)) && !first.After(at.Add(2*time.Second))
	}
	if !first.IsZero() && !first.Before(r.faults.redisDown.Add(-2*time.Second)) && !first.After(r.faults.redisUp.Add(redisGrace)) {
		f.dupOutage += n
		return
	}
	for _, k := range r.faults.kills {
		if !first.IsZero() && near(k.at) {
			f.dupKills += n
			return
		}
	}
	f.dupOther += n
}

func channelsOf(rc recipient) []string {
	var out []string
	for _, t := range rc.Tries {
		out = append(out, t.Channel+":"+t.Status)
	}
	return out
}

func firstDiff(a, b []int) []int {
	var out []int
	for _, x := range a {
		if !slices.Contains(b, x) && len(out) < 5 {
			out = append(out, x)
		}
	}
	for _, x := range b {
		if !slices.Contains(a, x) && len(out) < 10 {
			out = append(out, x)
		}
	}
	return out
}

// lostDeliveries are the messages whose "delivered" report the gateway
// never took (it answered 503 while Redis was down, and Twilio does not
// post a status callback again).
func (r *run) lostDeliveries() map[string]bool {
	sidTo := map[string]string{}
	for _, q := range r.sim.Requests() {
		if q.Reply == http.StatusCreated && strings.HasPrefix(q.SID, "SM") {
			sidTo[q.SID] = messageOf(q.Form.Get("StatusCallback"))
		}
	}
	took := map[string]bool{}
	lost := map[string]bool{}
	for _, cb := range r.sim.Callbacks() {
		if cb.Status != twiliosim.StatusDelivered {
			continue
		}
		if cb.Code/100 == 2 {
			took[sidTo[cb.MessageSID]] = true
		} else {
			lost[sidTo[cb.MessageSID]] = true
		}
	}
	for id := range took {
		delete(lost, id)
	}
	return lost
}

// checkStatuses fails the run on any 5xx but a 503 while Redis was down,
// any request that got no answer outside that time, and any 4xx (the test
// sends nothing the gateway should refuse).
func (r *run) checkStatuses(f *figures) {
	all := r.seen.all()
	for _, cb := range r.sim.Callbacks() {
		code := cb.Code
		if cb.Err != "" {
			code = 0
		}
		all = append(all, answer{at: cb.At, what: "twilio status callback", code: code})
		if code/100 != 2 {
			f.lostReports++
		}
	}
	for _, c := range r.sim.Calls() {
		for _, h := range c.Hooks {
			code := h.Code
			if h.Err != "" && code/100 == 2 {
				code = -1 // a 2xx whose TwiML does not parse
			}
			all = append(all, answer{at: h.At, what: "twilio call webhook (" + h.Kind + ")", code: code})
			if code/100 != 2 {
				f.lostReports++
			}
		}
	}
	bad := map[string]int{}
	for _, a := range all {
		// A request made while Redis was down may be answered after.
		outage := r.faults.redisOutage(a.at) || (!a.sent.IsZero() && r.faults.redisOutage(a.sent))
		switch {
		case a.code == http.StatusServiceUnavailable:
			f.fiveOhThrees++
			if f.first503.IsZero() || a.at.Before(f.first503) {
				f.first503 = a.at
			}
			if a.at.After(f.last503) {
				f.last503 = a.at
			}
			if !outage {
				bad[fmt.Sprintf("%s answered 503 while Redis was up", a.what)]++
			}
			if a.noRetryAfter {
				bad[fmt.Sprintf("%s answered 503 without Retry-After", a.what)]++
			}
		case a.code == 0 && !outage:
			bad[fmt.Sprintf("%s got no answer while Redis was up", a.what)]++
		case a.code/100 == 2 || a.code == 0:
		default:
			bad[fmt.Sprintf("%s answered %d", a.what, a.code)]++
		}
	}
	for what, n := range bad {
		r.t.Errorf("%s (%d times)", what, n)
	}
}

// checkFeed checks the reply feed against the answers: one entry per
// answer, from the person, with its body and meaning.
func (r *run) checkFeed(exp map[*person][]given) {
	feed, err := r.feed()
	if err != nil {
		r.t.Error(err)
		return
	}
	type key struct{ from, channel, body string }
	got := map[key]int{}
	for _, e := range feed {
		got[key{e.From.Value, e.Channel, e.Body}]++
		if want := options[e.Body]; want == "" || e.Option != want {
			r.t.Errorf("a %s reply %q has option %q", e.Channel, e.Body, e.Option)
		}
	}
	want := map[key]int{}
	for p, gs := range exp {
		for _, g := range gs {
			from := p.phone
			if g.channel == "wechat" {
				from = p.openid
			}
			want[key{from, g.channel, g.body}]++
		}
	}
	diffs := 0
	for k, n := range want {
		if got[k] != n {
			diffs++
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			diffs++
		}
	}
	if diffs > 0 || len(feed) != sumValues(want) {
		r.t.Errorf("the reply feed has %d entries for %d answers; %d (person, channel, answer) differ", len(feed), sumValues(want), diffs)
	}
}

func sumValues[K comparable](m map[K]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// secrets are what the gateway's logs must never hold: our patients'
// numbers and openids, and the broadcast's text.
var secrets = regexp.MustCompile(`4155(59\d{4}|7\d{5})|oChaosPatient\d|flood alert|Reply 1 if`)

// hexIDs are the hex ids a log line may hold: a Twilio SID ("SM" and 32
// hex digits), trace, span and request ids, hashed keys. A run of digits
// inside one is not a phone number (a random SID holds "4155712345" now
// and then); no phone number is 16 digits or more.
var hexIDs = regexp.MustCompile(`\b(?:[A-Z]{2})?[0-9a-f]{16,}\b`)

// holdsSecret says whether a log line holds a patient's number or openid,
// or the broadcast's text, outside the hex ids it names.
func holdsSecret(line string) bool {
	return secrets.MatchString(hexIDs.ReplaceAllString(line, "<id>"))
}

// crashLine is a panic (recovered or not) or a fatal runtime error.
var crashLine = regexp.MustCompile(`panic|^fatal error:|^goroutine \d+ \[`)

// checkLogs reads every process's log: no panic, no number, openid or
// text of a patient.
func (r *run) checkLogs() {
	for _, p := range r.procs {
		for i, line := range p.logLines() {
			if crashLine.MatchString(line) {
				r.t.Errorf("%s log line %d: a panic or fatal error", p.name, i+1)
			}
			if holdsSecret(line) {
				r.t.Errorf("%s log line %d holds a patient's number, openid or the broadcast's text", p.name, i+1)
			}
		}
	}
}

// report prints the run's figures: the seed, the faults, the duplicates,
// the waits, the 503s and what the repair pass fixed.
func (r *run) report(f figures, rep repairs) {
	t := r.t
	r.faults.mu.Lock()
	defer r.faults.mu.Unlock()
	rel := func(at time.Time) string { return at.Sub(r.start).Round(100 * time.Millisecond).String() }
	var kills []string
	for _, k := range r.faults.kills {
		kills = append(kills, fmt.Sprintf("%s at %s (%d provider calls in flight, back after %s)", k.worker, rel(k.at), k.inFlight,
			k.back.Sub(k.at).Round(100*time.Millisecond)))
	}
	t.Logf("seed %d: %d people by SMS, %d by WeChat → SMS → voice; %d SMS, %d WeChat messages, %d calls; %d answers",
		r.seed, len(r.main.people), len(r.casc.people), f.smsSent, f.wechatSent, f.callsPlaced, f.answers)
	t.Logf("kills: %s", strings.Join(kills, "; "))
	t.Logf("redis down at %s for %s", rel(r.faults.redisDown), r.faults.redisUp.Sub(r.faults.redisDown).Round(100*time.Millisecond))
	if f.fiveOhThrees > 0 {
		t.Logf("503s: %d, from %s to %s (Redis back at %s)", f.fiveOhThrees, rel(f.first503), rel(f.last503), rel(r.faults.redisUp))
	}
	t.Logf("duplicates: %d around the kills (bound %d), %d around the Redis restart (bound %d), %d elsewhere; provider reports the gateway did not take: %d",
		f.dupKills, len(r.faults.kills)*crisisConcurrency, f.dupOutage, len(r.workers)*crisisConcurrency, f.dupOther, f.lostReports)
	if len(f.late) > 0 {
		t.Logf("SMS broadcast: %d people got their SMS more than 15 s after their neighbours (a fault held their send back), at most %s later; %s",
			len(f.late), slices.Max(f.late).Round(100*time.Millisecond), f.latest)
	} else {
		t.Logf("SMS broadcast: nobody got their SMS more than 15 s after their neighbours")
	}
	var steps []string
	for k, n := range f.steps {
		steps = append(steps, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(steps)
	t.Logf("the cascade's steps: %s", strings.Join(steps, ", "))
	for _, k := range slices.Sorted(maps.Keys(f.stepExample)) {
		if !strings.HasSuffix(k, " sent") && !strings.HasSuffix(k, " delivered") {
			t.Logf("a %s step: %s", k, f.stepExample[k])
		}
	}
	t.Logf("settled %v, %s after the last fault; repair fixed %d statuses, moved %d people on, queued %d again",
		f.settled, f.settledAfter.Round(time.Second), rep.statuses, rep.movedOn, rep.requeued)
}
