package autopipe_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/autopipe"
	"github.com/patientmsg/gateway/internal/redistest"
)

// counter counts the round trips the underlying client makes, leaving
// out the handshake of each new connection.
type counter struct{ single, pipelines, commands atomic.Int64 }

func (c *counter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *counter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !redistest.Handshake(cmd) {
			c.single.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (c *counter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		n := 0
		for _, cmd := range cmds {
			if !redistest.Handshake(cmd) {
				n++
			}
		}
		if n > 0 {
			c.pipelines.Add(1)
			c.commands.Add(int64(n))
		}
		return next(ctx, cmds)
	}
}

func setup(t *testing.T, o autopipe.Options) (*autopipe.Client, *redis.Client, *counter) {
	t.Helper()
	rdb := redistest.Start(t).Client()
	cnt := &counter{}
	rdb.AddHook(cnt)
	c := autopipe.New(rdb, o)
	t.Cleanup(func() { _ = c.Close() })
	return c, rdb, cnt
}

func TestManyGoroutinesShareFewRoundTrips(t *testing.T) {
	c, rdb, cnt := setup(t, autopipe.Options{})
	ctx := context.Background()
	const n = 2000
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			k := "k" + strconv.Itoa(i)
			if err := c.Set(ctx, k, i, 0).Err(); err != nil {
				errs <- err
				return
			}
			got, err := c.Get(ctx, k).Int()
			if err != nil || got != i {
				errs <- fmt.Errorf("GET %s = %d, %v; want %d", k, got, err, i)
				return
			}
			if err := c.Get(ctx, "missing").Err(); !errors.Is(err, redis.Nil) {
				errs <- fmt.Errorf("GET missing: %v, want redis.Nil", err)
			}
		}()
	}
	close(start)
	wg.Wait()
	single, pipelines, commands := cnt.single.Load(), cnt.pipelines.Load(), cnt.commands.Load()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := rdb.DBSize(ctx).Val(); got != n {
		t.Fatalf("keys = %d, want %d", got, n)
	}
	if single != 0 {
		t.Errorf("%d commands went alone, want all in pipelines", single)
	}
	if commands != 3*n {
		t.Errorf("%d commands ran, want %d", commands, 3*n)
	}
	// 6,000 commands from 2,000 goroutines at once: batches, not one trip each.
	if pipelines > n/2 {
		t.Errorf("%d round trips for %d commands: not batched", pipelines, 3*n)
	}
	t.Logf("%d commands in %d round trips", commands, pipelines)
}

func TestAGroupStaysInOrderAndReportsItsFirstError(t *testing.T) {
	c, _, _ := setup(t, autopipe.Options{})
	ctx := context.Background()
	var incr *redis.IntCmd
	var get *redis.StringCmd
	cmds, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, "n", "5", 0)
		incr = p.Incr(ctx, "n")
		p.HSet(ctx, "n", "f", "v") // WRONGTYPE
		get = p.Get(ctx, "n")
		return nil
	})
	if len(cmds) != 4 {
		t.Fatalf("%d commands, want 4", len(cmds))
	}
	if err == nil || !redis.HasErrorPrefix(err, "WRONGTYPE") {
		t.Fatalf("Exec error = %v, want WRONGTYPE", err)
	}
	if incr.Val() != 6 || get.Val() != "6" {
		t.Fatalf("incr = %d, get = %q; want 6 and \"6\"", incr.Val(), get.Val())
	}
}

func TestScriptsLoadThemselvesWhenRedisLacksThem(t *testing.T) {
	c, rdb, _ := setup(t, autopipe.Options{})
	ctx := context.Background()
	s := redis.NewScript(`return redis.call('INCRBY', KEYS[1], ARGV[1])`)
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	n, err := s.Run(ctx, c, []string{"s"}, 7).Int()
	if err != nil || n != 7 {
		t.Fatalf("script = %d, %v; want 7", n, err)
	}
}

func TestATransactionRunsOnItsOwn(t *testing.T) {
	c, rdb, _ := setup(t, autopipe.Options{})
	ctx := context.Background()
	var a, b *redis.IntCmd
	if _, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		a = p.Incr(ctx, "a")
		b = p.IncrBy(ctx, "a", 10)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if a.Val() != 1 || b.Val() != 11 || rdb.Get(ctx, "a").Val() != "11" {
		t.Fatalf("a = %d, b = %d, stored %q; want 1, 11, \"11\"", a.Val(), b.Val(), rdb.Get(ctx, "a").Val())
	}
}

func TestAsynqEnqueuesThroughIt(t *testing.T) {
	c, rdb, cnt := setup(t, autopipe.Options{})
	q := asynq.NewClientFromRedisClient(c)
	const n = 500
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := q.Enqueue(asynq.NewTask("t", nil), asynq.TaskID("id"+strconv.Itoa(i%250))); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	single := cnt.single.Load()
	info, err := asynq.NewInspectorFromRedisClient(rdb).GetQueueInfo("default")
	if err != nil {
		t.Fatal(err)
	}
	if info.Pending != 250 {
		t.Fatalf("pending = %d, want 250 (each task id once)", info.Pending)
	}
	if single != 0 {
		t.Errorf("%d commands went alone", single)
	}
}

func TestAfterCloseCommandsFail(t *testing.T) {
	c, rdb, _ := setup(t, autopipe.Options{})
	ctx := context.Background()
	if err := c.Set(ctx, "x", 1, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, "x").Err(); !errors.Is(err, autopipe.ErrClosed) {
		t.Fatalf("after Close: %v, want ErrClosed", err)
	}
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("the underlying client was closed too: %v", err)
	}
}

func TestARedisOutageFailsEachCommand(t *testing.T) {
	srv := redistest.Start(t)
	if !srv.CanRestart() {
		t.Skip("needs a redis-server process to stop") // miniredis cannot be stopped mid-test
	}
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1})
	defer rdb.Close()
	c := autopipe.New(rdb, autopipe.Options{})
	defer c.Close()
	ctx := context.Background()
	if err := c.Set(ctx, "x", 1, 0).Err(); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	if err := c.Get(ctx, "x").Err(); err == nil || errors.Is(err, redis.Nil) {
		t.Fatalf("GET with Redis down: %v, want a connection error", err)
	}
}

func TestABlockingCommandHoldsUpNoOne(t *testing.T) {
	// One flusher: a BLPOP in its pipeline would stall every command
	// behind it for the whole block.
	c, rdb, _ := setup(t, autopipe.Options{Flushers: 1})
	ctx := context.Background()
	popped := make(chan []string, 1)
	go func() {
		v, _ := c.BLPop(ctx, 5*time.Second, "q").Result()
		popped <- v
	}()
	time.Sleep(50 * time.Millisecond) // let the BLPOP block on the server
	start := time.Now()
	if err := c.Set(ctx, "x", 1, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("SET waited %v behind a BLPOP", d)
	}
	if err := c.RPush(ctx, "q", "v").Err(); err != nil {
		t.Fatal(err)
	}
	if v := <-popped; len(v) != 2 || v[1] != "v" {
		t.Fatalf("BLPOP = %v", v)
	}
	if got := rdb.Get(ctx, "x").Val(); got != "1" {
		t.Fatalf("x = %q", got)
	}
}

func TestWatchAndSubscribeUseTheUnderlyingClient(t *testing.T) {
	c, rdb, _ := setup(t, autopipe.Options{})
	ctx := context.Background()
	if err := c.Watch(ctx, func(tx *redis.Tx) error {
		n, _ := tx.Get(ctx, "w").Int()
		_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error { return p.Set(ctx, "w", n+1, 0).Err() })
		return err
	}, "w"); err != nil {
		t.Fatal(err)
	}
	if got := rdb.Get(ctx, "w").Val(); got != "1" {
		t.Fatalf("w = %q after a watched increment", got)
	}
	sub := c.Subscribe(ctx, "ch")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil { // the subscription's confirmation
		t.Fatal(err)
	}
	if err := c.Publish(ctx, "ch", "hello").Err(); err != nil {
		t.Fatal(err)
	}
	msg, err := sub.ReceiveMessage(ctx)
	if err != nil || msg.Payload != "hello" {
		t.Fatalf("subscription got %v, %v", msg, err)
	}
}

func TestAnAsynqServerProcessesThroughIt(t *testing.T) {
	c, _, cnt := setup(t, autopipe.Options{})
	q := asynq.NewClientFromRedisClient(c)
	const n = 200
	var done atomic.Int64
	all := make(chan struct{})
	srv := asynq.NewServerFromRedisClient(c, asynq.Config{Concurrency: 20, LogLevel: asynq.FatalLevel,
		TaskCheckInterval: 10 * time.Millisecond})
	mux := asynq.NewServeMux()
	mux.HandleFunc("t", func(context.Context, *asynq.Task) error {
		if done.Add(1) == n {
			close(all)
		}
		return nil
	})
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	for i := range n {
		if _, err := q.Enqueue(asynq.NewTask("t", nil), asynq.TaskID("s"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-all:
	case <-time.After(20 * time.Second):
		t.Fatalf("%d of %d tasks processed", done.Load(), n)
	}
	if cnt.pipelines.Load() == 0 {
		t.Fatal("no pipeline went through the autopipe client")
	}
}

func TestUnderlyingFindsTheClusterClientBeneath(t *testing.T) {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	defer cc.Close()
	c := autopipe.New(cc, autopipe.Options{})
	defer c.Close()
	type embedding struct{ *autopipe.Client }
	for _, rdb := range []redis.UniversalClient{c, embedding{c}, autopipe.New(c, autopipe.Options{})} {
		if got := autopipe.Underlying(rdb); got != redis.UniversalClient(cc) {
			t.Fatalf("Underlying(%T) = %T, want the cluster client", rdb, got)
		}
	}
	if got := autopipe.Underlying(cc); got != redis.UniversalClient(cc) {
		t.Fatalf("Underlying of a plain client = %T", got)
	}
}

func TestHooksSeeEachCallersCommands(t *testing.T) {
	c, _, cnt := setup(t, autopipe.Options{})
	var mine counter
	c.AddHook(&mine)
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			_ = c.Set(ctx, "k"+strconv.Itoa(i), i, 0).Err()
			_, _ = c.Pipelined(ctx, func(p redis.Pipeliner) error {
				p.Incr(ctx, "n")
				p.Incr(ctx, "n")
				return nil
			})
		})
	}
	wg.Wait()
	if mine.single.Load() != 50 || mine.pipelines.Load() != 50 || mine.commands.Load() != 100 {
		t.Fatalf("the hook saw %d commands and %d pipelines of %d commands; want 50, 50, 100",
			mine.single.Load(), mine.pipelines.Load(), mine.commands.Load())
	}
	if cnt.single.Load() != 0 {
		t.Fatalf("%d commands went alone to Redis", cnt.single.Load())
	}
}

// Once a pipeline finds Redis unreachable, the commands behind it and
// those that come within DownFor fail at once with its error, instead of
// each waiting out the client's dial retries in turn; afterwards the
// next pipeline tries again.
func TestWhileRedisIsUnreachableCommandsFailAtOnce(t *testing.T) {
	srv := redistest.Start(t)
	if !srv.CanRestart() {
		t.Skip("needs a redis-server process to stop") // miniredis cannot be stopped mid-test
	}
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	c := autopipe.New(rdb, autopipe.Options{Flushers: 1, DownFor: time.Second})
	defer c.Close()
	ctx := context.Background()
	if err := c.Set(ctx, "x", 1, 0).Err(); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	start := time.Now()
	first := c.Get(ctx, "x").Err()
	firstTook := time.Since(start)
	if first == nil || errors.Is(first, redis.Nil) {
		t.Fatalf("GET with Redis down: %v", first)
	}
	// 50 more, at once: each fails fast, none waits for the dial retries.
	var wg sync.WaitGroup
	var slow atomic.Int64
	for range 50 {
		wg.Go(func() {
			t0 := time.Now()
			if err := c.Get(ctx, "x").Err(); err == nil || errors.Is(err, redis.Nil) {
				t.Errorf("GET with Redis down: %v", err)
			}
			if time.Since(t0) > firstTook/2+50*time.Millisecond {
				slow.Add(1)
			}
		})
	}
	wg.Wait()
	if slow.Load() > 0 {
		t.Fatalf("%d of 50 commands took more than half of the first one's %v", slow.Load(), firstTook)
	}
	srv.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for c.Set(ctx, "x", 2, 0).Err() != nil { // a restarted test server starts empty
		if time.Now().After(deadline) {
			t.Fatal("commands still fail 10s after Redis came back")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// written is each round trip's commands by name and first argument.
func written(trips *redistest.Trips) [][]string {
	var out [][]string
	for _, cmds := range trips.Take() {
		var trip []string
		for _, c := range cmds {
			trip = append(trip, fmt.Sprint(c.Args()[:2]...))
		}
		out = append(out, trip)
	}
	return out
}

func TestCommandsAheadRideInFrontOfTheNextCommand(t *testing.T) {
	rdb := redistest.Start(t).Client()
	rec := &redistest.Trips{}
	rdb.AddHook(rec)
	c := autopipe.New(rdb, autopipe.Options{Flushers: 1})
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()

	first := redis.NewStatusCmd(ctx, "set", "record", "r1")
	second := redis.NewIntCmd(ctx, "incr", "counter")
	actx, sent := autopipe.Ahead(ctx, first, second)
	if sent() {
		t.Fatal("sent before any command ran")
	}
	// The next command reads what the commands ahead wrote: they ran first.
	got, err := c.Get(actx, "record").Result()
	if err != nil || got != "r1" {
		t.Fatalf("GET behind the commands ahead = %q, %v; want r1", got, err)
	}
	if !sent() || first.Err() != nil || second.Val() != 1 {
		t.Fatalf("sent %v, results %v / %d %v", sent(), first.Err(), second.Val(), second.Err())
	}
	if p := written(rec); len(p) != 1 || !slices.Equal(p[0], []string{"setrecord", "incrcounter", "getrecord"}) {
		t.Fatalf("pipelines written: %q; want one: the two ahead, then the GET", p)
	}
	// Only the first command takes them.
	if _, err := c.Incr(actx, "counter").Result(); err != nil || second.Val() != 1 {
		t.Fatalf("a second command under the context ran the commands ahead again: %v", err)
	}
	if n, _ := rdb.Get(ctx, "counter").Int(); n != 2 {
		t.Fatalf("counter = %d; want 2 (once ahead, once by the later INCR)", n)
	}

	// A pipelined group takes them too, in front.
	rec.Take()
	actx, sent = autopipe.Ahead(ctx, redis.NewStatusCmd(ctx, "set", "record", "r2"))
	var read *redis.StringCmd
	if _, err := c.Pipelined(actx, func(p redis.Pipeliner) error {
		read = p.Get(ctx, "record")
		p.Incr(ctx, "counter")
		return nil
	}); err != nil || read.Val() != "r2" || !sent() {
		t.Fatalf("group behind the commands ahead read %q, %v (sent %v)", read.Val(), err, sent())
	}
	if p := written(rec); len(p) != 1 || !slices.Equal(p[0], []string{"setrecord", "getrecord", "incrcounter"}) {
		t.Fatalf("pipelines written: %q; want one", p)
	}

	// Nothing run under the context: nothing sent.
	unused := redis.NewStatusCmd(ctx, "set", "record", "never")
	_, sent = autopipe.Ahead(ctx, unused)
	if _, err := c.Get(ctx, "record").Result(); err != nil || sent() {
		t.Fatalf("commands ahead taken by a command under another context: %v", err)
	}
	if got, _ := rdb.Get(ctx, "record").Result(); got != "r2" {
		t.Fatalf("record = %q; the unused commands ran", got)
	}
}

// unordered is a client whose pipelines' order autopipe cannot count on
// (as on Cluster): it is no *redis.Client.
type unordered struct{ *redis.Client }

func TestWhereAPipelinesOrderDoesNotHoldCommandsAheadRunFirstOnTheirOwn(t *testing.T) {
	rdb := redistest.Start(t).Client()
	rec := &redistest.Trips{}
	rdb.AddHook(rec)
	c := autopipe.New(unordered{rdb}, autopipe.Options{Flushers: 1})
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()

	actx, sent := autopipe.Ahead(ctx, redis.NewStatusCmd(ctx, "set", "record", "r1"))
	if got, err := c.Get(actx, "record").Result(); err != nil || got != "r1" || !sent() {
		t.Fatalf("GET behind the commands ahead = %q, %v (sent %v)", got, err, sent())
	}
	if p := written(rec); len(p) != 2 || !slices.Equal(p[0], []string{"setrecord"}) || !slices.Equal(p[1], []string{"getrecord"}) {
		t.Fatalf("pipelines written: %q; want the SET, then the GET", p)
	}
}
