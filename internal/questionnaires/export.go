package questionnaires

import (
	"strconv"
	"time"
)

// Table lays responses out as rows for a CSV export: fixed columns, then
// one column per question in the order questions were first answered,
// then one per sub-score.
func Table(rs []*Response) (header []string, rows [][]string) {
	header = []string{"response_id", "questionnaire", "version", "channel", "state", "risk_level", "risk_rules",
		"total", "band", "created_at", "ended_at"}
	var qcols, scols []string
	qi, si := map[string]int{}, map[string]int{}
	for _, r := range rs {
		for _, a := range r.Answers {
			if _, ok := qi[a.Question]; !ok {
				qi[a.Question] = len(qcols)
				qcols = append(qcols, a.Question)
			}
		}
		if r.Scores != nil {
			for name := range r.Scores.Sub {
				if _, ok := si[name]; !ok {
					si[name] = len(scols)
					scols = append(scols, name)
				}
			}
		}
	}
	for _, q := range qcols {
		header = append(header, "answer:"+q)
	}
	for _, sc := range scols {
		header = append(header, "score:"+sc)
	}
	for _, r := range rs {
		row := []string{r.ID, r.Questionnaire, strconv.Itoa(r.Version), r.Channel, r.State, r.RiskLevel, "", "", "",
			r.CreatedAt.UTC().Format(time.RFC3339), ""}
		for i, f := range r.Risks {
			if i > 0 {
				row[6] += ";"
			}
			row[6] += f.Rule
		}
		if r.Scores != nil {
			row[7], row[8] = strconv.FormatFloat(r.Scores.Total, 'f', -1, 64), r.Scores.Band
		}
		if r.EndedAt != nil {
			row[10] = r.EndedAt.UTC().Format(time.RFC3339)
		}
		answers := make([]string, len(qcols))
		for _, a := range r.Answers {
			answers[qi[a.Question]] = a.String()
		}
		scores := make([]string, len(scols))
		if r.Scores != nil {
			for name, v := range r.Scores.Sub {
				scores[si[name]] = strconv.FormatFloat(v, 'f', -1, 64)
			}
		}
		rows = append(rows, append(append(row, answers...), scores...))
	}
	return header, rows
}

// String is the answer as one cell: the key, the number, the text, or
// "recording <id>" for a spoken answer.
func (v Value) String() string {
	switch {
	case v.Key != "":
		return v.Key
	case v.Number != nil:
		return strconv.FormatFloat(*v.Number, 'f', -1, 64)
	case v.Recording != "":
		return "recording " + v.Recording
	}
	return v.Text
}
