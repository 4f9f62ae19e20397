package broadcasts_test

import (
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/broadcasts"
)

// TestAnIncidentsReportsAddUpOnOneTimeline: two broadcasts, the second an
// hour after the first, are drawn on one timeline from the first's start:
// before the second starts only the first counts, after it both do.
func TestAnIncidentsReportsAddUpOnOneTimeline(t *testing.T) {
	start := time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC)
	report := func(at time.Time, people int64, reached []int64, channel string) *broadcasts.Report {
		r := &broadcasts.Report{Start: at, Step: time.Minute, People: people, NeverReached: map[string]int64{broadcasts.ReasonNoAddress: 1}, NeverReachedTotal: 1}
		for i := range reached {
			r.Times = append(r.Times, at.Add(time.Duration(i+1)*time.Minute))
		}
		r.Series = []broadcasts.Series{{Key: broadcasts.SeriesReached, Points: reached}, {Key: broadcasts.SeriesReached, Channel: channel, Points: reached}}
		return r
	}
	first := report(start, 10, []int64{4, 8, 9}, "sms")
	second := report(start.Add(time.Hour), 5, []int64{2, 5}, "voice")
	c := broadcasts.Combine([]*broadcasts.Report{first, second})
	if c.People != 15 || c.NeverReachedTotal != 2 || c.NeverReached[broadcasts.ReasonNoAddress] != 2 || !c.Start.Equal(start) {
		t.Fatalf("combined: people %d, never reached %d %v, start %s", c.People, c.NeverReachedTotal, c.NeverReached, c.Start)
	}
	if len(c.Times) > broadcasts.ReportPoints || c.Times[len(c.Times)-1].Before(start.Add(62*time.Minute)) {
		t.Fatalf("%d points to %s", len(c.Times), c.Times[len(c.Times)-1])
	}
	var keys []string
	for _, s := range c.Series {
		keys = append(keys, s.Key+":"+s.Channel)
	}
	if strings.Join(keys, ",") != "reached:,reached:sms,reached:voice" {
		t.Fatalf("lines %v", keys)
	}
	at := func(s broadcasts.Series, when time.Time) int64 {
		for i, tm := range c.Times {
			if !tm.Before(when) {
				return s.Points[i]
			}
		}
		return s.Points[len(s.Points)-1]
	}
	if got := at(c.Series[0], start.Add(30*time.Minute)); got != 9 {
		t.Fatalf("half an hour in, %d reached, want the first's 9", got)
	}
	if got := c.Series[0].Last(); got != 14 {
		t.Fatalf("at the end %d reached, want 9 + 5", got)
	}
	if c.Series[1].Last() != 9 || c.Series[2].Last() != 5 {
		t.Fatalf("per channel: sms %d, voice %d", c.Series[1].Last(), c.Series[2].Last())
	}
	if empty := broadcasts.Combine(nil); empty.People != 0 || len(empty.Series) != 0 {
		t.Fatalf("no reports: %+v", empty)
	}
}
