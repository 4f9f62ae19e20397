package schedule_test

import (
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/schedule"
)

func zone(t testing.TB, name string) *time.Location {
	t.Helper()
	l, err := schedule.LoadZone(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestParseClock(t *testing.T) {
	good := map[string]schedule.Clock{
		"08:00": {8, 0}, "21:30": {21, 30}, "00:00": {0, 0}, "23:59": {23, 59}, "7:05": {7, 5}, " 09:15 ": {9, 15},
	}
	for in, want := range good {
		if got, err := schedule.ParseClock(in); err != nil || got != want {
			t.Errorf("ParseClock(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"24:00", "", "8", "08:60", "08:0", "008:00", "-1:00", "08-00", "8:00pm", "+8:00", "08:00:00", "２３:00"} {
		if got, err := schedule.ParseClock(in); err == nil {
			t.Errorf("ParseClock(%q) = %v, want an error", in, got)
		}
	}
	if s := (schedule.Clock{Hour: 8, Minute: 5}).String(); s != "08:05" {
		t.Errorf("String = %q", s)
	}
}

func TestParseWindow(t *testing.T) {
	cases := []struct {
		in      string
		str     string
		enabled bool
	}{
		{"21:00-08:00", "21:00-08:00", true},
		{" 21:00 - 8:00 ", "21:00-08:00", true},
		{"12:00-13:00", "12:00-13:00", true},
		{"off", "off", false},
		{"OFF", "off", false},
		{"", "off", false},
		{"08:00-08:00", "off", false},
	}
	for _, c := range cases {
		w, err := schedule.ParseWindow(c.in)
		if err != nil || w.String() != c.str || w.Enabled() != c.enabled {
			t.Errorf("ParseWindow(%q) = %v (enabled %v), %v; want %q enabled %v", c.in, w, w.Enabled(), err, c.str, c.enabled)
		}
	}
	for _, in := range []string{"21:00", "21:00-24:00", "on", "21:00-08:00-09:00", "21:00–08:00", "-", "9pm-8am"} {
		if w, err := schedule.ParseWindow(in); err == nil {
			t.Errorf("ParseWindow(%q) = %v, want an error", in, w)
		}
	}
}

func mustWindow(t testing.TB, s string) schedule.Window {
	t.Helper()
	w, err := schedule.ParseWindow(s)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestDeferInTheRecipientsZone(t *testing.T) {
	night := mustWindow(t, "21:00-08:00")
	for _, name := range []string{"Asia/Shanghai", "America/New_York"} {
		loc := zone(t, name)
		at := func(d, h, m int) time.Time { return time.Date(2026, 6, d, h, m, 0, 0, loc) }
		cases := []struct {
			name     string
			in, want time.Time
			deferred bool
		}{
			{"late evening waits for the next morning", at(15, 22, 30), at(16, 8, 0), true},
			{"the start of the window is inside", at(15, 21, 0), at(16, 8, 0), true},
			{"small hours wait for the same morning", at(15, 3, 0), at(15, 8, 0), true},
			{"just before the end", at(15, 7, 59).Add(59 * time.Second), at(15, 8, 0), true},
			{"the end of the window is outside", at(15, 8, 0), at(15, 8, 0), false},
			{"daytime is unchanged", at(15, 12, 0), at(15, 12, 0), false},
			{"just before the start", at(15, 20, 59), at(15, 20, 59), false},
		}
		for _, c := range cases {
			// The caller's time may be in any zone: only the instant matters.
			got, deferred := night.Defer(c.in.UTC(), loc)
			if !got.Equal(c.want) || deferred != c.deferred {
				t.Errorf("%s, %s: Defer(%s) = %s, %v; want %s, %v", name, c.name, c.in, got, deferred, c.want, c.deferred)
			}
			if deferred && got.Location() != loc {
				t.Errorf("%s: the end is not in the recipient's zone: %s", name, got)
			}
		}
	}
	// The same instant is night in Shanghai and morning in New York.
	instant := time.Date(2026, 6, 15, 14, 30, 0, 0, time.UTC) // 22:30 in Shanghai, 10:30 in New York
	if got, ok := night.Defer(instant, zone(t, "Asia/Shanghai")); !ok || !got.Equal(time.Date(2026, 6, 16, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("Shanghai: %s %v", got, ok)
	}
	if got, ok := night.Defer(instant, zone(t, "America/New_York")); ok || !got.Equal(instant) {
		t.Errorf("New York: %s %v", got, ok)
	}
}

func TestDeferWithAWindowInsideTheDay(t *testing.T) {
	lunch := mustWindow(t, "12:00-13:00")
	loc := zone(t, "Asia/Shanghai")
	at := func(h, m int) time.Time { return time.Date(2026, 6, 15, h, m, 0, 0, loc) }
	for _, c := range []struct {
		in, want time.Time
		deferred bool
	}{
		{at(12, 30), at(13, 0), true},
		{at(12, 0), at(13, 0), true},
		{at(13, 0), at(13, 0), false},
		{at(11, 59), at(11, 59), false},
		{at(22, 30), at(22, 30), false},
		{at(3, 0), at(3, 0), false},
	} {
		if got, deferred := lunch.Defer(c.in, loc); !got.Equal(c.want) || deferred != c.deferred {
			t.Errorf("Defer(%s) = %s, %v; want %s, %v", c.in, got, deferred, c.want, c.deferred)
		}
	}
}

func TestDeferWhenDisabledOrWithoutAZone(t *testing.T) {
	now := time.Date(2026, 6, 15, 23, 0, 0, 0, time.UTC)
	for _, s := range []string{"off", "08:00-08:00"} {
		if got, ok := mustWindow(t, s).Defer(now, time.UTC); ok || !got.Equal(now) {
			t.Errorf("%s: %s %v", s, got, ok)
		}
	}
	if got, ok := mustWindow(t, "21:00-08:00").Defer(now, nil); !ok || !got.Equal(time.Date(2026, 6, 16, 8, 0, 0, 0, time.UTC)) {
		t.Errorf("a nil zone is UTC: %s %v", got, ok)
	}
}

// America/New_York changes on 2026-03-08 at 02:00 EST (to 03:00 EDT) and on
// 2026-11-01 at 02:00 EDT (back to 01:00 EST).
func TestDeferAcrossDaylightSavingChanges(t *testing.T) {
	ny := zone(t, "America/New_York")
	utc := func(mo time.Month, d, h, m int) time.Time { return time.Date(2026, mo, d, h, m, 0, 0, time.UTC) }
	cases := []struct {
		name   string
		window string
		in     time.Time
		want   time.Time
	}{
		{"spring forward: 22:30 EST to 08:00 EDT", "21:00-08:00", utc(3, 8, 3, 30), utc(3, 8, 12, 0)},
		{"spring forward: 03:30 EDT to 08:00 EDT", "21:00-08:00", utc(3, 8, 7, 30), utc(3, 8, 12, 0)},
		{"fall back: 22:30 EDT to 08:00 EST", "21:00-08:00", utc(11, 1, 2, 30), utc(11, 1, 13, 0)},
		{"fall back: 01:30 EST (the second time) to 08:00 EST", "21:00-08:00", utc(11, 1, 6, 30), utc(11, 1, 13, 0)},
		{"an end in the gap: 02:30 does not exist, 03:00 EDT", "01:00-02:30", utc(3, 8, 6, 30), utc(3, 8, 7, 0)},
		{"an end in the gap from the evening before", "22:00-02:30", utc(3, 8, 4, 0), utc(3, 8, 7, 0)},
		{"an end after the repeated hour: 02:30 EST", "01:00-02:30", utc(11, 1, 5, 15), utc(11, 1, 7, 30)},
		{"the repeated hour, the second time: 02:30 EST", "01:00-02:30", utc(11, 1, 6, 15), utc(11, 1, 7, 30)},
		{"an end in the repeated hour: its first occurrence", "21:00-01:30", utc(11, 1, 4, 30), utc(11, 1, 5, 30)},
		{"an end in the repeated hour, from its first time", "21:00-01:30", utc(11, 1, 5, 15), utc(11, 1, 5, 30)},
		{"an end in the repeated hour, from its second time: the second occurrence", "21:00-01:30", utc(11, 1, 6, 15), utc(11, 1, 6, 30)},
	}
	for _, c := range cases {
		got, ok := mustWindow(t, c.window).Defer(c.in, ny)
		if !ok || !got.Equal(c.want) {
			t.Errorf("%s: Defer(%s) = %s, %v; want %s (%s)", c.name, c.in.In(ny), got, ok, c.want.In(ny), c.want)
		}
		if !got.After(c.in) {
			t.Errorf("%s: the end %s is not after %s", c.name, got, c.in)
		}
	}
	// The first instant after the gap is outside 01:00-02:30 by its wall clock (03:00).
	if got, ok := mustWindow(t, "01:00-02:30").Defer(utc(3, 8, 7, 0), ny); ok {
		t.Errorf("03:00 EDT is after the window: %s", got)
	}
}

func TestLocalTimeResolvesGapsAndRepeats(t *testing.T) {
	ny := zone(t, "America/New_York")
	cases := []struct {
		name string
		got  time.Time
		want time.Time
	}{
		{"in the gap", schedule.LocalTime(2026, 3, 8, 2, 30, 0, 0, ny), time.Date(2026, 3, 8, 7, 0, 0, 0, time.UTC)},
		{"the gap's start", schedule.LocalTime(2026, 3, 8, 2, 0, 0, 0, ny), time.Date(2026, 3, 8, 7, 0, 0, 0, time.UTC)},
		{"before the gap", schedule.LocalTime(2026, 3, 8, 1, 59, 0, 0, ny), time.Date(2026, 3, 8, 6, 59, 0, 0, time.UTC)},
		{"repeated: the first occurrence", schedule.LocalTime(2026, 11, 1, 1, 30, 0, 0, ny), time.Date(2026, 11, 1, 5, 30, 0, 0, time.UTC)},
		{"normalised day", schedule.LocalTime(2026, 2, 29, 10, 0, 0, 0, ny), time.Date(2026, 3, 1, 15, 0, 0, 0, time.UTC)},
		{"a zone with a half-hour change", schedule.LocalTime(2026, 10, 4, 2, 15, 0, 0, zone(t, "Australia/Lord_Howe")), time.Date(2026, 10, 3, 15, 30, 0, 0, time.UTC)},
		{"nil is UTC", schedule.LocalTime(2026, 3, 8, 2, 30, 0, 0, nil), time.Date(2026, 3, 8, 2, 30, 0, 0, time.UTC)},
	}
	for _, c := range cases {
		if !c.got.Equal(c.want) {
			t.Errorf("%s: %s, want %s", c.name, c.got, c.want)
		}
	}
}

func FuzzParseWindow(f *testing.F) {
	for _, s := range []string{"21:00-08:00", "off", "", "12:00-13:00", "8:00-8:00", "24:00-01:00", "23:59-00:00", "1:2-3:4"} {
		f.Add(s, int64(1_772_900_000))
	}
	ny, err := schedule.LoadZone("America/New_York")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string, unix int64) {
		w, err := schedule.ParseWindow(s)
		if err != nil {
			return
		}
		back, err := schedule.ParseWindow(w.String())
		if err != nil || back.Enabled() != w.Enabled() || (w.Enabled() && back != w) {
			t.Fatalf("ParseWindow(%q) = %v; its String %q reads back as %v, %v", s, w, w.String(), back, err)
		}
		// Any instant within a few centuries: a deferred time is later,
		// outside the window, and no more than a day and a bit away.
		at := time.Unix(unix%(300*365*86400), 0)
		got, deferred := w.Defer(at, ny)
		if !deferred {
			if !got.Equal(at) || w.Contains(at, ny) {
				t.Fatalf("%v.Defer(%s) = %s, false", w, at, got)
			}
			return
		}
		if !got.After(at) || got.Sub(at) > 26*time.Hour {
			t.Fatalf("%v.Defer(%s) = %s", w, at.In(ny), got)
		}
		// The end is outside the window, unless the end's wall time was
		// skipped and the first instant after the gap is quiet too.
		if end := got.In(ny); w.Contains(got, ny) && end.Hour() == w.End.Hour && end.Minute() == w.End.Minute {
			t.Fatalf("%v.Defer(%s) = %s, inside the window", w, at.In(ny), end)
		}
	})
}
