package messaging_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/autopipe"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/messaging"
	"github.com/patientmsg/gateway/internal/redistest"
)

// sms is a channel that only has a name: messages are queued, not sent.
type sms struct{}

func (sms) Name() string { return "sms" }
func (sms) Send(context.Context, channels.Message) (channels.Result, error) {
	return channels.Result{}, nil
}

// TestAMessageIsWrittenAndQueuedInOneRoundTripTheRecordFirst: on the
// batching client the service runs on, a new message's record and its
// send task reach Redis in one pipeline, the record's script before the
// task's.
func TestAMessageIsWrittenAndQueuedInOneRoundTripTheRecordFirst(t *testing.T) {
	ctx := t.Context()
	raw := redistest.Start(t).Client()
	trips := &redistest.Trips{}
	raw.AddHook(trips)
	hot := autopipe.New(raw, autopipe.Options{})
	t.Cleanup(func() { _ = hot.Close() })
	s := &messaging.Service{Ledger: ledger.New(hot, time.Hour), Queue: asynq.NewClientFromRedisClient(hot),
		Channels: channels.NewRegistry(sms{}), Now: time.Now}
	accept := func() string {
		phone, body := "+14155550100", "Your results are ready."
		a, err := s.Accept(ctx, "clinic-a", &messaging.Draft{Channel: "sms", To: &messaging.To{Phone: &phone}, Body: &body}, messaging.Idempotency{})
		if err != nil {
			t.Fatal(err)
		}
		return a.ID
	}
	accept() // loads the scripts and names the queue
	trips.Take()

	id := accept()
	var found bool
	for _, trip := range trips.Take() {
		at := func(key string) int {
			return slices.IndexFunc(trip, func(c redis.Cmder) bool {
				return c.Name() == "evalsha" && len(c.Args()) > 3 && c.Args()[3] == key
			})
		}
		rec, task := at("gw:m:{"+id+"}"), at("asynq:{gw:normal}:t:"+id)
		if rec >= 0 || task >= 0 {
			if rec < 0 || task < 0 || rec > task {
				t.Fatalf("a round trip held the record's script at %d and the task's at %d: want both, the record first", rec, task)
			}
			found = true
		}
	}
	if !found {
		t.Fatal("no round trip wrote the message's record")
	}
}
