package consent_test

import (
	"bufio"
	"os"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/patientmsg/gateway/internal/consent"
)

// TestRevocationCorpus reads every reply of testdata/revocation_corpus.tsv
// as the gateway does and checks the outcome and its language.
func TestRevocationCorpus(t *testing.T) {
	f, err := os.Open("testdata/revocation_corpus.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	langs := map[string]bool{}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if strings.TrimSpace(text) == "" || strings.HasPrefix(text, "#") {
			continue
		}
		want, rest, ok1 := strings.Cut(text, "\t")
		lang, body, ok2 := strings.Cut(rest, "\t")
		if !ok1 || !ok2 {
			t.Fatalf("line %d: want outcome<TAB>language<TAB>reply", line)
		}
		n++
		langs[lang] = true
		got := consent.Recognise(body)
		if got.Outcome.String() != want {
			t.Errorf("line %d: %q is %s, want %s (normalised %q)", line, body, got.Outcome, want, consent.NormaliseText(body))
			continue
		}
		if want != "none" && got.Lang != lang {
			t.Errorf("line %d: %q answered in %q, want %q", line, body, got.Lang, lang)
		}
		if want != "none" && got.Outcome != consent.PossibleRevocation && consent.Replies[consent.OptOut][got.Lang] == "" {
			t.Errorf("line %d: no confirmation in %q", line, got.Lang)
		}
		if got.Outcome == consent.PossibleRevocation && consent.Clarifications[got.Lang] == "" {
			t.Errorf("line %d: no clarification in %q", line, got.Lang)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if n < 100 || !langs["en"] || !langs["es"] || !langs["zh"] {
		t.Fatalf("the corpus has %d replies in %v: it needs at least 100, in English, Spanish and Chinese", n, langs)
	}
}

func TestNormaliseText(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"case, punctuation and emoji go", "Stop!!! 🛑", "stop"},
		{"a word repeated in a row is kept once", "STOP STOP stop", "stop"},
		{"full-width letters are folded", "ＳＴＯＰ　ｐｌｅａｓｅ", "stop please"},
		{"accents go", "No MÁS mensajes", "no mas mensajes"},
		{"apostrophes join the word", "Don’t text me", "dont text me"},
		{"a letter held three times or more is one", "stoooppp", "stop"},
		{"two stay", "too good", "too good"},
		{"Chinese punctuation is a space", "退订。谢谢！", "退订 谢谢"},
	}
	for _, c := range cases {
		if got := consent.NormaliseText(c.in); got != c.want {
			t.Errorf("%s: NormaliseText(%q) = %q, want %q", c.name, c.in, got, c.want)
		}
	}
}

func FuzzNormaliseText(f *testing.F) {
	for _, s := range []string{"STOP", "Stop texting me", "No más mensajes", "别再给我发短信", "ＳＴＯＰ", "🛑 stop", "stooop", "", "\xff\xfe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		n := consent.NormaliseText(body)
		if !utf8.ValidString(n) {
			t.Fatalf("not UTF-8: %q", n)
		}
		if strings.HasPrefix(n, " ") || strings.HasSuffix(n, " ") || strings.Contains(n, "  ") {
			t.Fatalf("spaces not collapsed: %q", n)
		}
		if utf8.RuneCountInString(n) > 400 {
			t.Fatalf("longer than the recogniser reads: %d runes", utf8.RuneCountInString(n))
		}
		if again := consent.NormaliseText(n); again != n {
			t.Fatalf("not idempotent: %q -> %q -> %q", body, n, again)
		}
		r := consent.Recognise(body)
		if r.Outcome != consent.NotRevocation && r.Lang == "" {
			t.Fatalf("%v without a language", r.Outcome)
		}
		if k, _ := consent.Keyword(body); k == consent.OptOut && r.Outcome != consent.PerSe {
			t.Fatalf("an opt-out keyword read as %v", r.Outcome)
		}
	})
}
