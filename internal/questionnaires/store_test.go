package questionnaires

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/redistest"
)

func TestDefinitionsAreVersionedPerTenantAndOverrideBuiltIns(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	s := &Service{Redis: redistest.Start(t).Client(), Now: func() time.Time { return now }}
	spec := func(title string) Spec {
		return Spec{Title: Text{"en": title}, Code: "K", Questions: []Question{{ID: "a", Type: TypeText, Text: Text{"en": "How are you?"}}}}
	}

	d, created, err := s.Put(ctx, "a", "knee", spec("Knee"))
	if err != nil || !created || d.Version != 1 || !d.CreatedAt.Equal(now) {
		t.Fatalf("first PUT: %+v %v %v", d, created, err)
	}
	if d, created, _ = s.Put(ctx, "a", "knee", spec("Knee")); created || d.Version != 1 {
		t.Fatalf("the same definition again made version %d (created %v)", d.Version, created)
	}
	now = now.Add(time.Hour)
	if d, created, _ = s.Put(ctx, "a", "knee", spec("Knee, day 7")); !created || d.Version != 2 {
		t.Fatalf("a changed definition: version %d (created %v)", d.Version, created)
	}
	if old, err := s.Definition(ctx, "a", "knee", 1); err != nil || old.Title["en"] != "Knee" {
		t.Fatalf("version 1 is kept: %+v %v", old, err)
	}
	if _, err := s.Definition(ctx, "b", "knee", 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("another tenant's questionnaire: %v", err)
	}
	if _, _, err := s.Put(ctx, "a", "Knee Check", spec("x")); err == nil {
		t.Fatal("a bad name was taken")
	}

	// A tenant's own phq9 overrides the built-in for that tenant only, and
	// its versions continue after the built-in's.
	if d, created, _ = s.Put(ctx, "a", "phq9", spec("Our PHQ")); !created || d.Version != 2 || d.Builtin {
		t.Fatalf("override: %+v %v", d, created)
	}
	if bi, _ := s.Definition(ctx, "a", "phq9", 1); bi == nil || !bi.Builtin {
		t.Fatal("the built-in stays readable as version 1 (responses started with it keep it)")
	}
	if other, _ := s.Definition(ctx, "b", "phq9", 0); other == nil || !other.Builtin {
		t.Fatal("another tenant still gets the built-in")
	}
	list, err := s.List(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range list {
		names = append(names, d.Name)
		if d.Name == "phq9" && d.Builtin {
			t.Fatal("the list shows the built-in the tenant overrode")
		}
	}
	if got := len(names); got != 5 || names[0] != "gad7" || names[1] != "knee" {
		t.Fatalf("list: %v", names)
	}
}
