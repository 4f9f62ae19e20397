package replies

import "strings"

// Question is an open question with the answers it expects.
type Question struct {
	Prompt
	Options map[string]string
	Code    string
}

// Match picks the question a reply answers, and what the answer means.
// qs are the open questions, most recent first. The rules, in order:
//  1. "<code> <key>" answers the question with that code, when key is one
//     of its options (codes tell apart questions whose options collide);
//  2. otherwise a reply that is exactly an option key answers the most
//     recent open question that has that key;
//  3. otherwise it is free text about the most recent open question.
//
// Keys and codes are compared case-insensitively, spaces trimmed. It
// returns nil when no question is open.
func Match(body string, qs []Question) (*Question, string) {
	norm := strings.Join(strings.Fields(body), " ")
	if code, rest, ok := strings.Cut(norm, " "); ok {
		for i := range qs {
			if qs[i].Code != "" && strings.EqualFold(qs[i].Code, code) {
				if v, ok := option(qs[i].Options, rest); ok {
					return &qs[i], v
				}
			}
		}
	}
	for i := range qs {
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
