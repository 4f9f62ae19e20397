// Package questionnaires holds multi-question surveys a clinic sends to a
// patient (a post-discharge check, PHQ-9): their versioned definitions,
// the parsing and scoring of answers, the risk rules that warn the care
// team, and the conversation that asks one question at a time over SMS or
// WeChat. Its Redis keys live here only.
package questionnaires

import (
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/patientmsg/gateway/internal/invalid"
)

// Answer types.
const (
	TypeChoice = "choice"
	TypeNumber = "number"
	TypeText   = "text"
)

// End is the Next of an answer that ends the questionnaire.
const End = "end"

// Risk levels, lowest first. A rule at LevelHigh or LevelUrgent opens an
// escalation to the on-call targets; lower levels only tell the clinic
// (questionnaire.risk).
const (
	LevelLow      = "low"
	LevelModerate = "moderate"
	LevelHigh     = "high"
	LevelUrgent   = "urgent"
)

// Levels lists the risk levels, lowest first.
var Levels = []string{LevelLow, LevelModerate, LevelHigh, LevelUrgent}

// LevelRank orders risk levels (0 for none or unknown).
func LevelRank(level string) int {
	for i, l := range Levels {
		if l == level {
			return i + 1
		}
	}
	return 0
}

// Escalates says whether a fired rule of this level pages on-call.
func Escalates(level string) bool { return LevelRank(level) >= LevelRank(LevelHigh) }

// Limits of a definition.
const (
	MaxQuestions   = 50
	MaxOptions     = 20
	MaxTextChars   = 500 // a question's or an option's text
	MaxAnswerChars = 1000
	MaxRules       = 50
	DefaultRemind  = 24 * time.Hour
	DefaultExpire  = 72 * time.Hour
)

// Text is a text per locale ("en", "zh-Hans"); "en" is required.
type Text map[string]string

// Spec is a questionnaire as a clinic writes it: the body of PUT
// /v1/questionnaires/{name}.
type Spec struct {
	Title Text `json:"title"`
	// Code is 1-8 letters or digits the questions start with ("PHQ9"), so
	// that a patient with other open questions can say which one an answer
	// is for ("PHQ9 2").
	Code      string     `json:"code"`
	Intro     Text       `json:"intro,omitempty"`
	Questions []Question `json:"questions"`
	Scores    []SubScore `json:"scores,omitempty"`
	Bands     []Band     `json:"bands,omitempty"`
	Risk      []RiskRule `json:"risk,omitempty"`
	// RemindAfter is the silence after a question before it is asked once
	// more; ExpireAfter the silence after which the response expires
	// (durations such as "24h"; defaults 24h and 72h).
	RemindAfter string `json:"remind_after,omitempty"`
	ExpireAfter string `json:"expire_after,omitempty"`
}

// Question is one question of a questionnaire.
type Question struct {
	ID   string `json:"id"`
	Type string `json:"type"`
	Text Text   `json:"text"`
	// Options are a choice question's answers.
	Options []Option `json:"options,omitempty"`
	// Min and Max bound a number question's answer.
	Min *float64 `json:"min,omitempty"`
	Max *float64 `json:"max,omitempty"`
	// Scored adds a number answer's value to the scores.
	Scored bool `json:"scored,omitempty"`
	// Next is the question that follows ("end" ends); the next in order
	// when empty. An option's Next takes precedence.
	Next string `json:"next,omitempty"`
}

// Option is one answer of a choice question.
type Option struct {
	// Key is what the patient replies ("1", "Y").
	Key  string `json:"key"`
	Text Text   `json:"text"`
	// Aliases are other replies that mean this option ("yes", "是").
	Aliases []string `json:"aliases,omitempty"`
	Points  float64  `json:"points"`
	Next    string   `json:"next,omitempty"`
}

// SubScore is a named sum of some questions' points.
type SubScore struct {
	Name      string   `json:"name"`
	Questions []string `json:"questions"`
}

// Band names a range of the total (a severity): the band with the highest
// Min at most the total applies.
type Band struct {
	Min   float64 `json:"min"`
	Label string  `json:"label"`
}

// RiskRule warns the care team. Exactly one condition is given: a total
// (or sub-score) at least TotalAtLeast; an answer to Question among
// Answers (choice keys) or at least AtLeast (number); or one of Words in
// a free-text answer (of Question, or of any text question).
type RiskRule struct {
	Name  string `json:"name"`
	Level string `json:"level"`

	TotalAtLeast *float64 `json:"total_at_least,omitempty"`
	Score        string   `json:"score,omitempty"`

	Question string   `json:"question,omitempty"`
	Answers  []string `json:"answers,omitempty"`
	AtLeast  *float64 `json:"at_least,omitempty"`

	Words []string `json:"words,omitempty"`
}

// Kind names the rule's condition: "total", "answer" or "words".
func (r *RiskRule) Kind() string {
	switch {
	case r.TotalAtLeast != nil:
		return "total"
	case len(r.Words) > 0:
		return "words"
	}
	return "answer"
}

// Definition is one version of a tenant's (or a built-in) questionnaire.
type Definition struct {
	Name      string    `json:"name"`
	Version   int       `json:"version"`
	Builtin   bool      `json:"builtin,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	Spec
}

// Question returns the question with that id.
func (s *Spec) Question(id string) *Question {
	for i := range s.Questions {
		if s.Questions[i].ID == id {
			return &s.Questions[i]
		}
	}
	return nil
}

// NextAfter is the question that follows q answered with v ("" when the
// questionnaire ends).
func (s *Spec) NextAfter(q *Question, v Value) string {
	next := q.Next
	if q.Type == TypeChoice {
		for _, o := range q.Options {
			if o.Key == v.Key && o.Next != "" {
				next = o.Next
			}
		}
	}
	if next == End {
		return ""
	}
	if next != "" {
		return next
	}
	for i := range s.Questions {
		if s.Questions[i].ID == q.ID && i+1 < len(s.Questions) {
			return s.Questions[i+1].ID
		}
	}
	return ""
}

// Durations returns the reminder and expiry silences.
func (s *Spec) Durations() (remind, expire time.Duration) {
	remind, expire = DefaultRemind, DefaultExpire
	if d, err := time.ParseDuration(s.RemindAfter); err == nil && s.RemindAfter != "" {
		remind = d
	}
	if d, err := time.ParseDuration(s.ExpireAfter); err == nil && s.ExpireAfter != "" {
		expire = d
	}
	return remind, expire
}

var (
	nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)
	idRE   = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)
	codeRE = regexp.MustCompile(`^[A-Za-z0-9]{1,8}$`)
)

// ValidName says whether a questionnaire's name is acceptable: 1-64
// lower-case letters, digits, '-' and '_'.
func ValidName(name string) bool { return nameRE.MatchString(name) }

// Validate checks a definition and normalises its code to upper case.
// Every problem is an *invalid.Error naming each bad field, all at once.
func (s *Spec) Validate() error {
	var errs invalid.List
	checkText(&errs, "title", s.Title, true)
	if s.Intro != nil {
		checkText(&errs, "intro", s.Intro, false)
	}
	if !codeRE.MatchString(s.Code) {
		errs.Add("code", "must be 1-8 letters or digits, e.g. PHQ9: patients start an answer with it when other questions are open")
	} else {
		s.Code = strings.ToUpper(s.Code)
	}
	switch n := len(s.Questions); {
	case n == 0:
		errs.Add("questions", "at least one question is required")
	case n > MaxQuestions:
		errs.Add("questions", "has %d questions; at most %d", n, MaxQuestions)
	}
	ids := map[string]int{}
	for i, q := range s.Questions {
		f := fmt.Sprintf("questions[%d]", i)
		if !idRE.MatchString(q.ID) {
			errs.Add(f+".id", "must be 1-32 letters, digits, '-' or '_'")
		} else if _, dup := ids[q.ID]; dup || q.ID == End {
			errs.Add(f+".id", "%q is used twice (or is the reserved word end)", q.ID)
		}
		ids[q.ID] = i
	}
	for i := range s.Questions {
		s.checkQuestion(&errs, i, ids)
	}
	for i, sc := range s.Scores {
		f := fmt.Sprintf("scores[%d]", i)
		if !idRE.MatchString(sc.Name) {
			errs.Add(f+".name", "must be 1-32 letters, digits, '-' or '_'")
		}
		if len(sc.Questions) == 0 {
			errs.Add(f+".questions", "name at least one question")
		}
		for j, id := range sc.Questions {
			if _, ok := ids[id]; !ok {
				errs.Add(fmt.Sprintf("%s.questions[%d]", f, j), "%q is not a question of this questionnaire", clip(id))
			}
		}
	}
	for i, b := range s.Bands {
		f := fmt.Sprintf("bands[%d]", i)
		if strings.TrimSpace(b.Label) == "" || len(b.Label) > 64 {
			errs.Add(f+".label", "is required, at most 64 characters")
		}
		if i > 0 && b.Min <= s.Bands[i-1].Min {
			errs.Add(f+".min", "must be greater than the previous band's min (list bands from the lowest)")
		}
	}
	if len(s.Risk) > MaxRules {
		errs.Add("risk", "has %d rules; at most %d", len(s.Risk), MaxRules)
	}
	names := map[string]bool{}
	for i := range s.Risk {
		s.checkRule(&errs, i, ids, names)
	}
	for _, d := range []struct{ field, v string }{{"remind_after", s.RemindAfter}, {"expire_after", s.ExpireAfter}} {
		if d.v == "" {
			continue
		}
		if dur, err := time.ParseDuration(d.v); err != nil || dur < time.Minute || dur > 30*24*time.Hour {
			errs.Add(d.field, "must be a duration from 1m to 720h, e.g. 24h")
		}
	}
	if r, e := s.Durations(); errs.Err() == nil && r >= e {
		errs.Add("remind_after", "must be shorter than expire_after (%s)", e)
	}
	if errs.Err() == nil {
		s.checkLengths(&errs)
	}
	return errs.Err()
}

// MaxPromptChars bounds a question as sent, in every locale it has, asked
// again with its hint or reminded: an SMS carries at most 1600 characters.
const MaxPromptChars = 1600

func (s *Spec) checkLengths(errs *invalid.List) {
	for i := range s.Questions {
		q := &s.Questions[i]
		locales := map[string]bool{"en": true}
		for _, t := range []Text{s.Title, s.Intro, q.Text} {
			for loc := range t {
				locales[loc] = true
			}
		}
		for loc := range locales {
			n := utf8.RuneCountInString(s.Prompt(q, loc)) + utf8.RuneCountInString(Hint(q, loc)) + 1 +
				utf8.RuneCountInString(phrase(loc, "reminder"))
			if n > MaxPromptChars {
				errs.Add(fmt.Sprintf("questions[%d]", i), "is %d characters as sent in %s (title, introduction, question, options and a hint); at most %d fit one SMS", n, loc, MaxPromptChars)
				break
			}
		}
	}
}

func (s *Spec) checkQuestion(errs *invalid.List, i int, ids map[string]int) {
	q := &s.Questions[i]
	f := fmt.Sprintf("questions[%d]", i)
	checkText(errs, f+".text", q.Text, true)
	checkNext := func(field, next string) {
		if next == "" || next == End {
			return
		}
		j, ok := ids[next]
		switch {
		case !ok:
			errs.Add(field, "%q is not a question of this questionnaire (or end)", clip(next))
		case j <= i:
			errs.Add(field, "%q comes before this question: skip logic only leads forward", next)
		}
	}
	checkNext(f+".next", q.Next)
	switch q.Type {
	case TypeChoice:
		if n := len(q.Options); n < 2 || n > MaxOptions {
			errs.Add(f+".options", "a choice question needs 2 to %d options", MaxOptions)
		}
		seen := map[string]bool{}
		for j := range q.Options {
			o := &q.Options[j]
			of := fmt.Sprintf("%s.options[%d]", f, j)
			k := normalize(o.Key)
			if k == "" || utf8.RuneCountInString(k) > 16 || strings.ContainsAny(k, " \t") {
				errs.Add(of+".key", "must be 1-16 characters without spaces, e.g. 1 or Y")
			} else if seen[strings.ToLower(k)] {
				errs.Add(of+".key", "%q is used twice in this question", k)
			}
			o.Key = k
			seen[strings.ToLower(k)] = true
			for a, alias := range o.Aliases {
				al := strings.ToLower(normalize(alias))
				if al == "" || seen[al] {
					errs.Add(fmt.Sprintf("%s.aliases[%d]", of, a), "must be unique in this question and not blank")
				}
				seen[al] = true
			}
			checkText(errs, of+".text", o.Text, true)
			checkNext(of+".next", o.Next)
		}
		if q.Min != nil || q.Max != nil || q.Scored {
			errs.Add(f+".type", "min, max and scored apply to number questions only")
		}
	case TypeNumber:
		if q.Min == nil || q.Max == nil {
			errs.Add(f+".min", "a number question needs min and max")
		} else if *q.Min > *q.Max {
			errs.Add(f+".max", "must not be less than min")
		}
		if len(q.Options) > 0 {
			errs.Add(f+".options", "apply to choice questions only")
		}
	case TypeText:
		if len(q.Options) > 0 || q.Min != nil || q.Max != nil || q.Scored {
			errs.Add(f+".type", "a text question has no options, min, max or score")
		}
	default:
		errs.Add(f+".type", "must be choice, number or text")
	}
}

func (s *Spec) checkRule(errs *invalid.List, i int, ids map[string]int, names map[string]bool) {
	r := &s.Risk[i]
	f := fmt.Sprintf("risk[%d]", i)
	if !idRE.MatchString(r.Name) {
		errs.Add(f+".name", "must be 1-32 letters, digits, '-' or '_' (it is what the care team is told)")
	} else if names[r.Name] {
		errs.Add(f+".name", "%q is used twice", r.Name)
	}
	names[r.Name] = true
	if LevelRank(r.Level) == 0 {
		errs.Add(f+".level", "must be low, moderate, high or urgent")
	}
	kinds := 0
	if r.TotalAtLeast != nil {
		kinds++
	}
	if len(r.Answers) > 0 || r.AtLeast != nil {
		kinds++
	}
	if len(r.Words) > 0 {
		kinds++
	}
	if kinds != 1 {
		errs.Add(f, "give exactly one condition: total_at_least, answers or at_least (with question), or words")
		return
	}
	switch r.Kind() {
	case "total":
		if r.Score != "" && !hasScore(s.Scores, r.Score) {
			errs.Add(f+".score", "%q is not one of scores", clip(r.Score))
		}
		if r.Question != "" {
			errs.Add(f+".question", "does not apply to a total rule")
		}
	case "words":
		for j, w := range r.Words {
			if strings.TrimSpace(w) == "" {
				errs.Add(fmt.Sprintf("%s.words[%d]", f, j), "must not be blank")
			}
		}
		if r.Question != "" {
			if j, ok := ids[r.Question]; !ok || s.Questions[j].Type != TypeText {
				errs.Add(f+".question", "must name a text question")
			}
		}
	default:
		j, ok := ids[r.Question]
		if !ok {
			errs.Add(f+".question", "must name a question of this questionnaire")
			return
		}
		q := &s.Questions[j]
		switch {
		case len(r.Answers) > 0 && q.Type != TypeChoice:
			errs.Add(f+".answers", "apply to a choice question; use at_least for a number")
		case r.AtLeast != nil && q.Type != TypeNumber:
			errs.Add(f+".at_least", "applies to a number question; use answers for a choice")
		}
		for k, a := range r.Answers {
			if q.Type == TypeChoice && !hasKey(q.Options, normalize(a)) {
				errs.Add(fmt.Sprintf("%s.answers[%d]", f, k), "%q is not an option key of %s", clip(a), q.ID)
			}
		}
	}
}

func hasScore(scores []SubScore, name string) bool {
	for _, s := range scores {
		if s.Name == name {
			return true
		}
	}
	return false
}

func hasKey(opts []Option, key string) bool {
	for _, o := range opts {
		if strings.EqualFold(o.Key, key) {
			return true
		}
	}
	return false
}

// checkText requires an "en" text (when required) and checks every locale's.
func checkText(errs *invalid.List, field string, t Text, required bool) {
	if required && strings.TrimSpace(t["en"]) == "" {
		errs.Add(field+".en", "is required (other locales, such as zh-Hans, are optional)")
	}
	for loc, v := range t {
		if !localeRE.MatchString(loc) {
			errs.Add(field, "%q is not a locale such as en or zh-Hans", clip(loc))
			continue
		}
		if !utf8.ValidString(v) || utf8.RuneCountInString(v) > MaxTextChars {
			errs.Add(field+"."+loc, "must be valid text of at most %d characters", MaxTextChars)
		}
	}
}

var localeRE = regexp.MustCompile(`^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$`)

// In picks the text for a locale: the exact tag, then any Chinese tag for
// zh-Hans (zh, zh-CN, zh-SG), then the language alone, then English.
func (t Text) In(locale string) string {
	if v, ok := t[locale]; ok && v != "" {
		return v
	}
	lang, _, _ := strings.Cut(locale, "-")
	if lang == "zh" && !strings.Contains(locale, "Hant") && !strings.HasSuffix(locale, "TW") && !strings.HasSuffix(locale, "HK") {
		if v := t["zh-Hans"]; v != "" {
			return v
		}
	}
	if v := t[lang]; v != "" {
		return v
	}
	return t["en"]
}

// LocaleOf is the locale a response speaks: zh-Hans for Chinese tags, the
// tag's language otherwise, "en" when none.
func LocaleOf(tag string) string {
	if tag == "" {
		return "en"
	}
	if strings.HasPrefix(tag, "zh") && !strings.Contains(tag, "Hant") {
		return "zh-Hans"
	}
	lang, _, _ := strings.Cut(tag, "-")
	return lang
}

func clip(s string) string {
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return strings.ToValidUTF8(s, "�")
}
