package console_test

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/broadcasts"
)

// TestTheLiveRosterSendsAtMostTwoUpdatesASecond: a person's answer
// changes every 10 ms for three seconds; the stream coalesces the changes
// into at most one update per 500 ms, the first at once.
func TestTheLiveRosterSendsAtMostTwoUpdatesASecond(t *testing.T) {
	g := consoleGateway(t)
	bc := g.broadcast(keyA)
	store := g.svc.Broadcast.Store
	eventually(t, "the broadcast is fanned out", func() bool {
		sum, err := store.Get(context.Background(), "clinic-a", bc)
		return err == nil && sum.Roster().FanOutDone && sum.Roster().FannedOut == 2
	})
	lead := g.signIn("lead@clinic-a.test")
	req, _ := http.NewRequest("GET", g.base+"/console/broadcasts/"+bc+"/live", nil)
	req.Header.Set("Cookie", lead.cookie)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := g.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("live = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	go func() {
		answers := []string{"safe", "need_help"}
		for i := 0; ctx.Err() == nil; i++ {
			_, _ = store.Update(ctx, bc, 0, func(p *broadcasts.Person) (*broadcasts.Event, bool) {
				p.Answer = answers[i%2]
				return &broadcasts.Event{Type: "person", Index: 0, Answer: p.Answer}, true
			})
			time.Sleep(10 * time.Millisecond)
		}
	}()
	events := make(chan time.Time, 100)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "event: roster") {
				events <- time.Now()
			}
		}
		close(events)
	}()
	var got []time.Time
	start := time.Now()
	time.AfterFunc(3200*time.Millisecond, func() { resp.Body.Close() })
	for at := range events {
		if at.Sub(start) > 3*time.Second {
			break
		}
		got = append(got, at)
	}
	t.Logf("%d roster updates in 3 s", len(got))
	// 3 s at one update per 500 ms: the first and at most 6 more.
	if len(got) < 2 || len(got) > 7 {
		t.Fatalf("%d roster updates in 3 s of changes every 10 ms; want 2 to 7", len(got))
	}
}
