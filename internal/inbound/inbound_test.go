package inbound_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/inbound"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/redistest"
	"github.com/patientmsg/gateway/internal/replies"
	"github.com/patientmsg/gateway/workers"
)

var ctx = context.Background()

const patientPhone = "+14155550123"

var patient = consent.Identity{Kind: consent.Phone, Value: patientPhone}

// queue is the Asynq client of the test's Redis; it fails while err is set.
type queue struct {
	client    *asynq.Client
	inspector *asynq.Inspector
	err       error
}

func (q *queue) EnqueueContext(ctx context.Context, t *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	if q.err != nil {
		return nil, q.err
	}
	return q.client.EnqueueContext(ctx, t, opts...)
}

// queued lists the answers waiting for the workers.
func (q *queue) queued(t *testing.T) []*asynq.TaskInfo {
	t.Helper()
	tasks, err := q.inspector.ListPendingTasks(workers.QueueReplies)
	if err != nil && !errors.Is(err, asynq.ErrQueueNotFound) {
		t.Fatal(err)
	}
	return tasks
}

// newReceiver is a receiver for the tenants on a throwaway Redis.
func newReceiver(t *testing.T, tenants ...string) (*inbound.Receiver, *queue) {
	t.Helper()
	rdb := redistest.Start(t).Client()
	q := &queue{client: asynq.NewClientFromRedisClient(rdb), inspector: asynq.NewInspectorFromRedisClient(rdb)}
	return &inbound.Receiver{Redis: rdb, Ledger: ledger.New(rdb, time.Hour), Consent: consent.New(rdb),
		Replies: replies.New(rdb, time.Hour), HelpTexts: inbound.NewHelpTexts(rdb), Queue: q, Tenants: tenants}, q
}

func sms(providerID, body string) channels.InboundMessage {
	return channels.InboundMessage{Channel: "sms", ProviderID: providerID, From: ledger.Recipient{Phone: patientPhone},
		To: "+15005550006", Body: body}
}

func TestAProvidersRetryIsTakenOnce(t *testing.T) {
	r, q := newReceiver(t, "clinic-a")
	if res, err := r.Inbound(ctx, sms("SM1", "feeling better")); err != nil || res.Duplicate {
		t.Fatalf("first delivery: %+v %v", res, err)
	}
	if res, err := r.Inbound(ctx, sms("SM1", "feeling better")); err != nil || !res.Duplicate {
		t.Fatalf("the retry must be reported a duplicate: %+v %v", res, err)
	}
	tasks := q.queued(t)
	if len(tasks) != 1 || tasks[0].Type != workers.TypeInboundReply {
		t.Fatalf("want the answer queued once, got %d tasks", len(tasks))
	}
	var in channels.InboundMessage
	if err := json.Unmarshal(tasks[0].Payload, &in); err != nil || in.Body != "feeling better" || in.ReceivedAt.IsZero() {
		t.Fatalf("the queued answer carries the message and when it was received: %+v %v", in, err)
	}
}

func TestAMessageThatFailsIsProcessedAgainOnTheRetry(t *testing.T) {
	r, q := newReceiver(t, "clinic-a")
	q.err = errors.New("queue unavailable")
	if _, err := r.Inbound(ctx, sms("SM1", "worse today")); err == nil {
		t.Fatal("a message that could not be queued must fail (the provider retries)")
	}
	q.err = nil
	if res, err := r.Inbound(ctx, sms("SM1", "worse today")); err != nil || res.Duplicate {
		t.Fatalf("the retry must be processed, not dropped as a duplicate: %+v %v", res, err)
	}
	if n := len(q.queued(t)); n != 1 {
		t.Fatalf("want the answer queued by the retry, got %d tasks", n)
	}
}

// TestAnAnswerLostWithRedisMidwayIsTakenOnTheRetry: the message id was
// marked, the answer was not queued, and the mark could not be removed
// (Redis went away in between); the provider's retry, once Redis is back,
// must queue the answer rather than drop it as a duplicate.
func TestAnAnswerLostWithRedisMidwayIsTakenOnTheRetry(t *testing.T) {
	r, q := newReceiver(t, "clinic-a")
	hook := &redistest.FailCommand{Name: "del"}
	hook.Arm(true)
	r.Redis.(*redis.Client).AddHook(hook)
	q.err = errors.New("dial tcp: connection refused")
	if _, err := r.Inbound(ctx, sms("SM7", "2")); err == nil {
		t.Fatal("an answer that could not be queued must fail (the provider retries)")
	}
	hook.Arm(false)
	q.err = nil
	if res, err := r.Inbound(ctx, sms("SM7", "2")); err != nil || res.Duplicate {
		t.Fatalf("the retry was dropped: %+v %v", res, err)
	}
	if n := len(q.queued(t)); n != 1 {
		t.Fatalf("want the answer queued by the retry, got %d tasks", n)
	}
	if res, err := r.Inbound(ctx, sms("SM7", "2")); err != nil || !res.Duplicate {
		t.Fatalf("once taken, a further retry is a duplicate: %+v %v", res, err)
	}
}

func TestKeywords(t *testing.T) {
	cases := []struct {
		name string
		// before opts the patient out of clinic-a first.
		before     bool
		body       string
		wantReply  string
		wantOut    bool
		wantQueued int
	}{
		{name: "STOP opts out of every tenant and is confirmed", body: "STOP",
			wantReply: consent.Replies[consent.OptOut]["en"], wantOut: true},
		{name: "a Chinese carrier's opt-out word is confirmed in Chinese", body: "退订",
			wantReply: consent.Replies[consent.OptOut]["zh"], wantOut: true},
		{name: "START opts back in a patient who opted out", before: true, body: "START",
			wantReply: consent.Replies[consent.OptIn]["en"]},
		{name: "YES from a patient who never opted out is an ordinary answer", body: "YES", wantQueued: 1},
		{name: "HELP from a stranger gets the default help", body: "HELP",
			wantReply: consent.Replies[consent.Help]["en"]},
		{name: "a message that is no keyword is queued as an answer", body: "Can I stop taking the pills?",
			wantQueued: 1},
		{name: "a keyword repeated and padded is one", body: "STOP STOP STOP!!! please",
			wantReply: consent.Replies[consent.OptOut]["en"], wantOut: true},
		{name: "a clear wish to stop in other words opts out at once", body: "Stop texting me",
			wantReply: consent.Replies[consent.OptOut]["en"], wantOut: true},
		{name: "a Spanish one is confirmed in Spanish", body: "No más mensajes",
			wantReply: consent.Replies[consent.OptOut]["es"], wantOut: true},
		{name: "a Chinese one is confirmed in Chinese", body: "别再给我发短信",
			wantReply: consent.Replies[consent.OptOut]["zh"], wantOut: true},
		{name: "a possible wish to stop is asked about and filed", body: "Leave me alone",
			wantReply: consent.Clarifications["en"], wantQueued: 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, q := newReceiver(t, "clinic-a", "clinic-b")
			if c.before {
				for _, tenant := range r.Tenants {
					if _, err := r.Consent.Set(ctx, tenant, patient, true, consent.SourceAPI, "test"); err != nil {
						t.Fatal(err)
					}
				}
			}
			res, err := r.Inbound(ctx, sms("SM1", c.body))
			if err != nil {
				t.Fatal(err)
			}
			if res.Reply != c.wantReply {
				t.Fatalf("reply %q, want %q", res.Reply, c.wantReply)
			}
			for _, tenant := range r.Tenants {
				if out, _ := r.Consent.OptedOut(ctx, tenant, patient); out != c.wantOut {
					t.Fatalf("%s: opted out %v, want %v", tenant, out, c.wantOut)
				}
			}
			if n := len(q.queued(t)); n != c.wantQueued {
				t.Fatalf("%d answers queued, want %d", n, c.wantQueued)
			}
		})
	}
}

func TestARepeatedStopGetsNoSecondConfirmation(t *testing.T) {
	r, _ := newReceiver(t, "clinic-a", "clinic-b")
	if res, _ := r.Inbound(ctx, sms("SM1", "STOP")); res.Reply == "" {
		t.Fatal("the first STOP is confirmed")
	}
	if res, err := r.Inbound(ctx, sms("SM2", "stop")); err != nil || res.Reply != "" {
		t.Fatalf("a second STOP must get no reply: %+v %v", res, err)
	}
}

func TestHelpGetsTheTextOfTheTenantThatLastWrote(t *testing.T) {
	r, _ := newReceiver(t, "clinic-a", "clinic-b")
	if err := r.HelpTexts.Set(ctx, "clinic-a", map[string]string{"en": "Riverside Clinic: call 555-0100."}); err != nil {
		t.Fatal(err)
	}
	// clinic-a's message was the last to the patient (what the ledger's
	// OnCreate hook records when a message is made).
	if err := r.Redis.Set(ctx, replies.LastKey(patient), replies.LastValue("clinic-a", "msg1"), time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	if res, _ := r.Inbound(ctx, sms("SM1", "HELP")); res.Reply != "Riverside Clinic: call 555-0100." {
		t.Fatalf("help = %q", res.Reply)
	}
	if res, _ := r.Inbound(ctx, sms("SM2", "info")); res.Reply != "Riverside Clinic: call 555-0100." {
		t.Fatalf("INFO = %q", res.Reply)
	}
	// Once clinic-b, which set no help text, writes last: the default.
	if err := r.Redis.Set(ctx, replies.LastKey(patient), replies.LastValue("clinic-b", "msg2"), time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	if res, _ := r.Inbound(ctx, sms("SM3", "HELP")); res.Reply != consent.Replies[consent.Help]["en"] {
		t.Fatalf("help of a tenant without a text = %q", res.Reply)
	}
}

func TestHelpTexts(t *testing.T) {
	cases := []struct {
		name    string
		texts   map[string]string
		badLang string
		none    bool
	}{
		{name: "English and Chinese texts are kept", texts: map[string]string{"en": "Call 555-0100.", "zh": "请致电 555-0100。"}},
		{name: "a text of 300 characters is kept", texts: map[string]string{"zh": strings.Repeat("诊", inbound.MaxHelpText)}},
		{name: "a language without keywords is refused", texts: map[string]string{"fr": "Appelez le 555-0100."}, badLang: "fr"},
		{name: "an empty text is refused", texts: map[string]string{"en": ""}, badLang: "en"},
		{name: "a text over 300 characters is refused", texts: map[string]string{"en": strings.Repeat("a", inbound.MaxHelpText+1)}, badLang: "en"},
		{name: "no text at all is refused", texts: map[string]string{}, none: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := inbound.NewHelpTexts(redistest.Start(t).Client())
			err := h.Set(ctx, "clinic-a", c.texts)
			var bad *inbound.HelpTextError
			switch {
			case c.badLang != "":
				if !errors.As(err, &bad) || bad.Lang != c.badLang {
					t.Fatalf("want a HelpTextError for %q, got %v", c.badLang, err)
				}
			case c.none:
				if !errors.Is(err, inbound.ErrNoHelpText) {
					t.Fatalf("want ErrNoHelpText, got %v", err)
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
				for lang, want := range c.texts {
					if got, err := h.Get(ctx, "clinic-a", lang); err != nil || got != want {
						t.Fatalf("%s: %q %v", lang, got, err)
					}
				}
			}
		})
	}
}

func TestAnAnswerIsFiledWithTheTenantThatLastWrote(t *testing.T) {
	r, _ := newReceiver(t, "clinic-a", "clinic-b")
	var told []string
	r.OnReply = func(_ context.Context, tenant string, from consent.Identity, urgent bool) {
		if from != patient || urgent {
			t.Errorf("told of %v urgent=%v", from, urgent)
		}
		told = append(told, tenant)
	}
	if err := r.FileReply(ctx, sms("SM1", "who is this?")); err != nil {
		t.Fatal(err)
	}
	if len(told) != 0 {
		t.Fatal("an answer from someone no tenant wrote to is not kept")
	}
	if err := r.Redis.Set(ctx, replies.LastKey(patient), replies.LastValue("clinic-b", "msg1"), time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	if err := r.FileReply(ctx, sms("SM2", "feeling better")); err != nil {
		t.Fatal(err)
	}
	feed, err := r.Replies.List(ctx, "clinic-b", "", 10)
	if err != nil || len(feed) != 1 || feed[0].Body != "feeling better" || feed[0].InReplyTo != "msg1" {
		t.Fatalf("clinic-b's feed: %+v %v", feed, err)
	}
	if other, _ := r.Replies.List(ctx, "clinic-a", "", 10); len(other) != 0 {
		t.Fatalf("the answer reached another tenant: %+v", other)
	}
	if len(told) != 1 || told[0] != "clinic-b" {
		t.Fatalf("OnReply told %v", told)
	}
}

// handOver makes a message sent, as a worker does: claimed, then
// accepted by the provider.
func handOver(t *testing.T, led *ledger.Ledger, id, providerID string) {
	t.Helper()
	if c, err := led.Claim(ctx, id, time.Minute); err != nil || c.Outcome != ledger.ClaimSend {
		t.Fatalf("claim %s: %+v %v", id, c, err)
	}
	if err := led.RecordAccepted(ctx, id, "sms", providerID); err != nil {
		t.Fatal(err)
	}
}

// TestAnAnswerGoesToTheQuestionThePatientGot: a broadcast's SMS question
// reached the patient; the broadcast's next step, a call with the same
// question, was made a moment before the patient's "2" came in, and is
// still queued. The answer is to the SMS: the call has reached nobody.
func TestAnAnswerGoesToTheQuestionThePatientGot(t *testing.T) {
	r, _ := newReceiver(t, "clinic-a")
	poll := &ledger.ExpectReply{Options: map[string]string{"1": "safe", "2": "need_help"}, Within: 3600}
	to := ledger.Recipient{Phone: patientPhone}
	smsID, callID := ledger.NewID(), ledger.NewID()
	for _, m := range []struct{ id, channel string }{{smsID, "sms"}, {callID, "voice"}} {
		if _, err := r.Ledger.Create(ctx, m.id, ledger.Request{Tenant: "clinic-a", Channel: m.channel, To: to,
			Body: "Reply 1 if you are safe, 2 if you need help", Priority: "crisis", Broadcast: "bc_flood:0", ExpectReply: poll}); err != nil {
			t.Fatal(err)
		}
		// Both are open questions of the patient, the call the most recent.
		r.Redis.ZAdd(ctx, replies.PromptsKey(patient), redis.Z{Score: float64(time.Now().Add(time.Hour).UnixMilli()), Member: replies.LastValue("clinic-a", m.id)})
		r.Redis.Set(ctx, replies.LastKey(patient), replies.LastValue("clinic-a", m.id), time.Hour)
		if m.channel == "sms" {
			handOver(t, r.Ledger, smsID, "SM00000000000000000000000000000009")
		}
		time.Sleep(2 * time.Millisecond) // the call's prompt comes later
	}
	var answered []string
	r.OnAnswer = func(_ context.Context, _, messageID, _, option, _ string, _ time.Time) error {
		answered = append(answered, messageID+" "+option)
		return nil
	}
	if err := r.FileReply(ctx, sms("SM3", "2")); err != nil {
		t.Fatal(err)
	}
	if len(answered) != 1 || answered[0] != smsID+" need_help" {
		t.Fatalf("the answer went to %v; the SMS is %s, the queued call %s", answered, smsID, callID)
	}
}

func TestAStatusForAnUnknownProviderIDIsUnknown(t *testing.T) {
	r, _ := newReceiver(t, "clinic-a")
	applied, err := r.ProviderStatus(ctx, "", ledger.ProviderUpdate{Channel: "sms", ProviderID: "SMunknown", Status: ledger.StatusDelivered})
	if err != nil || applied != ledger.AppliedUnknown {
		t.Fatalf("applied %v %v", applied, err)
	}
}

func TestAClearRevocationKeepsThePatientsWordsAsEvidence(t *testing.T) {
	r, _ := newReceiver(t, "clinic-a")
	if _, err := r.Inbound(ctx, sms("SM1", "Remove me from this list")); err != nil {
		t.Fatal(err)
	}
	st, err := r.Consent.Get(ctx, "clinic-a", patient)
	if err != nil || !st.OptedOut || len(st.Changes) != 1 {
		t.Fatalf("consent %+v %v", st, err)
	}
	if c := st.Changes[0]; c.Source != consent.SourceReply || c.Evidence != `sms inbound message SM1: "Remove me from this list"` {
		t.Fatalf("change %+v", c)
	}
}

// openQuestion makes a question with options that reached the patient.
func openQuestion(t *testing.T, r *inbound.Receiver, options map[string]string) {
	t.Helper()
	id := ledger.NewID()
	if _, err := r.Ledger.Create(ctx, id, ledger.Request{Tenant: "clinic-a", Channel: "sms", To: ledger.Recipient{Phone: patientPhone},
		Body: "Do you have enough pills? Reply ENOUGH or MORE", ExpectReply: &ledger.ExpectReply{Options: options, Within: 3600}}); err != nil {
		t.Fatal(err)
	}
	r.Redis.ZAdd(ctx, replies.PromptsKey(patient), redis.Z{Score: float64(time.Now().Add(time.Hour).UnixMilli()), Member: replies.LastValue("clinic-a", id)})
	r.Redis.Set(ctx, replies.LastKey(patient), replies.LastValue("clinic-a", id), time.Hour)
	handOver(t, r.Ledger, id, "SM00000000000000000000000000000042")
}

func TestAnAnswerToAnOpenQuestionIsNeverARevocation(t *testing.T) {
	r, q := newReceiver(t, "clinic-a")
	openQuestion(t, r, map[string]string{"enough": "supplied", "more": "refill"})
	res, err := r.Inbound(ctx, sms("SM1", "Enough"))
	if err != nil || res.Reply != "" {
		t.Fatalf("an option of the open question was read as a possible opt-out: %+v %v", res, err)
	}
	if n := len(q.queued(t)); n != 1 {
		t.Fatalf("%d answers queued, want 1", n)
	}
	if err := r.FileReply(ctx, sms("SM1", "Enough")); err != nil {
		t.Fatal(err)
	}
	feed, _ := r.Replies.List(ctx, "clinic-a", "", 10)
	if len(feed) != 1 || feed[0].Option != "supplied" || feed[0].PossibleOptOut != nil {
		t.Fatalf("feed %+v", feed)
	}
	if list, _ := r.Consent.PossibleOptOuts(ctx, "clinic-a", 10); len(list) != 0 {
		t.Fatalf("flagged %+v", list)
	}
}

func TestAPossibleOptOutIsAskedOnceAndFlaggedForStaff(t *testing.T) {
	r, _ := newReceiver(t, "clinic-a", "clinic-b")
	r.Redis.Set(ctx, replies.LastKey(patient), replies.LastValue("clinic-a", "msg1"), time.Hour)
	if res, err := r.Inbound(ctx, sms("SM1", "Leave me alone")); err != nil || res.Reply != consent.Clarifications["en"] {
		t.Fatalf("first: %+v %v", res, err)
	}
	if res, err := r.Inbound(ctx, sms("SM2", "déjame en paz")); err != nil || res.Reply != "" {
		t.Fatalf("the patient is asked once: %+v %v", res, err)
	}
	received := time.Date(2026, 12, 4, 15, 0, 0, 0, time.UTC) // a Friday
	in := sms("SM1", "Leave me alone")
	in.ReceivedAt = received
	for range 2 { // filed again after a failure half-way: flagged once
		if err := r.FileReply(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Date(2026, 12, 18, 15, 0, 0, 0, time.UTC) // ten business days on
	feed, _ := r.Replies.List(ctx, "clinic-a", "", 10)
	if len(feed) != 1 || feed[0].PossibleOptOut == nil || !feed[0].PossibleOptOut.Deadline.Equal(deadline) {
		t.Fatalf("feed %+v", feed)
	}
	list, err := r.Consent.PossibleOptOuts(ctx, "clinic-a", 10)
	if err != nil || len(list) != 1 || list[0].ID != feed[0].ID || !list[0].Deadline.Equal(deadline) || list[0].From != patient {
		t.Fatalf("possible opt-outs %+v %v", list, err)
	}
	if out, _ := r.Consent.OptedOut(ctx, "clinic-a", patient); out {
		t.Fatal("a possible opt-out changes no consent until staff resolve it")
	}
	if _, _, err := r.Consent.ResolvePossible(ctx, "clinic-a", list[0].ID, "maybe", "Nurse Li"); !errors.Is(err, consent.ErrBadOutcome) {
		t.Fatalf("bad outcome: %v", err)
	}
	if _, _, err := r.Consent.ResolvePossible(ctx, "clinic-b", list[0].ID, consent.ResolvedOptedOut, ""); !errors.Is(err, consent.ErrPossibleNotFound) {
		t.Fatalf("another tenant's flag: %v", err)
	}
	p, changed, err := r.Consent.ResolvePossible(ctx, "clinic-a", list[0].ID, consent.ResolvedOptedOut, "Nurse Li")
	if err != nil || !changed || p.Outcome != consent.ResolvedOptedOut || p.ResolvedBy != "Nurse Li" {
		t.Fatalf("resolve: %+v %v %v", p, changed, err)
	}
	st, _ := r.Consent.Get(ctx, "clinic-a", patient)
	if !st.OptedOut || st.Changes[0].Source != consent.SourceStaff {
		t.Fatalf("consent %+v", st)
	}
	if _, _, err := r.Consent.ResolvePossible(ctx, "clinic-a", list[0].ID, consent.ResolvedNotAnOptOut, ""); !errors.Is(err, consent.ErrAlreadyResolved) {
		t.Fatalf("resolved twice: %v", err)
	}
	if list, _ := r.Consent.PossibleOptOuts(ctx, "clinic-a", 10); len(list) != 0 {
		t.Fatalf("still listed: %+v", list)
	}
}
