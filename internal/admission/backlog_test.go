package admission

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
)

// A cap of 10 SMS segments (36 s of a sender at 1 segment in 3.6 s) and 2
// calls, tiny so that tests reach it.
var smallBacklog = Config{BacklogHours: 0.01, SenderRates: map[string]float64{"sms": 1 / 3.6, "voice": 1.0 / 18}}

func sms(id string, cost int) Message {
	return Message{Tenant: "clinic-a", Channel: "sms", ID: id, Priority: "normal", Cost: cost}
}

func queued(t *testing.T, c *Controller, tenant, channel string) int64 {
	t.Helper()
	n, _, err := c.Backlog(context.Background(), tenant, channel)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestTheBacklogCapIsHoursOfTheSender(t *testing.T) {
	c, _ := newController(t, smallBacklog)
	cases := []struct {
		name    string
		channel string
		cap     int64
	}{
		{"SMS: hours × segments per second", "sms", 10},
		{"voice: hours × calls per second", "voice", 2},
		{"a channel without a sender rate has no cap", "email", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := c.BacklogCap(tc.channel); got != tc.cap {
				t.Fatalf("cap %d, want %d", got, tc.cap)
			}
		})
	}
	off, _ := newController(t, Config{SenderRates: smallBacklog.SenderRates})
	if off.BacklogCap("sms") != 0 {
		t.Fatal("BacklogHours 0 must mean no cap")
	}
}

func TestMessagesAreCountedUpToTheCapThenRefused(t *testing.T) {
	ctx := context.Background()
	c, _ := newController(t, smallBacklog)
	for i := 0; i < 4; i++ { // 4 messages of 2 segments: 8 of 10
		if ok, err := c.Reserve(ctx, sms(fmt.Sprint("m", i), 2)); !ok || err != nil {
			t.Fatalf("message %d: counted %v, %v", i, ok, err)
		}
	}
	// 3 segments would make 11.
	_, err := c.Reserve(ctx, sms("big", 3))
	var full *BacklogFullError
	if !errors.As(err, &full) {
		t.Fatalf("want a full backlog, got %v", err)
	}
	// One segment over: the sender makes room in 3.6 s, told in whole seconds.
	if full.Queued != 8 || full.Cap != 10 || full.Channel != "sms" || full.RetryAfter() != 4*time.Second {
		t.Fatalf("refusal %+v (retry after %s)", full, full.RetryAfter())
	}
	// 2 segments still fit.
	if ok, err := c.Reserve(ctx, sms("fits", 2)); !ok || err != nil {
		t.Fatalf("a message that fits: %v %v", ok, err)
	}
	if n := queued(t, c, "clinic-a", "sms"); n != 10 {
		t.Fatalf("queued %d, want 10", n)
	}
	// Another tenant, and another channel, have backlogs of their own.
	other := sms("b1", 2)
	other.Tenant = "clinic-b"
	if ok, err := c.Reserve(ctx, other); !ok || err != nil {
		t.Fatalf("clinic B is refused by clinic A's backlog: %v", err)
	}
	call := Message{Tenant: "clinic-a", Channel: "voice", ID: "v1", Priority: "bulk", Cost: 1}
	if ok, err := c.Reserve(ctx, call); !ok || err != nil {
		t.Fatalf("a call is refused by the SMS backlog: %v", err)
	}
}

func TestWhatTheBacklogCounts(t *testing.T) {
	ctx := context.Background()
	c, clk := newController(t, smallBacklog) // horizon: 0.01 h = 36 s
	cases := []struct {
		name    string
		msg     Message
		counted bool
	}{
		{"a routine message due now", sms("now", 1), true},
		{"a high-priority one", Message{Tenant: "clinic-a", Channel: "sms", ID: "high", Priority: "high", Cost: 1}, true},
		{"a bulk one", Message{Tenant: "clinic-a", Channel: "sms", ID: "bulk", Priority: "bulk", Cost: 1}, true},
		{"a crisis message is never counted", Message{Tenant: "clinic-a", Channel: "sms", ID: "crisis", Priority: "crisis", Cost: 1}, false},
		{"one due within the horizon", Message{Tenant: "clinic-a", Channel: "sms", ID: "soon", Cost: 1, Due: clk.Now().Add(30 * time.Second)}, true},
		{"one scheduled beyond it is not waiting for the sender yet", Message{Tenant: "clinic-a", Channel: "sms", ID: "later", Cost: 1, Due: clk.Now().Add(time.Hour)}, false},
		{"a channel without a cap", Message{Tenant: "clinic-a", Channel: "email", ID: "mail", Cost: 1}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := queued(t, c, tc.msg.Tenant, tc.msg.Channel)
			ok, err := c.Reserve(ctx, tc.msg)
			if err != nil || ok != tc.counted {
				t.Fatalf("counted %v (%v), want %v", ok, err, tc.counted)
			}
			if after := queued(t, c, tc.msg.Tenant, tc.msg.Channel); (after > before) != tc.counted {
				t.Fatalf("backlog went from %d to %d", before, after)
			}
		})
	}
}

func TestTheBacklogDropsOncePerMessage(t *testing.T) {
	ctx := context.Background()
	c, _ := newController(t, smallBacklog)
	for _, id := range []string{"a", "b", "c"} {
		if _, err := c.Reserve(ctx, sms(id, 2)); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		name string
		do   func() error
		want int64
	}{
		{"three messages of two segments", func() error { return nil }, 6},
		{"a replayed request counts its message once", func() error { _, err := c.Reserve(ctx, sms("a", 2)); return err }, 6},
		{"a sent message leaves the backlog", func() error { return c.Release(ctx, "clinic-a", "sms", "a") }, 4},
		{"its retried task ending again changes nothing", func() error { return c.Release(ctx, "clinic-a", "sms", "a") }, 4},
		{"nor does a message never counted", func() error { return c.Release(ctx, "clinic-a", "sms", "crisis-1") }, 4},
		{"nor another tenant's release of the same id", func() error { return c.Release(ctx, "clinic-b", "sms", "b") }, 4},
		{"a canceled one leaves it", func() error { return c.Release(ctx, "clinic-a", "sms", "b") }, 2},
		{"the last one empties it", func() error { return c.Release(ctx, "clinic-a", "sms", "c") }, 0},
		{"and it stays empty", func() error { return c.Release(ctx, "clinic-a", "sms", "c") }, 0},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if err := s.do(); err != nil {
				t.Fatal(err)
			}
			if n := queued(t, c, "clinic-a", "sms"); n != s.want {
				t.Fatalf("queued %d, want %d", n, s.want)
			}
		})
	}
	if n, _ := c.rdb.Exists(ctx, backlogKey("clinic-a", "sms")).Result(); n != 0 {
		t.Fatal("an empty backlog must leave no key behind")
	}
}

func TestASweepRemovesOnlyMessagesNoLongerWaiting(t *testing.T) {
	ctx := context.Background()
	c, clk := newController(t, smallBacklog)
	// A message is counted as its id is made: an entry's age is its id's.
	ids := map[string]string{}
	count := func(name string) {
		t.Helper()
		ids[name] = ulid.MustNew(ulid.Timestamp(clk.Now()), rand.Reader).String()
		if _, err := c.Reserve(ctx, sms(ids[name], 1)); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"waiting", "sent", "expired"} {
		count(name)
	}
	// Entries counted before the value was the cost alone: it says when
	// ("cost:added_ms"), and the id is not a ULID of that time.
	countOlder := func(id string) {
		t.Helper()
		key := backlogKey("clinic-a", "sms")
		if err := c.rdb.HSet(ctx, key, id, "1:"+strconv.FormatInt(clk.Now().UnixMilli(), 10)).Err(); err != nil {
			t.Fatal(err)
		}
		if err := c.rdb.HIncrBy(ctx, key, sumField, 1).Err(); err != nil {
			t.Fatal(err)
		}
	}
	countOlder("older-format")
	clk.move(2 * SweepMinAge)
	count("just-counted")
	countOlder("older-format-just-counted")
	asked := map[string]bool{}
	waiting := func(_ context.Context, asks []string) ([]bool, error) {
		out := make([]bool, len(asks))
		for i, id := range asks {
			asked[id] = true
			out[i] = id == ids["waiting"]
		}
		return out, nil
	}
	removed, err := c.SweepBacklogs(ctx, []string{"clinic-a", "clinic-b"}, waiting, time.Minute)
	if err != nil || removed != 3 {
		t.Fatalf("removed %d (%v), want the sent, the expired and the older-format message", removed, err)
	}
	if asked[ids["just-counted"]] || asked["older-format-just-counted"] {
		t.Fatal("an entry younger than SweepMinAge must not be questioned: its record may not be written yet")
	}
	if n := queued(t, c, "clinic-a", "sms"); n != 3 {
		t.Fatalf("queued %d after the sweep, want 3", n)
	}
	// Another process within the period does not sweep again.
	if removed, err := c.SweepBacklogs(ctx, []string{"clinic-a"}, waiting, time.Minute); removed != 0 || err != nil {
		t.Fatalf("a second sweep within the period: %d %v", removed, err)
	}
}
