package contacts_test

import (
	"context"
	"errors"
	"testing"

	"github.com/patientmsg/gateway/consent"
	"github.com/patientmsg/gateway/contacts"
	"github.com/patientmsg/gateway/redistest"
)

func TestContactsAreFoundByAnyOfTheirIdentities(t *testing.T) {
	ctx := context.Background()
	s := contacts.New(redistest.Start(t).Client())
	phone := consent.Identity{Kind: consent.Phone, Value: "+14155550123"}
	openid := consent.Identity{Kind: consent.WeChat, Value: "oPatient1"}
	c, err := s.Put(ctx, "clinic-a", contacts.Contact{ID: "mrn-1001", Identities: []consent.Identity{phone, openid}, Locale: "zh-CN", TimeZone: "Asia/Shanghai"})
	if err != nil || c.CreatedAt.IsZero() {
		t.Fatalf("Put = %+v, %v", c, err)
	}
	if got, err := s.Find(ctx, "clinic-a", openid); err != nil || got.ID != "mrn-1001" || got.TimeZone != "Asia/Shanghai" {
		t.Fatalf("Find by openid = %+v, %v", got, err)
	}
	if _, err := s.Find(ctx, "clinic-b", phone); !errors.Is(err, contacts.ErrNotFound) {
		t.Fatalf("contacts are per tenant: %v", err)
	}
	var taken *contacts.IdentityTakenError
	if _, err := s.Put(ctx, "clinic-a", contacts.Contact{ID: "mrn-2002", Identities: []consent.Identity{phone}}); !errors.As(err, &taken) || taken.Owner != "mrn-1001" {
		t.Fatalf("an identity of another contact must be refused: %v", err)
	}
	// Replacing the identities frees the old ones.
	if _, err := s.Put(ctx, "clinic-a", contacts.Contact{ID: "mrn-1001", Identities: []consent.Identity{openid}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Find(ctx, "clinic-a", phone); !errors.Is(err, contacts.ErrNotFound) {
		t.Fatalf("a removed identity still finds the contact: %v", err)
	}
	if _, err := s.Put(ctx, "clinic-a", contacts.Contact{ID: "mrn-2002", Identities: []consent.Identity{phone}}); err != nil {
		t.Fatalf("the freed phone can go to another contact: %v", err)
	}
	again, _ := s.Get(ctx, "clinic-a", "mrn-1001")
	if !again.CreatedAt.Equal(c.CreatedAt) {
		t.Fatal("replacing a contact keeps its creation time")
	}
}
