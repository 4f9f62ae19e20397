package ratelimit_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/ratelimit"
	"github.com/patientmsg/gateway/internal/redistest"
)

func TestALimitHoldsAcrossConcurrentWorkers(t *testing.T) {
	srv := redistest.Start(t)
	if srv.Kind == redistest.KindMiniredis {
		t.Skip("miniredis has no TIME-based clock to test against")
	}
	l, err := ratelimit.New(srv.Client(), 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	var allowed atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wait, err := l.Reserve(context.Background(), "voice:+15005550006")
			if err != nil {
				t.Error(err)
			}
			if wait == 0 {
				allowed.Add(1)
			} else if wait > time.Second {
				t.Errorf("wait %s exceeds one interval", wait)
			}
		}()
	}
	wg.Wait()
	if allowed.Load() != 1 {
		t.Fatalf("%d of 20 racing workers got a slot at 1/s, want exactly 1", allowed.Load())
	}
	if wait, _ := l.Reserve(context.Background(), "voice:+15005550007"); wait != 0 {
		t.Fatal("another sender has its own limit")
	}
}

func TestTheWaitEndsWhenTheNextSlotFrees(t *testing.T) {
	srv := redistest.Start(t)
	l, _ := ratelimit.New(srv.Client(), 5, 2) // one every 200 ms, burst 2
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if w, _ := l.Reserve(ctx, "k"); w != 0 {
			t.Fatalf("burst slot %d refused (wait %s)", i, w)
		}
	}
	w, _ := l.Reserve(ctx, "k")
	if w <= 0 || w > 200*time.Millisecond {
		t.Fatalf("third call wait %s, want (0, 200ms]", w)
	}
	time.Sleep(w)
	if w2, _ := l.Reserve(ctx, "k"); w2 != 0 {
		t.Fatalf("after waiting the advertised %s, still asked to wait %s", w, w2)
	}
	if _, err := ratelimit.New(srv.Client(), 0, 1); err == nil {
		t.Fatal("a zero rate must be refused")
	}
}
