package replies

import "testing"

func TestRepliesAreMatchedToTheQuestionTheyAnswer(t *testing.T) {
	day7 := Question{Prompt: Prompt{Tenant: "a", MessageID: "02-day7"}, Options: map[string]string{"1": "better", "2": "worse"}, Code: "D7"}
	meds := Question{Prompt: Prompt{Tenant: "a", MessageID: "03-meds"}, Options: map[string]string{"1": "taken", "2": "missed", "Y": "taken"}, Code: "M"}
	appt := Question{Prompt: Prompt{Tenant: "a", MessageID: "01-appt"}, Options: map[string]string{"C": "confirm", "R": "reschedule"}}
	open := []Question{meds, day7, appt} // most recent first
	cases := []struct {
		name, body, wantMsg, wantOpt string
	}{
		{"a key only one question has goes to that question", "r", "01-appt", "reschedule"},
		{"a key several questions share goes to the most recent", "1", "03-meds", "taken"},
		{"a code picks the question when keys collide", "d7 1", "02-day7", "better"},
		{"codes and keys are case-insensitive and spaces trimmed", "  D7   2 ", "02-day7", "worse"},
		{"a code with a key that question lacks is not that question", "D7 Y", "03-meds", ""},
		{"free text goes to the most recent question", "still short of breath", "03-meds", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			q, opt := Match(c.body, open)
			if q == nil || q.MessageID != c.wantMsg || opt != c.wantOpt {
				t.Fatalf("Match(%q) = %v %q, want %s %q", c.body, q, opt, c.wantMsg, c.wantOpt)
			}
		})
	}
	if q, _ := Match("1", nil); q != nil {
		t.Fatal("no open question, no match")
	}
}

func FuzzMatch(f *testing.F) {
	f.Add("D7 1")
	f.Add("  ")
	f.Fuzz(func(t *testing.T, body string) {
		qs := []Question{{Prompt: Prompt{MessageID: "1"}, Options: map[string]string{"1": "a"}, Code: "X"}}
		q, opt := Match(body, qs)
		if q == nil || (opt != "" && opt != "a") {
			t.Fatalf("Match(%q) = %v %q", body, q, opt)
		}
	})
}

func TestQuestionnaireQuestionsAndExpectReplyQuestionsAreToldApart(t *testing.T) {
	digit := func(s string) bool { return len(s) == 1 && s[0] >= '0' && s[0] <= '9' }
	yn := func(s string) bool { return s == "Y" || s == "N" || s == "y" || s == "n" }
	pain := Question{Prompt: Prompt{Tenant: "a", MessageID: "05-pain"}, Code: "PD", Response: "qr_pd", Fits: digit}
	phq := Question{Prompt: Prompt{Tenant: "a", MessageID: "04-phq"}, Code: "PHQ9", Response: "qr_phq", Fits: digit}
	appt := Question{Prompt: Prompt{Tenant: "a", MessageID: "03-appt"}, Options: map[string]string{"C": "confirm", "R": "reschedule"}}
	fever := Question{Prompt: Prompt{Tenant: "a", MessageID: "02-fever"}, Code: "F", Response: "qr_f", Fits: yn}
	open := []Question{pain, phq, appt, fever} // most recent first
	cases := []struct {
		name, body, wantMsg, wantOpt string
	}{
		{"an answer two questionnaires take goes to the most recent", "3", "05-pain", ""},
		{"a code sends it to the other questionnaire", "phq9 3", "04-phq", ""},
		{"a code reaches a questionnaire even with an answer that does not fit", "PHQ9 lots", "04-phq", ""},
		{"an expect_reply key goes to its question", "C", "03-appt", "confirm"},
		{"an answer only an older questionnaire takes goes there", "y", "02-fever", ""},
		{"anything else goes to the most recent question, to be asked again", "it hurts", "05-pain", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			q, opt := Match(c.body, open)
			if q == nil || q.MessageID != c.wantMsg || opt != c.wantOpt {
				t.Fatalf("Match(%q) = %v %q, want %s %q", c.body, q, opt, c.wantMsg, c.wantOpt)
			}
		})
	}
}
