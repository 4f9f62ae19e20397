package admission

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/redistest"
)

const mb = 1 << 20

// fakeMemory is a Redis whose memory the test sets, counting readings.
type fakeMemory struct {
	used, max atomic.Int64
	fail      atomic.Bool
	reads     atomic.Int64
}

func (f *fakeMemory) read(context.Context) (Memory, error) {
	f.reads.Add(1)
	if f.fail.Load() {
		return Memory{}, errors.New("connection refused")
	}
	return Memory{Used: f.used.Load(), Max: f.max.Load()}, nil
}

func guarded(t *testing.T, th Thresholds) (*Controller, *fakeMemory, *clock) {
	t.Helper()
	f := &fakeMemory{}
	clk := newClock()
	c, err := New(nil, Config{Memory: th, ReadMemory: f.read, Now: clk.Now, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	return c, f, clk
}

func TestTheMemoryGuardRefusesEachClassAtItsThreshold(t *testing.T) {
	cases := []struct {
		name      string
		used, max int64
		refused   []Class // of Bulk, Routine, Urgent
	}{
		{"plenty of room", 10 * mb, 100 * mb, nil},
		{"just under 80 %", 79*mb + mb/2, 100 * mb, nil},
		{"at 80 % bulk is refused", 80 * mb, 100 * mb, []Class{Bulk}},
		{"at 85 % routine still passes", 85 * mb, 100 * mb, []Class{Bulk}},
		{"at 90 % routine is refused too", 90 * mb, 100 * mb, []Class{Bulk, Routine}},
		{"at 96.9 % crisis, broadcasts, callbacks and replies still pass", 96*mb + 9*mb/10, 100 * mb, []Class{Bulk, Routine}},
		{"at 97 % everything is refused", 97 * mb, 100 * mb, []Class{Bulk, Routine, Urgent}},
		{"over maxmemory", 120 * mb, 100 * mb, []Class{Bulk, Routine, Urgent}},
		{"maxmemory 0 is no guard", 900 * mb, 0, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, f, _ := guarded(t, DefaultThresholds)
			f.used.Store(tc.used)
			f.max.Store(tc.max)
			for _, cl := range []Class{Bulk, Routine, Urgent} {
				want := false
				for _, r := range tc.refused {
					want = want || r == cl
				}
				err := c.CheckMemory(context.Background(), cl)
				var full *StoreFullError
				if got := errors.As(err, &full); got != want {
					t.Fatalf("%s: refused %v, want %v (%v)", cl, got, want, err)
				}
				if want && (full.Class != cl || full.Threshold != DefaultThresholds.Of(cl) || full.Memory.Used != tc.used) {
					t.Fatalf("%s: refusal %+v", cl, full)
				}
			}
			if got := c.Refusing(Memory{Used: tc.used, Max: tc.max}); len(got) != len(tc.refused) {
				t.Fatalf("Refusing = %v, want %v", got, tc.refused)
			}
		})
	}
}

func TestMemoryRefusalsSayWhenToComeBack(t *testing.T) {
	cases := []struct {
		class Class
		want  time.Duration
	}{
		{Bulk, MemoryRetryAfter}, {Routine, MemoryRetryAfter}, {Urgent, UrgentRetryAfter},
	}
	for _, tc := range cases {
		t.Run(tc.class.String(), func(t *testing.T) {
			if got := (&StoreFullError{Class: tc.class}).RetryAfter(); got != tc.want || got <= 0 {
				t.Fatalf("RetryAfter %s, want %s", got, tc.want)
			}
		})
	}
}

func TestMemoryIsReadAtMostOncePerTTL(t *testing.T) {
	ctx := context.Background()
	c, f, clk := guarded(t, DefaultThresholds)
	f.max.Store(100 * mb)
	f.used.Store(50 * mb)
	for i := 0; i < 100; i++ {
		if err := c.CheckMemory(ctx, Bulk); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.reads.Load(); n != 1 {
		t.Fatalf("%d readings for 100 requests within the TTL, want 1", n)
	}
	// Redis fills up: the guard sees it once the reading is a second old.
	f.used.Store(85 * mb)
	clk.move(999 * time.Millisecond)
	if err := c.CheckMemory(ctx, Bulk); err != nil {
		t.Fatalf("a reading younger than the TTL must be used: %v", err)
	}
	clk.move(time.Millisecond)
	if err := c.CheckMemory(ctx, Bulk); err == nil {
		t.Fatal("after the TTL the new reading must refuse bulk")
	}
	if n := f.reads.Load(); n != 2 {
		t.Fatalf("%d readings, want 2", n)
	}
	// Redis stops answering INFO: the last reading stays in force, and
	// is asked for again only once per TTL.
	f.fail.Store(true)
	clk.move(2 * time.Second)
	for i := 0; i < 10; i++ {
		if err := c.CheckMemory(ctx, Bulk); err == nil {
			t.Fatal("the last reading (85 %) must keep refusing bulk")
		}
	}
	if n := f.reads.Load(); n != 3 {
		t.Fatalf("%d readings while failing, want 3", n)
	}
	m, ok := c.Memory(ctx)
	if !ok || m.Used != 85*mb || m.Ratio() != 0.85 {
		t.Fatalf("memory %+v %v", m, ok)
	}
}

func TestWithoutAReadingOrAGuardNothingIsRefused(t *testing.T) {
	ctx := context.Background()
	c, f, _ := guarded(t, DefaultThresholds)
	f.fail.Store(true)
	if err := c.CheckMemory(ctx, Urgent); err != nil {
		t.Fatalf("Redis never read: %v", err)
	}
	off, f2, _ := guarded(t, Thresholds{})
	f2.used.Store(99 * mb)
	f2.max.Store(100 * mb)
	if err := off.CheckMemory(ctx, Bulk); err != nil || f2.reads.Load() != 0 {
		t.Fatalf("guard off: %v, %d readings", err, f2.reads.Load())
	}
}

func TestThresholdsMustRiseWithTheClass(t *testing.T) {
	cases := []struct {
		name string
		th   Thresholds
		ok   bool
	}{
		{"the defaults", DefaultThresholds, true},
		{"off", Thresholds{}, true},
		{"all at once", Thresholds{0.9, 0.9, 0.9}, true},
		{"bulk above routine", Thresholds{0.95, 0.9, 0.97}, false},
		{"above maxmemory", Thresholds{0.8, 0.9, 1.2}, false},
		{"a zero bulk", Thresholds{0, 0.9, 0.97}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(nil, Config{Memory: tc.th}); (err == nil) != tc.ok {
				t.Fatalf("New: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestParseInfoMemory(t *testing.T) {
	cases := []struct {
		name string
		info string
		want Memory
		ok   bool
	}{
		{"redis 7", "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nmaxmemory:33554432\r\nmaxmemory_human:32.00M\r\nmaxmemory_policy:noeviction\r\n",
			Memory{Used: 1 << 20, Max: 32 << 20}, true},
		{"no maxmemory", "used_memory:123\nmaxmemory:0\n", Memory{Used: 123}, true},
		{"not INFO memory", "# Server\r\nredis_version:7.0.15\r\n", Memory{}, false},
		{"garbage", "used_memory:lots\nmaxmemory:0\n", Memory{}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseInfoMemory(tc.info)
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v ok=%v", got, err, tc.want, tc.ok)
			}
		})
	}
}

func TestTheGuardReadsARealRedis(t *testing.T) {
	rs := redistest.StartWithArgs(t, "--maxmemory", "64mb", "--maxmemory-policy", "noeviction")
	c, err := New(rs.Client(), Config{Memory: DefaultThresholds, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	m, ok := c.Memory(context.Background())
	if !ok || m.Max != 64*mb || m.Used <= 0 || m.Ratio() >= 0.5 {
		t.Fatalf("reading %+v %v", m, ok)
	}
}

func TestAtMaxmemoryReleasesStillWorkAndOOMIsRecognised(t *testing.T) {
	ctx := context.Background()
	rs := redistest.StartWithArgs(t, "--maxmemory", "64mb", "--maxmemory-policy", "noeviction")
	rdb := rs.Client()
	c, err := New(rdb, Config{BacklogHours: 1, SenderRates: map[string]float64{"sms": 1}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := c.Reserve(ctx, sms("counted", 1)); !ok || err != nil {
		t.Fatalf("reserve: %v %v", ok, err)
	}
	// 2 MB of data, then a maxmemory below what is used: Redis is full.
	chunk := strings.Repeat("x", 64<<10)
	for i := 0; i < 32; i++ {
		if err := rdb.Set(ctx, fmt.Sprint("filler:", i), chunk, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := rdb.ConfigSet(ctx, "maxmemory", "1mb").Err(); err != nil {
		t.Fatal(err)
	}
	err = rdb.Set(ctx, "one-more", "x", 0).Err()
	if !IsOutOfMemory(err) {
		t.Fatalf("a write at maxmemory: %v is not recognised as out of memory", err)
	}
	_, err = reserveScript.Run(ctx, rdb, []string{backlogKey("clinic-a", "sms")}, "x", 1, 100, 0).Result()
	if !IsOutOfMemory(err) {
		t.Fatalf("a script's write at maxmemory: %v is not recognised as out of memory", err)
	}
	if IsOutOfMemory(errors.New("OOM")) || IsOutOfMemory(nil) {
		t.Fatal("only Redis' own refusal is out of memory")
	}
	// A message leaving the queue is taken out of the backlog even now.
	if err := c.Release(ctx, "clinic-a", "sms", "counted"); err != nil {
		t.Fatalf("release at maxmemory: %v", err)
	}
	if n := queued(t, c, "clinic-a", "sms"); n != 0 {
		t.Fatalf("queued %d after the release", n)
	}
}
