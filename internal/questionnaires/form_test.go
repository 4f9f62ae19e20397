package questionnaires

import (
	"strings"
	"testing"
)

func TestAFormIsReadAlongTheSkipLogicAndSaysWhatDoesNotFit(t *testing.T) {
	d := Starters()["post_discharge"]
	// No fever: the temperature is skipped, whatever was typed in it.
	given, answers, problems := ReadForm(d, "en", map[string]string{
		"pain": "3", "fever": "n", "temperature": "nonsense", "wound": "Y", "medication": "是", "call": "N"})
	if problems != 0 || len(answers) != 5 {
		t.Fatalf("problems %d, answers %+v", problems, answers)
	}
	if _, ok := given["temperature"]; ok {
		t.Error("a skipped question was read")
	}
	if answers[1].Key != "N" || answers[3].Key != "Y" {
		t.Errorf("answers %+v", answers)
	}
	// Fever: the temperature is asked, and must fit; blanks are named.
	given, _, problems = ReadForm(d, "zh-Hans", map[string]string{"pain": "11", "fever": "Y", "temperature": "", "wound": "Y"})
	if problems != 4 || given["pain"].problem != "请输入0到10之间的数字。" || given["temperature"].problem == "" ||
		given["medication"].problem != "请选择一个答案。" || given["wound"].problem != "" || given["pain"].raw != "11" {
		t.Fatalf("problems %d: %+v", problems, given)
	}
	// Fever not answered: whether the temperature applies is not known,
	// so it is not named (the fever is).
	given, _, problems = ReadForm(d, "en", map[string]string{"pain": "2", "wound": "Y", "medication": "Y", "call": "N"})
	if problems != 1 || given["fever"].problem == "" || given["temperature"].problem != "" {
		t.Fatalf("problems %d: %+v", problems, given)
	}
	// A value past the bound is not kept to be shown again.
	given, _, _ = ReadForm(d, "en", map[string]string{"pain": strings.Repeat("9", MaxFormValue+1)})
	if given["pain"].raw != "" || given["pain"].problem == "" {
		t.Errorf("an oversized value: %+v", given["pain"])
	}
}

func TestTheFormMarksTheQuestionsTheSkipLogicCanPassOver(t *testing.T) {
	got := conditionalQuestions(Starters()["post_discharge"])
	if !got["temperature"] || got["pain"] || got["fever"] || got["medication"] {
		t.Errorf("conditional questions: %v", got)
	}
	for id, c := range conditionalQuestions(Starters()["phq9"]) {
		if c {
			t.Errorf("PHQ-9 has no skip logic, yet %s is marked", id)
		}
	}
}

func TestFormTokensAreOpaqueAndChecked(t *testing.T) {
	a, b := newFormToken(), newFormToken()
	if a == b || !ValidFormToken(a) || len(a) != 43 {
		t.Fatalf("tokens %q %q", a, b)
	}
	for _, bad := range []string{"", a[:42], a + "A", strings.Repeat("*", 43), "../../../../etc/passwd/aaaaaaaaaaaaaaaaaaaaaaaaa"} {
		if ValidFormToken(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
}

// FuzzReadForm: whatever a browser (or anyone) posts, reading a form
// neither panics nor records an answer that does not fit its question,
// and every question reached is answered or named.
func FuzzReadForm(f *testing.F) {
	d := Starters()["post_discharge"]
	f.Add("3", "Y", "38.5", "n", "\xff", "是")
	f.Add("", "", "", "", "", "")
	f.Add("1e309", "ｙ", "-0", "Y ", "N", strings.Repeat("x", 5000))
	f.Fuzz(func(t *testing.T, pain, fever, temp, wound, med, call string) {
		given, answers, problems := ReadForm(d, "en", map[string]string{
			"pain": pain, "fever": fever, "temperature": temp, "wound": wound, "medication": med, "call": call})
		if len(given) < len(answers)+problems {
			t.Fatalf("%d read, %d answers, %d problems", len(given), len(answers), problems)
		}
		for _, a := range answers {
			q := d.Question(a.Question)
			switch q.Type {
			case TypeChoice:
				if !hasKey(q.Options, a.Key) {
					t.Fatalf("answer %q to %s is not an option", a.Key, q.ID)
				}
			case TypeNumber:
				if a.Number == nil || *a.Number < *q.Min || *a.Number > *q.Max {
					t.Fatalf("answer %v to %s is out of range", a.Number, q.ID)
				}
			}
			if given[a.Question].problem != "" {
				t.Fatalf("%s is both answered and a problem", a.Question)
			}
		}
		if problems == 0 && len(answers) == 0 {
			t.Fatal("nothing read")
		}
	})
}
