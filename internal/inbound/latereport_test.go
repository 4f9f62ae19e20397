package inbound_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/workers"
)

// TestAReportBeforeItsProviderIDIsAppliedByALaterLook: a delivery report
// found no message (the send had not written the provider's id yet); a
// later look finds it and applies it; looks that never find one stop
// after the last delay.
func TestAReportBeforeItsProviderIDIsAppliedByALaterLook(t *testing.T) {
	r, q := newReceiver(t, "clinic-a")
	id := ledger.NewID()
	if _, err := r.Ledger.Create(ctx, id, ledger.Request{Tenant: "clinic-a", Channel: "wechat",
		To: ledger.Recipient{WeChatOpenID: "oLate000000000000000000001"}, Body: "复诊提醒"}); err != nil {
		t.Fatal(err)
	}
	u := ledger.ProviderUpdate{Channel: "wechat", ProviderID: "tmpl:4000000000000000077", Status: ledger.StatusDelivered, ProviderStatus: "success"}
	if applied, err := r.ProviderStatus(ctx, "", u); err != nil || applied != ledger.AppliedUnknown {
		t.Fatalf("the early report: %v %v", applied, err)
	}
	look := scheduledLate(t, q)
	if look.Try != 0 || look.Update != u {
		t.Fatalf("the queued look: %+v", look)
	}
	// The send writes the provider's id; the look finds the message.
	if _, err := r.Ledger.Claim(ctx, id, 0); err != nil {
		t.Fatal(err)
	}
	if err := r.Ledger.RecordAccepted(ctx, id, "wechat", u.ProviderID); err != nil {
		t.Fatal(err)
	}
	if err := r.LateReport(ctx, look); err != nil {
		t.Fatal(err)
	}
	if m, err := r.Ledger.Get(ctx, "", id); err != nil || m.Status != ledger.StatusDelivered {
		t.Fatalf("after the late look: %+v %v", m, err)
	}

	// A report of a message never sent here: looked for LateReportDelays times, then dropped.
	other := ledger.ProviderUpdate{Channel: "wechat", ProviderID: "tmpl:9", Status: ledger.StatusDelivered}
	p := workers.LateReport{Update: other, Try: len(workers.LateReportDelays) - 1}
	before := len(q.scheduled(t))
	if err := r.LateReport(ctx, p); err != nil {
		t.Fatal(err)
	}
	if n := len(q.scheduled(t)); n != before {
		t.Fatalf("a look after the last was queued (%d → %d tasks)", before, n)
	}
}

func (q *queue) scheduled(t *testing.T) []*asynq.TaskInfo {
	t.Helper()
	tasks, err := q.inspector.ListScheduledTasks(workers.QueueReplies)
	if err != nil && !errors.Is(err, asynq.ErrQueueNotFound) {
		t.Fatal(err)
	}
	return tasks
}

func scheduledLate(t *testing.T, q *queue) workers.LateReport {
	t.Helper()
	for _, ti := range q.scheduled(t) {
		if ti.Type == workers.TypeLateReport {
			var p workers.LateReport
			if err := json.Unmarshal(ti.Payload, &p); err != nil {
				t.Fatal(err)
			}
			return p
		}
	}
	t.Fatal("no late look queued")
	return workers.LateReport{}
}
