package replies

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/redistest"
)

func TestRecentPagesTheFeedNewestFirstAndOnlyTheTenants(t *testing.T) {
	rdb := redistest.Start(t).Client()
	defer rdb.Close()
	s := New(rdb, time.Hour)
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
