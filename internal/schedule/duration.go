package schedule

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Duration is an ISO 8601 duration, PnYnMnWnDTnHnMnS: a calendar part
// (years, months, weeks, days), added to local dates, and a time part added
// as elapsed time.
type Duration struct {
	Years, Months, Weeks, Days int
	// Time is the part after "T": hours, minutes and seconds.
	Time time.Duration
}

// Limits of a Duration.
const (
	// MaxDurationYears bounds a duration: at most ten years in all, a year
	// counting 365.2425 days and a month a twelfth of that.
	MaxDurationYears = 10

	// maxDurationDays bounds each component before the exact check of the
	// total (with approxDays): a little above the limit, and small enough
	// that the arithmetic cannot overflow.
	maxDurationDays = MaxDurationYears * 366
)

// DurationError says why a text is not a duration ParseDuration takes.
type DurationError struct {
	Value string
	// Why completes "the duration is not valid: …", with examples where
	// they help.
	Why string
}

func (e *DurationError) Error() string {
	return fmt.Sprintf("schedule: duration %q: %s", e.Value, e.Why)
}

// ParseDuration reads an ISO 8601 duration such as P1D, P7D, P30D, PT2H,
// P1M or P1DT12H. Designators are upper case and in the order Y M W D, then
// T and H M S; each at most once. Refused: a sign (negative durations), a
// duration with no component ("P", "PT", "P1DT"), fractions other than in
// the seconds (PT1.5S, with "." or ","; at most nanoseconds), and durations
// longer than MaxDurationYears in all. Zero durations (P0D, PT0S) are
// accepted.
func ParseDuration(s string) (Duration, error) {
	bad := func(why string) (Duration, error) {
		return Duration{}, &DurationError{Value: s, Why: why}
	}
	if len(s) > 64 {
		return bad("too long")
	}
	if s == "" || s[0] != 'P' {
		if strings.HasPrefix(s, "-") || strings.HasPrefix(s, "+") {
			return bad("a duration has no sign (negative durations are refused)")
		}
		return bad("want an ISO 8601 duration such as P1D, PT2H or P1DT12H")
	}
	var d Duration
	rest := s[1:]
	inTime := false
	components := 0
	last := -1 // index in the designator order of the previous component
	const order = "YMWDHmS"
	for rest != "" {
		if rest[0] == 'T' {
			if inTime {
				return bad(`"T" appears twice`)
			}
			inTime = true
			rest = rest[1:]
			if rest == "" {
				return bad(`no hours, minutes or seconds after "T"`)
			}
			continue
		}
		i := 0
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		if i == 0 {
			if rest[0] == '-' || rest[0] == '+' {
				return bad("a component has no sign (negative durations are refused)")
			}
			return bad(fmt.Sprintf("want a number before %q", rest[:1]))
		}
		whole := rest[:i]
		rest = rest[i:]
		frac := ""
		if rest != "" && (rest[0] == '.' || rest[0] == ',') {
			j := 1
			for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
				j++
			}
			frac = rest[1:j]
			if frac == "" {
				return bad("want digits after the decimal sign")
			}
			if len(frac) > 9 {
				return bad("fractions of a second finer than nanoseconds are refused")
			}
			rest = rest[j:]
		}
		if rest == "" {
			return bad(fmt.Sprintf("the number %s has no designator (Y, M, W, D, H, M or S)", whole))
		}
		des := rest[0]
		rest = rest[1:]
		if des == 'M' && inTime {
			des = 'm' // minutes
		}
		pos := strings.IndexByte(order, des)
		switch {
		case pos < 0:
			return bad(fmt.Sprintf("unknown designator %q", string(des)))
		case inTime && pos < 4:
			return bad(fmt.Sprintf("%q belongs before \"T\"", string(des)))
		case !inTime && pos >= 4:
			if des == 'S' {
				return bad(`seconds belong after "T" (PT30S)`)
			}
			return bad(fmt.Sprintf(`%q belongs after "T"`, string(des)))
		case pos <= last:
			return bad("components are repeated or out of order (want Y M W D T H M S)")
		}
		last = pos
		if frac != "" && des != 'S' {
			return bad("only seconds may have a fraction")
		}
		if len(whole) > 10 {
			return bad("longer than " + strconv.Itoa(MaxDurationYears) + " years")
		}
		n, _ := strconv.ParseInt(whole, 10, 64)
		// Each component alone must stay within the limit, which also keeps
		// the arithmetic below from overflowing.
		if n > componentLimit[des] {
			return bad("longer than " + strconv.Itoa(MaxDurationYears) + " years")
		}
		switch des {
		case 'Y':
			d.Years = int(n)
		case 'M':
			d.Months = int(n)
		case 'W':
			d.Weeks = int(n)
		case 'D':
			d.Days = int(n)
		case 'H':
			d.Time += time.Duration(n) * time.Hour
		case 'm':
			d.Time += time.Duration(n) * time.Minute
		case 'S':
			d.Time += time.Duration(n) * time.Second
			if frac != "" {
				ns, _ := strconv.Atoi((frac + "00000000")[:9])
				d.Time += time.Duration(ns)
			}
		}
		components++
	}
	if components == 0 {
		return bad("no component (want at least one, such as P1D or PT0S)")
	}
	if d.approxDays() > MaxDurationYears*daysPerYear {
		return bad("longer than " + strconv.Itoa(MaxDurationYears) + " years")
	}
	return d, nil
}

// componentLimit bounds each component by designator ('m' for minutes).
var componentLimit = map[byte]int64{
	'Y': MaxDurationYears,
	'M': MaxDurationYears * 12,
	'W': maxDurationDays/7 + 1,
	'D': maxDurationDays,
	'H': maxDurationDays * 24,
	'm': maxDurationDays * 24 * 60,
	'S': maxDurationDays * 24 * 3600,
}

// daysPerYear is the mean Gregorian year.
const daysPerYear = 365.2425

// approxDays is the length of the duration in days, a year counting
// 365.2425 days and a month a twelfth of a year.
func (d Duration) approxDays() float64 {
	return float64(d.Years)*daysPerYear + float64(d.Months)*daysPerYear/12 + float64(d.Weeks)*7 + float64(d.Days) +
		d.Time.Hours()/24
}

// IsZero reports whether the duration is zero.
func (d Duration) IsZero() bool { return d == Duration{} }

// String formats the duration in ISO 8601, as ParseDuration reads it: the
// time part in hours, minutes and seconds ("PT90M" reads back as "PT1H30M"),
// and the zero duration as "P0D".
func (d Duration) String() string {
	if d.IsZero() {
		return "P0D"
	}
	var b strings.Builder
	b.WriteByte('P')
	for _, c := range []struct {
		n   int
		des byte
	}{{d.Years, 'Y'}, {d.Months, 'M'}, {d.Weeks, 'W'}, {d.Days, 'D'}} {
		if c.n != 0 {
			b.WriteString(strconv.Itoa(c.n))
			b.WriteByte(c.des)
		}
	}
	if d.Time == 0 {
		return b.String()
	}
	b.WriteByte('T')
	t := d.Time
	if t < 0 {
		b.WriteByte('-') // not ISO 8601; only a hand-built Duration gets here
		t = -t
	}
	if h := t / time.Hour; h > 0 {
		b.WriteString(strconv.FormatInt(int64(h), 10) + "H")
		t -= h * time.Hour
	}
	if m := t / time.Minute; m > 0 {
		b.WriteString(strconv.FormatInt(int64(m), 10) + "M")
		t -= m * time.Minute
	}
	if t > 0 {
		b.WriteString(strconv.FormatInt(int64(t/time.Second), 10))
		if ns := t % time.Second; ns > 0 {
			b.WriteByte('.')
			b.WriteString(strings.TrimRight(fmt.Sprintf("%09d", int64(ns)), "0"))
		}
		b.WriteByte('S')
	}
	return b.String()
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler with ParseDuration.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// AddTo returns t plus the duration. The calendar part is added to t's
// local date in t's location, keeping its wall-clock time, so P1D across a
// daylight-saving change is the same wall time the next day (23 or 25 hours
// later); then the time part is added as elapsed time, so PT24H across the
// change is 24 hours later and not the same wall time.
//
// Years and months are added first and the day is clamped to the end of
// the month reached: P1M from January 31 is February 28 (29 in a leap year)
// and P1Y from February 29 is February 28, where Go's AddDate would
// normalise to March 3 and March 1. Weeks and days are added after the
// clamp: P1M1D from January 31 is March 1.
//
// A wall time the change skips (spring forward) becomes the first instant
// after the gap, one it repeats (fall back) its first occurrence. When the
// calendar part is zero t is not re-resolved, so the time part alone is
// plain elapsed time from t.
func (d Duration) AddTo(t time.Time) time.Time {
	if d.Years != 0 || d.Months != 0 || d.Weeks != 0 || d.Days != 0 {
		y, m, day := t.Date()
		hh, mm, ss := t.Clock()
		if d.Years != 0 || d.Months != 0 {
			months := int(m) - 1 + d.Months
			y += d.Years + floorDiv(months, 12)
			m = time.Month(months - floorDiv(months, 12)*12 + 1)
			day = min(day, daysIn(y, m))
		}
		day += 7*d.Weeks + d.Days
		t = LocalTime(y, m, day, hh, mm, ss, t.Nanosecond(), t.Location())
	}
	return t.Add(d.Time)
}

func floorDiv(a, b int) int {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// daysIn is the number of days of the month.
func daysIn(year int, m time.Month) int {
	return time.Date(year, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

// StepTime is the time a follow-up step is due: the anchor converted to loc
// (nil: UTC), plus the offset (see Duration.AddTo). When at is not nil the
// local date reached is kept and the wall clock set to at, resolved like
// Window.Defer's end: a time in a spring-forward gap becomes the first
// instant after the gap, a repeated time its first occurrence. The result
// is in loc; it may be before the anchor (P0D at 08:00 from a 10:00 anchor).
func StepTime(anchor time.Time, offset Duration, at *Clock, loc *time.Location) time.Time {
	loc = orUTC(loc)
	t := offset.AddTo(anchor.In(loc))
	if at == nil {
		return t
	}
	y, m, d := t.Date()
	return LocalTime(y, m, d, at.Hour, at.Minute, 0, 0, loc)
}
