package tenants_test

import (
	"context"
	"testing"

	"github.com/patientmsg/gateway/internal/redistest"
	"github.com/patientmsg/gateway/internal/tenants"
)

var defaults = tenants.Settings{QuietHours: "21:00-08:00", CrisisInQuietHours: tenants.CrisisSend, TimeZone: "UTC"}

func TestSettingsStartFromTheDefaultsAndAreKeptPerTenant(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	s, err := tenants.NewStore(srv.Client(), defaults)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, "clinic-a"); err != nil || got != defaults {
		t.Fatalf("a new tenant = %+v, %v; want the defaults", got, err)
	}
	mine := tenants.Settings{QuietHours: "22:00-07:30", CrisisInQuietHours: tenants.CrisisDefer, TimeZone: "Asia/Shanghai", AllowPHI: true}
	if err := s.Put(ctx, "clinic-a", mine); err != nil {
		t.Fatal(err)
	}
	// Another process (no cache) reads the same.
	other, _ := tenants.NewStore(srv.Client(), defaults)
	if got, err := other.Get(ctx, "clinic-a"); err != nil || got != mine {
		t.Fatalf("clinic-a = %+v, %v", got, err)
	}
	if got, _ := other.Get(ctx, "clinic-b"); got != defaults {
		t.Fatalf("clinic-b got clinic-a's settings: %+v", got)
	}
}

func TestSettingsAreValidated(t *testing.T) {
	for name, bad := range map[string]tenants.Settings{
		"a window that is not HH:MM-HH:MM": {QuietHours: "9pm-8am", CrisisInQuietHours: "send", TimeZone: "UTC"},
		"an unknown crisis policy":         {QuietHours: "off", CrisisInQuietHours: "sometimes", TimeZone: "UTC"},
		"an unknown time zone":             {QuietHours: "off", CrisisInQuietHours: "send", TimeZone: "Mars/Olympus"},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%s was accepted", name)
		}
	}
	if _, err := tenants.NewStore(nil, tenants.Settings{}); err == nil {
		t.Error("empty defaults were accepted")
	}
}

func TestQuietHoursApplyByPriority(t *testing.T) {
	s := defaults
	if s.QuietFor("normal") != "21:00-08:00" || s.QuietFor("bulk") != "21:00-08:00" {
		t.Fatal("routine traffic must keep quiet hours")
	}
	if s.QuietFor("crisis") != "" {
		t.Fatal("crisis passes quiet hours by default")
	}
	s.CrisisInQuietHours = tenants.CrisisDefer
	if s.QuietFor("crisis") != "21:00-08:00" {
		t.Fatal("crisis_in_quiet_hours=defer must hold crisis back too")
	}
	s.QuietHours = "off"
	if s.QuietFor("normal") != "" {
		t.Fatal("quiet hours off applies no window")
	}
}
