package workers

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/patientmsg/gateway/channels"
)

// TypeInboundReply is the task that files a patient's answer: matching it
// to the question it answers, the reply feed, the clinic webhook and the
// urgent-reply check run in the workers, off the provider's webhook.
const TypeInboundReply = "inbound:reply"

// NewInboundReplyTask builds the task that files an answer. Its payload is
// the inbound message; its Asynq task id is derived from the provider id,
// so a provider's retry queues it once. It goes to a queue of its own
// (QueueReplies), served by a pool no send uses: an answer ("need help")
// must not wait behind a bulk backlog, nor behind a crisis broadcast's own
// messages.
func NewInboundReplyTask(in channels.InboundMessage) (*asynq.Task, error) {
	b, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	return asynq.NewTask(TypeInboundReply, b, asynq.TaskID("in:"+in.Channel+":"+in.ProviderID),
		asynq.Queue(QueueReplies), asynq.MaxRetry(25), asynq.Timeout(time.Minute)), nil
}

// InboundHandler runs TypeInboundReply tasks: it decodes the answer and
// hands it to File (package inbound's Receiver.FileReply).
type InboundHandler struct {
	File func(ctx context.Context, in channels.InboundMessage) error
}

// ProcessTask implements asynq.Handler.
func (h *InboundHandler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	var in channels.InboundMessage
	if err := json.Unmarshal(t.Payload(), &in); err != nil {
		return fmt.Errorf("bad inbound payload: %w", asynq.SkipRetry)
	}
	return h.File(ctx, in)
}
