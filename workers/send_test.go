package workers

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/patientmsg/gateway/channels"
)

func TestRetryDelay(t *testing.T) {
	cases := []struct {
		name     string
		n        int
		err      error
		min, max time.Duration
	}{
		{"the provider's Retry-After wins", 0,
			&channels.SendError{Class: channels.Throttled, RetryAfter: 30 * time.Second}, 30 * time.Second, 30 * time.Second},
		{"the delay the handler recorded is the one used", 5,
			&retryError{SendError: &channels.SendError{Class: channels.Retryable}, after: 1500 * time.Millisecond}, 1500 * time.Millisecond, 1500 * time.Millisecond},
		{"a wait for an unconfirmed attempt uses the remaining grace, to the next whole second", 3, &waitError{after: 45 * time.Second}, 45 * time.Second, 46 * time.Second},
		{"a short rate-limit wait ends at the next whole second", 0, &waitError{after: 300 * time.Millisecond}, 300 * time.Millisecond, time.Second + 300*time.Millisecond},
		{"a first retry backs off 1-2 s", 0, &channels.SendError{Class: channels.Retryable}, time.Second, 2 * time.Second},
		{"a fourth retry backs off 8-16 s", 3, &channels.SendError{Class: channels.Retryable}, 8 * time.Second, 16 * time.Second},
		{"backoff is capped at 10 minutes", 30, &channels.SendError{Class: channels.Retryable}, 5 * time.Minute, 10 * time.Minute},
		{"an unclassified error backs off too", 0, errors.New("boom"), time.Second, 2 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for i := 0; i < 50; i++ {
				d := RetryDelay(c.n, c.err, nil)
				if d < c.min || d > c.max {
					t.Fatalf("RetryDelay = %s, want within [%s, %s]", d, c.min, c.max)
				}
			}
		})
	}
}

func TestRetriesAimAtWholeSeconds(t *testing.T) {
	base := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	if got := ceilSecond(base.Add(1200 * time.Millisecond)); !got.Equal(base.Add(2 * time.Second)) {
		t.Fatalf("ceil = %s", got)
	}
	if got := ceilSecond(base.Add(3 * time.Second)); !got.Equal(base.Add(3 * time.Second)) {
		t.Fatalf("a whole second must stay: %s", got)
	}
}

func TestWaitingForACallbackIsNotAFailedAttempt(t *testing.T) {
	if IsFailure(&waitError{after: time.Second}) {
		t.Fatal("a wait must not count as a failure")
	}
	if !IsFailure(&channels.SendError{Class: channels.Retryable}) {
		t.Fatal("a send error is a failure")
	}
}

func TestASendTaskCarriesTheTraceParentOfWhatQueuedItAndOldPayloadsStillDecode(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	task, err := NewSendTask(SendOptions{MessageID: "01JD", Channel: "sms", Priority: PriorityNormal, TraceParent: tp})
	if err != nil {
		t.Fatal(err)
	}
	if string(task.Payload()) != `{"tp":"`+tp+`"}` {
		t.Fatalf("payload %s", task.Payload())
	}
	var old SendPayload
	if err := json.Unmarshal([]byte(`{"id":"01JD","t":"clinic-a","p":"normal"}`), &old); err != nil || old.MessageID != "01JD" || old.TraceParent != "" {
		t.Fatalf("a payload queued before tracing: %+v, %v", old, err)
	}
}

func TestSendTaskIsKeyedByMessageAndQueuedByPriority(t *testing.T) {
	at := time.Now().Add(time.Hour)
	task, err := NewSendTask(SendOptions{MessageID: "01JD", Channel: "sms", Priority: PriorityCrisis, SendAt: at, MaxAttempts: 3,
		Tenant: "clinic-a", Cost: 2, Quiet: "21:00-08:00", Zone: "Asia/Shanghai"})
	if err != nil {
		t.Fatal(err)
	}
	// The payload carries what pacing and quiet hours need, never the
	// recipient or the body; not what the task id says (the message id),
	// nor what the queue says (the priority), nor a cost of 1.
	if task.Type() != "send:sms" || string(task.Payload()) != `{"t":"clinic-a","c":2,"q":"21:00-08:00","z":"Asia/Shanghai"}` {
		t.Fatalf("task %s %s", task.Type(), task.Payload())
	}
	if one, _ := NewSendTask(SendOptions{MessageID: "01JD", Channel: "sms", Priority: PriorityNormal, Cost: 1}); string(one.Payload()) != `{}` {
		t.Fatalf("a task costing 1: %s", one.Payload())
	}
	if _, err := NewSendTask(SendOptions{Channel: "sms"}); err == nil {
		t.Fatal("a task without a message id must be refused")
	}
	if QueueFor(PriorityCrisis) != "gw:crisis" {
		t.Fatal(QueueFor(PriorityCrisis))
	}
	for _, p := range Priorities[1:] {
		if weightedQueues[QueueFor(p)] == 0 {
			t.Fatalf("priority %s has no queue weight", p)
		}
	}
	if _, shared := weightedQueues[QueueFor(PriorityCrisis)]; shared {
		t.Fatal("crisis has a pool of its own")
	}
	if weightedQueues[QueueFor(PriorityHigh)] <= weightedQueues[QueueFor(PriorityNormal)] ||
		weightedQueues[QueueFor(PriorityNormal)] <= weightedQueues[QueueFor(PriorityBulk)] {
		t.Fatalf("weights must fall with priority: %v", weightedQueues)
	}
	var _ asynq.Handler = (*SendHandler)(nil)
}

func TestAMessageLeavesItsBacklogOnlyWhenItsTaskIsDone(t *testing.T) {
	retryable := &channels.SendError{Class: channels.Retryable}
	cases := []struct {
		name           string
		err            error
		retried, most  int
		leavesTheQueue bool
	}{
		{"sent, or already final, accepted or gone", nil, 0, 28, true},
		{"a permanent failure", fmt.Errorf("%w: %w", &channels.SendError{Class: channels.Permanent}, asynq.SkipRetry), 0, 28, true},
		{"attempts exhausted", fmt.Errorf("attempts exhausted: %w", asynq.SkipRetry), 3, 28, true},
		{"a failed attempt to be retried", &retryError{SendError: retryable, after: time.Second}, 0, 28, false},
		{"the same, retried again", &retryError{SendError: retryable, after: time.Second}, 5, 28, false},
		{"Redis trouble, retried", errors.New("ledger claim: connection refused"), 2, 28, false},
		{"Redis trouble on the last retry: Asynq archives the task", errors.New("ledger claim: connection refused"), 28, 28, true},
		{"waiting for the sender", &waitError{reason: "sender rate", after: time.Second}, 0, 28, false},
		{"waiting for a provider's callback, even after the last retry", &waitError{reason: "unconfirmed", after: time.Minute}, 28, 28, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := leavesQueue(tc.err, tc.retried, tc.most); got != tc.leavesTheQueue {
				t.Fatalf("leavesQueue = %v, want %v", got, tc.leavesTheQueue)
			}
		})
	}
}
