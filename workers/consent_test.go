package workers

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/channels"
	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/ledger"
	"github.com/patientmsg/gateway/internal/redistest"
)

// TestTheRecipientsConsentIsReadInTheRoundTripThatClaimsTheMessage: a
// send task names its recipient's consent state (no address), so the
// worker reads it with the claim; a task that names none (queued before)
// or another recipient's has it read on its own, and either way an
// opted-out recipient is never sent to.
func TestTheRecipientsConsentIsReadInTheRoundTripThatClaimsTheMessage(t *testing.T) {
	const phone, other = "+14155550100", "+14155550199"
	cases := []struct {
		name     string
		optedOut bool
		digest   func(o SendOptions) string
		// reads is how many round trips read a consent state, together
		// how many of them claimed the message too.
		reads, together int
	}{
		{"an opted-out recipient", true, func(o SendOptions) string { return o.Consent }, 1, 1},
		{"a recipient who did not opt out", false, func(o SendOptions) string { return o.Consent }, 1, 1},
		{"a task queued before it named the consent", true, func(SendOptions) string { return "" }, 1, 0},
		// The state read with the claim is not the record's recipient's: it
		// is read again.
		{"a task naming another recipient's consent", true, func(SendOptions) string {
			return consentRef(consent.Digest(consent.Identity{Kind: consent.Phone, Value: other}))
		}, 2, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			rdb := redistest.Start(t).Client()
			tr := &redistest.Trips{}
			rdb.AddHook(tr)
			l, cl := ledger.New(rdb, time.Hour), consent.New(rdb)
			if _, err := cl.Set(ctx, "clinic-a", consent.Identity{Kind: consent.Phone, Value: phone}, tc.optedOut, consent.SourceAPI, ""); err != nil {
				t.Fatal(err)
			}
			id := ledger.NewID()
			req := ledger.Request{Tenant: "clinic-a", Channel: "sms", To: ledger.Recipient{Phone: phone}, Body: "hi", Priority: PriorityNormal}
			if _, err := l.Create(ctx, id, req); err != nil {
				t.Fatal(err)
			}
			o := SendOptionsOf(id, req, 3, 0)
			if d, ok := consentDigest(o.Consent); !ok || d != consent.Digest(consent.Identity{Kind: consent.Phone, Value: phone}) {
				t.Fatalf("the task names the consent state as %q", o.Consent)
			}
			o.Consent = tc.digest(o)
			task := outsideAsynq(t, o)
			if strings.Contains(string(task.Payload()), "4155550100") {
				t.Fatalf("the payload holds the number: %s", task.Payload())
			}
			p := &provider{}
			h := &SendHandler{Ledger: l, Channels: channels.NewRegistry(p), Grace: time.Hour, MaxAttempts: 3, Consent: cl,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
			if err := h.ProcessTask(ctx, task); err != nil {
				t.Fatal(err)
			}
			m, err := l.Get(ctx, "", id)
			if err != nil {
				t.Fatal(err)
			}
			want, sends := ledger.StatusSent, int32(1)
			if tc.optedOut {
				want, sends = ledger.StatusSuppressed, 0
			}
			if m.Status != want || p.sent.Load() != sends {
				t.Fatalf("record %s, provider called %d times; want %s, %d", m.Status, p.sent.Load(), want, sends)
			}
			if reads, together := tr.With("hget", "evalsha"); reads != tc.reads || together != tc.together {
				t.Fatalf("the consent was read in %d round trips, %d of them the claim's; want %d and %d", reads, together, tc.reads, tc.together)
			}
		})
	}
}
