// Package schedule answers "when" for messages to patients: quiet hours in
// the recipient's local time, the recipient's time zone, ISO 8601 durations
// and the due times of follow-up steps.
//
// Local wall-clock times are resolved the same way everywhere in the
// package: a wall time that does not exist on a day (it falls in the gap of a
// spring-forward change) becomes the first instant after the gap, and a wall
// time that happens twice (fall back) becomes its first occurrence. Go's
// time.Date makes no such promise (for a time in the gap it may return the
// instant before the gap), so the package never relies on it for local
// times.
package schedule

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	_ "time/tzdata" // zones work on hosts without a zoneinfo database
)

// Clock is a local wall-clock time of day, to the minute.
type Clock struct{ Hour, Minute int }

// ParseClock reads "HH:MM" (or "H:MM") on a 24-hour clock, from 00:00 to
// 23:59. "24:00" is refused: the end of a day is 00:00 of the next.
func ParseClock(s string) (Clock, error) {
	h, m, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok || len(h) < 1 || len(h) > 2 || len(m) != 2 || !digits(h) || !digits(m) {
		return Clock{}, fmt.Errorf("schedule: clock %q: want HH:MM such as 08:00 or 21:30", s)
	}
	c := Clock{Hour: atoi(h), Minute: atoi(m)}
	if !c.valid() {
		return Clock{}, fmt.Errorf("schedule: clock %q: want a time from 00:00 to 23:59", s)
	}
	return c, nil
}

func (c Clock) valid() bool { return c.Hour >= 0 && c.Hour < 24 && c.Minute >= 0 && c.Minute < 60 }

// minutes is the clock's minute of the day.
func (c Clock) minutes() int { return c.Hour*60 + c.Minute }

// String formats the clock as "HH:MM".
func (c Clock) String() string { return fmt.Sprintf("%02d:%02d", c.Hour, c.Minute) }

// MarshalText implements encoding.TextMarshaler.
func (c Clock) MarshalText() ([]byte, error) {
	if !c.valid() {
		return nil, fmt.Errorf("schedule: invalid clock %d:%d", c.Hour, c.Minute)
	}
	return []byte(c.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler with ParseClock.
func (c *Clock) UnmarshalText(b []byte) error {
	v, err := ParseClock(string(b))
	if err != nil {
		return err
	}
	*c = v
	return nil
}

// Window is a daily quiet period in the recipient's local time: from Start
// (included) to End (excluded). It wraps midnight when Start is after End
// (21:00-08:00). Start == End means no quiet hours; the zero Window is
// disabled.
type Window struct{ Start, End Clock }

// ParseWindow reads "HH:MM-HH:MM", such as "21:00-08:00". "off" (in any
// case) and "" give the disabled window, as does a window whose start and
// end are the same.
func ParseWindow(s string) (Window, error) {
	t := strings.TrimSpace(s)
	if t == "" || strings.EqualFold(t, "off") {
		return Window{}, nil
	}
	a, b, ok := strings.Cut(t, "-")
	if !ok {
		return Window{}, fmt.Errorf("schedule: quiet window %q: want START-END such as 21:00-08:00, or off", s)
	}
	start, err := ParseClock(a)
	if err != nil {
		return Window{}, fmt.Errorf("schedule: quiet window %q: start: %w", s, err)
	}
	end, err := ParseClock(b)
	if err != nil {
		return Window{}, fmt.Errorf("schedule: quiet window %q: end: %w", s, err)
	}
	return Window{Start: start, End: end}, nil
}

// Enabled reports whether the window has quiet hours.
func (w Window) Enabled() bool { return w.Start != w.End }

// String formats the window as ParseWindow reads it: "21:00-08:00", or
// "off" when disabled.
func (w Window) String() string {
	if !w.Enabled() {
		return "off"
	}
	return w.Start.String() + "-" + w.End.String()
}

// MarshalText implements encoding.TextMarshaler.
func (w Window) MarshalText() ([]byte, error) { return []byte(w.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler with ParseWindow.
func (w *Window) UnmarshalText(b []byte) error {
	v, err := ParseWindow(string(b))
	if err != nil {
		return err
	}
	*w = v
	return nil
}

// Contains reports whether t falls inside the window in loc (nil: UTC),
// judged by the local wall clock.
func (w Window) Contains(t time.Time, loc *time.Location) bool {
	if !w.Enabled() {
		return false
	}
	lt := t.In(orUTC(loc))
	return w.containsWall(wallNanos(lt))
}

// containsWall reports whether a local time of day (nanoseconds since
// midnight) is inside the window.
func (w Window) containsWall(n int64) bool {
	start := int64(w.Start.minutes()) * int64(time.Minute)
	end := int64(w.End.minutes()) * int64(time.Minute)
	if w.Start.minutes() < w.End.minutes() {
		return n >= start && n < end
	}
	return n >= start || n < end
}

// Defer holds back a send time that falls inside the quiet window. When t is
// inside the window in loc (nil: UTC) it returns the window's end, the next
// local End after t, and true; otherwise t and false.
//
// The end is resolved like every local time of the package: if End does not
// exist that day (spring forward) the result is the first instant after the
// gap, and if it happens twice (fall back) the first occurrence, unless that
// one is not after t (t is in the repeated hour already), in which case the
// second. The result is always after t and is expressed in loc.
func (w Window) Defer(t time.Time, loc *time.Location) (time.Time, bool) {
	if !w.Enabled() {
		return t, false
	}
	loc = orUTC(loc)
	lt := t.In(loc)
	n := wallNanos(lt)
	if !w.containsWall(n) {
		return t, false
	}
	y, m, d := lt.Date()
	if n >= int64(w.End.minutes())*int64(time.Minute) {
		d++ // the end is tomorrow's (time.Date normalises the day)
	}
	for _, c := range localCandidates(y, m, d, w.End.Hour, w.End.Minute, 0, 0, loc) {
		if c.After(t) {
			return c, true
		}
	}
	// No occurrence of End is after t: End falls in a gap that day.
	return gapEnd(y, m, d, w.End.Hour, w.End.Minute, 0, 0, loc), true
}

// wallNanos is the local time of day of t, in nanoseconds since midnight.
func wallNanos(t time.Time) int64 {
	h, m, s := t.Clock()
	return int64(h)*int64(time.Hour) + int64(m)*int64(time.Minute) + int64(s)*int64(time.Second) + int64(t.Nanosecond())
}

func orUTC(loc *time.Location) *time.Location {
	if loc == nil {
		return time.UTC
	}
	return loc
}

// LocalTime returns the instant at which the wall clock in loc (nil: UTC)
// reads the given date and time, resolved as the package resolves every
// local time: a time in a spring-forward gap becomes the first instant after
// the gap, a time repeated by a fall-back change its first occurrence. The
// date is normalised as time.Date normalises it (day 32 is the 1st of the
// next month).
func LocalTime(year int, month time.Month, day, hour, min, sec, nsec int, loc *time.Location) time.Time {
	loc = orUTC(loc)
	if c := localCandidates(year, month, day, hour, min, sec, nsec, loc); len(c) > 0 {
		return c[0]
	}
	return gapEnd(year, month, day, hour, min, sec, nsec, loc)
}

// localCandidates returns the instants, earliest first, at which the wall
// clock in loc reads the given date and time: none in a gap, two in a
// repeated hour, one otherwise.
func localCandidates(year int, month time.Month, day, hour, min, sec, nsec int, loc *time.Location) []time.Time {
	wall := time.Date(year, month, day, hour, min, sec, nsec, time.UTC)
	// Every offset in effect within a day either side of the wall time is a
	// candidate: zone changes are never closer together than that.
	var offsets []int
	for _, probe := range []time.Duration{-36 * time.Hour, -12 * time.Hour, 0, 12 * time.Hour, 36 * time.Hour} {
		_, off := wall.Add(probe).In(loc).Zone()
		if !slices.Contains(offsets, off) {
			offsets = append(offsets, off)
		}
	}
	var out []time.Time
	for _, off := range offsets {
		u := wall.Add(-time.Duration(off) * time.Second).In(loc)
		if _, o := u.Zone(); o == off && !slices.ContainsFunc(out, u.Equal) {
			out = append(out, u)
		}
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

// gapEnd returns the first instant after the spring-forward gap that
// swallowed the given wall time: the instant the clock jumped.
func gapEnd(year int, month time.Month, day, hour, min, sec, nsec int, loc *time.Location) time.Time {
	wall := time.Date(year, month, day, hour, min, sec, nsec, time.UTC)
	// Read with the offset in effect before the gap, the wall time is an
	// instant after the jump; the zone period it falls in starts at the jump.
	_, before := wall.Add(-36 * time.Hour).In(loc).Zone()
	u := wall.Add(-time.Duration(before) * time.Second).In(loc)
	if start, _ := u.ZoneBounds(); !start.IsZero() && !start.After(u) {
		return start.In(loc)
	}
	return u
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// atoi converts a short run of ASCII digits checked by digits.
func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
