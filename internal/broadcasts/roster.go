package broadcasts

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/patientmsg/gateway/internal/spreadsheet"
)

// PersonStates are the states a person can be in, in the order a person
// goes through them.
var PersonStates = []string{PersonPending, PersonQueued, PersonSent, PersonDelivered,
	PersonAcknowledged, PersonUnreachable, PersonSuppressed, PersonCanceled}

// Poll tallies beyond the poll's meanings.
const (
	// PollNoAnswerYet counts people who have not answered and may still.
	PollNoAnswerYet = "no_answer_yet"
	// PollUnreachable counts people unreachable or suppressed.
	PollUnreachable = "unreachable"
)

// Roster is where every person of a broadcast stands, from its counters.
type Roster struct {
	// FannedOut counts the people made so far; FanOutDone says every
	// chunk of the audience has been fanned out.
	FannedOut  int
	FanOutDone bool
	// People counts people by state (every state present).
	People map[string]int64
	// ByChannel counts messages by status, per channel (every channel of
	// the broadcast present).
	ByChannel map[string]map[string]int64
	// Poll counts people by their latest answer's meaning (every meaning
	// of the poll present), PollUnreachable and PollNoAnswerYet; empty
	// without a poll.
	Poll map[string]int64
}

// Roster sums up the broadcast's counters.
func (sum *Summary) Roster() Roster {
	r := Roster{FanOutDone: sum.ChunksDone >= sum.Chunks, People: map[string]int64{},
		ByChannel: map[string]map[string]int64{}, Poll: map[string]int64{}}
	for _, st := range PersonStates {
		r.People[st] = sum.Counters["st:"+st]
		r.FannedOut += int(sum.Counters["st:"+st])
	}
	for _, ch := range sum.Channels {
		r.ByChannel[ch] = map[string]int64{}
	}
	answered := int64(0)
	for k, v := range sum.Counters {
		switch {
		case strings.HasPrefix(k, "ch:"):
			ch, st, _ := strings.Cut(strings.TrimPrefix(k, "ch:"), ":")
			if r.ByChannel[ch] == nil {
				r.ByChannel[ch] = map[string]int64{}
			}
			if v != 0 {
				r.ByChannel[ch][st] = v
			}
		case strings.HasPrefix(k, "ans:"):
			r.Poll[strings.TrimPrefix(k, "ans:")] = v
			answered += v
		}
	}
	if sum.Poll != nil {
		for _, meaning := range sum.Poll.Options {
			r.Poll[meaning] += 0
		}
		gone := r.People[PersonUnreachable] + r.People[PersonSuppressed]
		r.Poll[PollUnreachable] = gone
		r.Poll[PollNoAnswerYet] = max(int64(sum.Total)-answered-gone-r.People[PersonCanceled], 0)
	}
	return r
}

// ListSet is the listing set of people in a state or with a poll answer's
// meaning (for List and Count); false when it is neither.
func (sum *Summary) ListSet(stateOrMeaning string) (string, bool) {
	if slices.Contains(PersonStates, stateOrMeaning) {
		return "st:" + stateOrMeaning, true
	}
	if sum.Poll != nil {
		for _, meaning := range sum.Poll.Options {
			if meaning == stateOrMeaning {
				return "ans:" + meaning, true
			}
		}
	}
	return "", false
}

// ReportHeader is the report's first row.
var ReportHeader = []string{"index", "external_id", "phone", "email", "wechat_openid", "state", "answer", "answered_at", "answered_on", "tries"}

// WriteReport writes the broadcast's record as CSV, one row per person by
// index: the addresses, the final state and answer, and every message
// tried ("<channel> <time> <status> <message id>", separated by "; ").
// Values a spreadsheet would take for a formula are written with a
// leading "'".
func (s *Store) WriteReport(ctx context.Context, id string, out io.Writer) error {
	var people []*Person
	if err := s.Scan(ctx, id, func(p *Person) error {
		people = append(people, p)
		return nil
	}); err != nil {
		return err
	}
	slices.SortFunc(people, func(a, b *Person) int { return a.Index - b.Index })
	w := csv.NewWriter(out)
	_ = w.Write(ReportHeader)
	for _, p := range people {
		var tries []string
		for _, t := range p.Tries {
			tries = append(tries, fmt.Sprintf("%s %s %s %s", t.Channel, t.At.Format(time.RFC3339), t.Status, t.MessageID))
		}
		answered := ""
		if p.AnsweredAt != nil {
			answered = p.AnsweredAt.Format(time.RFC3339)
		}
		_ = w.Write([]string{strconv.Itoa(p.Index), spreadsheet.Cell(p.To.ExternalID), p.To.Phone, spreadsheet.Cell(p.To.Email), spreadsheet.Cell(p.To.WeChatOpenID),
			p.State, p.Answer, answered, p.AnsweredOn, strings.Join(tries, "; ")})
	}
	w.Flush()
	return w.Error()
}
