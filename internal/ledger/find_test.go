package ledger_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/ledger"
)

// history makes four messages of clinic-a an hour apart from t0 (the
// third canceled) and one of clinic-b to the first one's number; it
// returns clinic-a's ids, oldest first.
func history(t *testing.T, l *ledger.Ledger, t0 time.Time) []string {
	t.Helper()
	reqs := []ledger.Request{
		{Tenant: "clinic-a", Channel: "sms", To: ledger.Recipient{Phone: "+14155550100"}},
		{Tenant: "clinic-a", Channel: "email", To: ledger.Recipient{Email: "jane@example.org"}},
		{Tenant: "clinic-a", Channel: "wechat", To: ledger.Recipient{WeChatOpenID: "oAbC-123_x"}},
		{Tenant: "clinic-a", Channel: "sms", To: ledger.Recipient{Phone: "+14155550111"}},
	}
	var ids []string
	for i, r := range reqs {
		r.Body, r.Priority, r.CreatedAt = "day-7 follow-up", "normal", t0.Add(time.Duration(i)*time.Hour)
		id := ledger.NewID()
		if ok, err := l.Create(ctx, id, r); err != nil || !ok {
			t.Fatalf("Create = %v, %v", ok, err)
		}
		ids = append(ids, id)
	}
	if err := l.Cancel(ctx, "clinic-a", ids[2], ledger.CanceledByAPI); err != nil {
		t.Fatal(err)
	}
	if ok, err := l.Create(ctx, ledger.NewID(), ledger.Request{Tenant: "clinic-b", Channel: "sms", To: ledger.Recipient{Phone: "+14155550100"},
		CreatedAt: t0}); err != nil || !ok {
		t.Fatalf("Create = %v, %v", ok, err)
	}
	return ids
}

func idsOf(p ledger.Page) []string {
	out := []string{}
	for _, m := range p.Messages {
		out = append(out, m.ID)
	}
	return out
}

func recipient(t *testing.T, s string) ledger.Recipient {
	t.Helper()
	r, err := ledger.ParseRecipient(s)
	if err != nil {
		t.Fatalf("ParseRecipient(%q): %v", s, err)
	}
	return r
}

func TestFindChoosesATenantsMessagesByEachFilter(t *testing.T) {
	l, _ := newLedger(t)
	t0 := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	ids := history(t, l, t0)
	cases := []struct {
		name   string
		filter ledger.Filter
		want   []int // indexes into ids, newest first
	}{
		{"no filter lists every message of the tenant, newest first", ledger.Filter{}, []int{3, 2, 1, 0}},
		{"a phone written any way finds its messages, not another tenant's", ledger.Filter{To: recipient(t, "+1 (415) 555-0100")}, []int{0}},
		{"an email address matches whatever the case of its domain", ledger.Filter{To: recipient(t, "jane@EXAMPLE.org")}, []int{1}},
		{"a WeChat openid", ledger.Filter{To: recipient(t, "oAbC-123_x")}, []int{2}},
		{"an address nobody was sent to finds nothing", ledger.Filter{To: recipient(t, "+14155550199")}, []int{}},
		{"a channel", ledger.Filter{Channel: "sms"}, []int{3, 0}},
		{"a status", ledger.Filter{Status: ledger.StatusCanceled}, []int{2}},
		{"since includes its own instant", ledger.Filter{Since: t0.Add(time.Hour)}, []int{3, 2, 1}},
		{"until excludes its own instant", ledger.Filter{Until: t0.Add(time.Hour)}, []int{0}},
		{"filters combine", ledger.Filter{Channel: "sms", Status: ledger.StatusQueued, Since: t0.Add(time.Minute)}, []int{3}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := l.Find(ctx, "clinic-a", ledger.Query{Filter: c.filter, Limit: 10})
			if err != nil {
				t.Fatal(err)
			}
			want := []string{}
			for _, i := range c.want {
				want = append(want, ids[i])
			}
			if got := idsOf(p); !slices.Equal(got, want) || p.Next != "" {
				t.Fatalf("Find = %v next %q, want %v and no next", got, p.Next, want)
			}
		})
	}
	p, _ := l.Find(ctx, "clinic-a", ledger.Query{Limit: 1})
	if m := p.Messages[0]; m.Channel != "sms" || m.To.Phone != "+14155550111" || m.Status != ledger.StatusQueued || !m.CreatedAt.Equal(t0.Add(3*time.Hour)) {
		t.Fatalf("the listed message is %+v", m)
	}
}

func TestFindPagesOnWithItsCursor(t *testing.T) {
	l, _ := newLedger(t)
	ids := history(t, l, time.Now().Add(-time.Hour))
	first, err := l.Find(ctx, "clinic-a", ledger.Query{Limit: 3})
	if err != nil || !slices.Equal(idsOf(first), []string{ids[3], ids[2], ids[1]}) || first.Next != ids[1] {
		t.Fatalf("first page %v next %q, %v", idsOf(first), first.Next, err)
	}
	second, err := l.Find(ctx, "clinic-a", ledger.Query{Limit: 3, Before: first.Next})
	if err != nil || !slices.Equal(idsOf(second), []string{ids[0]}) || second.Next != "" {
		t.Fatalf("second page %v next %q, %v", idsOf(second), second.Next, err)
	}
	if _, err := l.Find(ctx, "clinic-a", ledger.Query{Limit: 3, Before: "not-an-id"}); !errors.Is(err, ledger.ErrBadCursor) {
		t.Fatalf("a cursor that is not an id: %v", err)
	}
}

func TestFindExaminesAtMostItsScanAndSaysWhereToGoOn(t *testing.T) {
	l, _ := newLedger(t)
	ids := history(t, l, time.Now().Add(-time.Hour))
	q := ledger.Query{Filter: ledger.Filter{To: recipient(t, "+14155550100")}, Limit: 10, Scan: 2}
	var found []string
	var scanned []int
	for range 5 {
		p, err := l.Find(ctx, "clinic-a", q)
		if err != nil {
			t.Fatal(err)
		}
		found = append(found, idsOf(p)...)
		scanned = append(scanned, p.Scanned)
		if p.Next == "" {
			break
		}
		q.Before = p.Next
	}
	// Two records a page: none matches on the first, the oldest on the
	// second, and the third finds the end.
	if !slices.Equal(found, []string{ids[0]}) || !slices.Equal(scanned, []int{2, 2, 0}) {
		t.Fatalf("found %v, scanned %v a page", found, scanned)
	}
	if p, _ := l.Find(ctx, "clinic-a", ledger.Query{Limit: 10, Scan: ledger.MaxScan + 1}); p.Scanned != 4 {
		t.Fatalf("scanned %d", p.Scanned)
	}
}

func TestParseRecipientNormalisesEachKindOfAddress(t *testing.T) {
	cases := []struct {
		in   string
		want ledger.Recipient
		ok   bool
	}{
		{"+44 20 7946 0958", ledger.Recipient{Phone: "+442079460958"}, true},
		{" +8613800138000 ", ledger.Recipient{Phone: "+8613800138000"}, true},
		{"(415) 555-0100", ledger.Recipient{}, false}, // no country code
		{"Jane@Example.ORG", ledger.Recipient{Email: "Jane@example.org"}, true},
		{"jane@", ledger.Recipient{}, false},
		{"oAbC-123_x", ledger.Recipient{WeChatOpenID: "oAbC-123_x"}, true},
		{"robert'); drop", ledger.Recipient{}, false},
		{"", ledger.Recipient{}, false},
	}
	for _, c := range cases {
		got, err := ledger.ParseRecipient(c.in)
		if got != c.want || (err == nil) != c.ok || (err != nil && !errors.Is(err, ledger.ErrBadRecipient)) {
			t.Errorf("ParseRecipient(%q) = %+v, %v; want %+v ok=%v", c.in, got, err, c.want, c.ok)
		}
	}
	masked := ledger.Recipient{Phone: "+14155550100"}.Masked()
	if masked["phone"] != "+1••••••••00" || len(masked) != 1 {
		t.Errorf("masked %v", masked)
	}
}
