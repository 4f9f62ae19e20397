package templates

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/redistest"
)

func newStore(t *testing.T) (*Store, *redistest.Server) {
	t.Helper()
	srv := redistest.Start(t)
	rdb := srv.Client()
	b, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	return NewStore(rdb, b), srv
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

const tenantDoc = `{
  "description": "Our own reminder",
  "variables": [{"name": "clinic_name", "description": "Clinic name", "example": "Riverside Clinic", "phi": false}],
  "locales": {"en": {"sms": "{{clinic_name}}: see you soon. Reply STOP to opt out."},
              "zh-cn": {"sms": "【{{clinic_name}}】期待您的光临。回复TD退订"}}
}`

func TestStorePutGetListDelete(t *testing.T) {
	s, srv := newStore(t)
	ctx := testContext(t)

	if _, err := s.Get(ctx, "clinic-a", "see_you"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("before put: %v", err)
	}
	put, err := s.Put(ctx, "clinic-a", "see_you", []byte(tenantDoc))
	if err != nil {
		t.Fatal(err)
	}
	if put.Source != SourceTenant || put.Locales["zh-CN"] == nil {
		t.Errorf("put %+v", put)
	}
	got, err := s.Get(ctx, "clinic-a", "see_you")
	if err != nil {
		t.Fatal(err)
	}
	if got.Source != SourceTenant || got.Description != "Our own reminder" || got.Locales["zh-CN"].SMS != "【{{clinic_name}}】期待您的光临。回复TD退订" {
		t.Errorf("got %+v", got)
	}
	// Stored in the tenant's hash, as canonical JSON.
	raw, err := srv.Client().HGet(ctx, "gw:tpl:{clinic-a}", "see_you").Result()
	if err != nil || !strings.Contains(raw, `"zh-CN"`) || strings.Contains(raw, "source") {
		t.Errorf("stored %q, %v", raw, err)
	}
	r, err := got.Render(NewChain("en", nil), "sms", "zh-HK", map[string]string{"clinic_name": "仁济医院"}, false)
	if err != nil || r.Body != "【仁济医院】期待您的光临。回复TD退订" {
		t.Errorf("render %v %+v", err, r)
	}

	list, err := s.List(ctx, "clinic-a")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tpl := range list {
		names = append(names, tpl.Name+":"+tpl.Source)
	}
	want := "appointment_reminder:builtin crisis_safety_check:builtin crisis_update:builtin medication_reminder:builtin " +
		"post_discharge_day1:builtin post_discharge_day30:builtin post_discharge_day7:builtin satisfaction_survey:builtin see_you:tenant"
	if strings.Join(names, " ") != want {
		t.Errorf("list %v", names)
	}

	if err := s.Delete(ctx, "clinic-a", "see_you"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "clinic-a", "see_you"); !errors.Is(err, ErrNotFound) {
		t.Errorf("after delete: %v", err)
	}
	if err := s.Delete(ctx, "clinic-a", "see_you"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}
	if err := s.Delete(ctx, "clinic-a", "crisis_update"); !errors.Is(err, ErrBuiltinReadOnly) {
		t.Errorf("delete built-in: %v", err)
	}
	if _, err := s.Get(ctx, "clinic-a", "Bad-Name"); !errors.Is(err, ErrNotFound) {
		t.Errorf("bad name: %v", err)
	}
}

func TestStoreOverrideBuiltin(t *testing.T) {
	s, _ := newStore(t)
	ctx := testContext(t)
	b, err := s.Get(ctx, "clinic-a", "appointment_reminder")
	if err != nil || b.Source != SourceBuiltin {
		t.Fatalf("%v %+v", err, b)
	}
	// A caller changing its copy changes nothing in the store.
	b.Locales["en"].SMS = "changed"
	if again, _ := s.Get(ctx, "clinic-a", "appointment_reminder"); again.Locales["en"].SMS == "changed" {
		t.Error("Get returned the store's own built-in")
	}

	if _, err := s.Put(ctx, "clinic-a", "appointment_reminder", []byte(tenantDoc)); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, "clinic-a", "appointment_reminder")
	if err != nil || got.Source != SourceTenant || got.Description != "Our own reminder" {
		t.Errorf("override: %v %+v", err, got)
	}
	list, err := s.List(ctx, "clinic-a")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, tpl := range list {
		if tpl.Name == "appointment_reminder" {
			n++
			if tpl.Source != SourceTenant {
				t.Errorf("listed %s", tpl.Source)
			}
		}
	}
	if n != 1 || len(list) != len(starters) {
		t.Errorf("listed appointment_reminder %d times, %d templates", n, len(list))
	}
	// Another tenant still gets the built-in.
	if other, err := s.Get(ctx, "clinic-b", "appointment_reminder"); err != nil || other.Source != SourceBuiltin {
		t.Errorf("clinic-b: %v %+v", err, other)
	}
	// Deleting the override brings the built-in back.
	if err := s.Delete(ctx, "clinic-a", "appointment_reminder"); err != nil {
		t.Fatal(err)
	}
	if back, err := s.Get(ctx, "clinic-a", "appointment_reminder"); err != nil || back.Source != SourceBuiltin {
		t.Errorf("after delete: %v %+v", err, back)
	}
}

func TestStoreTenantIsolation(t *testing.T) {
	s, _ := newStore(t)
	ctx := testContext(t)
	if _, err := s.Put(ctx, "clinic-a", "see_you", []byte(tenantDoc)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "clinic-b", "see_you"); !errors.Is(err, ErrNotFound) {
		t.Errorf("clinic-b sees clinic-a's template: %v", err)
	}
	list, err := s.List(ctx, "clinic-b")
	if err != nil {
		t.Fatal(err)
	}
	for _, tpl := range list {
		if tpl.Source != SourceBuiltin {
			t.Errorf("clinic-b lists %s (%s)", tpl.Name, tpl.Source)
		}
	}
	if err := s.Delete(ctx, "clinic-b", "see_you"); !errors.Is(err, ErrNotFound) {
		t.Errorf("clinic-b deletes clinic-a's template: %v", err)
	}
	if _, err := s.Get(ctx, "clinic-a", "see_you"); err != nil {
		t.Error(err)
	}
	if _, err := s.Get(ctx, "", "see_you"); err == nil {
		t.Error("empty tenant accepted")
	}
}

func TestStorePutRefuses(t *testing.T) {
	s, srv := newStore(t)
	ctx := testContext(t)
	undeclared := strings.Replace(tenantDoc, "see you soon", "see you soon, {{patient_name}}", 1)
	_, err := s.Put(ctx, "clinic-a", "see_you", []byte(undeclared))
	var pe *ParseError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "{{patient_name}}") || !strings.Contains(err.Error(), "locales.en.sms") {
		t.Errorf("undeclared: %v", err)
	}
	if _, err := s.Put(ctx, "clinic-a", "See You", []byte(tenantDoc)); !errors.As(err, &pe) {
		t.Errorf("bad name: %v", err)
	}
	big := []byte(`{"locales":{"en":{"email":{"subject":"s","text":"` + strings.Repeat("a", MaxDocBytes) + `"}}}}`)
	if _, err := s.Put(ctx, "clinic-a", "big", big); !errors.Is(err, ErrTooLarge) {
		t.Errorf("big: %v", err)
	}
	if n, err := srv.Client().Exists(ctx, "gw:tpl:{clinic-a}").Result(); err != nil || n != 0 {
		t.Errorf("a refused template was stored: %d %v", n, err)
	}
}

func TestStoreLimit(t *testing.T) {
	s, _ := newStore(t)
	ctx := testContext(t)
	for i := range MaxTenantTemplates {
		if _, err := s.Put(ctx, "clinic-a", fmt.Sprintf("t%03d", i), []byte(tenantDoc)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Put(ctx, "clinic-a", "one_more", []byte(tenantDoc)); !errors.Is(err, ErrTooMany) {
		t.Errorf("one more: %v", err)
	}
	if _, err := s.Put(ctx, "clinic-a", "t000", []byte(tenantDoc)); err != nil {
		t.Errorf("replacing at the limit: %v", err)
	}
	if _, err := s.Put(ctx, "clinic-b", "one_more", []byte(tenantDoc)); err != nil {
		t.Errorf("other tenant: %v", err)
	}
}

// A stored document that no longer validates (rules tightened after it was
// stored) is reported, not half-used.
func TestStoreStaleDocument(t *testing.T) {
	s, srv := newStore(t)
	ctx := testContext(t)
	if err := srv.Client().HSet(ctx, "gw:tpl:{clinic-a}", "stale", `{"locales":{"en":{"sms":"{{undeclared}}"}}}`).Err(); err != nil {
		t.Fatal(err)
	}
	var pe *ParseError
	if _, err := s.Get(ctx, "clinic-a", "stale"); !errors.As(err, &pe) || !strings.Contains(err.Error(), "no longer validates") {
		t.Errorf("get: %v", err)
	}
	if _, err := s.List(ctx, "clinic-a"); !errors.As(err, &pe) {
		t.Errorf("list: %v", err)
	}
}
