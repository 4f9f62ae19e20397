package workers

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/redistest"
)

// TestASendWaitsForTheRecordOfAYoungMessageOnly: a send task may, on a
// rare path, reach a worker before its record is written (see
// ledger.CreateAhead). A task whose message was made less than a minute
// ago waits for its record, sending nothing, and sends once it is there;
// an older one whose record is gone (expired, erased) ends.
func TestASendWaitsForTheRecordOfAYoungMessageOnly(t *testing.T) {
	ctx := t.Context()
	rdb := redistest.Start(t).Client()
	l := ledger.New(rdb, time.Hour)
	p := &provider{}
	now := time.Now()
	h := &SendHandler{Ledger: l, Channels: channels.NewRegistry(p), Grace: time.Hour, MaxAttempts: 3,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: func() time.Time { return now }}
	req := ledger.Request{Tenant: "clinic-a", Channel: "sms", To: ledger.Recipient{Phone: "+14155550100"}, Body: "hi", Priority: PriorityNormal}
	id := ledger.NewID()
	task := outsideAsynq(t, SendOptionsOf(id, req, 3, 0))

	err := h.ProcessTask(ctx, task)
	var we *waitError
	if !errors.As(err, &we) || we.after != time.Second || p.sent.Load() != 0 {
		t.Fatalf("a young message without its record: %v, provider called %d times; want a 1s wait and no call", err, p.sent.Load())
	}
	if leavesQueue(err, 0, 3) {
		t.Fatal("the waiting task would leave its tenant's backlog")
	}
	if _, err := l.Create(ctx, id, req); err != nil {
		t.Fatal(err)
	}
	if err := h.ProcessTask(ctx, task); err != nil || p.sent.Load() != 1 {
		t.Fatalf("once the record is there: %v, provider called %d times; want one send", err, p.sent.Load())
	}

	// A minute on, a task whose record is gone ends without a send.
	gone := ledger.NewID()
	task = outsideAsynq(t, SendOptionsOf(gone, req, 3, 0))
	now = now.Add(recordLate + time.Second)
	if err := h.ProcessTask(ctx, task); err != nil || p.sent.Load() != 1 {
		t.Fatalf("an old message without its record: %v, provider called %d times; want nil and no new send", err, p.sent.Load())
	}
}

// TestASendWhosePayloadLeavesOutItsMessageIDTakesItFromItsTaskID: the
// payload leaves out the message id, which the task's Asynq id is (see
// SendPayload); run by Asynq, such a task sends its message. Outside Asynq
// nothing names the message, and nothing is sent. A task of an earlier
// version, whose payload names its message, still sends it.
func TestASendWhosePayloadLeavesOutItsMessageIDTakesItFromItsTaskID(t *testing.T) {
	ctx := t.Context()
	rdb := redistest.Start(t).Client()
	l := ledger.New(rdb, time.Hour)
	p := &provider{}
	h := &SendHandler{Ledger: l, Channels: channels.NewRegistry(p), Grace: time.Hour, MaxAttempts: 3, Logger: quietLogger()}
	req := ledger.Request{Tenant: "clinic-a", Channel: "sms", To: ledger.Recipient{Phone: "+14155550100"}, Body: "hi", Priority: PriorityNormal}
	id := ledger.NewID()
	if _, err := l.Create(ctx, id, req); err != nil {
		t.Fatal(err)
	}
	task, err := NewSendTask(SendOptionsOf(id, req, 3, 0))
	if err != nil {
		t.Fatal(err)
	}
	var payload SendPayload
	if err := json.Unmarshal(task.Payload(), &payload); err != nil || payload.MessageID != "" {
		t.Fatalf("NewSendTask's payload %s: want no message id in it (the task id is the message id)", task.Payload())
	}

	if err := h.ProcessTask(ctx, task); !errors.Is(err, asynq.SkipRetry) || p.sent.Load() != 0 {
		t.Fatalf("outside Asynq: %v, provider called %d times; want SkipRetry and no call", err, p.sent.Load())
	}

	if _, err := asynq.NewClientFromRedisClient(rdb).EnqueueContext(ctx, task); err != nil {
		t.Fatal(err)
	}
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{Concurrency: 1, Queues: map[string]int{QueueFor(PriorityNormal): 1},
		Logger: asynqLogger{quietLogger()}})
	if err := srv.Start(h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		m, err := l.Get(ctx, "", id)
		if err != nil {
			t.Fatal(err)
		}
		if m.Status == ledger.StatusSent {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the message is %s after 10 s; want sent", m.Status)
		}
	}
	if n := p.sent.Load(); n != 1 {
		t.Fatalf("provider called %d times; want 1", n)
	}

	earlier := ledger.NewID()
	if _, err := l.Create(ctx, earlier, req); err != nil {
		t.Fatal(err)
	}
	if err := h.ProcessTask(ctx, outsideAsynq(t, SendOptionsOf(earlier, req, 3, 0))); err != nil || p.sent.Load() != 2 {
		t.Fatalf("an earlier version's task: %v, provider called %d times; want its message sent", err, p.sent.Load())
	}
}

// outsideAsynq is the send task of o as a test hands it to ProcessTask
// directly: no Asynq task id in the context names its message, so its
// payload does, as the tasks of earlier versions did.
func outsideAsynq(t testing.TB, o SendOptions) *asynq.Task {
	t.Helper()
	task, err := NewSendTask(o)
	if err != nil {
		t.Fatal(err)
	}
	var p SendPayload
	if err := json.Unmarshal(task.Payload(), &p); err != nil {
		t.Fatal(err)
	}
	p.MessageID = o.MessageID
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return asynq.NewTask(task.Type(), b)
}
