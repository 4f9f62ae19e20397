package contacts_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/consent"
	"github.com/patientmsg/gateway/internal/contacts"
	"github.com/patientmsg/gateway/internal/redistest"
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

func TestSendsCreateContactsImplicitlyButNeverTakeAnIdentity(t *testing.T) {
	ctx := context.Background()
	rdb := redistest.Start(t).Client()
	s := contacts.New(rdb)
	phone := consent.Identity{Kind: consent.Phone, Value: "+14155550123"}
	if _, err := s.Put(ctx, "clinic-a", contacts.Contact{ID: "mrn-1", Identities: []consent.Identity{phone}}); err != nil {
		t.Fatal(err)
	}
	other := consent.Identity{Kind: consent.Email, Value: "new@example.org"}
	for _, id := range []consent.Identity{phone, other, other} {
		pipe := rdb.Pipeline()
		contacts.EnsureIn(ctx, pipe, "clinic-a", id, "zh-CN", time.Now())
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if c, _ := s.Find(ctx, "clinic-a", phone); c.ID != "mrn-1" {
		t.Fatalf("an implicit contact took a managed identity: %+v", c)
	}
	c, err := s.Find(ctx, "clinic-a", other)
	if err != nil || !strings.HasPrefix(c.ID, "auto-") || c.Locale != "zh-CN" {
		t.Fatalf("implicit contact %+v %v", c, err)
	}
	keys, _ := rdb.Keys(ctx, "gw:contact:{clinic-a}:auto-*").Result()
	if len(keys) != 1 {
		t.Fatalf("repeated sends must create one contact, found %v", keys)
	}
	// The clinic adopts the identity under its own id: the implicit contact goes.
	if _, err := s.Put(ctx, "clinic-a", contacts.Contact{ID: "mrn-2", Identities: []consent.Identity{other}}); err != nil {
		t.Fatalf("adopting an implicit contact's identity: %v", err)
	}
	if c, _ := s.Find(ctx, "clinic-a", other); c.ID != "mrn-2" {
		t.Fatalf("identity now belongs to %q", c.ID)
	}
	if keys, _ := rdb.Keys(ctx, "gw:contact:{clinic-a}:auto-*").Result(); len(keys) != 0 {
		t.Fatalf("the implicit contact was not removed: %v", keys)
	}
}
