package broadcasts_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/audiences"
	"github.com/patientmsg/gateway/internal/broadcasts"
	"github.com/patientmsg/gateway/internal/redistest"
)

func queuedPerson(i int, channel string, deadline time.Time) *broadcasts.Person {
	return &broadcasts.Person{Index: i, To: audiences.Recipient{Phone: "+14155550100"}, Channels: []string{channel},
		State: broadcasts.PersonQueued, Deadline: &deadline,
		Tries: []broadcasts.Try{{Channel: channel, MessageID: "M" + strings.Repeat("0", i), At: time.Now().UTC(), Status: "queued"}}}
}

func TestStartingPeopleTwiceCountsEachOnce(t *testing.T) {
	ctx := context.Background()
	store := broadcasts.NewStore(redistest.Start(t).Client(), time.Hour)
	cfg := &broadcasts.Config{ID: broadcasts.NewID(), Tenant: "clinic", Channels: []string{"sms", "wechat"},
		AckTimeout: time.Minute, Priority: "crisis", Total: 5, Chunks: 1, CreatedAt: time.Now().UTC()}
	if err := store.Create(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	due := time.Now().Add(-time.Second) // already past: the sweep would take them
	first := []*broadcasts.Person{
		queuedPerson(0, "sms", due), queuedPerson(1, "wechat", due), queuedPerson(2, "sms", due),
		{Index: 3, State: broadcasts.PersonUnreachable, Tries: []broadcasts.Try{}},
	}
	stored, fresh, err := store.StartPeople(ctx, cfg.ID, 0, first)
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != 4 || !fresh[0] || !fresh[3] {
		t.Fatalf("first run: %d stored, fresh %v", len(stored), fresh)
	}
	// The chunk runs again (a worker restarted): person 0 has moved on
	// meanwhile and must stay as it is; person 4 is new.
	if _, err := store.Update(ctx, cfg.ID, 0, func(p *broadcasts.Person) (*broadcasts.Event, bool) {
		p.State, p.Tries[0].Status = broadcasts.PersonSent, "sent"
		return &broadcasts.Event{}, true
	}); err != nil {
		t.Fatal(err)
	}
	again := append([]*broadcasts.Person{queuedPerson(0, "sms", due)}, queuedPerson(4, "sms", due))
	stored, fresh, err = store.StartPeople(ctx, cfg.ID, 0, again)
	if err != nil {
		t.Fatal(err)
	}
	if fresh[0] || !fresh[1] || stored[0].State != broadcasts.PersonSent {
		t.Fatalf("second run: fresh %v, person 0 %s", fresh, stored[0].State)
	}
	sum, err := store.Get(ctx, "", cfg.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"st:queued": 3, "st:sent": 1, "st:unreachable": 1, "ch:sms:queued": 2, "ch:sms:sent": 1, "ch:wechat:queued": 1}
	for k, v := range want {
		if sum.Counters[k] != v {
			t.Errorf("counter %s = %d, want %d (all: %v)", k, sum.Counters[k], v, sum.Counters)
		}
	}
	if n, _ := store.Count(ctx, cfg.ID, "st:queued"); n != 3 {
		t.Errorf("%d people listed queued, want 3", n)
	}
	// Everyone waiting for an answer has a deadline (person 0 still waits:
	// sent is not acknowledged); the unreachable person has none.
	dueNow, waiting, _, err := store.Due(ctx, cfg.ID, time.Now(), 100)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(dueNow) != "[0 1 2 4]" || waiting != 4 {
		t.Errorf("due %v (waiting %d), want people 0, 1, 2 and 4", dueNow, waiting)
	}
	// One event per run that made people, counting them.
	evs, err := store.Events(ctx, cfg.ID, "0", 0)
	if err != nil {
		t.Fatal(err)
	}
	var chunks []string
	for _, ev := range evs {
		if ev.Values["t"] == "chunk" {
			chunks = append(chunks, ev.Values["e"].(string))
		}
	}
	if len(chunks) != 2 || !strings.Contains(chunks[0], `"people":4}`) || !strings.Contains(chunks[1], `"people":1}`) {
		t.Errorf("chunk events %v", chunks)
	}
}

// Scan gives every person once, one at a time, while it reads the next
// pages and decodes them on other goroutines; it stops at f's first
// error and at the context's end.
func TestScanGivesEveryPersonOnceAndStops(t *testing.T) {
	ctx := context.Background()
	store := broadcasts.NewStore(redistest.Start(t).Client(), time.Hour)
	const n = 5500 // several pages
	cfg := &broadcasts.Config{ID: broadcasts.NewID(), Tenant: "clinic", Channels: []string{"sms"}, AckTimeout: time.Minute,
		Priority: "crisis", Total: n, Chunks: 1, CreatedAt: time.Now().UTC()}
	if err := store.Create(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	due := time.Now().Add(time.Hour)
	for from := 0; from < n; from += 500 {
		var people []*broadcasts.Person
		for i := from; i < from+500; i++ {
			people = append(people, queuedPerson(i, "sms", due))
		}
		if _, _, err := store.StartPeople(ctx, cfg.ID, 0, people); err != nil {
			t.Fatal(err)
		}
	}
	seen := make([]int, n)
	busy := false
	if err := store.Scan(ctx, cfg.ID, func(p *broadcasts.Person) error {
		if busy {
			t.Error("f called while another call was running")
		}
		busy = true
		defer func() { busy = false }()
		seen[p.Index]++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for i, k := range seen {
		if k != 1 {
			t.Fatalf("person %d given %d times", i, k)
		}
	}
	stop := fmt.Errorf("enough")
	calls := 0
	if err := store.Scan(ctx, cfg.ID, func(*broadcasts.Person) error {
		if calls++; calls == 10 {
			return stop
		}
		return nil
	}); err != stop || calls != 10 {
		t.Fatalf("Scan = %v after %d calls; want %v after 10", err, calls, stop)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := store.Scan(cctx, cfg.ID, func(*broadcasts.Person) error { return nil }); err == nil {
		t.Fatal("Scan with a canceled context returned no error")
	}
}
