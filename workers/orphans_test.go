package workers

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/redistest"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// noLeaseExtension drops a worker's lease extensions, as a worker that
// died would stop making them.
type noLeaseExtension struct{}

func (noLeaseExtension) DialHook(next redis.DialHook) redis.DialHook { return next }
func (noLeaseExtension) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, c redis.Cmder) error {
		if a := c.Args(); c.Name() == "zadd" && len(a) > 1 && strings.HasSuffix(a[1].(string), ":lease") {
			return nil
		}
		return next(ctx, c)
	}
}
func (noLeaseExtension) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A send held by a worker that stopped is queued again as soon as its
// lease lapses, once, and only sends are: the copy runs on another worker
// with the same payload while Asynq still counts the original active.
func TestASendHeldByAWorkerThatStoppedIsQueuedAgainWhenItsLeaseLapses(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client()
	queue := QueueFor(PriorityCrisis)
	cl := asynq.NewClientFromRedisClient(rdb)
	send, err := NewSendTask(SendOptions{MessageID: "01JTESTORPHAN0000000000000", Channel: "sms", Tenant: "clinic-a",
		Priority: PriorityCrisis, MaxAttempts: 3, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range []*asynq.Task{send, asynq.NewTask(TypeFetchRecording, []byte(`{}`), asynq.Queue(queue))} {
		if _, err := cl.EnqueueContext(ctx, task); err != nil {
			t.Fatal(err)
		}
	}

	// A worker takes both tasks and stops making progress on them: it no
	// longer extends its lease, as one that was killed.
	taken := make(chan string, 2)
	release := make(chan struct{})
	deadClient := redis.NewClient(rdb.Options())
	deadClient.AddHook(noLeaseExtension{})
	dead := asynq.NewServerFromRedisClient(deadClient, asynq.Config{Concurrency: 2, Queues: map[string]int{queue: 1},
		ShutdownTimeout: time.Second, Logger: asynqLogger{quietLogger()}})
	if err := dead.Start(asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
		taken <- task.Type()
		<-release
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { close(release); dead.Shutdown(); deadClient.Close() })
	for range 2 {
		select {
		case <-taken:
		case <-time.After(10 * time.Second):
			t.Fatal("the worker did not take the tasks")
		}
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	if ids, err := RequeueOrphans(ctx, insp, cl, []string{queue}); err != nil || len(ids) != 0 {
		t.Fatalf("with the leases live: queued again %v, %v", ids, err)
	}
	// Their leases lapse (10 s ago: not yet what Asynq's own check, every
	// minute, would take back).
	active, err := insp.ListActiveTasks(queue)
	if err != nil || len(active) != 2 {
		t.Fatalf("%d tasks active, %v; want 2", len(active), err)
	}
	for _, a := range active {
		if err := rdb.ZAdd(ctx, "asynq:{"+queue+"}:lease", redis.Z{Score: float64(time.Now().Add(-10 * time.Second).Unix()), Member: a.ID}).Err(); err != nil {
			t.Fatal(err)
		}
	}

	ids, err := RequeueOrphans(ctx, insp, cl, []string{queue})
	if err != nil || !slices.Equal(ids, []string{"01JTESTORPHAN0000000000000"}) {
		t.Fatalf("queued again %v, %v; want the send only", ids, err)
	}
	if again, err := RequeueOrphans(ctx, insp, cl, []string{queue}); err != nil || len(again) != 0 {
		t.Fatalf("a second look queued again %v, %v; want nothing (the copy is queued)", again, err)
	}

	// Another worker runs the copy, as it was queued.
	var mu sync.Mutex
	var ran []*asynq.Task
	var messages []string
	done := make(chan struct{}, 1)
	live := asynq.NewServerFromRedisClient(rdb, asynq.Config{Concurrency: 1, Queues: map[string]int{queue: 1},
		Logger: asynqLogger{quietLogger()}})
	if err := live.Start(asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
		mu.Lock()
		ran = append(ran, task)
		messages = append(messages, messageOfTask(ctx))
		mu.Unlock()
		done <- struct{}{}
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(live.Shutdown)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the copy did not run")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ran) != 1 || ran[0].Type() != send.Type() || string(ran[0].Payload()) != string(send.Payload()) {
		t.Fatalf("ran %d tasks; want the send's copy with its payload", len(ran))
	}
	// The copy's task id names its message too (a payload may leave it out).
	if messages[0] != "01JTESTORPHAN0000000000000" {
		t.Fatalf("the copy's task id names message %q; want 01JTESTORPHAN0000000000000", messages[0])
	}
	if again, err := RequeueOrphans(ctx, insp, cl, []string{queue}); err != nil || len(again) != 0 {
		t.Fatalf("once the copy ran, queued again %v, %v; want nothing (the original is still orphaned)", again, err)
	}
}
