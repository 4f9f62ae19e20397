package questionnaires

import (
	"math"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Value is a parsed answer: an option's key, a number, or free text.
type Value struct {
	Key    string   `json:"key,omitempty"`
	Number *float64 `json:"number,omitempty"`
	Text   string   `json:"text,omitempty"`
	// Recording is a spoken answer's recording (a question asked by
	// voice), by the provider's id; its audio is kept with the call's
	// message (GET /v1/messages/{id}/recording).
	Recording string `json:"recording,omitempty"`
}

// Parse reads a patient's reply as an answer to q. Choice keys and their
// aliases match whatever the case, spaces and trailing punctuation, and
// full-width forms ("１", "ｙ"); a number may be full-width too and must
// lie in the question's range; free text is any non-blank reply of at most
// MaxAnswerChars characters. ok is false when the reply does not fit.
func Parse(q *Question, raw string) (v Value, ok bool) {
	if !utf8.ValidString(raw) {
		return Value{}, false
	}
	norm := normalize(raw)
	switch q.Type {
	case TypeChoice:
		for _, o := range q.Options {
			if strings.EqualFold(norm, o.Key) {
				return Value{Key: o.Key}, true
			}
			for _, a := range o.Aliases {
				if strings.EqualFold(norm, normalize(a)) {
					return Value{Key: o.Key}, true
				}
			}
		}
	case TypeNumber:
		s := strings.ReplaceAll(norm, ",", ".")
		if s == "" || strings.ContainsAny(s, "eExXpP_") { // decimal notation only
			return Value{}, false
		}
		n, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(n) || math.IsInf(n, 0) {
			return Value{}, false
		}
		if (q.Min != nil && n < *q.Min) || (q.Max != nil && n > *q.Max) {
			return Value{}, false
		}
		return Value{Number: &n}, true
	case TypeText:
		t := strings.TrimSpace(raw)
		if t == "" || utf8.RuneCountInString(t) > MaxAnswerChars {
			return Value{}, false
		}
		return Value{Text: t}, true
	}
	return Value{}, false
}

// normalize folds full-width ASCII forms and the ideographic space to
// ASCII, collapses spaces, and drops trailing punctuation ("Y.", "是。").
func normalize(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 0xFF01 && r <= 0xFF5E:
			r -= 0xFEE0
		case r == 0x3000:
			r = ' '
		}
		b.WriteRune(r)
	}
	out := strings.Join(strings.Fields(b.String()), " ")
	return strings.TrimRightFunc(out, func(r rune) bool {
		return unicode.IsPunct(r) && r != '%'
	})
}

// StripCode removes a leading questionnaire code ("PHQ9 2" → "2"), as a
// patient writes it to say which questionnaire an answer is for.
func StripCode(code, raw string) string {
	norm := normalize(raw)
	first, rest, ok := strings.Cut(norm, " ")
	if ok && code != "" && strings.EqualFold(first, code) {
		return rest
	}
	return raw
}
