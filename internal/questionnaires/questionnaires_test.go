package questionnaires

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/patientmsg/gateway/internal/invalid"
)

func fields(t *testing.T, err error) []string {
	t.Helper()
	var ie *invalid.Error
	if !errors.As(err, &ie) {
		t.Fatalf("want an *invalid.Error, got %v", err)
	}
	out := make([]string, len(ie.Errors))
	for i, e := range ie.Errors {
		out[i] = e.Field
	}
	return out
}

func TestEveryBuiltInStarterIsValidInEnglishAndChinese(t *testing.T) {
	for name, d := range Starters() {
		for _, q := range d.Questions {
			if q.Text["en"] == "" || q.Text["zh-Hans"] == "" {
				t.Errorf("%s: question %s lacks a language", name, q.ID)
			}
		}
		if !strings.Contains(d.Prompt(&d.Questions[0], "zh-Hans"), d.Title["zh-Hans"]) {
			t.Errorf("%s: the Chinese first question does not name the questionnaire", name)
		}
	}
}

func TestAnInvalidDefinitionNamesEveryBadFieldAtOnce(t *testing.T) {
	s := Spec{
		Title: Text{"fr": "x"}, Code: "too long code",
		Questions: []Question{
			{ID: "a", Type: TypeChoice, Text: Text{"en": "A?"}, Options: []Option{{Key: "1", Text: Text{"en": "one"}, Next: "zz"}}},
			{ID: "a", Type: TypeNumber, Text: Text{"en": "B?"}},
			{ID: "c", Type: "scale", Text: Text{"en": "C?"}, Next: "a"},
		},
		Risk: []RiskRule{{Name: "r", Level: "severe", Question: "a", Answers: []string{"9"}}, {Name: "both", Level: LevelHigh, TotalAtLeast: floatp(3), Words: []string{"x"}}},
	}
	got := strings.Join(fields(t, s.Validate()), " ")
	for _, want := range []string{"title.en", "code", "questions[0].options", "questions[0].options[0].next", "questions[1].id",
		"questions[1].min", "questions[2].type", "questions[2].next", "risk[0].level", "risk[0].answers", "risk[1]"} {
		if !strings.Contains(" "+got+" ", " "+want+" ") {
			t.Errorf("%s is not named; got %s", want, got)
		}
	}
}

func TestSkipLogicFollowsTheAnswerThenTheOrder(t *testing.T) {
	d := Starters()["post_discharge"]
	fever := d.Question("fever")
	cases := []struct {
		name string
		q    string
		v    Value
		want string
	}{
		{"a fever leads to the temperature", "fever", Value{Key: "Y"}, "temperature"},
		{"no fever skips the temperature", "fever", Value{Key: "N"}, "wound"},
		{"without a branch the next in order follows", "pain", Value{Number: floatp(3)}, "fever"},
		{"the last question ends", "call", Value{Key: "N"}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := d.NextAfter(d.Question(c.q), c.v); got != c.want {
				t.Fatalf("NextAfter(%s, %+v) = %q, want %q", c.q, c.v, got, c.want)
			}
		})
	}
	end := Spec{Questions: []Question{{ID: "a", Type: TypeChoice, Options: []Option{{Key: "1", Next: End}, {Key: "2"}}}, {ID: "b"}}}
	if got := end.NextAfter(&end.Questions[0], Value{Key: "1"}); got != "" {
		t.Fatalf("an answer that ends leads to %q", got)
	}
	_ = fever
}

func TestAnswersAreParsedTolerantly(t *testing.T) {
	d := Starters()["post_discharge"]
	phq := Starters()["phq9"]
	cases := []struct {
		name, q, reply string
		spec           *Definition
		ok             bool
		want           string
	}{
		{"a key in another case", "fever", "y", d, true, "Y"},
		{"a key with spaces and a full stop", "fever", "  N. ", d, true, "N"},
		{"a full-width key", "fever", "Ｙ", d, true, "Y"},
		{"a Chinese alias", "fever", "是", d, true, "Y"},
		{"an English alias", "fever", "No", d, true, "N"},
		{"a key the question lacks", "fever", "maybe", d, false, ""},
		{"a full-width digit", "q1", "２", phq, true, "2"},
		{"a number in range", "pain", "7", d, true, "7"},
		{"a full-width number", "pain", "１０", d, true, "10"},
		{"a decimal with a comma", "temperature", "38,6", d, true, "38.6"},
		{"a number out of range", "pain", "11", d, false, ""},
		{"words for a number", "pain", "seven", d, false, ""},
		{"an exponent is not a number a patient writes", "pain", "1e1", d, false, ""},
		{"NaN is not a number", "pain", "NaN", d, false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v, ok := Parse(c.spec.Question(c.q), c.reply)
			if ok != c.ok || (ok && v.String() != c.want) {
				t.Fatalf("Parse(%s, %q) = %+v %v, want %q %v", c.q, c.reply, v, ok, c.want, c.ok)
			}
		})
	}
	text := &Question{ID: "n", Type: TypeText}
	if _, ok := Parse(text, "   "); ok {
		t.Fatal("a blank reply is not free text")
	}
	if v, ok := Parse(text, " swollen knee "); !ok || v.Text != "swollen knee" {
		t.Fatalf("free text: %+v %v", v, ok)
	}
	if got := StripCode("PHQ9", "phq9  2"); got != "2" {
		t.Fatalf("StripCode = %q", got)
	}
}

func FuzzParse(f *testing.F) {
	d := Starters()["post_discharge"]
	for _, s := range []string{"Y", "ｎ", "10", "38,5", "-0", "1e309", "是。", "\xff", "  "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, reply string) {
		for i := range d.Questions {
			q := &d.Questions[i]
			v, ok := Parse(q, reply)
			if !ok {
				continue
			}
			switch q.Type {
			case TypeChoice:
				if !hasKey(q.Options, v.Key) {
					t.Fatalf("Parse(%q) = key %q, not an option", reply, v.Key)
				}
			case TypeNumber:
				if v.Number == nil || *v.Number < *q.Min || *v.Number > *q.Max {
					t.Fatalf("Parse(%q) = %v, out of range", reply, v.Number)
				}
			}
		}
	})
}

func answer(d *Definition, q, reply string) Answer {
	v, ok := Parse(d.Question(q), reply)
	if !ok {
		panic(q + ": " + reply)
	}
	return Answer{Question: q, Value: v, Points: PointsOf(d.Question(q), v)}
}

func TestPHQ9IsScoredAndBandedAsPublished(t *testing.T) {
	d := Starters()["phq9"]
	cases := []struct {
		name    string
		replies string // items 1-9
		total   float64
		band    string
	}{
		{"all not at all", "000000000", 0, "minimal"},
		{"4 is still minimal", "111100000", 4, "minimal"},
		{"5 is mild", "111110000", 5, "mild"},
		{"10 is moderate", "222220000", 10, "moderate"},
		{"15 is moderately severe", "333330000", 15, "moderately_severe"},
		{"20 is severe", "333333200", 20, "severe"},
		{"27 is the most", "333333333", 27, "severe"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var as []Answer
			for i, r := range c.replies {
				as = append(as, answer(d, "q"+itoa(i+1), string(r)))
			}
			if sc := d.Score(as); sc.Total != c.total || sc.Band != c.band {
				t.Fatalf("score %+v, want %v %s", sc, c.total, c.band)
			}
		})
	}
}

func TestRiskRulesFireOnAnswersWordsAndTotals(t *testing.T) {
	d := Starters()["phq9"]
	for _, reply := range []string{"1", "2", "3"} {
		risks := d.AnswerRisks(answer(d, "q9", reply))
		if len(risks) != 1 || risks[0].Name != "item9_self_harm" || risks[0].Level != LevelUrgent {
			t.Fatalf("item 9 answered %s: %+v", reply, risks)
		}
	}
	if risks := d.AnswerRisks(answer(d, "q9", "0")); len(risks) != 0 {
		t.Fatalf("item 9 answered not at all fired %+v", risks)
	}
	if risks := d.AnswerRisks(answer(d, "q8", "3")); len(risks) != 0 {
		t.Fatalf("another item fired %+v", risks)
	}
	names := func(rs []RiskRule) string {
		var out []string
		for _, r := range rs {
			out = append(out, r.Name)
		}
		return strings.Join(out, ",")
	}
	if got := names(d.TotalRisks(Scores{Total: 21})); got != "severe,moderately_severe" {
		t.Fatalf("a total of 21 fires %s", got)
	}
	if got := names(d.TotalRisks(Scores{Total: 14})); got != "" {
		t.Fatalf("a total of 14 fires %s", got)
	}
	pd := Starters()["post_discharge"]
	if got := names(pd.AnswerRisks(answer(pd, "pain", "8"))); got != "severe_pain" {
		t.Fatalf("pain 8 fires %q", got)
	}
	words := Spec{Risk: []RiskRule{{Name: "w", Level: LevelHigh, Words: []string{"Bleeding", "出血"}}}}
	if got := names(words.AnswerRisks(Answer{Question: "n", Value: Value{Text: "伤口出血了"}})); got != "w" {
		t.Fatalf("urgent words in Chinese: %q", got)
	}
	if got := names(words.AnswerRisks(Answer{Question: "n", Value: Value{Text: "all fine"}})); got != "" {
		t.Fatalf("no urgent words fired %q", got)
	}
	if !Escalates(LevelHigh) || !Escalates(LevelUrgent) || Escalates(LevelModerate) {
		t.Fatal("only high and urgent page on-call")
	}
}

func TestSubScoresAddTheirQuestions(t *testing.T) {
	s := Spec{Questions: []Question{
		{ID: "a", Type: TypeChoice, Options: []Option{{Key: "1", Points: 1}, {Key: "2", Points: 2}}},
		{ID: "b", Type: TypeNumber, Scored: true},
	}, Scores: []SubScore{{Name: "first", Questions: []string{"a"}}}}
	sc := s.Score([]Answer{{Question: "a", Points: floatp(2)}, {Question: "b", Points: floatp(4.5)}})
	if sc.Total != 6.5 || sc.Sub["first"] != 2 {
		t.Fatalf("scores %+v", sc)
	}
}

func TestTheResponseTableHasAColumnPerQuestion(t *testing.T) {
	at := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	rs := []*Response{{ID: "qr_1", Questionnaire: "k", Version: 1, State: StateCompleted, CreatedAt: at,
		Answers: []Answer{{Question: "pain", Value: Value{Number: floatp(7)}}, {Question: "note", Value: Value{Text: "=1+1"}}},
		Scores:  &Scores{Total: 7}, Risks: []Risk{{Rule: "r1"}, {Rule: "r2"}}}}
	header, rows := Table(rs)
	b, _ := json.Marshal([]any{header, rows})
	if !strings.Contains(string(b), `"answer:pain","answer:note"`) || !strings.Contains(string(b), `"r1;r2","7"`) {
		t.Fatalf("table %s", b)
	}
}

func TestTextsFallBackToTheLanguageThenEnglish(t *testing.T) {
	tx := Text{"en": "Fever?", "zh-Hans": "发烧？"}
	for loc, want := range map[string]string{"zh-Hans": "发烧？", "zh-CN": "发烧？", "zh": "发烧？", "fr": "Fever?", "": "Fever?"} {
		if got := tx.In(loc); got != want {
			t.Errorf("In(%q) = %q, want %q", loc, got, want)
		}
	}
	if LocaleOf("zh-CN") != "zh-Hans" || LocaleOf("") != "en" {
		t.Fatal("LocaleOf")
	}
}

func TestAQuestionTooLongForOneSMSIsRefused(t *testing.T) {
	long := strings.Repeat("word ", 90) // 450 characters
	var opts []Option
	for _, k := range []string{"1", "2", "3", "4"} {
		opts = append(opts, Option{Key: k, Text: Text{"en": long}})
	}
	s := Spec{Title: Text{"en": "Long"}, Code: "L", Questions: []Question{{ID: "a", Type: TypeChoice, Text: Text{"en": "Which?"}, Options: opts}}}
	if got := fields(t, s.Validate()); len(got) != 1 || got[0] != "questions[0]" {
		t.Fatalf("fields %v", got)
	}
}
