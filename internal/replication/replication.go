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
// process finished before it, on whatever connection (the ledger's, the
// queue's).
package replication

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotReplicated is the class of a Fence's failure: the writes may
// still be lost in a failover. Match it with errors.Is; a
// *NotReplicatedError says how many replicas acknowledged.
var ErrNotReplicated = errors.New("writes not acknowledged by enough Redis replicas")

// NotReplicatedError says how far a unit of writes got.
type NotReplicatedError struct {
	// Want is how many replicas had to acknowledge, Acked how many did
	// within the timeout (on Redis Cluster: the fewest of any primary).
	Want, Acked int
	// Refused is set when the primary refused the fence's write itself:
	// it has fewer replicas than its min-replicas-to-write (NOREPLICAS).
	Refused bool
}

func (e *NotReplicatedError) Error() string {
	if e.Refused {
		return fmt.Sprintf("%v: the primary refuses writes (NOREPLICAS: fewer replicas than its min-replicas-to-write)", ErrNotReplicated)
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

// Fence waits until a process's finished writes are on enough replicas.
// The zero value and a nil *Fence wait for nothing.
type Fence struct {
	rdb      redis.UniversalClient
	replicas int
	timeout  time.Duration

	mu   sync.Mutex
	tags map[string]string // Cluster: primary address → hash tag of one of its slots
}

// New returns a Fence that waits, for at most timeout, until replicas
// replicas acknowledged the writes made through rdb. With replicas 0 it
// waits for nothing and makes no round trip.
func New(rdb redis.UniversalClient, replicas int, timeout time.Duration) *Fence {
	return &Fence{rdb: rdb, replicas: replicas, timeout: min(max(timeout, time.Millisecond), MaxTimeout)}
}

// Replicas is how many replicas must acknowledge (0: the Fence is off).
func (f *Fence) Replicas() int {
	if f == nil {
		return 0
	}
	return f.replicas
}

// Wait returns once the writes this process finished before the call are
// acknowledged by the Fence's number of replicas, or an error: a
// *NotReplicatedError (errors.Is ErrNotReplicated) when too few
// acknowledged within the timeout, or the error talking to Redis. Either
// way the writes may still be applied: a caller answers that the outcome
// is unknown, and the retry must be idempotent.
func (f *Fence) Wait(ctx context.Context) error {
	if f == nil || f.replicas <= 0 || f.rdb == nil {
		return nil
	}
	if cc, ok := f.rdb.(*redis.ClusterClient); ok {
		return f.waitCluster(ctx, cc)
	}
	acked, err := f.wait(ctx, f.rdb, FenceKey)
	if err != nil {
		return err
	}
	if acked < f.replicas {
		return &NotReplicatedError{Want: f.replicas, Acked: acked}
	}
	return nil
}

// wait writes key and sends WAIT on one connection (a pipeline uses one),
// and returns how many replicas acknowledged.
func (f *Fence) wait(ctx context.Context, c redis.Cmdable, key string) (int, error) {
	pipe := c.Pipeline()
	incr := pipe.Incr(ctx, key)
	wait := pipe.Do(ctx, "wait", f.replicas, f.timeout.Milliseconds())
	_, _ = pipe.Exec(ctx)
	if err := incr.Err(); err != nil {
		if redis.IsNoReplicasError(err) {
			return 0, &NotReplicatedError{Want: f.replicas, Refused: true}
		}
		return 0, err
	}
	n, err := wait.Int()
	if err != nil {
		return 0, err
	}
	return int(n), nil
}

// waitCluster fences every primary of a Cluster, in parallel: WAIT only
// counts the replicas of the node it runs on, and the writes of a unit may
// have gone to any of them. Each primary gets a fence key in one of its
// own slots.
func (f *Fence) waitCluster(ctx context.Context, cc *redis.ClusterClient) error {
	var mu sync.Mutex
	fewest := -1
	err := cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		acked, err := f.waitNode(ctx, cc, node)
		if err != nil {
			return err
		}
		mu.Lock()
		if fewest < 0 || acked < fewest {
			fewest = acked
		}
		mu.Unlock()
		return nil
	})
	if err != nil {
		return err
	}
	if fewest < f.replicas {
		return &NotReplicatedError{Want: f.replicas, Acked: max(fewest, 0)}
	}
	return nil
}

// waitNode fences one Cluster primary. The slots a primary serves change
// when the cluster is resharded: a fence key that moved away is answered
// MOVED, and the slots are read again.
func (f *Fence) waitNode(ctx context.Context, cc *redis.ClusterClient, node *redis.Client) (int, error) {
	addr := node.Options().Addr
	for try := 0; ; try++ {
		tag, err := f.tagFor(ctx, cc, addr, try > 0)
		if err != nil {
			return 0, err
		}
		acked, err := f.wait(ctx, node, FenceKey+":{"+tag+"}")
		if err == nil || try > 0 || !isMoved(err) {
			return acked, err
		}
	}
}

func isMoved(err error) bool {
	return err != nil && (strings.HasPrefix(err.Error(), "MOVED ") || strings.HasPrefix(err.Error(), "ASK "))
}

// tagFor returns a hash tag whose slot the primary at addr serves.
func (f *Fence) tagFor(ctx context.Context, cc *redis.ClusterClient, addr string, refresh bool) (string, error) {
	f.mu.Lock()
	tag, ok := f.tags[addr]
	f.mu.Unlock()
	if ok && !refresh {
		return tag, nil
	}
	slots, err := cc.ClusterSlots(ctx).Result()
	if err != nil {
		return "", fmt.Errorf("replication: cluster slots: %w", err)
	}
	for _, s := range slots {
		if len(s.Nodes) > 0 && s.Nodes[0].Addr == addr {
			tag = TagForSlot(s.Start)
			f.mu.Lock()
			if f.tags == nil {
				f.tags = map[string]string{}
			}
			f.tags[addr] = tag
			f.mu.Unlock()
			return tag, nil
		}
	}
	return "", fmt.Errorf("replication: the cluster's slots name no primary at %s", addr)
}
