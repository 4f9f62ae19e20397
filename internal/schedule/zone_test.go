package schedule_test

import (
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/schedule"
)

func TestZoneForPhone(t *testing.T) {
	for number, want := range map[string]string{
		"+8613800138000": "Asia/Shanghai",    // a mobile
		"+862112345678":  "Asia/Shanghai",    // a Shanghai landline
		"+442079460000":  "Europe/London",    // a London landline
		"+12125551234":   "America/New_York", // Manhattan
		"+14155550123":   "America/Los_Angeles",
		" +12125551234 ": "America/New_York",
	} {
		l, ok := schedule.ZoneForPhone(number)
		if !ok || l.String() != want {
			t.Errorf("ZoneForPhone(%q) = %v, %v; want %s", number, l, ok, want)
		}
	}
	// Several zones: the first of the library's list.
	if names := schedule.ZonesForPhone("+447911123456"); len(names) < 2 {
		t.Errorf("a UK mobile maps to %v", names)
	} else if l, ok := schedule.ZoneForPhone("+447911123456"); !ok || l.String() != names[0] {
		t.Errorf("ZoneForPhone(UK mobile) = %v, %v; want %s", l, ok, names[0])
	}
	for _, number := range []string{"", "12125551234", "+1", "+999123456", "+15555550100", "not a number", "+86abc", "+8613800138000000000000000000000000000"} {
		if l, ok := schedule.ZoneForPhone(number); ok {
			t.Errorf("ZoneForPhone(%q) = %v, want none", number, l)
		}
	}
}

func TestLoadZone(t *testing.T) {
	for _, name := range []string{"Asia/Shanghai", "America/New_York", "Europe/London", "UTC"} {
		if l, err := schedule.LoadZone(name); err != nil || l.String() != name {
			t.Errorf("LoadZone(%q) = %v, %v", name, l, err)
		}
	}
	for _, name := range []string{"", "Local", "local", "Mars/Olympus_Mons", "../../etc/passwd", "/etc/localtime", "asia/shanghai x"} {
		if l, err := schedule.LoadZone(name); err == nil {
			t.Errorf("LoadZone(%q) = %v, want an error", name, l)
		}
	}
}

func TestResolveZone(t *testing.T) {
	const ny, sh, lon = "America/New_York", "Asia/Shanghai", "Europe/London"
	const cnPhone = "+8613800138000"
	cases := []struct {
		contact, request, phone, tenant, def string
		zone, source                         string
	}{
		{ny, lon, cnPhone, lon, lon, ny, "contact"},
		{"", ny, cnPhone, lon, lon, ny, "request"},
		{"", "", cnPhone, ny, lon, sh, "phone"},
		{"", "", "", ny, lon, ny, "tenant"},
		{"", "", "+15555550100", ny, lon, ny, "tenant"}, // an invalid number has no zone
		{"", "", "", "", lon, lon, "default"},
		{"", "", "", "", "", "UTC", "default"},
		{"Nowhere/Town", "Local", "", "", sh, sh, "default"}, // unknown names are passed over
		{" " + ny + " ", "", "", "", "", ny, "contact"},
	}
	for _, c := range cases {
		l, src := schedule.ResolveZone(c.contact, c.request, c.phone, c.tenant, c.def)
		if l.String() != c.zone || src != c.source {
			t.Errorf("ResolveZone(%q, %q, %q, %q, %q) = %s, %s; want %s, %s", c.contact, c.request, c.phone, c.tenant, c.def, l, src, c.zone, c.source)
		}
	}
	if l, _ := schedule.ResolveZone("", "", "", "", ""); l != time.UTC {
		t.Errorf("the last resort is time.UTC, got %v", l)
	}
}

func TestAPhoneNumberSpanningSeveralClocksGivesNoZone(t *testing.T) {
	if names := schedule.ZonesForPhone("+18002752273"); len(names) < 2 {
		t.Fatalf("a US toll-free number should map to several zones, got %v", names)
	}
	if l, ok := schedule.ZoneForPhone("+18002752273"); ok {
		t.Fatalf("a US toll-free number got %s: a guess that can be hours off", l)
	}
	l, ok := schedule.ZoneForPhone("+447400123456")
	if !ok {
		t.Fatal("a UK mobile's zones share one clock: want one of them")
	}
	jul := time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)
	if got, want := jul.In(l).Hour(), 13; got != want {
		t.Fatalf("UK mobile zone %s gives %d:00 at 12:00 UTC in July, want %d:00", l, got, want)
	}
	if loc, src := schedule.ResolveZone("", "", "+18002752273", "America/Chicago", "UTC"); loc.String() != "America/Chicago" || src != schedule.ZoneFromTenant {
		t.Fatalf("ResolveZone fell to %s from %s, want the tenant's zone", loc, src)
	}
}
