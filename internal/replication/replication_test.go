package replication_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/redistest"
	"github.com/patientmsg/gateway/internal/replication"
)

// freeze stops a redis-server (SIGSTOP) until the returned func resumes it:
// a replica that is connected but acknowledges nothing.
func freeze(t *testing.T, s *redistest.Server) (thaw func()) {
	t.Helper()
	pid := s.Pid()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	thaw = func() { once.Do(func() { _ = syscall.Kill(pid, syscall.SIGCONT) }) }
	t.Cleanup(thaw)
	return thaw
}

func TestWhatTheFenceAcknowledgedIsOnTheReplicaWhateverConnectionWroteIt(t *testing.T) {
	primary := redistest.StartWithArgs(t)
	replica := redistest.StartReplica(t, primary)
	ctx := t.Context()
	// The writes go through one client, the fence through another: the
	// fence covers writes it never saw, as the ledger's and the queue's.
	writer := primary.Client()
	// Two hundred waits at once on a loaded machine: a generous timeout,
	// as the test is about what was acknowledged, not how fast.
	fence := replication.New(primary.Client(), replication.Options{Replicas: 1, Timeout: 10 * time.Second})
	onReplica := replica.Client()

	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("unit:%d", i)
			began := fence.Begin()
			if err := writer.Set(ctx, key, "written", 0).Err(); err != nil {
				errs <- err
				return
			}
			if err := fence.Wait(ctx, began); err != nil {
				errs <- err
				return
			}
			if v, err := onReplica.Get(ctx, key).Result(); err != nil || v != "written" {
				errs <- fmt.Errorf("%s acknowledged but not on the replica: %q %v", key, v, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestAFrozenReplicaMakesTheFenceFailWithinItsTimeout(t *testing.T) {
	primary := redistest.StartWithArgs(t)
	replica := redistest.StartReplica(t, primary)
	ctx := t.Context()
	c := primary.Client()
	// A pooled connection, warmed up before the replica stops.
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	// A replica that has just attached may take longer than the fence's
	// timeout to acknowledge its first write on a loaded machine: warm up
	// with a patient fence first.
	patient := replication.New(c, replication.Options{Replicas: 1, Timeout: 10 * time.Second})
	if err := patient.Wait(ctx, patient.Begin()); err != nil {
		t.Fatalf("with the replica up: %v", err)
	}
	fence := replication.New(c, replication.Options{Replicas: 1, Timeout: 300 * time.Millisecond})

	thaw := freeze(t, replica)
	if err := primary.Client().Set(ctx, "lost-in-a-failover", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// Why the fence writes: a bare WAIT counts the replicas that have the
	// connection's own last write, and this connection wrote nothing since
	// the replica stopped: it claims the replica has everything.
	if n, err := c.Wait(ctx, 1, 300*time.Millisecond).Result(); err != nil || n != 1 {
		t.Fatalf("a bare WAIT on a connection without writes = %d, %v; the test assumes 1 at once", n, err)
	}
	began := time.Now()
	err := fence.Wait(ctx, fence.Begin())
	took := time.Since(began)
	var nr *replication.NotReplicatedError
	if !errors.Is(err, replication.ErrNotReplicated) || !errors.As(err, &nr) || nr.Want != 1 || nr.Acked != 0 || nr.Refused {
		t.Fatalf("fence with a frozen replica: %v", err)
	}
	if took < 250*time.Millisecond || took > 5*time.Second {
		t.Fatalf("the fence gave up after %s, want its timeout (300ms)", took)
	}
	thaw()
	if err := patient.Wait(ctx, patient.Begin()); err != nil {
		t.Fatalf("the replica is back: %v", err)
	}
	if v, err := replica.Client().Get(ctx, "lost-in-a-failover").Result(); err != nil || v != "x" {
		t.Fatalf("after the fence: %q %v", v, err)
	}
}

func TestAPrimaryThatRefusesWritesWithoutReplicasIsNotReplicated(t *testing.T) {
	primary := redistest.StartWithArgs(t, "--min-replicas-to-write", "1")
	err := replication.New(primary.Client(), replication.Options{Replicas: 1, Timeout: time.Second}).Wait(t.Context(), 0)
	var nr *replication.NotReplicatedError
	if !errors.As(err, &nr) || !nr.Refused || !errors.Is(err, replication.ErrNotReplicated) {
		t.Fatalf("fence on a primary refusing writes (NOREPLICAS): %v", err)
	}
}

func TestAFenceForNoReplicasMakesNoRoundTrip(t *testing.T) {
	// Nothing listens there: a round trip would fail.
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	defer c.Close()
	for name, f := range map[string]*replication.Fence{
		"zero replicas":  replication.New(c, replication.Options{Timeout: time.Second}),
		"a nil fence":    nil,
		"the zero fence": {},
	} {
		if err := f.Wait(context.Background(), f.Begin()); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestTheStartUpCheckWarnsOfSettingsThatLoseOrRefuseMessages(t *testing.T) {
	primary := redistest.StartWithArgs(t)
	redistest.StartReplica(t, primary)
	fenced := redistest.StartWithArgs(t, "--min-replicas-to-write", "1", "--min-replicas-max-lag", "5")
	redistest.StartReplica(t, fenced)
	alone := redistest.StartWithArgs(t)
	cases := []struct {
		name     string
		server   *redistest.Server
		replicas int
		warn     []string
	}{
		{"replicas, but no acknowledgement asked", fenced, 0, []string{"REDIS_MIN_REPLICAS_ACK is 0"}},
		{"replicas, and a primary that writes without them", primary, 1, []string{"min-replicas-to-write 0"}},
		{"more acknowledgements than replicas", fenced, 2, []string{"more replicas than the primary has"}},
		{"acknowledged by a replica of a fenced primary", fenced, 1, nil},
		{"a single node, acknowledgement off", alone, 0, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			top, err := replication.Check(t.Context(), tc.server.Client(), tc.replicas, log)
			if err != nil {
				t.Fatal(err)
			}
			if tc.server != alone && top.Replicas != 1 {
				t.Fatalf("topology %+v, want 1 replica", top)
			}
			got := logs.String()
			for _, w := range tc.warn {
				if !strings.Contains(got, w) {
					t.Errorf("no warning %q in:\n%s", w, got)
				}
			}
			if tc.warn == nil && got != "" {
				t.Errorf("unexpected warning:\n%s", got)
			}
		})
	}
}

func TestAClusterFenceWaitsOnEveryPrimary(t *testing.T) {
	rs := redistest.StartCluster(t)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{rs.Addr}})
	defer cc.Close()
	// The test cluster's only primary has no replica.
	err := replication.New(cc, replication.Options{Replicas: 1, Timeout: 100 * time.Millisecond}).Wait(t.Context(), 0)
	var nr *replication.NotReplicatedError
	if !errors.As(err, &nr) || nr.Acked != 0 || nr.Refused {
		t.Fatalf("cluster fence without replicas: %v", err)
	}
	if n, err := cc.Exists(t.Context(), replication.FenceKey+":{"+replication.TagForSlot(0)+"}").Result(); err != nil || n != 1 {
		t.Fatalf("the fence key of the primary's first slot: %d %v", n, err)
	}
}

func TestTagsFallInTheirSlot(t *testing.T) {
	// The CRC16/XMODEM check value of "123456789" is 0x31C3.
	if got := replication.Slot("123456789"); got != 0x31C3 {
		t.Fatalf("Slot(123456789) = %#x", got)
	}
	for _, slot := range []int{0, 1, 5460, 5461, 10922, 16383} {
		if got := replication.Slot(replication.TagForSlot(slot)); got != slot {
			t.Errorf("TagForSlot(%d) falls in %d", slot, got)
		}
	}
}

func TestAFenceWaitsForEveryReplicaUntilOneHasBeenGoneForTheHoldTime(t *testing.T) {
	primary := redistest.StartWithArgs(t)
	first := redistest.StartReplica(t, primary)
	second := redistest.StartReplica(t, primary)
	ctx := t.Context()
	bothOnline(t, primary)
	fence := replication.New(primary.Client(), replication.Options{Replicas: 1, Timeout: time.Second, Hold: 2 * time.Second})
	if err := eventually(ctx, fence, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	// One replica acknowledging is not enough while the other is online
	// but behind: in a failover it could be the one promoted.
	thaw := freeze(t, first)
	err := fence.Wait(ctx, fence.Begin())
	var nr *replication.NotReplicatedError
	if !errors.As(err, &nr) || nr.Want != 2 || nr.Acked != 1 {
		t.Fatalf("with one of two replicas frozen: %v", err)
	}
	thaw()
	// The thawed replica catches up within moments (longer on a loaded
	// machine than one wait).
	if err := eventually(ctx, fence, 5*time.Second); err != nil {
		t.Fatalf("both replicas back: %v", err)
	}
	// A replica that is gone is waited for during the hold time, then the
	// primary is writable with the other.
	second.Stop()
	if err := fence.Wait(ctx, fence.Begin()); !errors.As(err, &nr) || nr.Want != 2 {
		t.Fatalf("a replica just gone: %v", err)
	}
	time.Sleep(2100 * time.Millisecond)
	if err := eventually(ctx, fence, 5*time.Second); err != nil {
		t.Fatalf("a replica gone for the hold time: %v", err)
	}
}

// eventually retries the fence until it passes or within is over: on a
// loaded machine a replica's acknowledgement can miss one timeout.
func eventually(ctx context.Context, fence *replication.Fence, within time.Duration) error {
	err := fence.Wait(ctx, fence.Begin())
	for deadline := time.Now().Add(within); err != nil && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		err = fence.Wait(ctx, fence.Begin())
	}
	return err
}

// bothOnline waits until the primary has two replicas online: a replica
// still syncing when the fence first looks would not be counted.
func bothOnline(t *testing.T, primary *redistest.Server) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := primary.Client().Info(t.Context(), "replication").Result()
		if err == nil && strings.Count(info, "state=online") == 2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replicas never came online: %v %s", err, info)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
