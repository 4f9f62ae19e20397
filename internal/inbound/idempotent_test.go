package inbound_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/escalation"
	"github.com/patientmsg/gateway/internal/inbound"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/redistest"
	"github.com/patientmsg/gateway/internal/replies"
	"github.com/patientmsg/gateway/internal/webhooks"
	"github.com/patientmsg/gateway/workers"
)

var errInjected = errors.New("injected: the worker died here")

// dieAfterWrite lets the first n writes through and fails right after the
// n-th has been applied, and every command after it, as a worker killed
// between two writes would leave things. n = 0: no failure.
type dieAfterWrite struct {
	mu      sync.Mutex
	n, seen int
}

func (d *dieAfterWrite) arm(n int) { d.mu.Lock(); d.n, d.seen = n, 0; d.mu.Unlock() }

func (d *dieAfterWrite) after(write bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.n == 0 {
		return nil
	}
	if d.seen >= d.n {
		return errInjected // dead
	}
	if write {
		d.seen++
		if d.seen == d.n {
			return errInjected
		}
	}
	return nil
}

// dead is the error of a command after the failure: the worker is gone.
func (d *dieAfterWrite) dead() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.n > 0 && d.seen >= d.n {
		return errInjected
	}
	return nil
}

var reads = map[string]bool{"get": true, "hget": true, "hgetall": true, "hmget": true, "exists": true, "hexists": true,
	"zrange": true, "zrevrangebyscore": true, "zrangebyscore": true, "xrange": true, "xrevrange": true, "mget": true,
	"ttl": true, "pttl": true, "type": true, "zscore": true, "smembers": true, "scard": true, "zcard": true, "ping": true}

func (d *dieAfterWrite) DialHook(next redis.DialHook) redis.DialHook { return next }
func (d *dieAfterWrite) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if dead := d.dead(); dead != nil {
			cmd.SetErr(dead)
			return dead
		}
		if err := next(ctx, cmd); err != nil {
			return err
		}
		// Callers read a command's error from the command itself.
		if err := d.after(!reads[strings.ToLower(cmd.Name())]); err != nil {
			cmd.SetErr(err)
			return err
		}
		return nil
	}
}
func (d *dieAfterWrite) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if dead := d.dead(); dead != nil {
			for _, c := range cmds {
				c.SetErr(dead)
			}
			return dead
		}
		if err := next(ctx, cmds); err != nil {
			return err
		}
		write := false
		for _, c := range cmds {
			write = write || !reads[strings.ToLower(c.Name())]
		}
		if err := d.after(write); err != nil {
			for _, c := range cmds {
				c.SetErr(err)
			}
			return err
		}
		return nil
	}
}

// TestAnAnswerIsFiledOnceWhereverTheWorkerDies files a patient's "2"
// (need help) to a broadcast's question, failing right after each Redis
// write of the filing in turn, then lets the task run again as Asynq
// would: every time, the answer keeps its question and option, the feed
// has one entry, one escalation pages the nurse once, the clinic webhook
// event is queued once, and the broadcast hears need_help.
func TestAnAnswerIsFiledOnceWhereverTheWorkerDies(t *testing.T) {
	rs := redistest.Start(t)
	ctx := context.Background()
	for n := 1; ; n++ {
		rdb := rs.Client()
		if err := rdb.FlushAll(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		fail := &dieAfterWrite{}
		rdb.AddHook(fail)
		q := asynq.NewClientFromRedisClient(rdb)
		insp := asynq.NewInspectorFromRedisClient(rdb)
		led := ledger.New(rdb, 24*time.Hour)
		feed := replies.New(rdb, 24*time.Hour)
		hooks := webhooks.NewStore(rdb)
		if _, err := hooks.Put(ctx, "clinic-a", "https://ehr.example-clinic.test/hooks", false); err != nil {
			t.Fatal(err)
		}
		quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
		events := &webhooks.Publisher{Store: hooks, Queue: q, Log: quiet}
		var mu sync.Mutex
		pages := map[string]int{}
		esc := &escalation.Escalator{Redis: rdb, Queue: q, Events: events, Log: quiet,
			Send: func(_ context.Context, _ string, _ escalation.Target, _, id string) error {
				mu.Lock()
				pages[id]++
				mu.Unlock()
				return nil
			}}
		if err := esc.PutRules(ctx, "clinic-a", escalation.Rules{Options: []string{"need_help"},
			OnCall: []escalation.Target{{Channel: "sms", Phone: "+14155550188"}}}); err != nil {
			t.Fatal(err)
		}
		var answers []string
		rcv := &inbound.Receiver{Redis: rdb, Ledger: led, Replies: feed, Escalator: esc, Events: events, Queue: q, Logger: quiet,
			OnAnswer: func(_ context.Context, link, _, _, option, _ string, _ time.Time) error {
				mu.Lock()
				answers = append(answers, link+" "+option)
				mu.Unlock()
				return nil
			}}
		// The broadcast's question went to the patient.
		patient := ledger.Recipient{Phone: "+14155550102"}
		who := consent.Identity{Kind: consent.Phone, Value: patient.Phone}
		msgID := ledger.NewID()
		if _, err := led.Create(ctx, msgID, ledger.Request{Tenant: "clinic-a", Channel: "sms", To: patient, Body: "Reply 1 if safe, 2 if you need help",
			Priority: "crisis", Broadcast: "bc_flood:1", ExpectReply: &ledger.ExpectReply{Options: map[string]string{"1": "safe", "2": "need_help"}, Within: 72 * 3600}}); err != nil {
			t.Fatal(err)
		}
		handOver(t, led, msgID, "SM00000000000000000000000000000001")
		rdb.ZAdd(ctx, replies.PromptsKey(who), redis.Z{Score: float64(time.Now().Add(time.Hour).UnixMilli()), Member: "clinic-a " + msgID})
		rdb.Set(ctx, replies.LastKey(who), replies.LastValue("clinic-a", msgID), time.Hour)

		in := channels.InboundMessage{Channel: "sms", ProviderID: "SM00000000000000000000000000000002", From: patient, Body: "2",
			ReceivedAt: time.Now().UTC()}
		task, err := workers.NewInboundReplyTask(in)
		if err != nil {
			t.Fatal(err)
		}
		handler := &workers.InboundHandler{File: rcv.FileReply}
		fail.arm(n)
		firstErr := handler.ProcessTask(ctx, task)
		fail.arm(0)
		if firstErr != nil && !strings.Contains(firstErr.Error(), errInjected.Error()) { // asynq wraps it as text
			t.Fatalf("write %d: %v", n, firstErr)
		}
		if firstErr != nil {
			// Asynq runs the task again, and a provider may retry too.
			for range 2 {
				if err := handler.ProcessTask(ctx, task); err != nil {
					t.Fatalf("write %d: the task run again: %v", n, err)
				}
			}
		}

		feedEntries, err := feed.List(ctx, "clinic-a", "", 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(feedEntries) != 1 || feedEntries[0].Option != "need_help" || feedEntries[0].InReplyTo != msgID {
			t.Fatalf("dying after write %d: the feed %+v", n, feedEntries)
		}
		open, err := esc.Open(ctx, "clinic-a")
		if err != nil {
			t.Fatal(err)
		}
		if len(open) != 1 || len(pages) != 1 || len(open[0].Notified) != 1 {
			t.Fatalf("dying after write %d: %d escalations, pages %v", n, len(open), pages)
		}
		for _, a := range answers {
			if a != "bc_flood:1 need_help" {
				t.Fatalf("dying after write %d: the broadcast heard %q", n, answers)
			}
		}
		if len(answers) == 0 {
			t.Fatalf("dying after write %d: the broadcast never heard the answer", n)
		}
		tasks, err := insp.ListPendingTasks("gw:high")
		if err != nil {
			t.Fatal(err)
		}
		replyEvents := 0
		for _, tk := range tasks {
			if tk.Type == webhooks.TypeDeliver && strings.Contains(string(tk.Payload), `"message.reply"`) {
				replyEvents++
			}
		}
		if replyEvents != 1 {
			t.Fatalf("dying after write %d: %d message.reply events queued", n, replyEvents)
		}
		if firstErr == nil {
			t.Logf("filing an answer makes %d writes; it was stopped after each in turn", n-1)
			return
		}
	}
}

// TestAStatusReportReachesTheRosterWhenItComesAgain: the first delivery
// report reached the message, then the roster's update failed (Redis
// restarted); the provider's report of the same status, a duplicate for
// the message, still reaches the roster.
func TestAStatusReportReachesTheRosterWhenItComesAgain(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client()
	led := ledger.New(rdb, 24*time.Hour)
	id := ledger.NewID()
	if _, err := led.Create(ctx, id, ledger.Request{Tenant: "clinic-a", Channel: "sms", To: ledger.Recipient{Phone: "+14155550102"},
		Body: "x", Priority: "crisis", Broadcast: "bc_flood:1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := led.Claim(ctx, id, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := led.RecordAccepted(ctx, id, "sms", "SM1"); err != nil {
		t.Fatal(err)
	}
	var told []string
	down := true
	r := &inbound.Receiver{Redis: rdb, Ledger: led, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnStatus: func(_ context.Context, link, _ string, st ledger.Status) error {
			if down {
				return errors.New("the roster's Redis write failed")
			}
			told = append(told, link+" "+string(st))
			return nil
		}}
	u := ledger.ProviderUpdate{Channel: "sms", ProviderID: "SM1", Status: ledger.StatusDelivered}
	if _, err := r.ProviderStatus(ctx, "", u); err == nil {
		t.Fatal("the roster's failure was not reported to the provider")
	}
	down = false
	applied, err := r.ProviderStatus(ctx, "", u)
	if err != nil || applied != ledger.AppliedDuplicate {
		t.Fatalf("the report again: %v %v", applied, err)
	}
	if len(told) != 1 || told[0] != "bc_flood:1 delivered" {
		t.Fatalf("the roster was told %q", told)
	}
}
