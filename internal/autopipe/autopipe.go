// Package autopipe sends the Redis commands of many goroutines together:
// each goroutine runs its commands as usual and waits for their results,
// while a few flushers write whatever commands are waiting as one pipeline.
//
// A broadcast's fan-out makes thousands of messages at once, each a few
// round trips (the person, the ledger record, the Asynq task). One at a
// time, the round trips cost more than the work: two system calls and a
// wake-up each, on both sides. Batched, a thousand commands cost about
// what one does. The Asynq client runs unchanged on a Client, so its own
// scripts are batched too.
//
// Commands keep their order within a goroutine, and a pipelined group of
// commands (Pipeline, Pipelined) stays together and in order. A
// transaction (TxPipeline) runs on its own, as it must. What needs a
// connection of its own runs on the underlying client, unbatched: WATCH
// (Watch), subscriptions, and blocking commands (BLPOP and the like,
// XREAD … BLOCK, WAIT), which would hold up every command behind them.
package autopipe

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrClosed is the error of a command run after Close.
var ErrClosed = errors.New("autopipe: client closed")

// Options tune a Client; the zero value is fine.
type Options struct {
	// Flushers is how many pipelines may be in flight at once (default 4):
	// while some wait for Redis, the next batch gathers.
	Flushers int
	// MaxBatch bounds the commands of one pipeline (default 1,000); a
	// group larger than that still goes whole.
	MaxBatch int
	// DownFor is how long, after a pipeline found Redis unreachable
	// (every command failed on the connection, not with a Redis error),
	// commands fail at once with that error instead of each waiting out
	// the client's dial retries behind the others (default 1s). The first
	// pipeline after it tries Redis again.
	DownFor time.Duration
}

// Client is a redis.UniversalClient whose commands are batched onto rdb.
// It never opens a connection of its own.
type Client struct {
	redis.UniversalClient
	rdb   redis.UniversalClient
	max   int
	queue chan *call

	mu     sync.RWMutex // held to send on queue; taken for writing by Close
	closed bool
	wg     sync.WaitGroup

	hooksMu sync.Mutex
	hooks   atomic.Pointer[[]redis.Hook] // AddHook's, outermost first

	downFor time.Duration
	down    atomic.Pointer[downState] // set while Redis was found unreachable

	// ordered says a pipeline's commands run in the order written, on one
	// connection (not so on Cluster, where each node's share runs apart).
	ordered bool
}

type downState struct {
	until time.Time
	err   error
}

// unreachable is the error Redis was found unreachable with, while that
// holds.
func (c *Client) unreachable() error {
	if d := c.down.Load(); d != nil && time.Now().Before(d.until) {
		return d.err
	}
	return nil
}

// connectionError is the error every command of cmds failed with on the
// connection (dialing, reading, writing), or nil when any got an answer
// from Redis (a Redis error is an answer).
func connectionError(cmds []redis.Cmder) error {
	var first error
	for _, cmd := range cmds {
		err := cmd.Err()
		var ne net.Error
		if err == nil || !(errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
			return nil
		}
		if first == nil {
			first = err
		}
	}
	return first
}

// AddHook adds a hook that sees each command (and each pipelined group)
// as its caller runs it, in the caller's goroutine, before it joins a
// batch: a tracing or counting hook learns who ran what. The underlying
// client's hooks see the batches.
func (c *Client) AddHook(h redis.Hook) {
	c.hooksMu.Lock()
	defer c.hooksMu.Unlock()
	var hs []redis.Hook
	if p := c.hooks.Load(); p != nil {
		hs = slices.Clone(*p)
	}
	hs = append(hs, h)
	c.hooks.Store(&hs)
}

// withHooks wraps fn in the hooks added with AddHook.
func (c *Client) withHooks(fn redis.ProcessHook) redis.ProcessHook {
	if p := c.hooks.Load(); p != nil {
		for i := len(*p) - 1; i >= 0; i-- {
			fn = (*p)[i].ProcessHook(fn)
		}
	}
	return fn
}

func (c *Client) withPipelineHooks(fn redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	if p := c.hooks.Load(); p != nil {
		for i := len(*p) - 1; i >= 0; i-- {
			fn = (*p)[i].ProcessPipelineHook(fn)
		}
	}
	return fn
}

type call struct {
	cmds []redis.Cmder
	done chan struct{}
}

// New returns a Client that runs its commands on rdb. Close stops it; rdb
// stays open.
func New(rdb redis.UniversalClient, o Options) *Client {
	if o.Flushers <= 0 {
		o.Flushers = 4
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 1000
	}
	if o.DownFor <= 0 {
		o.DownFor = time.Second
	}
	// The front client is only a carrier for the hook below, which answers
	// every command before it could reach a connection: it never dials.
	front := redis.NewClient(&redis.Options{Addr: "autopipe.invalid:0", Protocol: 2, MaxRetries: -1})
	_, single := Underlying(rdb).(*redis.Client)
	c := &Client{UniversalClient: front, rdb: rdb, max: o.MaxBatch, queue: make(chan *call, o.MaxBatch), downFor: o.DownFor, ordered: single}
	front.AddHook(hook{c})
	for range o.Flushers {
		c.wg.Add(1)
		go c.flush()
	}
	return c
}

// Close stops the flushers once the commands already queued have run.
// Commands run afterwards fail with ErrClosed. The underlying client stays
// open.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.queue)
	c.mu.Unlock()
	c.wg.Wait()
	return c.UniversalClient.Close()
}

// run queues cmds and waits until they have run. The caller's context does
// not cut the wait short: a queued command may already be on the wire, and
// the underlying client's timeouts bound how long it takes.
func (c *Client) run(cmds []redis.Cmder) {
	if err := c.unreachable(); err != nil {
		failAll(cmds, err)
		return
	}
	cl := &call{cmds: cmds, done: make(chan struct{})}
	c.mu.RLock()
	if c.closed {
		c.mu.RUnlock()
		failAll(cmds, ErrClosed)
		return
	}
	c.queue <- cl
	c.mu.RUnlock()
	<-cl.done
}

// flush writes what waits as one pipeline, until the queue closes.
func (c *Client) flush() {
	defer c.wg.Done()
	var batch []*call
	var cmds []redis.Cmder
	for first := range c.queue {
		batch = append(batch[:0], first)
		cmds = append(cmds[:0], first.cmds...)
	gather:
		for len(cmds) < c.max {
			select {
			case cl, ok := <-c.queue:
				if !ok {
					break gather
				}
				batch = append(batch, cl)
				cmds = append(cmds, cl.cmds...)
			default:
				break gather
			}
		}
		if err := c.unreachable(); err != nil {
			// Queued behind the pipeline that found Redis unreachable.
			failAll(cmds, err)
		} else {
			pipe := c.rdb.Pipeline()
			_ = pipe.BatchProcess(context.Background(), cmds...)
			_, _ = pipe.Exec(context.Background()) // each command keeps its own error
			if err := connectionError(cmds); err != nil {
				c.down.Store(&downState{until: time.Now().Add(c.downFor), err: err})
			} else if c.down.Load() != nil {
				c.down.Store(nil)
			}
		}
		for _, cl := range batch {
			close(cl.done)
		}
	}
}

func failAll(cmds []redis.Cmder, err error) {
	for _, cmd := range cmds {
		cmd.SetErr(err)
	}
}

// tx runs a transaction's commands (MULTI … EXEC as the front client
// wrapped them) as a transaction of their own on the underlying client.
func (c *Client) tx(ctx context.Context, cmds []redis.Cmder) {
	inner := cmds[1 : len(cmds)-1]
	_, _ = c.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		return p.BatchProcess(ctx, inner...)
	})
}

// Watch runs fn on the underlying client: WATCH needs a connection of its
// own.
func (c *Client) Watch(ctx context.Context, fn func(*redis.Tx) error, keys ...string) error {
	return c.rdb.Watch(ctx, fn, keys...)
}

// Subscribe subscribes on the underlying client.
func (c *Client) Subscribe(ctx context.Context, channels ...string) *redis.PubSub {
	return c.rdb.Subscribe(ctx, channels...)
}

// PSubscribe subscribes on the underlying client.
func (c *Client) PSubscribe(ctx context.Context, channels ...string) *redis.PubSub {
	return c.rdb.PSubscribe(ctx, channels...)
}

// SSubscribe subscribes on the underlying client.
func (c *Client) SSubscribe(ctx context.Context, channels ...string) *redis.PubSub {
	return c.rdb.SSubscribe(ctx, channels...)
}

// PoolStats are the underlying client's: the Client has no pool.
func (c *Client) PoolStats() *redis.PoolStats { return c.rdb.PoolStats() }

// blocks reports whether cmd may wait on the server (for data, or for
// replicas), holding up whatever shares its pipeline.
func blocks(cmd redis.Cmder) bool {
	switch cmd.Name() {
	case "blpop", "brpop", "brpoplpush", "blmove", "blmpop", "bzpopmin", "bzpopmax", "bzmpop", "wait", "waitaof":
		return true
	case "xread", "xreadgroup":
		for _, a := range cmd.Args() {
			if s, ok := a.(string); ok && strings.EqualFold(s, "block") {
				return true
			}
		}
	}
	return false
}

type hook struct{ c *Client }

func (h hook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h hook) ProcessHook(redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.c.hooks.Load() != nil {
			return h.c.withHooks(h.c.process)(ctx, cmd)
		}
		return h.c.process(ctx, cmd)
	}
}

func (c *Client) process(ctx context.Context, cmd redis.Cmder) error {
	if blocks(cmd) {
		c.runAhead(ctx)
		return c.rdb.Process(ctx, cmd)
	}
	c.run(c.behind(ctx, cmd))
	return cmd.Err()
}

// ahead is what Ahead put in a context: commands to write right before
// the first command run under it.
type ahead struct {
	cmds  []redis.Cmder
	taken atomic.Bool
}

type aheadKey struct{}

// Ahead returns a context under which the first command, or pipelined
// group, run through a Client is written right behind cmds, in the same
// pipeline: Redis runs cmds first, and the two cost one round trip. A
// caller that needs one write made before another (a record before the
// task that reads it) gets the order and saves the round trip; cmds'
// results are there once that command returned.
//
// Where a pipeline's commands do not run in the order written (Redis
// Cluster runs each node's share apart), cmds run on their own first and
// the command waits for them: the order holds, the round trip stays.
//
// sent reports whether cmds were taken by a command. When it is false
// (nothing ran under the context, or not through a Client), they did not
// run. Hooks added with AddHook see the command, not cmds.
func Ahead(ctx context.Context, cmds ...redis.Cmder) (_ context.Context, sent func() bool) {
	a := &ahead{cmds: cmds}
	return context.WithValue(ctx, aheadKey{}, a), a.taken.Load
}

// takeAhead returns the commands Ahead put in ctx, once.
func takeAhead(ctx context.Context) []redis.Cmder {
	a, _ := ctx.Value(aheadKey{}).(*ahead)
	if a == nil || !a.taken.CompareAndSwap(false, true) {
		return nil
	}
	return a.cmds
}

// runAhead runs the commands Ahead put in ctx, if any, on their own.
func (c *Client) runAhead(ctx context.Context) {
	if first := takeAhead(ctx); len(first) > 0 {
		c.run(first)
	}
}

// behind returns cmds with the commands Ahead put in ctx in front of
// them, or, where a pipeline's order does not hold, runs those first.
func (c *Client) behind(ctx context.Context, cmds ...redis.Cmder) []redis.Cmder {
	first := takeAhead(ctx)
	if len(first) == 0 {
		return cmds
	}
	if !c.ordered {
		c.run(first)
		return cmds
	}
	return append(slices.Clip(first), cmds...)
}

func (h hook) ProcessPipelineHook(redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if h.c.hooks.Load() != nil {
			return h.c.withPipelineHooks(h.c.processPipeline)(ctx, cmds)
		}
		return h.c.processPipeline(ctx, cmds)
	}
}

func (c *Client) processPipeline(ctx context.Context, cmds []redis.Cmder) error {
	if len(cmds) == 0 {
		return nil
	}
	if len(cmds) >= 2 && cmds[0].Name() == "multi" && cmds[len(cmds)-1].Name() == "exec" {
		c.runAhead(ctx)
		c.tx(ctx, cmds)
		cmds = cmds[1 : len(cmds)-1]
	} else if slices.ContainsFunc(cmds, blocks) {
		c.runAhead(ctx)
		pipe := c.rdb.Pipeline() // on one connection of its own, as it was meant
		_ = pipe.BatchProcess(ctx, cmds...)
		_, _ = pipe.Exec(ctx)
	} else {
		c.run(c.behind(ctx, cmds...))
	}
	for _, cmd := range cmds {
		if err := cmd.Err(); err != nil {
			return err
		}
	}
	return nil
}

// batcher is a Client, or a type embedding one.
type batcher interface{ batches() }

func (c *Client) batches() {}

// Batches reports whether rdb is a Client, or embeds one: its commands go
// to Redis in batches, and Ahead holds.
func Batches(rdb redis.UniversalClient) bool {
	_, ok := rdb.(batcher)
	return ok
}

// Unwrap is the client c sends its commands on.
func (c *Client) Unwrap() redis.UniversalClient { return c.rdb }

// Underlying is the client rdb sends its commands on: the innermost
// client under a Client (or anything with Unwrap, such as a type
// embedding one), else rdb itself. Code that needs the concrete client (a
// Cluster's primaries, one by one) asks for it this way.
func Underlying(rdb redis.UniversalClient) redis.UniversalClient {
	for {
		w, ok := rdb.(interface{ Unwrap() redis.UniversalClient })
		if !ok {
			return rdb
		}
		rdb = w.Unwrap()
	}
}
