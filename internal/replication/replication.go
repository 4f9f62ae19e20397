// Package replication makes an acknowledgement mean replicated. Redis
// replicates asynchronously: a write the primary has applied, and the
// gateway has acknowledged, is lost when a replica that never received it
// is promoted. A Fence, called after a unit of writes and before the
// acknowledgement, waits until the replicas have them.
//
// Redis' WAIT blocks until the replicas acknowledged the calling
// connection's own last write; a pooled connection that wrote nothing
// returns at once. The replication stream is ordered, so a Fence writes a
// small fence key and sends WAIT on the same connection, in one pipeline:
// when the replicas have the fence write they have every write the
// process finished before it on that primary, on whatever connection (the
// ledger's, the queue's).
//
// Two things make one replica's acknowledgement not enough, and a Fence
// guards against both:
//
//   - A failover promotes one replica while the old primary still takes
//     writes that the other replicas acknowledge, until the sentinels
//     point them at the new primary; those writes are then discarded. So a
//     Fence waits for every replica the primary had online lately (at
//     least the configured number): a replica that leaves is waited for a
//     further hold time, as it may have been promoted.
//   - A unit may write to the old primary and send its fence to the new
//     one (the client follows the failover in between, or retries the
//     fence there). So a Fence reads the primary's replication id with
//     every wait, and fails a unit that began before it saw the primary
//     change (Begin, Wait).
package replication

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotReplicated is the class of a Fence's failure: the writes may
// still be lost in a failover. Match it with errors.Is; a
// *NotReplicatedError says why.
var ErrNotReplicated = errors.New("writes not acknowledged by enough Redis replicas")

// NotReplicatedError says how far a unit of writes got.
type NotReplicatedError struct {
	// Want is how many replicas had to acknowledge, Acked how many did
	// within the timeout (on Redis Cluster: of the primary that fell short).
	Want, Acked int
	// Refused is set when the primary refused the fence's write itself:
	// it has fewer replicas than its min-replicas-to-write (NOREPLICAS).
	Refused bool
	// PrimaryChanged is set when the primary changed while the unit ran:
	// its writes may have gone to the old one.
	PrimaryChanged bool
}

func (e *NotReplicatedError) Error() string {
	switch {
	case e.Refused:
		return fmt.Sprintf("%v: the primary refuses writes (NOREPLICAS: fewer replicas than its min-replicas-to-write)", ErrNotReplicated)
	case e.PrimaryChanged:
		return fmt.Sprintf("%v: the primary changed while the writes were made", ErrNotReplicated)
	}
	return fmt.Sprintf("%v: %d of %d acknowledged", ErrNotReplicated, e.Acked, e.Want)
}

// Is makes errors.Is(err, ErrNotReplicated) true.
func (e *NotReplicatedError) Is(target error) bool { return target == ErrNotReplicated }

// FenceKey is the key a Fence writes (a counter; on Redis Cluster, one per
// primary, with a hash tag of a slot the primary serves).
const FenceKey = "gw:repl:fence"

// MaxTimeout is the longest wait a Fence accepts: the WAIT is pipelined,
// and a pipeline's reply must come within the client's read timeout
// (go-redis' default is 3 s).
const MaxTimeout = 2 * time.Second

// DefaultHold is how long a replica that went offline is still waited
// for: longer than the sentinels take from promoting a replica to
// pointing the other replicas at it (about a second).
const DefaultHold = 5 * time.Second

// Options configure a Fence.
type Options struct {
	// Replicas is the fewest replicas that must acknowledge; 0 turns the
	// Fence off (no round trip).
	Replicas int
	// Timeout bounds one wait (at most MaxTimeout).
	Timeout time.Duration
	// Hold is how long a replica that went offline is still waited for
	// (DefaultHold when 0).
	Hold time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Epoch names the primaries a Fence knew when a unit of writes began
// (Begin); Wait fails the unit if they changed since.
type Epoch uint64

// Fence waits until a process's finished writes are on the replicas.
// A nil *Fence waits for nothing.
type Fence struct {
	rdb  redis.UniversalClient
	o    Options
	tags sync.Map // Cluster: primary address → hash tag of one of its slots

	epoch atomic.Uint64
	mu    sync.Mutex
	seen  bool             // the primaries were observed once
	nodes map[string]*node // by primary address on Cluster; "" otherwise
}

// node is what a Fence knows of one primary.
type node struct {
	replid string
	// online is the most replicas seen online lately: a replica that
	// left is waited for until it has been gone for the hold time.
	online   int
	lowSince time.Time
}

// New returns a Fence over the primary (every primary on Cluster) that
// rdb writes to.
func New(rdb redis.UniversalClient, o Options) *Fence {
	o.Timeout = min(max(o.Timeout, time.Millisecond), MaxTimeout)
	if o.Hold <= 0 {
		o.Hold = DefaultHold
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Fence{rdb: rdb, o: o, nodes: map[string]*node{}}
}

// Replicas is the fewest replicas that must acknowledge (0: off).
func (f *Fence) Replicas() int {
	if f == nil {
		return 0
	}
	return f.o.Replicas
}

// Begin is called before a unit's first write; its Epoch goes to Wait.
func (f *Fence) Begin() Epoch {
	if f == nil {
		return 0
	}
	return Epoch(f.epoch.Load())
}

// Wait returns once the writes this process finished before the call are
// acknowledged by every replica of the primary (every replica online
// lately, and at least Options.Replicas), or an error: a
// *NotReplicatedError (errors.Is ErrNotReplicated) when too few
// acknowledged within the timeout or the primary changed since began, or
// the error talking to Redis. Either way the writes may still be applied:
// the caller answers that the outcome is unknown, and a retry must be
// idempotent.
func (f *Fence) Wait(ctx context.Context, began Epoch) error {
	if f == nil || f.o.Replicas <= 0 || f.rdb == nil {
		return nil
	}
	var err error
	if cc, ok := f.rdb.(*redis.ClusterClient); ok {
		err = f.waitCluster(ctx, cc, began)
	} else {
		err = f.wait(ctx, f.rdb, "", FenceKey, began)
	}
	f.mu.Lock()
	f.seen = f.seen || len(f.nodes) > 0 // the primaries (every one on Cluster) are known
	f.mu.Unlock()
	return err
}

// wait writes key, sends WAIT and reads the replication of the primary,
// on one connection (a pipeline uses one).
func (f *Fence) wait(ctx context.Context, c redis.Cmdable, addr, key string, began Epoch) error {
	f.mu.Lock()
	want := f.o.Replicas
	if n := f.nodes[addr]; n != nil {
		want = max(want, n.online)
	}
	f.mu.Unlock()
	pipe := c.Pipeline()
	incr := pipe.Incr(ctx, key)
	wait := pipe.Do(ctx, "wait", want, f.o.Timeout.Milliseconds())
	info := pipe.Info(ctx, "replication")
	_, _ = pipe.Exec(ctx)
	if err := incr.Err(); err != nil {
		if redis.IsNoReplicasError(err) {
			return &NotReplicatedError{Want: want, Refused: true}
		}
		return err
	}
	acked, err := wait.Int()
	if err != nil {
		return err
	}
	text, err := info.Result()
	if err != nil {
		return err
	}
	replid, online := parseReplication(text)
	changed, need := f.observe(addr, replid, online)
	if changed || began != Epoch(f.epoch.Load()) {
		return &NotReplicatedError{Want: want, Acked: acked, PrimaryChanged: true}
	}
	// need is below want when this wait found a replica gone for the
	// hold time: WAIT counted the replicas that did acknowledge.
	if acked < min(want, need) {
		return &NotReplicatedError{Want: want, Acked: acked}
	}
	return nil
}

// observe records what a primary said of its replication and reports
// whether it is another primary than the one known at addr (a failover:
// the epoch then moves on), and how many replicas must acknowledge from
// now on.
func (f *Fence) observe(addr, replid string, online int) (changed bool, need int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.nodes[addr]
	switch {
	case n == nil:
		// A primary first seen: at start, or on Cluster a replica promoted
		// (or a primary added) under a new address.
		changed = f.seen
		n = &node{replid: replid, online: online}
		f.nodes[addr] = n
	case n.replid != replid:
		changed = true
		*n = node{replid: replid, online: online}
	case online >= n.online:
		n.online, n.lowSince = online, time.Time{}
	case n.lowSince.IsZero():
		n.lowSince = f.o.Now()
	case f.o.Now().Sub(n.lowSince) >= f.o.Hold:
		n.online, n.lowSince = online, time.Time{}
	}
	if changed {
		f.epoch.Add(1)
	}
	return changed, max(f.o.Replicas, n.online)
}

// parseReplication reads a primary's replication id and how many of its
// replicas are online from INFO replication.
func parseReplication(info string) (replid string, online int) {
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if v, ok := strings.CutPrefix(line, "master_replid:"); ok {
			replid = v
		}
		if strings.HasPrefix(line, "slave") && strings.Contains(line, ",state=online,") {
			online++
		}
	}
	return replid, online
}

// waitCluster fences every primary of a Cluster, in parallel: WAIT only
// counts the replicas of the node it runs on, and the writes of a unit may
// have gone to any of them. Each primary gets a fence key in one of its
// own slots.
func (f *Fence) waitCluster(ctx context.Context, cc *redis.ClusterClient, began Epoch) error {
	var mu sync.Mutex
	var short error
	err := cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		err := f.waitNode(ctx, cc, n, began)
		var nr *NotReplicatedError
		if errors.As(err, &nr) {
			mu.Lock()
			short = err
			mu.Unlock()
			return nil
		}
		return err
	})
	if err != nil {
		return err
	}
	return short
}

// waitNode fences one Cluster primary. The slots a primary serves change
// when the cluster is resharded: a fence key that moved away is answered
// MOVED, and the slots are read again.
func (f *Fence) waitNode(ctx context.Context, cc *redis.ClusterClient, n *redis.Client, began Epoch) error {
	addr := n.Options().Addr
	for try := 0; ; try++ {
		tag, err := f.tagFor(ctx, cc, addr, try > 0)
		if err != nil {
			return err
		}
		err = f.wait(ctx, n, addr, FenceKey+":{"+tag+"}", began)
		if err == nil || try > 0 || !isMoved(err) {
			return err
		}
	}
}

func isMoved(err error) bool {
	return err != nil && (strings.HasPrefix(err.Error(), "MOVED ") || strings.HasPrefix(err.Error(), "ASK "))
}

// tagFor returns a hash tag whose slot the primary at addr serves.
func (f *Fence) tagFor(ctx context.Context, cc *redis.ClusterClient, addr string, refresh bool) (string, error) {
	if tag, ok := f.tags.Load(addr); ok && !refresh {
		return tag.(string), nil
	}
	slots, err := cc.ClusterSlots(ctx).Result()
	if err != nil {
		return "", fmt.Errorf("replication: cluster slots: %w", err)
	}
	for _, s := range slots {
		if len(s.Nodes) > 0 && s.Nodes[0].Addr == addr {
			tag := TagForSlot(s.Start)
			f.tags.Store(addr, tag)
			return tag, nil
		}
	}
	return "", fmt.Errorf("replication: the cluster's slots name no primary at %s", addr)
}
