package workers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/recordings"
)

// RecordingHandler downloads call recordings from the provider into the
// blob store and links them to their message.
type RecordingHandler struct {
	Ledger   *ledger.Ledger
	Channels *channels.Registry
	Store    *recordings.Store
	Logger   *slog.Logger
}

// ProcessTask implements asynq.Handler.
func (h *RecordingHandler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	var p FetchRecordingPayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil || p.MessageID == "" {
		return fmt.Errorf("bad recording payload: %w", asynq.SkipRetry)
	}
	log := h.Logger.With("msg_id", p.MessageID, "recording_sid", p.RecordingSID)
	m, err := h.Ledger.Get(ctx, "", p.MessageID)
	if errors.Is(err, ledger.ErrNotFound) {
		log.Warn("recording for a message that is gone; not kept")
		return nil
	}
	if err != nil {
		return err
	}
	if m.Recording != nil && m.Recording.SID == p.RecordingSID {
		return nil // stored before; the task was redelivered
	}
	if m.ErasedAt != nil {
		log.Info("recording for an erased recipient; not kept")
		return nil
	}
	ch, _ := h.Channels.Get(p.Channel)
	f, ok := ch.(channels.RecordingFetcher)
	if !ok {
		return fmt.Errorf("channel %q cannot fetch recordings: %w", p.Channel, asynq.SkipRetry)
	}
	body, contentType, err := f.FetchRecording(ctx, p.URL)
	if err != nil {
		log.Warn("recording download failed; will retry", "err", channels.AsSendError(err).Code)
		return err
	}
	defer body.Close()
	key := recordings.Key(m.Tenant, m.ID, p.RecordingSID, contentType)
	size, err := h.Store.Put(ctx, key, contentType, body)
	if err != nil {
		return fmt.Errorf("store recording: %w", err)
	}
	rec := ledger.Recording{SID: p.RecordingSID, Key: key, ContentType: contentType, Size: size, Duration: p.Duration, StoredAt: time.Now().UTC()}
	if err := h.Ledger.SetRecording(ctx, m.ID, rec); errors.Is(err, ledger.ErrErased) {
		// Erased while it was fetched: it is not kept.
		log.Info("recording for an erased recipient; not kept")
		return h.Store.Delete(context.WithoutCancel(ctx), key)
	} else if err != nil {
		return err
	}
	log.Info("recording stored", "bytes", size)
	return nil
}

// SweepRecordings deletes recordings older than retention every interval
// until ctx ends. Every worker process may run it: deletes are idempotent.
func SweepRecordings(ctx context.Context, store *recordings.Store, retentionOf func(tenant string) time.Duration, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		n, err := store.SweepEach(ctx, retentionOf, time.Now())
		if err != nil && ctx.Err() == nil {
			log.Warn("recording sweep failed", "err", err)
		} else if n > 0 {
			log.Info("recordings past their retention deleted", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
