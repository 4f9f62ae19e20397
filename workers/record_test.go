package workers

import (
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

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
	task := sendTaskCarryingID(t, SendOptionsOf(id, req, 3, 0))

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
	task = sendTaskCarryingID(t, SendOptionsOf(gone, req, 3, 0))
	now = now.Add(recordLate + time.Second)
	if err := h.ProcessTask(ctx, task); err != nil || p.sent.Load() != 1 {
		t.Fatalf("an old message without its record: %v, provider called %d times; want nil and no new send", err, p.sent.Load())
	}
}
