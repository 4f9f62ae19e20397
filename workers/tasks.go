// Package workers holds the Asynq task types and their handlers: one send
// task per channel ("send:sms"), queues per priority, retry policy, and the
// worker server that runs them.
package workers

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/ledger"
)

// Priorities, highest first.
const (
	PriorityCrisis = "crisis"
	PriorityHigh   = "high"
	PriorityNormal = "normal"
	PriorityBulk   = "bulk"
)

// Priorities lists the valid priorities, highest first.
var Priorities = []string{PriorityCrisis, PriorityHigh, PriorityNormal, PriorityBulk}

// QueueFor names the Asynq queue of a priority.
func QueueFor(priority string) string { return "gw:" + priority }

// priorityOf is the priority of the queue of the task being run ("" out
// of a task).
func priorityOf(ctx context.Context) string {
	q, ok := asynq.GetQueueName(ctx)
	if !ok {
		return ""
	}
	return strings.TrimPrefix(q, "gw:")
}

// weightedQueues are served by the main pool; crisis has a pool of its own
// (see Server). Asynq probes queues one Redis call at a time in weighted
// random order, so leaving the usually empty crisis queue out of the main
// pool saves a round trip per message.
var weightedQueues = map[string]int{
	QueueFor(PriorityHigh):   6,
	QueueFor(PriorityNormal): 3,
	QueueFor(PriorityBulk):   1,
}

// TypeSendPrefix starts every send task type: "send:" + channel name.
const TypeSendPrefix = "send:"

// TypeSend returns the task type that sends over a channel, e.g. "send:sms".
func TypeSend(channel string) string { return TypeSendPrefix + channel }

// SendPayload is the task payload: the message id plus what the worker
// needs to pace and time the send without reading the record first (the
// tenant, priority, cost in sender capacity, quiet window and recipient
// zone). The ledger holds the message itself, so a queued task costs little
// Redis memory and carries no personal data.
type SendPayload struct {
	// MessageID is the message's id, which the task's Asynq id is too (see
	// NewSendTask), so NewSendTask leaves it out and a worker takes it from
	// the task id. Tasks queued by earlier versions carry it.
	MessageID string `json:"id,omitempty"`
	Tenant    string `json:"t,omitempty"`
	// Priority is the task's queue's (QueueFor); tasks queued before it
	// was left out carry it.
	Priority string `json:"p,omitempty"`
	// Cost is what the send takes from its sender's rate: SMS segments, else
	// 1 (0 stands for 1).
	Cost int `json:"c,omitempty"`
	// Quiet is the quiet window ("21:00-08:00") to respect in Zone, the
	// recipient's IANA time zone; empty when none applies (crisis).
	Quiet string `json:"q,omitempty"`
	Zone  string `json:"z,omitempty"`
	// Broadcast links a broadcast's message to its person ("bc_…:index").
	// Such a message's ledger record is written when its turn comes (see
	// SendHandler.RecordBroadcast).
	Broadcast string `json:"bc,omitempty"`
	// TraceParent is the W3C traceparent of the span that queued the
	// send (the API request's), so the worker's span joins its trace;
	// empty with tracing off.
	TraceParent string `json:"tp,omitempty"`
	// Consent names the recipient's consent state (its consent.Digest in
	// unpadded base64url, no address), so the worker reads it in the round
	// trip that claims the message; empty in tasks queued before it was
	// carried.
	Consent string `json:"ck,omitempty"`
}

// asynqRetryMargin lets a task outlive Redis outages or ledger errors that
// are not provider attempts.
const asynqRetryMargin = 20

// SendOptions describes how to queue a send.
type SendOptions struct {
	MessageID   string
	Channel     string
	Priority    string
	SendAt      time.Time // zero: now
	MaxAttempts int
	// Timeout bounds one attempt (the provider call plus ledger writes).
	Timeout time.Duration
	// Tenant, Cost, Quiet, Zone, Broadcast, TraceParent and Consent go
	// into the payload (see SendPayload).
	Tenant      string
	Cost        int
	Quiet       string
	Zone        string
	Broadcast   string
	TraceParent string
	Consent     string
}

// SendOptionsOf describes the send of a ledger record.
func SendOptionsOf(id string, req ledger.Request, maxAttempts int, timeout time.Duration) SendOptions {
	o := SendOptions{MessageID: id, Channel: req.Channel, Priority: req.Priority, MaxAttempts: maxAttempts,
		Timeout: timeout, Tenant: req.Tenant, Cost: max(req.Segments, 1), Quiet: req.QuietHours, Zone: req.TimeZone,
		Broadcast: req.Broadcast}
	if id := IdentityOf(req.Channel, req.To); id.Valid() {
		o.Consent = consentRef(consent.Digest(id))
	}
	if req.SendAt != nil {
		o.SendAt = *req.SendAt
	}
	return o
}

// consentRef is a consent.Digest (hex) as a send task carries it: in
// base64url, ten bytes shorter for each queued message.
func consentRef(digest string) string {
	b, err := hex.DecodeString(digest)
	if err != nil {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// consentDigest is the consent.Digest a send task's consentRef names.
func consentDigest(ref string) (string, bool) {
	b, err := base64.RawURLEncoding.DecodeString(ref)
	if err != nil || len(b) != 16 {
		return "", false
	}
	return hex.EncodeToString(b), true
}

// NewSendTask builds the task for a message; its Asynq task id is the
// message id, so a message can never be queued twice.
func NewSendTask(o SendOptions) (*asynq.Task, error) {
	if o.MessageID == "" || o.Channel == "" {
		return nil, fmt.Errorf("workers: message id and channel are required")
	}
	// The payload leaves out what the task's id says (the message id), what
	// its queue says (its priority) and the usual cost of 1: every byte
	// counts for each queued message.
	cost := o.Cost
	if cost == 1 {
		cost = 0
	}
	payload, err := json.Marshal(SendPayload{Tenant: o.Tenant,
		Cost: cost, Quiet: o.Quiet, Zone: o.Zone, Broadcast: o.Broadcast, TraceParent: o.TraceParent, Consent: o.Consent})
	if err != nil {
		return nil, err
	}
	opts := []asynq.Option{
		asynq.TaskID(o.MessageID),
		asynq.Queue(QueueFor(o.Priority)),
		// The attempt budget is enforced by the handler from the ledger; Asynq's
		// retries also cover waits for callbacks and Redis outages.
		asynq.MaxRetry(o.MaxAttempts + asynqRetryMargin),
	}
	if o.Timeout > 0 {
		opts = append(opts, asynq.Timeout(o.Timeout))
	}
	if !o.SendAt.IsZero() && o.SendAt.After(time.Now()) {
		opts = append(opts, asynq.ProcessAt(o.SendAt))
	}
	return asynq.NewTask(TypeSend(o.Channel), payload, opts...), nil
}

// TypeFetchRecording downloads a call recording into the blob store.
const TypeFetchRecording = "recording:fetch"

// FetchRecordingPayload says which recording to fetch for which message.
type FetchRecordingPayload struct {
	MessageID    string `json:"id"`
	Channel      string `json:"channel"`
	RecordingSID string `json:"recording_sid"`
	URL          string `json:"url"`
	Duration     int    `json:"duration,omitempty"`
}

// NewFetchRecordingTask builds the task; its id is derived from the
// recording, so a repeated provider callback queues it once.
func NewFetchRecordingTask(p FetchRecordingPayload) (*asynq.Task, error) {
	if p.MessageID == "" || p.RecordingSID == "" || p.URL == "" {
		return nil, fmt.Errorf("workers: message id, recording sid and url are required")
	}
	payload, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return asynq.NewTask(TypeFetchRecording, payload, asynq.TaskID("rec:"+p.RecordingSID),
		asynq.Queue(QueueFor(PriorityHigh)), asynq.MaxRetry(10), asynq.Timeout(5*time.Minute)), nil
}
