package broadcasts

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/patientmsg/gateway/internal/ledger"
)

// The after-action report of a broadcast is computed from its people (one
// pass over Scan, whatever their number): each person's record keeps when
// each message reached them, when they were acknowledged and when they
// gave their latest answer. The progress stream is not used: it keeps only
// the last 10,000 or so events, fewer than a large broadcast makes.

// Series of an after-action report's timeline.
const (
	SeriesReached      = "reached"
	SeriesAcknowledged = "acknowledged"
	SeriesSafe         = "safe"
	SeriesNeedHelp     = "need_help"
)

// Why a person was never reached.
const (
	// ReasonNoAddress: they have an address for none of the broadcast's channels.
	ReasonNoAddress = "no_address"
	// ReasonFailed: every channel they have failed or went unanswered before it was sent.
	ReasonFailed = "failed"
	// ReasonOptedOut: they opted out on every channel they have.
	ReasonOptedOut = "opted_out"
	// ReasonCanceled: the broadcast was canceled before they were reached.
	ReasonCanceled = "canceled"
	// ReasonWaiting: they are still being tried.
	ReasonWaiting = "waiting"
)

// Reasons are the reasons a person was never reached, in the order a
// report lists them.
var Reasons = []string{ReasonNoAddress, ReasonFailed, ReasonOptedOut, ReasonCanceled, ReasonWaiting}

// ReportPoints bounds the points of a report's timeline, however long the
// broadcast ran.
const ReportPoints = 200

// ReportUnreachedListed bounds the never-reached people a report lists
// (the lowest indexes; the counts have them all).
const ReportUnreachedListed = 500

// Series is one line of the timeline: a cumulative count at each point.
type Series struct {
	// Key is one of the Series… constants; Channel is set for a channel's
	// reached line ("sms"), empty for the broadcast's.
	Key     string
	Channel string
	Points  []int64
}

// Last is the series' final count.
func (s Series) Last() int64 {
	if len(s.Points) == 0 {
		return 0
	}
	return s.Points[len(s.Points)-1]
}

// Unreached is a person never reached, for the report's list.
type Unreached struct {
	Index      int
	ExternalID string
	// To is the person's addresses, masked ("+1••••••••00, j•••@example.org").
	To     string
	Reason string
	// Tries are the messages tried: channel and how each ended.
	Tries []Try
}

// Report is a broadcast's after-action report.
type Report struct {
	// People counts the people the broadcast made (the denominator of the
	// percentages).
	People int64
	// Start is when sending started; Step the width of a point: point i
	// counts what happened before Times[i] = Start + (i+1)·Step.
	Start time.Time
	Step  time.Duration
	Times []time.Time
	// Series: reached, acknowledged, and when the poll has them safe and
	// need_help, then reached per channel in the broadcast's order.
	Series []Series
	// ToHalf and ToNinety are how long after Start half and nine tenths
	// of the people were acknowledged (to within 1 %); nil when not reached.
	ToHalf, ToNinety *time.Duration
	// NeverReached counts the people never reached by reason (every
	// reason present); Unreached lists the first ReportUnreachedListed of
	// them by index.
	NeverReached      map[string]int64
	NeverReachedTotal int64
	Unreached         []Unreached
}

// Total is a series' final count (0 when the report has no such series).
func (r *Report) Total(key string) int64 {
	for _, s := range r.Series {
		if s.Key == key && s.Channel == "" {
			return s.Last()
		}
	}
	return 0
}

// Report is a broadcast's after-action report, computed from its people
// (every one read once: half a second for 100,000). Computed reports are
// kept a while for the staff who read them after one another: one is
// reused while the broadcast's counts are unchanged (up to
// ReportFresh), or, while it is still changing, for ReportStale. The
// report is shared: callers must not change it.
func (s *Store) Report(ctx context.Context, sum *Summary) (*Report, error) {
	fp := sum.fingerprint()
	if rep := s.reports.get(sum.ID, fp, time.Now()); rep != nil {
		return rep, nil
	}
	rep, err := ComputeReport(&sum.Config, func(f func(*Person) error) error { return s.Scan(ctx, sum.ID, f) })
	if err != nil {
		return nil, err
	}
	s.reports.put(sum.ID, fp, rep, time.Now())
	return rep, nil
}

// How long a computed report is reused: while the broadcast's counts are
// unchanged, and while they are still changing.
const (
	ReportFresh = 5 * time.Minute
	ReportStale = 10 * time.Second
)

// reportCacheSize bounds the reports kept (the largest a few MB each).
const reportCacheSize = 16

// reportCache keeps the last reports computed, by broadcast.
type reportCache struct {
	mu      sync.Mutex
	entries map[string]cachedReport
}

type cachedReport struct {
	fp  string
	at  time.Time
	rep *Report
}

func (c *reportCache) get(id, fp string, now time.Time) *Report {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[id]
	switch {
	case !ok:
		return nil
	case e.fp == fp && now.Sub(e.at) < ReportFresh, now.Sub(e.at) < ReportStale:
		return e.rep
	}
	return nil
}

// drop forgets a broadcast's report (its people changed where the
// counts do not show it: an erasure).
func (c *reportCache) drop(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.entries, id)
}

func (c *reportCache) put(id, fp string, rep *Report, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[string]cachedReport{}
	}
	if _, ok := c.entries[id]; !ok && len(c.entries) >= reportCacheSize {
		oldest := ""
		for k, e := range c.entries {
			if oldest == "" || e.at.Before(c.entries[oldest].at) {
				oldest = k
			}
		}
		delete(c.entries, oldest)
	}
	c.entries[id] = cachedReport{fp: fp, at: now, rep: rep}
}

// fingerprint sums up what a report depends on that changes: the state,
// the chunks made and every counter.
func (sum *Summary) fingerprint() string {
	keys := slices.Sorted(maps.Keys(sum.Counters))
	var b strings.Builder
	fmt.Fprintf(&b, "%s/%d", sum.State, sum.ChunksDone)
	for _, k := range keys {
		fmt.Fprintf(&b, "/%s=%d", k, sum.Counters[k])
	}
	return b.String()
}

// ComputeReport computes the after-action report of a broadcast from its
// people, given by scan in any order. Memory is bounded whatever their
// number: counts per point and per reason, and the never-reached list.
func ComputeReport(cfg *Config, scan func(f func(*Person) error) error) (*Report, error) {
	start := cfg.CreatedAt
	if cfg.SendAt != nil && cfg.SendAt.After(start) {
		start = *cfg.SendAt
	}
	hasMeaning := func(m string) bool {
		return cfg.Poll != nil && slices.Contains(slices.Collect(maps.Values(cfg.Poll.Options)), m)
	}
	keys := []string{SeriesReached, SeriesAcknowledged}
	for _, m := range []string{SeriesSafe, SeriesNeedHelp} {
		if hasMeaning(m) {
			keys = append(keys, m)
		}
	}
	tl := &timeline{start: start, width: time.Second}
	lines := map[string]int{}
	for i, k := range keys {
		lines[k] = i
	}
	for _, ch := range cfg.Channels {
		lines[SeriesReached+":"+ch] = len(lines)
	}
	tl.counts = make([][]int64, len(lines))
	acks := ackTimes{n: map[int]int64{}, last: map[int]time.Duration{}}
	r := &Report{Start: start, NeverReached: map[string]int64{}}
	for _, reason := range Reasons {
		r.NeverReached[reason] = 0
	}
	err := scan(func(p *Person) error {
		r.People++
		var reachedAt *time.Time
		seen := map[string]bool{}
		for i := range p.Tries {
			t := &p.Tries[i]
			at, ok := t.reached()
			if !ok {
				continue
			}
			if reachedAt == nil || at.Before(*reachedAt) {
				reachedAt = &at
			}
			if n, ok := lines[SeriesReached+":"+t.Channel]; ok && !seen[t.Channel] {
				seen[t.Channel] = true
				tl.add(n, at)
			}
		}
		if p.State == PersonAcknowledged {
			at := p.acknowledgedAt(reachedAt)
			if reachedAt == nil {
				// Answered before any report of the message reached us.
				reachedAt = &at
			}
			tl.add(lines[SeriesAcknowledged], at)
			acks.add(at.Sub(start))
		}
		if reachedAt != nil {
			tl.add(lines[SeriesReached], *reachedAt)
		}
		if n, ok := lines[p.Answer]; ok && (p.Answer == SeriesSafe || p.Answer == SeriesNeedHelp) {
			at := start
			if p.AnsweredAt != nil {
				at = *p.AnsweredAt
			}
			tl.add(n, at)
		}
		if reachedAt == nil {
			reason := p.unreachedReason()
			r.NeverReached[reason]++
			r.NeverReachedTotal++
			r.Unreached = appendUnreached(r.Unreached, p, reason)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(r.Unreached, func(a, b Unreached) int { return a.Index - b.Index })
	if len(r.Unreached) > ReportUnreachedListed {
		r.Unreached = r.Unreached[:ReportUnreachedListed]
	}
	r.Step = tl.width
	n := tl.points()
	for i := range n {
		r.Times = append(r.Times, start.Add(time.Duration(i+1)*tl.width))
	}
	series := make([]Series, len(lines))
	for k, i := range lines {
		key, ch, _ := strings.Cut(k, ":")
		series[i] = Series{Key: key, Channel: ch, Points: cumulative(tl.counts[i], n)}
	}
	r.Series = series
	r.ToHalf = acks.until(r.People, 0.5)
	r.ToNinety = acks.until(r.People, 0.9)
	return r, nil
}

// reached is when the try's message reached the person (sent or
// delivered): the time recorded, else when it was queued.
func (t *Try) reached() (time.Time, bool) {
	switch ledger.Status(t.Status) {
	case ledger.StatusSent, ledger.StatusDelivered:
	default:
		return time.Time{}, false
	}
	if t.ReachedAt != nil {
		return *t.ReachedAt, true
	}
	return t.At, true
}

// acknowledgedAt is when an acknowledged person was: the time recorded,
// else their answer's, else when they were reached.
func (p *Person) acknowledgedAt(reached *time.Time) time.Time {
	switch {
	case p.AcknowledgedAt != nil:
		return *p.AcknowledgedAt
	case p.AnsweredAt != nil:
		return *p.AnsweredAt
	case reached != nil:
		return *reached
	case len(p.Tries) > 0:
		return p.Current().At
	}
	return time.Time{}
}

// unreachedReason says why a person not reached was not.
func (p *Person) unreachedReason() string {
	switch p.State {
	case PersonCanceled:
		return ReasonCanceled
	case PersonSuppressed:
		return ReasonOptedOut
	case PersonUnreachable:
		if len(p.Channels) == 0 {
			return ReasonNoAddress
		}
		return ReasonFailed
	}
	return ReasonWaiting
}

// appendUnreached adds a person to the list, keeping it bounded: past
// twice the listed number it keeps the lowest indexes.
func appendUnreached(list []Unreached, p *Person, reason string) []Unreached {
	m := ledger.Recipient{Phone: p.To.Phone, Email: p.To.Email, WeChatOpenID: p.To.WeChatOpenID}.Masked()
	var to []string
	for _, k := range []string{"phone", "email", "wechat_openid"} {
		if v, ok := m[k]; ok {
			to = append(to, v)
		}
	}
	u := Unreached{Index: p.Index, ExternalID: p.To.ExternalID, To: strings.Join(to, ", "), Reason: reason}
	u.Tries = slices.Clone(p.Tries)
	list = append(list, u)
	if len(list) >= 2*ReportUnreachedListed {
		slices.SortFunc(list, func(a, b Unreached) int { return a.Index - b.Index })
		list = slices.Clip(list[:ReportUnreachedListed])
	}
	return list
}

// timeline counts events in buckets of width from start: when an event
// falls past ReportPoints buckets the width doubles and neighbouring
// buckets merge, so the buckets stay few whatever the span.
type timeline struct {
	start  time.Time
	width  time.Duration
	counts [][]int64
}

func (tl *timeline) add(line int, at time.Time) {
	d := max(at.Sub(tl.start), 0)
	i := int(d / tl.width)
	for i >= ReportPoints {
		tl.width *= 2
		for l, c := range tl.counts {
			merged := make([]int64, (len(c)+1)/2)
			for j, n := range c {
				merged[j/2] += n
			}
			tl.counts[l] = merged
		}
		i = int(d / tl.width)
	}
	c := tl.counts[line]
	if i >= len(c) {
		c = append(c, make([]int64, i+1-len(c))...)
	}
	c[i]++
	tl.counts[line] = c
}

// points is the number of buckets up to the last event (at least one).
func (tl *timeline) points() int {
	n := 1
	for _, c := range tl.counts {
		n = max(n, len(c))
	}
	return n
}

// cumulative sums counts into n points.
func cumulative(counts []int64, n int) []int64 {
	out := make([]int64, n)
	var sum int64
	for i := range n {
		if i < len(counts) {
			sum += counts[i]
		}
		out[i] = sum
	}
	return out
}

// ackTimes counts acknowledgements by their delay after the start, in
// buckets 1 % wide (about 2,200 of them for a month) with the latest delay
// of each, to find when a share of the people were acknowledged without
// keeping every time.
type ackTimes struct {
	n    map[int]int64
	last map[int]time.Duration
}

var ackBase = math.Log(1.01)

func (a ackTimes) add(d time.Duration) {
	d = max(d, 0)
	b := int(math.Log1p(float64(d.Milliseconds())) / ackBase)
	a.n[b]++
	a.last[b] = max(a.last[b], d)
}

// until is the delay by which share of people were acknowledged (at most
// 1 % late, to the second), nil when they were not.
func (a ackTimes) until(people int64, share float64) *time.Duration {
	need := int64(math.Ceil(share * float64(people)))
	if people == 0 || need == 0 {
		return nil
	}
	var sum int64
	for _, b := range slices.Sorted(maps.Keys(a.n)) {
		sum += a.n[b]
		if sum >= need {
			d := a.last[b].Round(time.Second)
			return &d
		}
	}
	return nil
}

// Combine puts several broadcasts' reports (an incident's) on one
// timeline, from the earliest start to the latest point, at most
// ReportPoints points: each series (reached, acknowledged, safe, need
// help, and reached per channel) is the sum over the reports of each
// one's cumulative count at that time. People and the never-reached
// counts are summed (a person of two broadcasts counts twice); ToHalf,
// ToNinety and Unreached are left to each broadcast's own report.
func Combine(reps []*Report) *Report {
	out := &Report{NeverReached: map[string]int64{}}
	if len(reps) == 0 {
		return out
	}
	var end time.Time
	type line struct{ key, channel string }
	var order []line
	seen := map[line]bool{}
	for i, r := range reps {
		if i == 0 || r.Start.Before(out.Start) {
			out.Start = r.Start
		}
		if n := len(r.Times); n > 0 && r.Times[n-1].After(end) {
			end = r.Times[n-1]
		}
		out.People += r.People
		out.NeverReachedTotal += r.NeverReachedTotal
		for k, v := range r.NeverReached {
			out.NeverReached[k] += v
		}
		for _, s := range r.Series {
			if l := (line{s.Key, s.Channel}); !seen[l] {
				seen[l] = true
				order = append(order, l)
			}
		}
	}
	// The whole lines first, then the channels', as a report orders them.
	order = append(slices.DeleteFunc(slices.Clone(order), func(l line) bool { return l.channel != "" }),
		slices.DeleteFunc(order, func(l line) bool { return l.channel == "" })...)
	span := max(end.Sub(out.Start), time.Second)
	out.Step = time.Second
	for span > time.Duration(ReportPoints)*out.Step {
		out.Step *= 2
	}
	n := int((span + out.Step - 1) / out.Step)
	for i := range n {
		out.Times = append(out.Times, out.Start.Add(time.Duration(i+1)*out.Step))
	}
	for _, l := range order {
		s := Series{Key: l.key, Channel: l.channel, Points: make([]int64, n)}
		for _, r := range reps {
			for _, rs := range r.Series {
				if rs.Key != l.key || rs.Channel != l.channel {
					continue
				}
				for i, at := range out.Times {
					s.Points[i] += valueAt(r, rs, at)
				}
			}
		}
		out.Series = append(out.Series, s)
	}
	return out
}

// valueAt is a report's series at time at: its count at the last point
// not after at (0 before its first).
func valueAt(r *Report, s Series, at time.Time) int64 {
	i, _ := slices.BinarySearchFunc(r.Times, at, func(t, target time.Time) int { return t.Compare(target) })
	// r.Times[i] is the first point at or after at.
	if i < len(r.Times) && r.Times[i].Equal(at) {
		return s.Points[i]
	}
	if i == 0 {
		return 0
	}
	if i > len(s.Points) {
		i = len(s.Points)
	}
	return s.Points[i-1]
}
