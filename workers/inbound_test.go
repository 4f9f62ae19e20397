package workers

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/ledger"
)

func TestAnInboundReplyTaskCarriesTheMessageToTheHandler(t *testing.T) {
	in := channels.InboundMessage{Channel: "sms", ProviderID: "SM1", From: ledger.Recipient{Phone: "+14155550123"},
		Body: "feeling better", ReceivedAt: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)}
	task, err := NewInboundReplyTask(in)
	if err != nil {
		t.Fatal(err)
	}
	if task.Type() != TypeInboundReply {
		t.Fatalf("type %q", task.Type())
	}
	var got channels.InboundMessage
	h := &InboundHandler{File: func(_ context.Context, m channels.InboundMessage) error { got = m; return nil }}
	if err := h.ProcessTask(context.Background(), task); err != nil {
		t.Fatal(err)
	}
	if got.Body != in.Body || got.ProviderID != in.ProviderID || got.From != in.From || !got.ReceivedAt.Equal(in.ReceivedAt) {
		t.Fatalf("the handler got %+v", got)
	}
}

func TestABadInboundPayloadIsNotRetried(t *testing.T) {
	h := &InboundHandler{File: func(context.Context, channels.InboundMessage) error {
		t.Fatal("a bad payload must not be filed")
		return nil
	}}
	if err := h.ProcessTask(context.Background(), asynq.NewTask(TypeInboundReply, []byte("{"))); !errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("err %v, want SkipRetry", err)
	}
}
