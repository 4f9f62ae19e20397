package broadcasts_test

import (
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/audiences"
	"github.com/patientmsg/gateway/internal/broadcasts"
)

// roster builds people against a clock that starts at the broadcast's
// creation: each person is stamped at offsets from it.
type roster struct {
	start  time.Time
	people []*broadcasts.Person
}

func (r *roster) at(d time.Duration) *time.Time { t := r.start.Add(d); return &t }

// reached adds a person reached on channel after d, acknowledged after
// ack (0: not), with an answer.
func (r *roster) reached(channel string, d, ack time.Duration, answer string) {
	p := &broadcasts.Person{Index: len(r.people), To: audiences.Recipient{Phone: "+14155550100"}, Channels: []string{channel},
		State: broadcasts.PersonDelivered,
		Tries: []broadcasts.Try{{Channel: channel, At: r.start, Status: "delivered", ReachedAt: r.at(d)}}}
	if ack > 0 {
		p.State, p.AcknowledgedAt = broadcasts.PersonAcknowledged, r.at(ack)
		if answer != "" {
			p.Answer, p.AnsweredAt = answer, r.at(ack)
		}
	}
	r.people = append(r.people, p)
}

func (r *roster) add(p *broadcasts.Person) { p.Index = len(r.people); r.people = append(r.people, p) }

func (r *roster) scan(f func(*broadcasts.Person) error) error {
	for _, p := range r.people {
		if err := f(p); err != nil {
			return err
		}
	}
	return nil
}

func pollConfig(start time.Time) *broadcasts.Config {
	return &broadcasts.Config{ID: broadcasts.NewID(), Name: "Flood", Channels: []string{"wechat", "sms"}, CreatedAt: start,
		Poll: &broadcasts.Poll{Options: map[string]string{"1": "safe", "2": "need_help"}}}
}

func series(t *testing.T, r *broadcasts.Report, key, channel string) broadcasts.Series {
	t.Helper()
	for _, s := range r.Series {
		if s.Key == key && s.Channel == channel {
			return s
		}
	}
	t.Fatalf("no series %s %s", key, channel)
	return broadcasts.Series{}
}

func TestAReportCountsPeopleReachedAcknowledgedAndAnsweredOverTime(t *testing.T) {
	start := time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)
	r := &roster{start: start}
	// Ten people: reached at 10 s, 20 s…; the first six acknowledge a
	// minute after being reached, four safe and two needing help.
	for i := range 10 {
		reached := time.Duration(i+1) * 10 * time.Second
		ack, answer := time.Duration(0), ""
		if i < 6 {
			ack, answer = reached+time.Minute, "safe"
			if i >= 4 {
				answer = "need_help"
			}
		}
		ch := "wechat"
		if i%2 == 1 {
			ch = "sms"
		}
		r.reached(ch, reached, ack, answer)
	}
	rep, err := broadcasts.ComputeReport(pollConfig(start), r.scan)
	if err != nil {
		t.Fatal(err)
	}
	if rep.People != 10 || rep.Total(broadcasts.SeriesReached) != 10 || rep.Total(broadcasts.SeriesAcknowledged) != 6 ||
		rep.Total(broadcasts.SeriesSafe) != 4 || rep.Total(broadcasts.SeriesNeedHelp) != 2 {
		t.Fatalf("totals: people %d reached %d ack %d safe %d need help %d", rep.People, rep.Total("reached"),
			rep.Total("acknowledged"), rep.Total("safe"), rep.Total("need_help"))
	}
	if w, s := series(t, rep, "reached", "wechat").Last(), series(t, rep, "reached", "sms").Last(); w != 5 || s != 5 {
		t.Errorf("reached per channel: wechat %d, sms %d", w, s)
	}
	// Half (5) were acknowledged when the fifth was, at 50 s + 1 min.
	if rep.ToHalf == nil || *rep.ToHalf != 110*time.Second {
		t.Errorf("time to 50%%: %v", rep.ToHalf)
	}
	if rep.ToNinety != nil {
		t.Errorf("time to 90%%: %v, want none (6 of 10 acknowledged)", *rep.ToNinety)
	}
	// The series are cumulative and never fall; a point counts what
	// happened before its time: the reached line is at 2 at 30 s, 3 after.
	reached := series(t, rep, "reached", "")
	for i := 1; i < len(reached.Points); i++ {
		if reached.Points[i] < reached.Points[i-1] {
			t.Fatalf("reached falls at point %d: %v", i, reached.Points)
		}
	}
	for i, at := range rep.Times {
		if at.Equal(start.Add(30 * time.Second)) {
			if got, next := reached.Points[i], reached.Points[i+1]; got != 2 || next != 3 {
				t.Errorf("reached at 30 s: %d then %d, want 2 then 3", got, next)
			}
		}
	}
	if len(rep.Times) != len(reached.Points) || rep.NeverReachedTotal != 0 {
		t.Errorf("%d times for %d points; never reached %d", len(rep.Times), len(reached.Points), rep.NeverReachedTotal)
	}
}

func TestAReportSaysWhyPeopleWereNeverReached(t *testing.T) {
	start := time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)
	r := &roster{start: start}
	r.reached("sms", time.Second, 0, "")
	r.add(&broadcasts.Person{To: audiences.Recipient{ExternalID: "no-addr"}, State: broadcasts.PersonUnreachable, Tries: []broadcasts.Try{}})
	r.add(&broadcasts.Person{To: audiences.Recipient{Phone: "+14155550123", ExternalID: "p-7"}, Channels: []string{"wechat", "sms"},
		State: broadcasts.PersonUnreachable,
		Tries: []broadcasts.Try{{Channel: "sms", At: start, Status: "undelivered"}, {Channel: "sms", At: start, Status: "failed"}}})
	r.add(&broadcasts.Person{To: audiences.Recipient{Email: "stop@example.org"}, Channels: []string{"sms"},
		State: broadcasts.PersonSuppressed, Tries: []broadcasts.Try{{Channel: "sms", At: start, Status: "suppressed"}}})
	r.add(&broadcasts.Person{To: audiences.Recipient{Phone: "+14155550124"}, Channels: []string{"sms"},
		State: broadcasts.PersonCanceled, Tries: []broadcasts.Try{{Channel: "sms", At: start, Status: "canceled"}}})
	r.add(&broadcasts.Person{To: audiences.Recipient{Phone: "+14155550125"}, Channels: []string{"sms"},
		State: broadcasts.PersonQueued, Tries: []broadcasts.Try{{Channel: "sms", At: start, Status: "queued"}}})
	rep, err := broadcasts.ComputeReport(pollConfig(start), r.scan)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"no_address": 1, "failed": 1, "opted_out": 1, "canceled": 1, "waiting": 1}
	for reason, n := range want {
		if rep.NeverReached[reason] != n {
			t.Errorf("%s: %d, want %d", reason, rep.NeverReached[reason], n)
		}
	}
	if rep.NeverReachedTotal != 5 || len(rep.Unreached) != 5 || rep.Unreached[0].Index != 1 {
		t.Fatalf("never reached: %d, listed %+v", rep.NeverReachedTotal, rep.Unreached)
	}
	failed := rep.Unreached[1]
	if failed.ExternalID != "p-7" || failed.Reason != "failed" || len(failed.Tries) != 2 || failed.Tries[1].Status != "failed" {
		t.Errorf("failed person: %+v", failed)
	}
	for _, u := range rep.Unreached {
		if strings.Contains(u.To, "555") || strings.Contains(u.To, "stop@") {
			t.Errorf("address not masked: %q", u.To)
		}
	}
	if rep.ToHalf != nil {
		t.Errorf("time to 50%% with nobody acknowledged: %v", *rep.ToHalf)
	}
}

func TestAReportStaysWithinItsBoundsForALongLargeBroadcast(t *testing.T) {
	start := time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)
	const n = 100_000
	// Generated as scanned, never held: one person reached every 2 s over
	// about two days, each acknowledged a minute later; the last fifth
	// never reached (no address).
	scan := func(f func(*broadcasts.Person) error) error {
		p := &broadcasts.Person{}
		for i := range n {
			at := start.Add(time.Duration(i) * 2 * time.Second)
			ack := at.Add(time.Minute)
			*p = broadcasts.Person{Index: i, Channels: []string{"sms"}, State: broadcasts.PersonAcknowledged, AcknowledgedAt: &ack,
				Tries: []broadcasts.Try{{Channel: "sms", At: at, Status: "sent", ReachedAt: &at}}}
			if i >= n*4/5 {
				*p = broadcasts.Person{Index: i, State: broadcasts.PersonUnreachable, To: audiences.Recipient{Phone: "+14155550100"}}
			}
			if err := f(p); err != nil {
				return err
			}
		}
		return nil
	}
	rep, err := broadcasts.ComputeReport(pollConfig(start), scan)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Times) > broadcasts.ReportPoints || len(rep.Times) < broadcasts.ReportPoints/2 {
		t.Errorf("%d points", len(rep.Times))
	}
	if rep.NeverReached["no_address"] != n/5 || len(rep.Unreached) != broadcasts.ReportUnreachedListed ||
		rep.Unreached[0].Index != n*4/5 {
		t.Errorf("never reached %d, listed %d from %d", rep.NeverReached["no_address"], len(rep.Unreached), rep.Unreached[0].Index)
	}
	// Half of 100,000 is the 50,000th acknowledgement: 99,998 s + 1 min.
	want := (49_999*2 + 60) * time.Second
	if rep.ToHalf == nil || *rep.ToHalf < want || *rep.ToHalf > want+want/100 {
		t.Errorf("time to 50%%: %v, want %v to within 1%%", rep.ToHalf, want)
	}
	if rep.ToNinety != nil {
		t.Errorf("time to 90%%: %v, want none (80%% acknowledged)", *rep.ToNinety)
	}
}
