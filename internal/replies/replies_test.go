package replies

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/redistest"
)

// newStore is a store on a throwaway Redis, and its client.
func newStore(t *testing.T) (*Store, *redis.Client) {
	t.Helper()
	rdb := redistest.Start(t).Client()
	t.Cleanup(func() { rdb.Close() })
	return New(rdb, time.Hour), rdb
}

func TestRecentPagesTheFeedNewestFirstAndOnlyTheTenants(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	from := consent.Identity{Kind: consent.Phone, Value: "+14155550100"}
	for i := range 5 {
		if _, err := s.Add(ctx, "clinic-a", Reply{Channel: "sms", From: from, Body: fmt.Sprint(i), ReceivedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Add(ctx, "clinic-b", Reply{Channel: "sms", From: from, Body: "b", ReceivedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	page, err := s.Recent(ctx, "clinic-a", "", 3)
	if err != nil || len(page) != 3 || page[0].Body != "4" || page[2].Body != "2" {
		t.Fatalf("first page = %+v, %v", page, err)
	}
	page, err = s.Recent(ctx, "clinic-a", page[2].ID, 3)
	if err != nil || len(page) != 2 || page[0].Body != "1" || page[1].Body != "0" {
		t.Fatalf("second page = %+v, %v", page, err)
	}
	if _, err := s.Recent(ctx, "clinic-a", "not-a-cursor", 3); !errors.Is(err, ErrBadCursor) {
		t.Fatalf("a bad cursor = %v", err)
	}
}

// TestAConversationKeepsItsLastEntries: however many messages and replies
// an address exchanges, its conversation keeps the last ConversationKept,
// whichever way an entry comes in; the newest are read as before.
func TestAConversationKeepsItsLastEntries(t *testing.T) {
	s, rdb := newStore(t)
	ctx := context.Background()
	who := consent.Identity{Kind: consent.Phone, Value: "+14155550100"}
	key := ConversationKey("clinic-a", who)
	at := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	size := func() int64 {
		t.Helper()
		n, err := rdb.ZCard(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	var last string
	for i := range ConversationKept + 20 {
		last = fmt.Sprintf("01JMSG%020d", i)
		pipe := rdb.Pipeline()
		AddMessage(ctx, pipe, "clinic-a", who, last, at.Add(time.Duration(i)*time.Millisecond), time.Hour)
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := size(); n != ConversationKept {
		t.Fatalf("%d entries after %d messages; want %d", n, ConversationKept+20, ConversationKept)
	}
	got, err := s.Conversation(ctx, "clinic-a", who, 100)
	if err != nil || len(got) != 100 || got[99].ID != last || got[0].ID != fmt.Sprintf("01JMSG%020d", ConversationKept+20-100) {
		t.Fatalf("the last 100 entries: %d, first %+v, %v", len(got), got[0], err)
	}
	reply, err := s.Add(ctx, "clinic-a", Reply{Channel: "sms", From: who, Body: "ok", ReceivedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if n := size(); n != ConversationKept {
		t.Fatalf("%d entries after a reply; want %d", n, ConversationKept)
	}
	filed, first, err := s.AddOnce(ctx, "clinic-a", Reply{Channel: "sms", From: who, Body: "yes", ReceivedAt: time.Now().Add(time.Millisecond), ProviderID: "SM1"})
	if err != nil || !first {
		t.Fatal(first, err)
	}
	if n := size(); n != ConversationKept {
		t.Fatalf("%d entries after a reply filed once; want %d", n, ConversationKept)
	}
	got, err = s.Conversation(ctx, "clinic-a", who, ConversationKept)
	if err != nil || len(got) != ConversationKept || got[len(got)-2].ID != reply || got[len(got)-1].ID != filed || got[len(got)-3].ID != last {
		t.Fatalf("the newest entries: %+v, %v", got[len(got)-3:], err)
	}
}
