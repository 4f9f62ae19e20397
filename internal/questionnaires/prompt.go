package questionnaires

import (
	"fmt"
	"strconv"
	"strings"
)

// The gateway's own words around the questions, per locale ("en" is the
// fallback).
var phrases = map[string]map[string]string{
	"en": {
		"how":        "Reply with your answer to each question. If another question of ours is open, start your answer with %s (e.g. \"%s 1\").",
		"choice":     "Please reply with one of: %s.",
		"number":     "Please reply with a number from %s to %s.",
		"text":       "Please reply with a few words.",
		"reminder":   "Reminder: ",
		"thanks":     "Thank you. Your answers to %s were sent to your care team.",
		"incomplete": "We could not read your answers, so %s is closed. Please contact your clinic if you need help.",
		"form":       "Please answer here: %s (the link is for you only and works for %d days).",
		"f_choice":   "Please choose one answer.",
		"f_number":   "Please enter a number from %s to %s.",
		"f_text":     "Please write a few words.",
	},
	"zh-Hans": {
		"how":        "请逐题回复。如果我们还有其他问题在等您回复，请在答案前加上%s（例如“%s 1”）。",
		"choice":     "请回复以下之一：%s。",
		"number":     "请回复%s到%s之间的数字。",
		"text":       "请用文字回复。",
		"reminder":   "提醒：",
		"thanks":     "谢谢。您对《%s》的回答已发送给您的医护团队。",
		"incomplete": "我们无法识别您的回答，《%s》已关闭。如需帮助请联系您的诊所。",
		"form":       "请点击链接作答：%s（此链接仅供您本人使用，%d天内有效）。",
		"f_choice":   "请选择一个答案。",
		"f_number":   "请输入%s到%s之间的数字。",
		"f_text":     "请填写几句话。",
	},
}

func phrase(locale, key string) string {
	if p, ok := phrases[locale][key]; ok {
		return p
	}
	return phrases["en"][key]
}

// Prompt is the text of question q in locale: "[CODE n/N] text" and the
// options, one a line; the first question starts with the introduction and
// how to answer.
func (s *Spec) Prompt(q *Question, locale string) string {
	var b strings.Builder
	n := 1
	for i := range s.Questions {
		if s.Questions[i].ID == q.ID {
			n = i + 1
		}
	}
	if n == 1 {
		b.WriteString(s.Title.In(locale))
		if intro := s.Intro.In(locale); intro != "" {
			b.WriteString(": " + intro)
		}
		b.WriteString("\n" + fmt.Sprintf(phrase(locale, "how"), s.Code, s.Code) + "\n\n")
	}
	fmt.Fprintf(&b, "[%s %d/%d] %s", s.Code, n, len(s.Questions), q.Text.In(locale))
	for _, o := range q.Options {
		fmt.Fprintf(&b, "\n%s %s", o.Key, o.Text.In(locale))
	}
	return b.String()
}

// Hint says what answer question q expects.
func Hint(q *Question, locale string) string {
	switch q.Type {
	case TypeChoice:
		keys := make([]string, len(q.Options))
		for i, o := range q.Options {
			keys[i] = o.Key
		}
		sep := ", "
		if locale == "zh-Hans" {
			sep = "、"
		}
		return fmt.Sprintf(phrase(locale, "choice"), strings.Join(keys, sep))
	case TypeNumber:
		return fmt.Sprintf(phrase(locale, "number"), num(q.Min), num(q.Max))
	}
	return phrase(locale, "text")
}

// FormHint says what answer question q expects on the web form.
func FormHint(q *Question, locale string) string {
	switch q.Type {
	case TypeChoice:
		return phrase(locale, "f_choice")
	case TypeNumber:
		return fmt.Sprintf(phrase(locale, "f_number"), num(q.Min), num(q.Max))
	}
	return phrase(locale, "f_text")
}

func num(p *float64) string {
	if p == nil {
		return "?"
	}
	return strconv.FormatFloat(*p, 'f', -1, 64)
}
