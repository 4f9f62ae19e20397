package questionnaires

import (
	"strings"
	"time"
)

// Answer is one question answered.
type Answer struct {
	Question string `json:"question"`
	Value
	// Points is what the answer counts in the scores (nil: not scored).
	Points *float64  `json:"points,omitempty"`
	At     time.Time `json:"at"`
}

// PointsOf is what an answer to q counts: its option's points, or a
// scored number's value.
func PointsOf(q *Question, v Value) *float64 {
	switch q.Type {
	case TypeChoice:
		for _, o := range q.Options {
			if o.Key == v.Key {
				p := o.Points
				return &p
			}
		}
	case TypeNumber:
		if q.Scored && v.Number != nil {
			p := *v.Number
			return &p
		}
	}
	return nil
}

// Scores are a response's total, named sub-scores and band.
type Scores struct {
	Total float64            `json:"total"`
	Sub   map[string]float64 `json:"scores,omitempty"`
	Band  string             `json:"band,omitempty"`
}

// Score adds up the answers' points: the total, each sub-score, and the
// band the total falls in.
func (s *Spec) Score(answers []Answer) Scores {
	out := Scores{}
	by := map[string]float64{}
	for _, a := range answers {
		if a.Points != nil {
			out.Total += *a.Points
			by[a.Question] += *a.Points
		}
	}
	if len(s.Scores) > 0 {
		out.Sub = map[string]float64{}
		for _, sc := range s.Scores {
			for _, q := range sc.Questions {
				out.Sub[sc.Name] += by[q]
			}
		}
	}
	for _, b := range s.Bands {
		if out.Total >= b.Min {
			out.Band = b.Label
		}
	}
	return out
}

// AnswerRisks are the rules an answer fires at once: a given answer to a
// question, or urgent words in free text. They do not wait for the end of
// the questionnaire.
func (s *Spec) AnswerRisks(a Answer) []RiskRule {
	var out []RiskRule
	for _, r := range s.Risk {
		switch r.Kind() {
		case "answer":
			if r.Question != a.Question {
				continue
			}
			for _, k := range r.Answers {
				if strings.EqualFold(normalize(k), a.Key) && a.Key != "" {
					out = append(out, r)
					break
				}
			}
			if r.AtLeast != nil && a.Number != nil && *a.Number >= *r.AtLeast {
				out = append(out, r)
			}
		case "words":
			if a.Text == "" || (r.Question != "" && r.Question != a.Question) {
				continue
			}
			low := strings.ToLower(a.Text)
			for _, w := range r.Words {
				if w = strings.ToLower(strings.TrimSpace(w)); w != "" && strings.Contains(low, w) {
					out = append(out, r)
					break
				}
			}
		}
	}
	return out
}

// TotalRisks are the score rules a finished response fires.
func (s *Spec) TotalRisks(sc Scores) []RiskRule {
	var out []RiskRule
	for _, r := range s.Risk {
		if r.Kind() != "total" {
			continue
		}
		v := sc.Total
		if r.Score != "" {
			v = sc.Sub[r.Score]
		}
		if v >= *r.TotalAtLeast {
			out = append(out, r)
		}
	}
	return out
}
