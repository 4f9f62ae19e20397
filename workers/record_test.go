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
	task, err := NewSendTask(SendOptionsOf(id, req, 3, 0))
	if err != nil {
		t.Fatal(err)
	}

	err = h.ProcessTask(ctx, task)
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
	task, err = NewSendTask(SendOptionsOf(gone, req, 3, 0))
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(recordLate + time.Second)
	if err := h.ProcessTask(ctx, task); err != nil || p.sent.Load() != 1 {
		t.Fatalf("an old message without its record: %v, provider called %d times; want nil and no new send", err, p.sent.Load())
	}
}

// TestASendWhosePayloadLeavesOutItsMessageIDTakesItFromItsTaskID: the
// payload may leave out the message id, which the task's Asynq id is too
// (see SendPayload); run by Asynq, such a task sends its message.
// Outside Asynq nothing names the message, and nothing is sent.
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
	full, err := NewSendTask(SendOptionsOf(id, req, 3, 0))
	if err != nil {
		t.Fatal(err)
	}
	var payload SendPayload
	if err := json.Unmarshal(full.Payload(), &payload); err != nil || payload.MessageID != id {
		t.Fatalf("NewSendTask's payload %s: want the message id in it (workers of earlier versions need it)", full.Payload())
	}
	payload.MessageID = ""
	b, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	task := asynq.NewTask(full.Type(), b, asynq.TaskID(id), asynq.Queue(QueueFor(PriorityNormal)))

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
}
