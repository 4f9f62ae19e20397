package questionnaires

import "time"

// Built-in starters every tenant can send without defining them; a tenant
// that PUTs a questionnaire of the same name uses its own from then on.
//
// PHQ-9 and GAD-7 are public-domain instruments (developed by Drs. Robert
// L. Spitzer, Janet B.W. Williams, Kurt Kroenke and colleagues, with an
// educational grant from Pfizer Inc.; no permission is required to
// reproduce, translate, display or distribute them). Their items, answer
// points and severity bands are those published; the Chinese texts are
// those of the published Simplified Chinese versions.

// floatp points at a number (a range bound, a threshold).
func floatp(v float64) *float64 { return &v }

func yesNo(yesNext, noNext string, yesPoints, noPoints float64) []Option {
	return []Option{
		{Key: "Y", Text: Text{"en": "Yes", "zh-Hans": "是"}, Aliases: []string{"yes", "是", "是的", "有"}, Points: yesPoints, Next: yesNext},
		{Key: "N", Text: Text{"en": "No", "zh-Hans": "否"}, Aliases: []string{"no", "否", "不是", "没有", "无"}, Points: noPoints, Next: noNext},
	}
}

// frequency are the four answers of every PHQ-9 and GAD-7 item, 0-3 points.
func frequency() []Option {
	return []Option{
		{Key: "0", Text: Text{"en": "Not at all", "zh-Hans": "完全不会"}, Points: 0},
		{Key: "1", Text: Text{"en": "Several days", "zh-Hans": "好几天"}, Points: 1},
		{Key: "2", Text: Text{"en": "More than half the days", "zh-Hans": "一半以上的天数"}, Points: 2},
		{Key: "3", Text: Text{"en": "Nearly every day", "zh-Hans": "几乎每天"}, Points: 3},
	}
}

func items(prefix, stemEN, stemZH string, texts [][2]string) []Question {
	qs := make([]Question, len(texts))
	for i, t := range texts {
		qs[i] = Question{ID: prefix + itoa(i+1), Type: TypeChoice, Options: frequency(),
			Text: Text{"en": stemEN + t[0] + "?", "zh-Hans": stemZH + t[1] + "？"}}
	}
	return qs
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return string(rune('0'+n/10)) + string(rune('0'+n%10))
}

// Starters returns the built-in questionnaires, by name.
func Starters() map[string]*Definition {
	epoch := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	out := map[string]*Definition{}
	for name, s := range map[string]Spec{
		"post_discharge": postDischarge(),
		"phq9":           phq9(),
		"gad7":           gad7(),
		"satisfaction":   satisfaction(),
	} {
		if err := s.Validate(); err != nil {
			panic("questionnaires: built-in " + name + ": " + err.Error())
		}
		out[name] = &Definition{Name: name, Version: 1, Builtin: true, CreatedAt: epoch, Spec: s}
	}
	return out
}

func postDischarge() Spec {
	return Spec{
		Title: Text{"en": "Post-discharge check", "zh-Hans": "出院随访"},
		Code:  "PD",
		Intro: Text{"en": "A few questions about your recovery since you left hospital.",
			"zh-Hans": "想了解一下您出院后的恢复情况。"},
		Questions: []Question{
			{ID: "pain", Type: TypeNumber, Min: floatp(0), Max: floatp(10),
				Text: Text{"en": "How bad is your pain now, from 0 (none) to 10 (worst imaginable)?",
					"zh-Hans": "您现在的疼痛程度如何？请回复0（不痛）到10（最痛）之间的数字。"}},
			{ID: "fever", Type: TypeChoice, Options: yesNo("temperature", "wound", 1, 0),
				Text: Text{"en": "Have you had a fever since you went home?", "zh-Hans": "回家后您有没有发烧？"}},
			{ID: "temperature", Type: TypeNumber, Min: floatp(34), Max: floatp(43),
				Text: Text{"en": "What was your highest temperature, in °C (e.g. 38.2)?", "zh-Hans": "您的最高体温是多少摄氏度（例如38.2）？"}},
			{ID: "wound", Type: TypeChoice, Options: yesNo("", "", 0, 1),
				Text: Text{"en": "Does your wound look clean and dry, without more redness, swelling or discharge?",
					"zh-Hans": "您的伤口是否干净干燥，没有更红、更肿或渗液？"}},
			{ID: "medication", Type: TypeChoice, Options: yesNo("", "", 0, 1),
				Text: Text{"en": "Have you taken all your medication as prescribed?", "zh-Hans": "您是否按医嘱服用了所有药物？"}},
			{ID: "call", Type: TypeChoice, Options: yesNo("", "", 1, 0),
				Text: Text{"en": "Would you like a nurse to call you?", "zh-Hans": "您需要护士给您打电话吗？"}},
		},
		Risk: []RiskRule{
			{Name: "severe_pain", Level: LevelHigh, Question: "pain", AtLeast: floatp(8)},
			{Name: "high_fever", Level: LevelHigh, Question: "temperature", AtLeast: floatp(38.5)},
			{Name: "fever", Level: LevelModerate, Question: "fever", Answers: []string{"Y"}},
			{Name: "wound_problem", Level: LevelModerate, Question: "wound", Answers: []string{"N"}},
			{Name: "missed_medication", Level: LevelLow, Question: "medication", Answers: []string{"N"}},
			{Name: "call_requested", Level: LevelHigh, Question: "call", Answers: []string{"Y"}},
		},
		RemindAfter: "4h", ExpireAfter: "48h",
	}
}

func phq9() Spec {
	return Spec{
		Title: Text{"en": "PHQ-9", "zh-Hans": "PHQ-9 患者健康问卷"},
		Code:  "PHQ9",
		Intro: Text{"en": "Over the last 2 weeks, how often have you been bothered by any of the following problems?",
			"zh-Hans": "在过去两个星期，有多少时候您受到以下任何问题所困扰？"},
		Questions: items("q", "", "", [][2]string{
			{"Little interest or pleasure in doing things", "做事时提不起劲或没有兴趣"},
			{"Feeling down, depressed, or hopeless", "感到心情低落、沮丧或绝望"},
			{"Trouble falling or staying asleep, or sleeping too much", "入睡困难、睡不安稳或睡眠过多"},
			{"Feeling tired or having little energy", "感觉疲倦或没有活力"},
			{"Poor appetite or overeating", "食欲不振或吃太多"},
			{"Feeling bad about yourself — or that you are a failure or have let yourself or your family down", "觉得自己很糟，或觉得自己很失败，或让自己或家人失望"},
			{"Trouble concentrating on things, such as reading the newspaper or watching television", "对事物专注有困难，例如阅读报纸或看电视时"},
			{"Moving or speaking so slowly that other people could have noticed? Or the opposite — being so fidgety or restless that you have been moving around a lot more than usual", "动作或说话速度缓慢到别人已经察觉？或正好相反，烦躁或坐立不安、动来动去的情况更胜于平常"},
			{"Thoughts that you would be better off dead, or of hurting yourself in some way", "有不如死掉或用某种方式伤害自己的念头"},
		}),
		// Kroenke, Spitzer & Williams (2001): 5, 10, 15 and 20 are the cut
		// points of mild, moderate, moderately severe and severe depression.
		Bands: []Band{{0, "minimal"}, {5, "mild"}, {10, "moderate"}, {15, "moderately_severe"}, {20, "severe"}},
		Risk: []RiskRule{
			// Item 9 above "not at all" escalates at once, whatever the total.
			{Name: "item9_self_harm", Level: LevelUrgent, Question: "q9", Answers: []string{"1", "2", "3"}},
			{Name: "severe", Level: LevelHigh, TotalAtLeast: floatp(20)},
			{Name: "moderately_severe", Level: LevelModerate, TotalAtLeast: floatp(15)},
		},
		RemindAfter: "24h", ExpireAfter: "72h",
	}
}

func gad7() Spec {
	return Spec{
		Title: Text{"en": "GAD-7", "zh-Hans": "GAD-7 广泛性焦虑量表"},
		Code:  "GAD7",
		Intro: Text{"en": "Over the last 2 weeks, how often have you been bothered by the following problems?",
			"zh-Hans": "在过去两个星期，有多少时候您受到以下任何问题所困扰？"},
		Questions: items("q", "", "", [][2]string{
			{"Feeling nervous, anxious, or on edge", "感觉紧张、焦虑或急切"},
			{"Not being able to stop or control worrying", "不能够停止或控制担忧"},
			{"Worrying too much about different things", "对各种各样的事情担忧过多"},
			{"Trouble relaxing", "很难放松下来"},
			{"Being so restless that it is hard to sit still", "由于不安而无法静坐"},
			{"Becoming easily annoyed or irritable", "变得容易烦恼或急躁"},
			{"Feeling afraid, as if something awful might happen", "感到似乎将有可怕的事情发生而害怕"},
		}),
		// Spitzer et al. (2006): 5, 10 and 15 are the cut points of mild,
		// moderate and severe anxiety.
		Bands:       []Band{{0, "minimal"}, {5, "mild"}, {10, "moderate"}, {15, "severe"}},
		Risk:        []RiskRule{{Name: "severe", Level: LevelModerate, TotalAtLeast: floatp(15)}},
		RemindAfter: "24h", ExpireAfter: "72h",
	}
}

func satisfaction() Spec {
	rating := func() []Option {
		return []Option{
			{Key: "1", Text: Text{"en": "Very poor", "zh-Hans": "很差"}, Points: 1},
			{Key: "2", Text: Text{"en": "Poor", "zh-Hans": "差"}, Points: 2},
			{Key: "3", Text: Text{"en": "Fair", "zh-Hans": "一般"}, Points: 3},
			{Key: "4", Text: Text{"en": "Good", "zh-Hans": "好"}, Points: 4},
			{Key: "5", Text: Text{"en": "Excellent", "zh-Hans": "很好"}, Points: 5},
		}
	}
	q := func(id, en, zh string) Question {
		return Question{ID: id, Type: TypeChoice, Options: rating(), Text: Text{"en": en, "zh-Hans": zh}}
	}
	return Spec{
		Title: Text{"en": "Patient satisfaction", "zh-Hans": "患者满意度调查"},
		Code:  "SAT",
		Intro: Text{"en": "Five questions about your recent visit, each rated from 1 (very poor) to 5 (excellent).",
			"zh-Hans": "关于您最近一次就诊的五个问题，请按1（很差）到5（很好）评分。"},
		Questions: []Question{
			q("overall", "Overall, how would you rate the care you received?", "总体而言，您如何评价您所接受的医疗服务？"),
			q("explained", "How well did the staff explain your condition and treatment?", "医护人员对您的病情和治疗的解释如何？"),
			q("respect", "How well were you treated with courtesy and respect?", "您受到礼貌和尊重对待的程度如何？"),
			q("access", "How easy was it to get an appointment?", "预约就诊的方便程度如何？"),
			q("recommend", "How likely are you to recommend us to family and friends?", "您向家人和朋友推荐我们的可能性如何？"),
		},
		Bands: []Band{{5, "dissatisfied"}, {15, "neutral"}, {20, "satisfied"}},
		Risk: []RiskRule{
			{Name: "very_dissatisfied", Level: LevelLow, Question: "overall", Answers: []string{"1"}},
		},
		RemindAfter: "24h", ExpireAfter: "168h",
	}
}
