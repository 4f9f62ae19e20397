package templates

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxVarName is the longest variable name, in bytes.
const MaxVarName = 64

// segment is one piece of a template text: literal text, or a placeholder
// when name is set.
type segment struct {
	lit  string
	name string
}

// parseText splits a template text into literal text and {{name}}
// placeholders. A placeholder is "{{", optional spaces, a name of lower-case
// letters, digits and underscores starting with a letter, optional spaces and
// "}}". Any other "{{" is an error: a template never sends a half-written
// placeholder to a patient. A lone "}}" is literal text.
func parseText(s string) ([]segment, error) {
	var segs []segment
	for {
		i := strings.Index(s, "{{")
		if i < 0 {
			if s != "" {
				segs = append(segs, segment{lit: s})
			}
			return segs, nil
		}
		if i > 0 {
			segs = append(segs, segment{lit: s[:i]})
		}
		rest := s[i+2:]
		j := 0
		for j < len(rest) && rest[j] == ' ' {
			j++
		}
		start := j
		for j < len(rest) && isNameByte(rest[j], j == start) {
			j++
		}
		name := rest[start:j]
		for j < len(rest) && rest[j] == ' ' {
			j++
		}
		if name == "" || !strings.HasPrefix(rest[j:], "}}") {
			return nil, fmt.Errorf("has a malformed placeholder %s: write {{name}} with a name of lower-case letters, digits and _ that starts with a letter", quoteSnippet(s[i:]))
		}
		if len(name) > MaxVarName {
			return nil, fmt.Errorf("has a placeholder name longer than %d characters: %s", MaxVarName, quoteSnippet(s[i:]))
		}
		segs = append(segs, segment{name: name})
		s = rest[j+2:]
	}
}

// isNameByte says whether b may appear in a variable name (first: at its start).
func isNameByte(b byte, first bool) bool {
	if b >= 'a' && b <= 'z' {
		return true
	}
	return !first && (b >= '0' && b <= '9' || b == '_')
}

// validVarName says whether s is a valid variable name.
func validVarName(s string) bool {
	if s == "" || len(s) > MaxVarName {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isNameByte(s[i], i == 0) {
			return false
		}
	}
	return true
}

// quoteSnippet quotes the first few characters of s for an error message.
func quoteSnippet(s string) string {
	const max = 24
	n := 0
	for i := range s {
		if n == max {
			return fmt.Sprintf("%q…", s[:i])
		}
		n++
	}
	if !utf8.ValidString(s) {
		return fmt.Sprintf("%q", strings.ToValidUTF8(s, "\uFFFD"))
	}
	return fmt.Sprintf("%q", s)
}

// placeholders lists the variable names a text uses, in order of first use.
// It reports a malformed placeholder as an error.
func placeholders(s string) ([]string, error) {
	segs, err := parseText(s)
	if err != nil {
		return nil, err
	}
	var names []string
	seen := map[string]bool{}
	for _, sg := range segs {
		if sg.name != "" && !seen[sg.name] {
			seen[sg.name] = true
			names = append(names, sg.name)
		}
	}
	return names, nil
}

// expand replaces each placeholder of s by value(name). value reports false
// for a name it has no value for; expand then writes the visible marker
// {{name}} in its place and reports the name in missing.
func expand(s string, value func(name string) (string, bool)) (out string, missing []string, err error) {
	segs, err := parseText(s)
	if err != nil {
		return "", nil, err
	}
	var b strings.Builder
	b.Grow(len(s))
	for _, sg := range segs {
		if sg.name == "" {
			b.WriteString(sg.lit)
			continue
		}
		v, ok := value(sg.name)
		if !ok {
			b.WriteString("{{" + sg.name + "}}")
			missing = append(missing, sg.name)
			continue
		}
		b.WriteString(v)
	}
	return b.String(), missing, nil
}
