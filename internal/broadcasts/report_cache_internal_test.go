package broadcasts

import (
	"strconv"
	"testing"
	"time"
)

// TestAReportIsReusedWhileItsBroadcastIsUnchangedOrBriefly: a report is
// reused while the broadcast's counts are those it was computed from (up
// to ReportFresh), and for ReportStale whatever changed; after that, or
// once evicted by newer ones, it is computed again.
func TestAReportIsReusedWhileItsBroadcastIsUnchangedOrBriefly(t *testing.T) {
	var c reportCache
	t0 := time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC)
	rep := &Report{People: 100000}
	c.put("bc_1", "active/100/st:sent=5", rep, t0)
	cases := []struct {
		name string
		fp   string
		at   time.Time
		hit  bool
	}{
		{"unchanged, a minute later", "active/100/st:sent=5", t0.Add(time.Minute), true},
		{"changed, within the stale time", "active/100/st:sent=6", t0.Add(ReportStale - time.Second), true},
		{"changed, after the stale time", "active/100/st:sent=6", t0.Add(ReportStale), false},
		{"unchanged, but older than fresh", "active/100/st:sent=5", t0.Add(ReportFresh), false},
	}
	for _, tc := range cases {
		if got := c.get("bc_1", tc.fp, tc.at); (got == rep) != tc.hit {
			t.Errorf("%s: reused %v, want %v", tc.name, got == rep, tc.hit)
		}
	}
	if c.get("bc_2", "x", t0) != nil {
		t.Fatal("a report of another broadcast")
	}
	for i := range reportCacheSize {
		c.put("bc_n"+strconv.Itoa(i), "x", &Report{}, t0.Add(time.Duration(i+1)*time.Second))
	}
	if len(c.entries) != reportCacheSize || c.get("bc_1", "active/100/st:sent=5", t0.Add(time.Second)) != nil {
		t.Fatalf("%d kept; the oldest must go first", len(c.entries))
	}
	sum := &Summary{State: "active", ChunksDone: 3, Counters: map[string]int64{"st:sent": 2, "ans:safe": 1}}
	if fp := sum.fingerprint(); fp != "active/3/ans:safe=1/st:sent=2" {
		t.Fatalf("fingerprint %q", fp)
	}
}
