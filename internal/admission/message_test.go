package admission

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// AdmitMessage is Rate then Reserve in one script: these are the two
// answered one after the other, so each case says what both would.
func TestAMessageMeetsItsRateAndItsBacklogInOneStep(t *testing.T) {
	ctx := context.Background()
	cfg := smallBacklog // a backlog of 10 SMS segments
	cfg.TenantRate = Rate{PerSecond: 1, Burst: 3}
	c, clk := newController(t, cfg)

	// Three requests fit the burst; each message counts in the backlog.
	for i := 0; i < 3; i++ {
		st, counted, err := c.AdmitMessage(ctx, sms(fmt.Sprint("m", i), 2))
		if err != nil || !counted {
			t.Fatalf("message %d: counted %v, %v", i, counted, err)
		}
		if st.Rate != cfg.TenantRate || st.Remaining != 2-i {
			t.Fatalf("message %d: rate state %+v, want %d remaining", i, st, 2-i)
		}
	}
	// The fourth is over the rate: refused, and not counted in the backlog.
	_, counted, err := c.AdmitMessage(ctx, sms("over", 2))
	var limited *RateLimitedError
	if !errors.As(err, &limited) || counted || limited.State.Wait <= 0 {
		t.Fatalf("over the rate: counted %v, %v", counted, err)
	}
	if got := queued(t, c, "clinic-a", "sms"); got != 6 {
		t.Fatalf("backlog %d segments after a refusal by the rate, want 6", got)
	}
	// A crisis message passes the rate (counted, forced) and never counts
	// in the backlog.
	crisis := sms("crisis", 2)
	crisis.Priority = PriorityCrisis
	st, counted, err := c.AdmitMessage(ctx, crisis)
	if err != nil || counted || !st.Forced {
		t.Fatalf("crisis over the rate: counted %v, forced %v, %v", counted, st.Forced, err)
	}
	// Later, the rate admits again; a message that does not fit the
	// backlog is refused by it, and its request was counted by the rate.
	clk.move(10 * time.Second)
	_, counted, err = c.AdmitMessage(ctx, sms("big", 5))
	var full *BacklogFullError
	if !errors.As(err, &full) || counted || full.Queued != 6 {
		t.Fatalf("a full backlog: counted %v, %v", counted, err)
	}
	st, _ = c.Rate(ctx, "clinic-a", false)
	if st.Remaining != 1 { // of 3: the refused message's request and this one
		t.Fatalf("after a backlog refusal the rate has %d left, want 1", st.Remaining)
	}
	// The same message again counts once.
	if _, counted, err := c.AdmitMessage(ctx, sms("m0", 2)); err != nil || !counted {
		t.Fatalf("a message counted already: %v, %v", counted, err)
	}
	if got := queued(t, c, "clinic-a", "sms"); got != 6 {
		t.Fatalf("backlog %d segments, want 6", got)
	}
}

func TestAMessageWithoutARateOrABacklogTakesNoRoundTrip(t *testing.T) {
	ctx := context.Background()
	// No rate: the backlog alone decides.
	c, _ := newController(t, smallBacklog)
	st, counted, err := c.AdmitMessage(ctx, sms("a", 10))
	if err != nil || !counted || !st.Rate.Unlimited() {
		t.Fatalf("no rate: counted %v, %+v, %v", counted, st, err)
	}
	if _, _, err := c.AdmitMessage(ctx, sms("b", 1)); err == nil {
		t.Fatal("a full backlog admitted a message")
	}
	// No backlog: the rate alone decides, and nothing is counted.
	r, _ := newController(t, Config{TenantRate: Rate{PerSecond: 1, Burst: 1}})
	if _, counted, err := r.AdmitMessage(ctx, sms("a", 1)); err != nil || counted {
		t.Fatalf("no backlog: counted %v, %v", counted, err)
	}
	if _, _, err := r.AdmitMessage(ctx, sms("b", 1)); err == nil {
		t.Fatal("a second request over a rate of 1 at once was admitted")
	}
	// Neither: nothing is asked of Redis.
	var none Controller
	none.cfg.Now, none.log = newClock().Now, quiet()
	if _, counted, err := none.AdmitMessage(ctx, sms("a", 1)); err != nil || counted {
		t.Fatalf("no limits: counted %v, %v", counted, err)
	}
}
