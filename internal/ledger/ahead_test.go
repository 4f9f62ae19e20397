package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/autopipe"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/redistest"
)

// describe is each command of a round trip by name and first key.
func describe(trips [][]redis.Cmder) [][]string {
	var out [][]string
	for _, cmds := range trips {
		var trip []string
		for _, c := range cmds {
			args := c.Args()
			switch c.Name() {
			case "evalsha", "eval":
				trip = append(trip, fmt.Sprint(c.Name(), " ", args[3]))
			default:
				trip = append(trip, fmt.Sprint(args[:min(len(args), 2)]...))
			}
		}
		out = append(out, trip)
	}
	return out
}

// index is where the first entry of trip starting with prefix is, or -1.
func index(trip []string, prefix string) int {
	return slices.IndexFunc(trip, func(s string) bool { return strings.HasPrefix(s, prefix) })
}

func TestARecordAndItsTaskGoInOneRoundTripTheRecordFirst(t *testing.T) {
	srv := redistest.Start(t)
	raw := srv.Client()
	w := &redistest.Trips{}
	raw.AddHook(w)
	batched := autopipe.New(raw, autopipe.Options{Flushers: 1})
	t.Cleanup(func() { _ = batched.Close() })
	l := ledger.New(batched, 24*time.Hour)
	q := asynq.NewClientFromRedisClient(batched)
	req := ledger.Request{Tenant: "clinic-a", Channel: "sms", To: ledger.Recipient{Phone: "+14155550100"}, Body: "hi", Priority: "normal"}
	enqueue := func(id string) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := q.EnqueueContext(ctx, asynq.NewTask("send:sms", []byte("{}"), asynq.TaskID(id), asynq.Queue("gw:normal")))
			return err
		}
	}
	// Asynq names its queue in a set once per client, and each script is
	// loaded on its first run: out of the way.
	if err := enqueue("warm-up")(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Create(ctx, ledger.NewID(), req); err != nil {
		t.Fatal(err)
	}
	w.Take()

	id := ledger.NewID()
	created, err := l.CreateAhead(ctx, id, req, enqueue(id))
	if err != nil || !created {
		t.Fatalf("CreateAhead = %v, %v", created, err)
	}
	trips := describe(w.Take())
	if len(trips) != 1 {
		t.Fatalf("round trips: %q; want one", trips)
	}
	rec, task := index(trips[0], "evalsha gw:m:{"+id), index(trips[0], "evalsha asynq:{gw:normal}:t:"+id)
	if rec < 0 || task < 0 || rec > task {
		t.Fatalf("the round trip %q: want the record's script (at %d) before the task's (at %d)", trips[0], rec, task)
	}
	if m, err := l.Get(ctx, "clinic-a", id); err != nil || m.Status != ledger.StatusQueued {
		t.Fatalf("record: %v, %v", m, err)
	}
	w.Take()

	// The task fails before it reaches Redis: no record.
	lost := ledger.NewID()
	refused := errors.New("refused before Redis")
	if _, err := l.CreateAhead(ctx, lost, req, func(context.Context) error { return refused }); !errors.Is(err, refused) {
		t.Fatalf("CreateAhead = %v; want the task's error", err)
	}
	if _, err := l.Get(ctx, "clinic-a", lost); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("a record was written for a task that never reached Redis: %v", err)
	}
	if trips := describe(w.Take()); len(trips) != 1 || index(trips[0], "evalsha") >= 0 {
		t.Fatalf("round trips: %q; want only the read", trips)
	}

	// The task fails at Redis: the record went with it, for the caller to
	// remove.
	twin := ledger.NewID()
	if _, err := l.CreateAhead(ctx, twin, req, enqueue(id)); !errors.Is(err, asynq.ErrTaskIDConflict) {
		t.Fatalf("CreateAhead = %v; want the task's conflict", err)
	}
	if _, err := l.Get(ctx, "clinic-a", twin); err != nil {
		t.Fatalf("the record that went with the task: %v", err)
	}

	// A new ledger (a new process) writes its first record on its own, the
	// task after it: Redis may lack the record's script, which would then
	// run again behind the task. Its second goes with the task.
	fresh := ledger.New(batched, 24*time.Hour)
	w.Take()
	for i, want := range []int{2, 1} {
		id := ledger.NewID()
		if _, err := fresh.CreateAhead(ctx, id, req, enqueue(id)); err != nil {
			t.Fatal(err)
		}
		trips := describe(w.Take())
		rec, task := index(trips[0], "evalsha gw:m:{"+id), index(trips[len(trips)-1], "evalsha asynq:{gw:normal}:t:"+id)
		if len(trips) != want || rec < 0 || task < 0 {
			t.Fatalf("a new ledger's record %d: round trips %q; want %d, the record's first", i+1, trips, want)
		}
	}

	// Redis forgot the scripts (a restart, a failover): both are written.
	if err := raw.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	again := ledger.NewID()
	if created, err := l.CreateAhead(ctx, again, req, enqueue(again)); err != nil || !created {
		t.Fatalf("CreateAhead after SCRIPT FLUSH = %v, %v", created, err)
	}
	if _, err := l.Get(ctx, "clinic-a", again); err != nil {
		t.Fatal(err)
	}
	if n, err := raw.Exists(ctx, "asynq:{gw:normal}:t:"+again).Result(); err != nil || n != 1 {
		t.Fatalf("task after SCRIPT FLUSH: %d, %v", n, err)
	}

	// A ledger on a client that batches nothing writes the record, then
	// the task, in a round trip each.
	plain := ledger.New(raw, 24*time.Hour)
	w.Take()
	apart := ledger.NewID()
	qraw := asynq.NewClientFromRedisClient(raw)
	if _, err := qraw.Enqueue(asynq.NewTask("send:sms", []byte("{}"), asynq.Queue("gw:normal"))); err != nil {
		t.Fatal(err)
	}
	w.Take()
	if _, err := plain.CreateAhead(ctx, apart, req, func(ctx context.Context) error {
		_, err := qraw.EnqueueContext(ctx, asynq.NewTask("send:sms", []byte("{}"), asynq.TaskID(apart), asynq.Queue("gw:normal")))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	trips = describe(w.Take())
	if len(trips) != 2 || index(trips[0], "evalsha gw:m:{"+apart) < 0 || index(trips[1], "evalsha asynq:{gw:normal}:t:"+apart) < 0 {
		t.Fatalf("round trips: %q; want the record's, then the task's", trips)
	}
}
