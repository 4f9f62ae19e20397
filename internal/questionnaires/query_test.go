package questionnaires

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/invalid"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/redistest"
)

func ids(rs []*Response) []string {
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}

func same(got []string, want ...string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

// TestFindFiltersByStateRiskAddressAndTime: each filter alone and
// together, an address's responses across questionnaires from its own
// index, the pages' cursor, and another tenant's responses never.
func TestFindFiltersByStateRiskAddressAndTime(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	now := t0
	s := &Service{Redis: redistest.Start(t).Client(), Now: func() time.Time { return now }}
	jane := ledger.Recipient{Phone: "+14155550100"}
	joe := ledger.Recipient{Phone: "+14155550111"}
	wx := ledger.Recipient{WeChatOpenID: "oJane_openid_0123456789abcd"}
	for i, r := range []*Response{
		{ID: "qr_1", Tenant: "a", Questionnaire: "phq9", Channel: "sms", To: jane, State: StateCompleted, RiskLevel: LevelModerate},
		{ID: "qr_2", Tenant: "a", Questionnaire: "phq9", Channel: "sms", To: joe, State: StateCompleted},
		{ID: "qr_3", Tenant: "a", Questionnaire: "gad7", Channel: "sms", To: jane, State: StateExpired},
		{ID: "qr_4", Tenant: "a", Questionnaire: "phq9", Channel: "sms", To: jane, State: StateCompleted, RiskLevel: LevelUrgent},
		{ID: "qr_5", Tenant: "a", Questionnaire: "phq9", Channel: "wechat", To: wx, State: StateInProgress},
		{ID: "qr_6", Tenant: "b", Questionnaire: "phq9", Channel: "sms", To: jane, State: StateCompleted, RiskLevel: LevelHigh},
	} {
		r.CreatedAt = t0.Add(time.Duration(i) * 24 * time.Hour)
		now = r.CreatedAt
		if err := s.save(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	janeID := consent.Identity{Kind: consent.Phone, Value: jane.Phone}
	find := func(f Filter, limit int) Page {
		t.Helper()
		p, err := s.Find(ctx, "a", f, limit)
		if err != nil {
			t.Fatalf("Find(%+v): %v", f, err)
		}
		return p
	}
	for _, c := range []struct {
		name string
		f    Filter
		want []string
	}{
		{"a questionnaire's", Filter{Questionnaire: "phq9"}, []string{"qr_5", "qr_4", "qr_2", "qr_1"}},
		{"completed", Filter{Questionnaire: "phq9", State: StateCompleted}, []string{"qr_4", "qr_2", "qr_1"}},
		{"moderate or higher", Filter{Questionnaire: "phq9", RiskLevel: LevelModerate}, []string{"qr_4", "qr_1"}},
		{"urgent", Filter{Questionnaire: "phq9", RiskLevel: LevelUrgent}, []string{"qr_4"}},
		{"a patient's, of one questionnaire", Filter{Questionnaire: "phq9", Who: janeID}, []string{"qr_4", "qr_1"}},
		{"a patient's, of every questionnaire", Filter{Who: janeID}, []string{"qr_4", "qr_3", "qr_1"}},
		{"a patient's on a channel", Filter{Who: janeID, Channel: "wechat"}, nil},
		{"a WeChat patient's", Filter{Who: consent.Identity{Kind: consent.WeChat, Value: wx.WeChatOpenID}}, []string{"qr_5"}},
		{"since (inclusive)", Filter{Questionnaire: "phq9", Since: t0.Add(24 * time.Hour)}, []string{"qr_5", "qr_4", "qr_2"}},
		{"until (exclusive)", Filter{Questionnaire: "phq9", Until: t0.Add(24 * time.Hour)}, []string{"qr_1"}},
		{"all at once", Filter{Who: janeID, State: StateCompleted, RiskLevel: LevelHigh, Since: t0, Until: t0.Add(4 * 24 * time.Hour)}, []string{"qr_4"}},
	} {
		if got := ids(find(c.f, 10).Responses); !same(got, c.want...) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}

	// Pages: the cursor reads on past the last response of a page.
	p := find(Filter{Who: janeID}, 2)
	if !same(ids(p.Responses), "qr_4", "qr_3") || p.Next != "qr_3" {
		t.Fatalf("first page: %v next %q", ids(p.Responses), p.Next)
	}
	if p = find(Filter{Who: janeID, Before: p.Next}, 2); !same(ids(p.Responses), "qr_1") || p.Next != "" {
		t.Fatalf("second page: %v next %q", ids(p.Responses), p.Next)
	}

	// Another tenant: its own response only; a's cursor is not its own.
	if p, _ := s.Find(ctx, "b", Filter{Who: janeID}, 10); !same(ids(p.Responses), "qr_6") {
		t.Fatalf("tenant b reads %v", ids(p.Responses))
	}
	if _, err := s.Find(ctx, "b", Filter{Who: janeID, Before: "qr_4"}, 10); !errors.Is(err, ErrResponseNotFound) {
		t.Fatalf("another tenant's cursor: %v", err)
	}

	// Bad filters name their fields.
	_, err := s.Find(ctx, "a", Filter{State: "done", RiskLevel: "severe", Since: t0, Until: t0}, 10)
	var ie *invalid.Error
	if !errors.As(err, &ie) || len(ie.Errors) != 4 {
		t.Fatalf("bad filter: %v", err)
	}
}

// TestAnAddressIndexIsTrimmedAndExpiresWithTheResponses: the index of an
// address forgets the responses past the retention, and expires with the
// last of them.
func TestAnAddressIndexIsTrimmedAndExpiresWithTheResponses(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	now := t0
	rdb := redistest.Start(t).Client()
	s := &Service{Redis: rdb, Retention: 24 * time.Hour, Now: func() time.Time { return now }}
	to := ledger.Recipient{Phone: "+14155550100"}
	old := &Response{ID: "qr_old", Tenant: "a", Questionnaire: "phq9", Channel: "sms", To: to, State: StateCompleted, CreatedAt: t0}
	if err := s.save(ctx, old); err != nil {
		t.Fatal(err)
	}
	key := byKey("a", consent.Identity{Kind: consent.Phone, Value: to.Phone})
	if ttl := rdb.TTL(ctx, key).Val(); ttl <= 0 || ttl > 24*time.Hour {
		t.Fatalf("the index's TTL = %s, want the retention", ttl)
	}
	// Saved again (a later answer): listed once.
	if err := s.save(ctx, old); err != nil {
		t.Fatal(err)
	}
	if n := rdb.ZCard(ctx, key).Val(); n != 1 {
		t.Fatalf("the index has %d entries after two saves", n)
	}
	now = t0.Add(24*time.Hour + maxOpen + time.Minute)
	fresh := &Response{ID: "qr_new", Tenant: "a", Questionnaire: "gad7", Channel: "sms", To: to, State: StateInProgress, CreatedAt: now}
	if err := s.save(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	if got := rdb.ZRange(ctx, key, 0, -1).Val(); !same(got, "qr_new") {
		t.Fatalf("the index after the retention: %v", got)
	}
	if got := rdb.ZRange(ctx, listKey("a", "phq9"), 0, -1).Val(); !same(got, "qr_old") {
		t.Fatalf("another questionnaire's list is left as it was: %v", got)
	}
}

// TestFindReadsABoundedNumberOfResponses: a filter that matches none of
// many responses stops after MaxScan of them with a cursor to go on.
func TestFindReadsABoundedNumberOfResponses(t *testing.T) {
	if testing.Short() {
		t.Skip("saves MaxScan+1 responses")
	}
	ctx := context.Background()
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	rdb := redistest.Start(t).Client()
	s := &Service{Redis: rdb, Now: func() time.Time { return t0 }}
	pipe := rdb.Pipeline()
	for i := range MaxScan + 1 {
		r := &Response{ID: "qr_" + strconv.Itoa(100000+i), Tenant: "a", Questionnaire: "phq9", Channel: "sms",
			To: ledger.Recipient{Phone: "+14155550100"}, State: StateExpired, CreatedAt: t0.Add(time.Duration(i) * time.Second)}
		b, _ := json.Marshal(r)
		pipe.Set(ctx, respKey("a", r.ID), b, time.Hour)
		pipe.ZAdd(ctx, listKey("a", "phq9"), redis.Z{Score: float64(r.CreatedAt.UnixMilli()), Member: r.ID})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	p, err := s.Find(ctx, "a", Filter{Questionnaire: "phq9", State: StateCompleted}, 10)
	if err != nil || len(p.Responses) != 0 || p.Next != "qr_"+strconv.Itoa(100001) {
		t.Fatalf("a page of no match: %v next %q (%v)", ids(p.Responses), p.Next, err)
	}
	if p, err = s.Find(ctx, "a", Filter{Questionnaire: "phq9", State: StateCompleted, Before: p.Next}, 10); err != nil || p.Next != "" {
		t.Fatalf("the rest: next %q (%v)", p.Next, err)
	}
}

// TestAWebFormCountsOnTheChannelItsLinkWentOn: a patient's responses on
// SMS include the web forms whose link went by SMS.
func TestAWebFormCountsOnTheChannelItsLinkWentOn(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	s := &Service{Redis: redistest.Start(t).Client(), Now: func() time.Time { return t0 }}
	jane := ledger.Recipient{Phone: "+14155550100"}
	for i, r := range []*Response{
		{ID: "qr_sms", Tenant: "a", Questionnaire: "phq9", Channel: "sms", To: jane, State: StateCompleted},
		{ID: "qr_web", Tenant: "a", Questionnaire: "phq9", Channel: ChannelWeb, Via: "sms", To: jane, State: StateCompleted},
	} {
		r.CreatedAt = t0.Add(time.Duration(i) * time.Hour)
		if err := s.save(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	who := consent.Identity{Kind: consent.Phone, Value: jane.Phone}
	for channel, want := range map[string][]string{"sms": {"qr_web", "qr_sms"}, ChannelWeb: {"qr_web"}, "": {"qr_web", "qr_sms"}} {
		p, err := s.Find(ctx, "a", Filter{Who: who, Channel: channel}, 10)
		if err != nil || !same(ids(p.Responses), want...) {
			t.Errorf("channel %q: %v (%v), want %v", channel, ids(p.Responses), err, want)
		}
	}
}

// TestPagingLosesNoResponseMadeInTheSameMillisecond: responses made in one
// millisecond (a clinic starting thousands at once) are listed once each
// across pages.
func TestPagingLosesNoResponseMadeInTheSameMillisecond(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	rdb := redistest.Start(t).Client()
	s := &Service{Redis: rdb, Now: func() time.Time { return t0 }}
	pipe := rdb.Pipeline()
	const n = 25
	for i := range n {
		// Five responses a millisecond.
		r := &Response{ID: "qr_" + strconv.Itoa(200000+i), Tenant: "a", Questionnaire: "phq9", Channel: "sms",
			To: ledger.Recipient{Phone: "+14155550100"}, State: StateCompleted, CreatedAt: t0.Add(time.Duration(i/5) * time.Millisecond)}
		b, _ := json.Marshal(r)
		pipe.Set(ctx, respKey("a", r.ID), b, time.Hour)
		pipe.ZAdd(ctx, listKey("a", "phq9"), redis.Z{Score: float64(r.CreatedAt.UnixMilli()), Member: r.ID})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	before := ""
	for pages := 0; pages < 20; pages++ {
		p, err := s.Find(ctx, "a", Filter{Questionnaire: "phq9", Before: before}, 3)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range p.Responses {
			seen[r.ID]++
		}
		if p.Next == "" {
			break
		}
		before = p.Next
	}
	if len(seen) != n {
		t.Fatalf("%d of %d responses listed across pages", len(seen), n)
	}
	for id, k := range seen {
		if k != 1 {
			t.Errorf("%s listed %d times", id, k)
		}
	}
}
