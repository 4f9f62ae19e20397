package workers

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/hibiken/asynq"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/ledger"
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
// hands it to File (package inbound's Receiver.FileReply); and
// TypeLateReport tasks, handed to Late (Receiver.LateReport).
type InboundHandler struct {
	File func(ctx context.Context, in channels.InboundMessage) error
	Late func(ctx context.Context, p LateReport) error
}

// ProcessTask implements asynq.Handler.
func (h *InboundHandler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	if t.Type() == TypeLateReport {
		if h.Late == nil {
			return fmt.Errorf("no late report handler: %w", asynq.SkipRetry)
		}
		return (&Timer[LateReport]{Fire: h.Late}).ProcessTask(ctx, t)
	}
	var in channels.InboundMessage
	if err := json.Unmarshal(t.Payload(), &in); err != nil {
		return fmt.Errorf("bad inbound payload: %w", asynq.SkipRetry)
	}
	return h.File(ctx, in)
}

// TypeLateReport is the task that applies a provider's delivery report
// that arrived before the send recorded the provider's id (WeChat pushes
// a template message's TEMPLATESENDJOBFINISH as soon as it is delivered,
// which can be before the worker that sent it has written its msgid). It
// runs on QueueReplies, after LateReportDelays.
const TypeLateReport = "inbound:late-report"

// LateReportDelays are the waits before each look for the report's
// message; past the last, the report is of a message the gateway does not
// know (another sender on the account) and is dropped.
var LateReportDelays = []time.Duration{2 * time.Second, 10 * time.Second, time.Minute}

// LateReport is a provider's report waiting for its message; Try counts
// the looks made.
type LateReport struct {
	Update ledger.ProviderUpdate `json:"u"`
	Try    int                   `json:"n"`
}

// NewLateReportTask builds the task of look p.Try, due after
// LateReportDelays[p.Try]; its task id makes each look queued once.
func NewLateReportTask(p LateReport) (*asynq.Task, error) {
	if p.Try < 0 || p.Try >= len(LateReportDelays) || p.Update.ProviderID == "" {
		return nil, fmt.Errorf("workers: no late report look %d", p.Try)
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return asynq.NewTask(TypeLateReport, b,
		asynq.TaskID("late:"+p.Update.Channel+":"+p.Update.ProviderID+":"+string(p.Update.Status)+":"+strconv.Itoa(p.Try)),
		asynq.Queue(QueueReplies), asynq.ProcessIn(LateReportDelays[p.Try]), asynq.MaxRetry(10), asynq.Timeout(time.Minute)), nil
}
