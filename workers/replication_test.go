package workers

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/redistest"
	"github.com/patientmsg/gateway/internal/replication"
)

// fence fails its failAt-th wait, as during a failover.
type fence struct {
	failAt int32
	waits  atomic.Int32
}

func (f *fence) Begin() replication.Epoch { return 7 }

func (f *fence) Wait(_ context.Context, began replication.Epoch) error {
	if began != 7 {
		return errors.New("the unit did not begin")
	}
	if f.waits.Add(1) == f.failAt {
		return &replication.NotReplicatedError{Want: 1}
	}
	return nil
}

// provider counts the messages it was given.
type provider struct {
	sent atomic.Int32
	err  error
}

func (p *provider) Name() string { return "sms" }
func (p *provider) Send(context.Context, channels.Message) (channels.Result, error) {
	p.sent.Add(1)
	if p.err != nil {
		return channels.Result{}, p.err
	}
	return channels.Result{ProviderID: "SM0123456789abcdef0123456789abcdef"}, nil
}

func TestASendWaitsForItsWritesToReachTheReplicas(t *testing.T) {
	permanent := &channels.SendError{Class: channels.Permanent, Code: "21211", Message: "invalid number"}
	cases := []struct {
		name string
		// failAt is which wait of the fence fails: 1 the claim's, 2 the answer's.
		failAt   int32
		provider error
		// sent is how often the provider is called over both runs of the task.
		sent     int32
		attempts int
		status   ledger.Status
	}{
		{"a claim not on the replicas calls no provider and costs no attempt", 1, nil, 1, 1, ledger.StatusSent},
		{"an acceptance not on the replicas runs the task again, which sends nothing more", 2, nil, 1, 1, ledger.StatusSent},
		{"a permanent failure not on the replicas runs the task again, which sends nothing more", 2, permanent, 1, 1, ledger.StatusFailed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := ledger.New(redistest.Start(t).Client(), time.Hour)
			id := ledger.NewID()
			if _, err := l.Create(t.Context(), id, ledger.Request{Tenant: "clinic-a", Channel: "sms",
				To: ledger.Recipient{Phone: "+14155550100"}, Body: "hi", Priority: PriorityNormal}); err != nil {
				t.Fatal(err)
			}
			p := &provider{err: tc.provider}
			f := &fence{failAt: tc.failAt}
			h := &SendHandler{Ledger: l, Channels: channels.NewRegistry(p), Grace: time.Hour, MaxAttempts: 3,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Fence: f}
			task := outsideAsynq(t, SendOptions{MessageID: id, Channel: "sms", Priority: PriorityNormal, MaxAttempts: 3})
			err := h.ProcessTask(t.Context(), task)
			var we *waitError
			if !errors.As(err, &we) || IsFailure(err) || we.after != ReplicationWait {
				t.Fatalf("first run: %v, want a wait for the store that is not a failure", err)
			}
			if err := h.ProcessTask(t.Context(), task); err != nil && !errors.Is(err, asynq.SkipRetry) {
				t.Fatalf("second run: %v", err)
			}
			m, err := l.Get(t.Context(), "", id)
			if err != nil {
				t.Fatal(err)
			}
			if p.sent.Load() != tc.sent || m.Attempts != tc.attempts || m.Status != tc.status {
				t.Fatalf("provider called %d times; record %s after %d attempts", p.sent.Load(), m.Status, m.Attempts)
			}
			if given := hasDetail(m, "the claim could not be confirmed on the store's replicas"); given != (tc.failAt == 1) {
				t.Fatalf("the history says the attempt was given back: %v", given)
			}
			if f.waits.Load() < 2 {
				t.Fatalf("the fence was asked %d times", f.waits.Load())
			}
		})
	}
}

func hasDetail(m *ledger.Message, part string) bool {
	for _, e := range m.Events {
		if strings.Contains(e.Detail, part) {
			return true
		}
	}
	return false
}
