package contacts_test

import (
	"context"
	"testing"

	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/contacts"
	"github.com/patientmsg/gateway/internal/redistest"
	"github.com/patientmsg/gateway/internal/webhooks"
)

type published struct{ types []string }

func (p *published) Publish(_ context.Context, _, typ string, _ any, _ string) {
	p.types = append(p.types, typ)
}

// TestRecordConsentChangesTheKindAskedAndTellsTheClinicOfChangesOnly: an
// opt-out recorded for the phone leaves the email alone, the webhook hears
// of it once, and recording the same choice again tells nobody.
func TestRecordConsentChangesTheKindAskedAndTellsTheClinicOfChangesOnly(t *testing.T) {
	ctx := context.Background()
	led := consent.New(redistest.Start(t).Client())
	phone := consent.Identity{Kind: consent.Phone, Value: "+14155550100"}
	email := consent.Identity{Kind: consent.Email, Value: "pat@example.org"}
	ct := contacts.Contact{ID: "ct_1", Identities: []consent.Identity{phone, email}}
	pub := &published{}
	changed, err := contacts.RecordConsent(ctx, led, pub, "clinic-a", ct, consent.Phone, true, "asked at the front desk")
	if err != nil || len(changed) != 1 || changed[0] != phone {
		t.Fatalf("changed %v, %v", changed, err)
	}
	if len(pub.types) != 1 || pub.types[0] != webhooks.ContactOptedOut {
		t.Fatalf("events %v", pub.types)
	}
	for id, want := range map[consent.Identity]bool{phone: true, email: false} {
		st, err := led.Get(ctx, "clinic-a", id)
		if err != nil || st.OptedOut != want {
			t.Fatalf("%s: opted out %v (%v), want %v", id.Kind, st.OptedOut, err, want)
		}
	}
	if changed, err := contacts.RecordConsent(ctx, led, pub, "clinic-a", ct, consent.Phone, true, "again"); err != nil || len(changed) != 0 || len(pub.types) != 1 {
		t.Fatalf("the same choice again: changed %v, events %v, %v", changed, pub.types, err)
	}
}
