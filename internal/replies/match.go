package replies

import "strings"

// Question is an open question with the answers it expects: a question
// of a message (expect_reply), or the current question of a questionnaire
// in progress (Response is set).
type Question struct {
	Prompt
	Options map[string]string
	Code    string
	// Response is the questionnaire response whose current question this
	// is ("" for an expect_reply question).
	Response string
	// Fits says whether a reply is an answer the questionnaire's question
	// takes (nil for an expect_reply question).
	Fits func(reply string) bool
}

// Match picks the question a reply answers, and what the answer means.
// qs are the open questions, most recent first. The rules, in order:
//  1. "<code> <answer>" answers the question with that code: an
//     expect_reply question when answer is one of its options, a
//     questionnaire's current question whatever the answer (one that does
//     not fit is asked again);
//  2. otherwise a reply that fits answers the most recent open question it
//     fits: an option key of an expect_reply question, or an answer a
//     questionnaire's question takes;
//  3. otherwise it is free text about the most recent open question.
//
// Keys and codes are compared case-insensitively, spaces trimmed. It
// returns nil when no question is open. The option is "" for free text and
// for a questionnaire's answers.
func Match(body string, qs []Question) (*Question, string) {
	norm := strings.Join(strings.Fields(body), " ")
	if code, rest, ok := strings.Cut(norm, " "); ok {
		for i := range qs {
			if qs[i].Code == "" || !strings.EqualFold(qs[i].Code, code) {
				continue
			}
			if qs[i].Fits != nil {
				return &qs[i], ""
			}
			if v, ok := option(qs[i].Options, rest); ok {
				return &qs[i], v
			}
		}
	}
	for i := range qs {
		if qs[i].Fits != nil {
			if qs[i].Fits(body) {
				return &qs[i], ""
			}
			continue
		}
		if v, ok := option(qs[i].Options, norm); ok {
			return &qs[i], v
		}
	}
	if len(qs) > 0 {
		return &qs[0], ""
	}
	return nil, ""
}

func option(opts map[string]string, key string) (string, bool) {
	for k, v := range opts {
		if strings.EqualFold(k, key) {
			return v, true
		}
	}
	return "", false
}
