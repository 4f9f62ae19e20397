package schedule_test

import (
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/schedule"
)

func TestParseDuration(t *testing.T) {
	cases := []struct {
		in   string
		want schedule.Duration
		str  string
	}{
		{"P1D", schedule.Duration{Days: 1}, "P1D"},
		{"P7D", schedule.Duration{Days: 7}, "P7D"},
		{"P30D", schedule.Duration{Days: 30}, "P30D"},
		{"PT2H", schedule.Duration{Time: 2 * time.Hour}, "PT2H"},
		{"P1M", schedule.Duration{Months: 1}, "P1M"},
		{"PT1M", schedule.Duration{Time: time.Minute}, "PT1M"},
		{"P1DT12H", schedule.Duration{Days: 1, Time: 12 * time.Hour}, "P1DT12H"},
		{"P2W", schedule.Duration{Weeks: 2}, "P2W"},
		{"P1Y2M3W4DT5H6M7S", schedule.Duration{1, 2, 3, 4, 5*time.Hour + 6*time.Minute + 7*time.Second}, "P1Y2M3W4DT5H6M7S"},
		{"PT90M", schedule.Duration{Time: 90 * time.Minute}, "PT1H30M"},
		{"PT1.5S", schedule.Duration{Time: 1500 * time.Millisecond}, "PT1.5S"},
		{"PT0,25S", schedule.Duration{Time: 250 * time.Millisecond}, "PT0.25S"},
		{"PT0.000000001S", schedule.Duration{Time: 1}, "PT0.000000001S"},
		{"P0D", schedule.Duration{}, "P0D"},
		{"PT0S", schedule.Duration{}, "P0D"},
		{"P10Y", schedule.Duration{Years: 10}, "P10Y"},
		{"P120M", schedule.Duration{Months: 120}, "P120M"},
		{"P3652D", schedule.Duration{Days: 3652}, "P3652D"},
		{"P0010D", schedule.Duration{Days: 10}, "P10D"},
	}
	for _, c := range cases {
		got, err := schedule.ParseDuration(c.in)
		if err != nil || got != c.want || got.String() != c.str {
			t.Errorf("ParseDuration(%q) = %+v (%s), %v; want %+v (%s)", c.in, got, got, err, c.want, c.str)
		}
	}
	errs := []struct{ in, why string }{
		{"", "ISO 8601"},
		{"P", "no component"},
		{"PT", `after "T"`},
		{"P1DT", `after "T"`},
		{"-P1D", "sign"},
		{"P-1D", "sign"},
		{"+P1D", "sign"},
		{"1D", "ISO 8601"},
		{"p1d", "ISO 8601"},
		{"P1d", "designator"},
		{"P1.5D", "only seconds"},
		{"PT1.5H", "only seconds"},
		{"PT1.S", "digits after"},
		{"PT.5S", "number before"},
		{"PT1.0000000001S", "nanoseconds"},
		{"P1H", `after "T"`},
		{"P30S", `after "T"`},
		{"PT1D", `before "T"`},
		{"PT1Y", `before "T"`},
		{"P1D1M", "order"},
		{"P1D1D", "order"},
		{"PT1S1H", "order"},
		{"P1DT1HT1M", "twice"},
		{"P1", "no designator"},
		{"P1X", "designator"},
		{"P11Y", "10 years"},
		{"P121M", "10 years"},
		{"P9Y13M", "10 years"},
		{"P3653D", "10 years"},
		{"P523W", "10 years"},
		{"P10YT1S", "10 years"},
		{"PT87659H", "10 years"},
		{"PT99999999999999999999S", "10 years"},
		{"P 1D", "number before"},
		{"P1D ", "number before"},
		{"P" + strings.Repeat("0", 80) + "1D", "too long"},
	}
	for _, c := range errs {
		if got, err := schedule.ParseDuration(c.in); err == nil || !strings.Contains(err.Error(), c.why) {
			t.Errorf("ParseDuration(%q) = %+v, %v; want an error about %q", c.in, got, err, c.why)
		}
	}
}

func TestDurationText(t *testing.T) {
	var d schedule.Duration
	if err := d.UnmarshalText([]byte("P1DT2H")); err != nil || d != (schedule.Duration{Days: 1, Time: 2 * time.Hour}) {
		t.Fatalf("%+v %v", d, err)
	}
	if b, _ := d.MarshalText(); string(b) != "P1DT2H" {
		t.Fatalf("%s", b)
	}
	if err := d.UnmarshalText([]byte("P")); err == nil {
		t.Fatal("P must be refused")
	}
}

func TestAddTo(t *testing.T) {
	ny := zone(t, "America/New_York")
	d := func(s string) schedule.Duration {
		v, err := schedule.ParseDuration(s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	cases := []struct {
		name string
		from time.Time
		dur  string
		want time.Time
	}{
		{"P1D across spring forward keeps the wall time (23 hours)", time.Date(2026, 3, 7, 10, 0, 0, 0, ny), "P1D", time.Date(2026, 3, 8, 14, 0, 0, 0, time.UTC)},
		{"PT24H across spring forward is elapsed time", time.Date(2026, 3, 7, 10, 0, 0, 0, ny), "PT24H", time.Date(2026, 3, 8, 15, 0, 0, 0, time.UTC)},
		{"P1D across fall back keeps the wall time (25 hours)", time.Date(2026, 10, 31, 10, 0, 0, 0, ny), "P1D", time.Date(2026, 11, 1, 15, 0, 0, 0, time.UTC)},
		{"P1D into the gap: the first instant after it", time.Date(2026, 3, 7, 2, 30, 0, 0, ny), "P1D", time.Date(2026, 3, 8, 7, 0, 0, 0, time.UTC)},
		{"P1D into the repeated hour: its first occurrence", time.Date(2026, 10, 31, 1, 30, 0, 0, ny), "P1D", time.Date(2026, 11, 1, 5, 30, 0, 0, time.UTC)},
		{"PT1H from the second 01:30 is elapsed time", time.Date(2026, 11, 1, 6, 30, 0, 0, time.UTC).In(ny), "PT1H", time.Date(2026, 11, 1, 7, 30, 0, 0, time.UTC)},
		{"P1M from January 31 clamps to February 28", time.Date(2026, 1, 31, 9, 0, 0, 0, ny), "P1M", time.Date(2026, 2, 28, 9, 0, 0, 0, ny)},
		{"P1M from January 31 of a leap year: February 29", time.Date(2028, 1, 31, 9, 0, 0, 0, ny), "P1M", time.Date(2028, 2, 29, 9, 0, 0, 0, ny)},
		{"P1M from March 31: April 30", time.Date(2026, 3, 31, 9, 0, 0, 0, ny), "P1M", time.Date(2026, 4, 30, 9, 0, 0, 0, ny)},
		{"P1Y from February 29: February 28", time.Date(2028, 2, 29, 9, 0, 0, 0, ny), "P1Y", time.Date(2029, 2, 28, 9, 0, 0, 0, ny)},
		{"P13M crosses the year", time.Date(2026, 12, 31, 9, 0, 0, 0, ny), "P13M", time.Date(2028, 1, 31, 9, 0, 0, 0, ny)},
		{"P1M1D: days after the clamp", time.Date(2026, 1, 31, 9, 0, 0, 0, ny), "P1M1D", time.Date(2026, 3, 1, 9, 0, 0, 0, ny)},
		{"P1W is seven days", time.Date(2026, 3, 5, 10, 0, 0, 0, ny), "P1W", time.Date(2026, 3, 12, 10, 0, 0, 0, ny)},
		{"P1DT12H", time.Date(2026, 3, 7, 10, 0, 0, 0, ny), "P1DT12H", time.Date(2026, 3, 8, 22, 0, 0, 0, ny)},
		{"P0D changes nothing", time.Date(2026, 11, 1, 6, 30, 0, 0, time.UTC).In(ny), "P0D", time.Date(2026, 11, 1, 6, 30, 0, 0, time.UTC)},
		{"fractions of a second survive", time.Date(2026, 1, 1, 0, 0, 0, 123, time.UTC), "P1D", time.Date(2026, 1, 2, 0, 0, 0, 123, time.UTC)},
	}
	for _, c := range cases {
		got := d(c.dur).AddTo(c.from)
		if !got.Equal(c.want) {
			t.Errorf("%s: %s + %s = %s, want %s", c.name, c.from, c.dur, got, c.want.In(c.from.Location()))
		}
		if got.Location() != c.from.Location() {
			t.Errorf("%s: the result is in %s, not %s", c.name, got.Location(), c.from.Location())
		}
	}
}

func TestStepTime(t *testing.T) {
	ny, sh := zone(t, "America/New_York"), zone(t, "Asia/Shanghai")
	anchor, err := time.Parse(time.RFC3339, "2026-11-20T10:00:00+08:00")
	if err != nil {
		t.Fatal(err)
	}
	ten := &schedule.Clock{Hour: 10}
	cases := []struct {
		name   string
		anchor time.Time
		offset schedule.Duration
		at     *schedule.Clock
		loc    *time.Location
		want   string
	}{
		{"P1D at 10:00 in Shanghai", anchor, schedule.Duration{Days: 1}, ten, sh, "2026-11-21T10:00:00+08:00"},
		// The anchor is the evening of the 19th in New York: the date is the recipient's.
		{"P1D at 10:00 in New York", anchor, schedule.Duration{Days: 1}, ten, ny, "2026-11-20T10:00:00-05:00"},
		{"P1D without a time", anchor, schedule.Duration{Days: 1}, nil, sh, "2026-11-21T10:00:00+08:00"},
		{"PT2H", anchor, schedule.Duration{Time: 2 * time.Hour}, nil, sh, "2026-11-20T12:00:00+08:00"},
		{"P0D at 08:00 may be before the anchor", anchor, schedule.Duration{}, &schedule.Clock{Hour: 8}, sh, "2026-11-20T08:00:00+08:00"},
		{"P7D at 10:00 across spring forward", time.Date(2026, 3, 5, 10, 0, 0, 0, ny), schedule.Duration{Days: 7}, ten, ny, "2026-03-12T10:00:00-04:00"},
		{"P7D across spring forward keeps 10:00", time.Date(2026, 3, 5, 10, 0, 0, 0, ny), schedule.Duration{Days: 7}, nil, ny, "2026-03-12T10:00:00-04:00"},
		{"P7D across fall back keeps 10:00", time.Date(2026, 10, 29, 14, 0, 0, 0, time.UTC), schedule.Duration{Days: 7}, nil, ny, "2026-11-05T10:00:00-05:00"},
		{"at 02:30 on the spring-forward day: 03:00 EDT", time.Date(2026, 3, 7, 12, 0, 0, 0, ny), schedule.Duration{Days: 1}, &schedule.Clock{Hour: 2, Minute: 30}, ny, "2026-03-08T03:00:00-04:00"},
		{"at 01:30 on the fall-back day: the first one", time.Date(2026, 10, 31, 12, 0, 0, 0, ny), schedule.Duration{Days: 1}, &schedule.Clock{Hour: 1, Minute: 30}, ny, "2026-11-01T01:30:00-04:00"},
		{"P1M from January 31 at 09:00", time.Date(2026, 1, 31, 18, 0, 0, 0, sh), schedule.Duration{Months: 1}, &schedule.Clock{Hour: 9}, sh, "2026-02-28T09:00:00+08:00"},
		{"nil zone is UTC", anchor, schedule.Duration{Days: 1}, ten, nil, "2026-11-21T10:00:00Z"},
	}
	for _, c := range cases {
		got := schedule.StepTime(c.anchor, c.offset, c.at, c.loc)
		if s := got.Format(time.RFC3339); s != c.want {
			t.Errorf("%s: StepTime = %s, want %s", c.name, s, c.want)
		}
	}
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"P1D", "P7D", "PT2H", "P1M", "P1DT12H", "P1Y2M3W4DT5H6M7.5S", "PT0,5S", "P", "PT", "-P1D", "P10Y", "PT87658H"} {
		f.Add(s)
	}
	ny, err := schedule.LoadZone("America/New_York")
	if err != nil {
		f.Fatal(err)
	}
	from := time.Date(2026, 1, 31, 10, 0, 0, 0, ny)
	f.Fuzz(func(t *testing.T, s string) {
		d, err := schedule.ParseDuration(s)
		if err != nil {
			return
		}
		back, err := schedule.ParseDuration(d.String())
		if err != nil || back != d {
			t.Fatalf("ParseDuration(%q) = %+v; its String %q reads back as %+v, %v", s, d, d.String(), back, err)
		}
		if d.Years < 0 || d.Months < 0 || d.Weeks < 0 || d.Days < 0 || d.Time < 0 {
			t.Fatalf("ParseDuration(%q) = %+v: negative", s, d)
		}
		got := d.AddTo(from)
		if got.Before(from) || got.Sub(from) > (10*366+1)*24*time.Hour {
			t.Fatalf("%q added to %s = %s", s, from, got)
		}
	})
}
